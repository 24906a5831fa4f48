"""What staged rollouts cost the orbit config endpoint, and what the rollout engine's evaluation pass costs.

10 000 hosts poll ``POST /api/fleet/orbit/config`` every 30 s (333 requests/s); with a rollout active each answer
also carries ``update_channels`` pins and may carry a pending osqueryd restart. This script builds two stub states
with the same ``--hosts`` hosts in SQLite (a real database file each, bulk-inserted):

* **baseline**: no rollout, no restart request;
* **rollouts**: an active orbit rollout for every host, an active osqueryd rollout for two of five teams, an older
  completed orbit rollout, outcomes reported by a third of the hosts, and a pending osqueryd restart for 1 %;

* **rollouts, as a worker**: the same database as *rollouts*, served as one of ``serve --workers N``'s workers
  serves it: its rollout engine checks the database's rollout generation (at most every 0.25 s, ADR 0019);

and calls the stub's ASGI app directly (no TLS, no HTTP parsing: those cost the same in all) with one config
request per host, in a shuffled order, rotating the three ``--repeat`` times. Printed: µs per request (min and
median of the runs) and the ratios to the baseline; then the engine's evaluation pass and the status query over
all hosts (what the ticker does every few seconds, and what an admin or the console reads).
Nothing is asserted (docs/design.md §3).

    .venv/bin/python benchmarks/rollout_config_cost.py [--hosts 10000] [--repeat 3] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from bench_support import json_safe
from starlette.types import ASGIApp, Message, Scope

from server_stub.app import build_app
from server_stub.database import open_database
from server_stub.rollout_model import HaltRules, Target
from server_stub.rollout_spec import RolloutRequest
from server_stub.rollout_status import rollout_status
from server_stub.settings import ServeSettings
from server_stub.state import StubState, build_state

TEAMS = 5
VARIANTS = ("baseline", "rollouts", "worker")
CONFIG_PATH = "/api/fleet/orbit/config"


def write_repository(directory: Path) -> Path:
    """Unsigned targets metadata with the channels the rollouts need (the stub reads paths, never signatures)."""
    directory.mkdir(parents=True)
    paths = [f"orbit/linux/{v}/orbit" for v in ("1.2.0", "1.3.0", "1.4.0")]
    paths += [f"osqueryd/linux/{v}/osqueryd" for v in ("5.11.0", "5.12.0")]
    targets = {"signed": {"_type": "targets", "targets": {p: {"length": 1, "hashes": {}} for p in paths}}}
    (directory / "targets.json").write_text(json.dumps(targets))
    return directory


def fill_hosts(db: Path, count: int, now: float) -> list[str]:
    """``count`` orbit-enrolled hosts spread over the teams; returns their orbit node keys."""
    conn = open_database(db)
    keys = [uuid.uuid4().hex for _ in range(count)]
    with conn:
        conn.execute("BEGIN")
        for team in range(1, TEAMS + 1):
            conn.execute("INSERT INTO teams (id, name) VALUES (?, ?)", (team, f"team-{team}"))
        conn.executemany(
            "INSERT INTO hosts (osquery_host_id, uuid, hostname, platform, orbit_version, team_id, orbit_node_key, "
            "created_at, seen_time, orbit_enrolled_at) VALUES (?, ?, ?, 'ubuntu', '1.3.0', ?, ?, ?, ?, ?)",
            [
                (u, u, f"host-{i}", (i % (TEAMS + 1)) or None, key, now, now, now)
                for i, key in enumerate(keys)
                for u in [str(uuid.UUID(int=i + 1)).upper()]
            ],
        )
        conn.execute("COMMIT")
    conn.close()
    return keys


def add_rollouts(state: StubState, now: float) -> None:
    def request(target: Target, version: str, from_version: str, name: str) -> RolloutRequest:
        return RolloutRequest(name, target, version, from_version, (1.0, 10.0, 50.0, 100.0), 3600, HaltRules())

    engine = state.rollouts
    old = engine.create(request(Target.ORBIT, "1.3.0", "1.2.0", "old"), None, now - 86_400)
    state.conn.execute("UPDATE rollouts SET state = 'completed', current_wave = 3 WHERE id = ?", (old.id,))
    engine.reload()
    engine.create(request(Target.ORBIT, "1.4.0", "1.3.0", "orbit"), None, now)
    engine.create(request(Target.OSQUERYD, "5.12.0", "5.11.0", "osqueryd"), (1, 2), now)
    state.conn.execute("UPDATE rollouts SET current_wave = 2 WHERE name = 'orbit'")  # half the fleet on 1.4.0
    engine.reload()
    host_ids = [int(r[0]) for r in state.conn.execute("SELECT id FROM hosts")]
    with state.conn:
        state.conn.execute("BEGIN")
        state.conn.executemany(
            "INSERT INTO host_target_versions (host_id, target, version, health, updated_at) "
            "VALUES (?, 'orbit', '1.4.0', 'confirmed', ?)",
            [(h, now) for h in host_ids[::3]],
        )
        state.conn.executemany(
            "INSERT INTO host_targets (host_id, target, running_version, updated_at) VALUES (?, 'orbit', '1.4.0', ?)",
            [(h, now) for h in host_ids[::3]],
        )
        state.conn.executemany(
            "INSERT INTO osqueryd_restarts (request_id, host_id, created_at, state) VALUES ('bench', ?, ?, 'pending')",
            [(h, now) for h in host_ids[::100]],
        )
        state.conn.execute("COMMIT")


async def call(app: ASGIApp, body: bytes) -> int:
    """One request through the ASGI app, as uvicorn would hand it over; returns the status."""
    sent = False
    status = 0

    async def receive() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = int(str(message["status"]))

    scope: Scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "https",
        "path": CONFIG_PATH,
        "raw_path": CONFIG_PATH.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        "server": ("127.0.0.1", 8412),
        "client": ("127.0.0.1", 50000),
        "extensions": {},
    }
    await app(scope, receive, send)
    return status


async def one_pass(app: ASGIApp, bodies: list[bytes]) -> float:
    """Seconds per request over one request per host."""
    started = time.perf_counter()
    for body in bodies:
        status = await call(app, body)
        if status != 200:
            raise RuntimeError(f"config answered {status}")
    return (time.perf_counter() - started) / len(bodies)


def timed(work: Callable[[], object], repeat: int) -> list[float]:
    runs = []
    for _ in range(repeat):
        started = time.perf_counter()
        work()
        runs.append(time.perf_counter() - started)
    return runs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.hosts < 100 or args.repeat < 1:
        parser.error("--hosts must be at least 100 and --repeat at least 1")
    scratch = Path(tempfile.mkdtemp(prefix="rollout-bench-"))
    try:
        now = time.time()
        repo = write_repository(scratch / "tuf")
        base_dir, roll_dir = scratch / "baseline", scratch / "rollouts"
        base_dir.mkdir()
        print(f"filling {args.hosts} hosts …", file=sys.stderr)
        keys = fill_hosts(base_dir / "fleet-stub.sqlite3", args.hosts, now)
        shutil.copytree(base_dir, roll_dir)
        states = {
            name: build_state(ServeSettings(data_dir=directory, tuf_repo=repo), "bench-admin-token")
            for name, directory in (("baseline", base_dir), ("rollouts", roll_dir))
        }
        add_rollouts(states["rollouts"], now)
        states["worker"] = build_state(
            ServeSettings(data_dir=roll_dir, tuf_repo=repo), "bench-admin-token", shared=True
        )
        apps = {name: build_app(state) for name, state in states.items()}
        bodies = [json.dumps({"orbit_node_key": k}).encode() for k in keys]
        loop = asyncio.new_event_loop()
        try:
            for app in apps.values():  # warm-up: page cache, code paths
                loop.run_until_complete(one_pass(app, bodies[:500]))
            per_request: dict[str, list[float]] = {name: [] for name in VARIANTS}
            for run in range(args.repeat):
                for name in VARIANTS[run % 3 :] + VARIANTS[: run % 3]:
                    random.shuffle(bodies)
                    per_request[name].append(loop.run_until_complete(one_pass(apps[name], bodies)))
                    print(f"run {run + 1} {name}: {per_request[name][-1] * 1e6:.1f} µs/request", file=sys.stderr)
        finally:
            loop.close()
        rollouts_state = states["rollouts"]
        evaluate = timed(lambda: rollouts_state.rollouts.evaluate(time.time()), args.repeat)
        status = timed(lambda: rollout_status(rollouts_state.conn, 2, time.time()), args.repeat)
        book = rollouts_state.rollouts.pins
        pins = timed(lambda: [book.pins_for(f"host-{i}", i % 6 or None) for i in range(10_000)], args.repeat)
        for state in states.values():
            state.close()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    def figures(values: list[float], scale: float) -> dict[str, float]:
        return {"min": round(min(values) * scale, 2), "median": round(statistics.median(values) * scale, 2)}

    base, roll, worker = per_request["baseline"], per_request["rollouts"], per_request["worker"]
    result = {
        "hosts": args.hosts,
        "repeat": args.repeat,
        "config_us_per_request": {
            "baseline": figures(base, 1e6),
            "rollouts": figures(roll, 1e6),
            "rollouts_as_worker": figures(worker, 1e6),
        },
        "config_ratio_rollouts_to_baseline": {
            "min": round(min(roll) / min(base), 3),
            "median": round(statistics.median(roll) / statistics.median(base), 3),
        },
        "config_ratio_worker_to_rollouts": {
            "min": round(min(worker) / min(roll), 3),
            "median": round(statistics.median(worker) / statistics.median(roll), 3),
        },
        "config_requests_per_second_one_core": {
            "baseline": round(1 / statistics.median(base)),
            "rollouts": round(1 / statistics.median(roll)),
        },
        "evaluation_pass_ms": figures(evaluate, 1e3),
        "status_query_ms": figures(status, 1e3),
        "pins_us_per_host": figures([p / 10_000 for p in pins], 1e6),
    }
    if args.json:
        print(json.dumps(json_safe(result), indent=2, allow_nan=False))
        return 0
    cost = result["config_us_per_request"]
    print(f"orbit config endpoint, {args.hosts} hosts, one request per host, {args.repeat} runs alternating:")
    print(f"  baseline (no rollout): {cost['baseline']['min']} µs min, {cost['baseline']['median']} µs median")
    print(f"  3 rollouts + restarts: {cost['rollouts']['min']} µs min, {cost['rollouts']['median']} µs median")
    as_worker = cost["rollouts_as_worker"]
    print(f"  the same as a worker:  {as_worker['min']} µs min, {as_worker['median']} µs median")
    ratio = result["config_ratio_rollouts_to_baseline"]
    print(f"  ratio rollouts/baseline: {ratio['min']} (min), {ratio['median']} (median)")
    ratio = result["config_ratio_worker_to_rollouts"]
    print(f"  ratio worker/rollouts (the generation check): {ratio['min']} (min), {ratio['median']} (median)")
    rps = result["config_requests_per_second_one_core"]
    print(f"  one core serves {rps['baseline']} vs {rps['rollouts']} config requests/s (10 000 hosts need 333/s)")
    ev, st, pn = result["evaluation_pass_ms"], result["status_query_ms"], result["pins_us_per_host"]
    print(f"rollout engine evaluation pass over all hosts: {ev['min']} ms min, {ev['median']} ms median")
    print(f"status query of one rollout over all hosts: {st['min']} ms min, {st['median']} ms median")
    print(f"pins for one host (in memory): {pn['min']} µs min, {pn['median']} µs median")
    return 0


if __name__ == "__main__":
    sys.exit(main())
