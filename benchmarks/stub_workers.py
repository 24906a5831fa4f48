"""fleet-stub's worker model (issue 19, ADR 0019): which listening arrangement balances better, what waking a live
query across workers costs, and what a second worker costs on one core.

* **balance**: ``--workers 2`` with ``FLEET_STUB_WORKER_BALANCE=reuseport`` (a listening socket per worker,
  ``SO_REUSEPORT``) and ``shared`` (one socket, whoever accepts first), alternating, ``--repeats`` rounds each.
  Load: wrk with osquery's request mix, keep-alive (``-c 512``, connections opened at once, as a fleet reconnecting
  after a restart) and close mode (``-c 32``, a new TLS connection per request). Per run: req/s, wrk's p99, and how
  the work spread over the two workers — the busiest worker's share of the requests, of the connections held
  (keep-alive, sampled mid-run) and of the stub's CPU (50 % is an even split).
* **wake**: two workers; an admin live query waits on worker A while the host answers on worker A (the baseline:
  the in-process wake-up) or on worker B (the wake-up through the parent), alternating: time from the host's
  ``distributed/write`` being sent to the admin's answer. Beside it, what a waiter polling SQLite would see: a
  thread reading the query's row every 20 ms / 100 ms, from the same write.
* **cost**: ``--workers 1`` vs ``2``, alternating, wrk keep-alive ``-c 64``: req/s and the stub's CPU µs per request
  — what the second process costs when one core is all the stub has.

The stub is pinned to the first CPU, wrk and this script to the second (``plan_cpus``).

    .venv/bin/python benchmarks/stub_workers.py [--quick] [--parts balance,wake,cost] [--repeats 3] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import random
import re
import secrets
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
import psutil
from bench_support import forward_sigterm, json_safe
from stub_throughput import (
    BenchmarkError,
    Mode,
    Target,
    build_rotation,
    check_answers,
    client_for,
    enroll_hosts,
    pick_generator,
    plan_cpus,
    run_wrk,
    start_stub,
    write_wrk_script,
)

WORKER_HEADER = "x-fleet-stub-worker"
PER_WORKER = re.compile(r'^fleet_stub_worker_(requests_total|connections_open)\{worker="(\d+)"\} (\S+)$', re.MULTILINE)
BALANCES = ("reuseport", "shared")


def progress(message: str) -> None:
    print(f"stub_workers: {message}", file=sys.stderr, flush=True)


def per_worker(stub: Target) -> tuple[dict[str, float], dict[str, float]]:
    """(requests served, connections open) per worker, from /metrics."""
    with client_for(stub) as client:
        text = client.get("/metrics", headers={"Authorization": f"Bearer {stub.admin_token}"}).text
    requests: dict[str, float] = {}
    connections: dict[str, float] = {}
    for kind, worker, value in PER_WORKER.findall(text):
        (requests if kind == "requests_total" else connections)[worker] = float(value)
    return requests, connections


def worker_cpu(stub: Target) -> dict[int, float]:
    found = {}
    for process in stub.process.processes()[1:]:
        with contextlib.suppress(psutil.NoSuchProcess):
            times = process.cpu_times()
            found[process.pid] = float(times.user + times.system)
    return found


def busiest_share(values: Sequence[float]) -> float:
    total = sum(values)
    return 100 * max(values) / total if total > 0 else float("nan")


# --- balance --------------------------------------------------------------------------------------------------------


@dataclass
class BalanceRun:
    balance: str
    load: str
    round: int
    requests_per_second: float
    p99_ms: float
    errors: int
    busiest_requests_percent: float
    busiest_connections_percent: float
    busiest_cpu_percent: float
    stub_cpu_percent: float


def balance_round(balance: str, number: int, options: argparse.Namespace, work: Path) -> list[BalanceRun]:
    stub_cpus, _gen = plan_cpus()
    runs = []
    secret = secrets.token_urlsafe(16)
    with contextlib.ExitStack() as stack:
        here = work / f"balance-{balance}-{number}"
        here.mkdir()
        stub = start_stub(here, secret, stub_cpus, stack, workers=2, env={"FLEET_STUB_WORKER_BALANCE": balance})
        rotation = build_rotation(enroll_hosts(stub, secret, 50))
        check_answers(stub, rotation)
        script = write_wrk_script(here, rotation)
        for load, mode, connections in (("keep-alive", Mode.KEEP_ALIVE, 512), ("close", Mode.CLOSE, 32)):
            requests0, _ = per_worker(stub)
            cpu0 = worker_cpu(stub)
            sampled: dict[str, float] = {}

            def sample_connections(into: dict[str, float] = sampled) -> None:
                with contextlib.suppress(httpx.HTTPError):
                    into.update(per_worker(stub)[1])

            timer = threading.Timer(options.seconds / 2, sample_connections)
            timer.start()
            wall0, stub_cpu0 = time.monotonic(), stub.process.cpu_seconds()
            raw = run_wrk(options.wrk, script, stub, mode, connections, options.seconds)
            wall, stub_cpu = time.monotonic() - wall0, stub.process.cpu_seconds() - stub_cpu0
            timer.join()
            requests1, _ = per_worker(stub)
            cpu1 = worker_cpu(stub)
            served = [requests1.get(w, 0.0) - requests0.get(w, 0.0) for w in requests1]
            cpu = [cpu1[pid] - cpu0.get(pid, 0.0) for pid in cpu1]
            runs.append(
                BalanceRun(
                    balance=balance,
                    load=load,
                    round=number,
                    requests_per_second=raw.requests / raw.seconds,
                    p99_ms=raw.p99_ms,
                    errors=sum(raw.errors.values()),
                    busiest_requests_percent=busiest_share(served),
                    busiest_connections_percent=busiest_share(list(sampled.values()))
                    if load == "keep-alive"
                    else float("nan"),
                    busiest_cpu_percent=busiest_share(cpu),
                    stub_cpu_percent=100 * stub_cpu / wall,
                )
            )
            progress(f"balance {balance} {load} round {number}: {runs[-1]}")
    return runs


# --- wake -----------------------------------------------------------------------------------------------------------


@dataclass
class WakeReport:
    same_worker_ms: list[float] = field(default_factory=list)
    other_worker_ms: list[float] = field(default_factory=list)
    poll_ms: dict[str, list[float]] = field(default_factory=dict)


def _client_on(stub: Target, node_key: str, worker: str | None, avoid: str | None) -> httpx.Client:
    for _ in range(500):
        client = client_for(stub)
        answer = client.post("/api/v1/osquery/distributed/read", json={"node_key": node_key})
        served = answer.headers.get(WORKER_HEADER)
        if (worker is None or served == worker) and served != avoid:
            return client
        client.close()
    raise BenchmarkError("no connection reached the wanted worker")


def _poll_row(database: Path, query_id: int, every: float, done: threading.Event, seen: list[float]) -> None:
    conn = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        while not done.is_set():
            row = conn.execute("SELECT state FROM live_queries WHERE id = ?", (query_id,)).fetchone()
            if row is not None and row[0] == "done":
                seen.append(time.perf_counter())
                return
            time.sleep(every)
    finally:
        conn.close()


def one_live_query(
    admin: httpx.Client, host: httpx.Client, host_id: int, node_key: str, database: Path, poll_every: float | None
) -> float:
    """ms from the host's write being sent to the admin's answer (or, with ``poll_every``, to a poller seeing it)."""
    answered: list[float] = []

    def ask() -> None:
        response = admin.post(f"/api/latest/fleet/hosts/{host_id}/query", json={"query": "SELECT 1"})
        answered.append(time.perf_counter())
        if response.json().get("status") != "online":
            raise BenchmarkError(f"live query not answered: {response.text}")

    caller = threading.Thread(target=ask)
    caller.start()
    name = ""
    deadline = time.monotonic() + 30
    while not name:
        if time.monotonic() > deadline:
            raise BenchmarkError("the live query never reached the host")
        queries = host.post("/api/v1/osquery/distributed/read", json={"node_key": node_key}).json()["queries"]
        name = next((n for n in queries if n.startswith("fleet_distributed_query_")), "")
        if not name:
            time.sleep(0.002)
    seen: list[float] = []
    done = threading.Event()
    poller = None
    if poll_every is not None:
        query_id = int(name.rsplit("_", 1)[1])
        poller = threading.Thread(target=_poll_row, args=(database, query_id, poll_every, done, seen))
        poller.start()
        time.sleep(random.uniform(0, poll_every))  # the poller's phase relative to the write
    sent = time.perf_counter()
    host.post(
        "/api/v1/osquery/distributed/write",
        json={"node_key": node_key, "queries": {name: [{"one": "1"}]}, "statuses": {name: 0}},
    )
    caller.join(60)
    if poller is not None:
        poller.join(10)
        done.set()
        return 1000 * (seen[0] - sent) if seen else float("nan")
    return 1000 * (answered[0] - sent) if answered else float("nan")


def wake(options: argparse.Namespace, work: Path) -> WakeReport:
    stub_cpus, _gen = plan_cpus()
    report = WakeReport(poll_ms={"20 ms": [], "100 ms": []})
    secret = secrets.token_urlsafe(16)
    with contextlib.ExitStack() as stack:
        here = work / "wake"
        here.mkdir()
        stub = start_stub(here, secret, stub_cpus, stack, workers=2)
        identifier, node_key = enroll_hosts(stub, secret, 1)[0]
        admin = stack.enter_context(client_for(stub))
        admin.headers["Authorization"] = f"Bearer {stub.admin_token}"
        listed = admin.get("/api/latest/fleet/hosts")
        admin_worker = listed.headers[WORKER_HEADER]
        host_id = int(listed.json()["hosts"][0]["id"])
        same = _client_on(stub, node_key, admin_worker, None)
        stack.callback(same.close)
        other = _client_on(stub, node_key, None, admin_worker)
        stack.callback(other.close)
        database = here / "stub" / "fleet-stub.sqlite3"
        for _ in range(options.wake_queries):
            report.same_worker_ms.append(one_live_query(admin, same, host_id, node_key, database, None))
            report.other_worker_ms.append(one_live_query(admin, other, host_id, node_key, database, None))
            for label, every in (("20 ms", 0.02), ("100 ms", 0.1)):
                report.poll_ms[label].append(one_live_query(admin, other, host_id, node_key, database, every))
        del identifier
    return report


# --- cost -----------------------------------------------------------------------------------------------------------


@dataclass
class CostRun:
    workers: int
    round: int
    requests_per_second: float
    p99_ms: float
    cpu_us_per_request: float
    stub_cpu_percent: float
    stub_mib: float


def cost_round(workers: int, number: int, options: argparse.Namespace, work: Path) -> CostRun:
    stub_cpus, _gen = plan_cpus()
    secret = secrets.token_urlsafe(16)
    with contextlib.ExitStack() as stack:
        here = work / f"cost-{workers}-{number}"
        here.mkdir()
        stub = start_stub(here, secret, stub_cpus, stack, workers=workers)
        rotation = build_rotation(enroll_hosts(stub, secret, 50))
        check_answers(stub, rotation)
        script = write_wrk_script(here, rotation)
        wall0, cpu0 = time.monotonic(), stub.process.cpu_seconds()
        raw = run_wrk(options.wrk, script, stub, Mode.KEEP_ALIVE, 64, options.seconds)
        wall, cpu = time.monotonic() - wall0, stub.process.cpu_seconds() - cpu0
        run = CostRun(
            workers=workers,
            round=number,
            requests_per_second=raw.requests / raw.seconds,
            p99_ms=raw.p99_ms,
            cpu_us_per_request=1e6 * cpu / max(1, raw.requests),
            stub_cpu_percent=100 * cpu / wall,
            stub_mib=stub.process.rss_mib(),
        )
        progress(f"cost workers={workers} round {number}: {run}")
        return run


# --- report ---------------------------------------------------------------------------------------------------------


@dataclass
class Report:
    repeats: int
    seconds: int
    load_average: list[float]
    balance: list[BalanceRun] = field(default_factory=list)
    wake: WakeReport | None = None
    cost: list[CostRun] = field(default_factory=list)


def _median(values: Sequence[float]) -> float:
    clean = [v for v in values if v == v]
    return statistics.median(clean) if clean else float("nan")


def _percentile(values: Sequence[float], fraction: float) -> float:
    clean = sorted(v for v in values if v == v)
    return clean[min(len(clean) - 1, int(fraction * len(clean)))] if clean else float("nan")


def render(report: Report) -> str:
    load = ", ".join(f"{x:.2f}" for x in report.load_average)
    lines = [f"fleet-stub workers; {report.repeats} rounds, {report.seconds} s per run; load average before: {load}"]
    if report.balance:
        lines += [
            "",
            "balance (2 workers on one core)   req/s    p99 ms  errors  busiest worker's share of: requests "
            "connections  CPU   stub CPU",
        ]
        for run in report.balance:
            lines.append(
                f"  {run.balance:<9} {run.load:<10} r{run.round}  {run.requests_per_second:>8,.0f}  "
                f"{run.p99_ms:>7.1f}  {run.errors:>6}  {run.busiest_requests_percent:>29.1f} % "
                f"{run.busiest_connections_percent:>8.1f} %  {run.busiest_cpu_percent:>5.1f} %  "
                f"{run.stub_cpu_percent:>5.0f} %"
            )
        for load in ("keep-alive", "close"):
            parts = []
            for balance in BALANCES:
                runs = [r for r in report.balance if r.balance == balance and r.load == load]
                parts.append(
                    f"{balance}: req/s {_median([r.requests_per_second for r in runs]):,.0f}, p99 "
                    f"{_median([r.p99_ms for r in runs]):.1f} ms, busiest requests "
                    f"{_median([r.busiest_requests_percent for r in runs]):.1f} % (worst "
                    f"{max((r.busiest_requests_percent for r in runs), default=float('nan')):.1f} %), connections "
                    f"{_median([r.busiest_connections_percent for r in runs]):.1f} %"
                )
            lines.append(f"  median {load}: " + "; ".join(parts))
    if report.wake is not None:
        wake = report.wake
        same, other = _median(wake.same_worker_ms), _median(wake.other_worker_ms)
        lines += [
            "",
            "live query wake-up, ms from the host's distributed/write sent to the answer (median / p90 / max):",
            f"  same worker (baseline)         {same:6.2f} / {_percentile(wake.same_worker_ms, 0.9):6.2f} / "
            f"{max(wake.same_worker_ms, default=float('nan')):6.2f}",
            f"  other worker, through parent   {other:6.2f} / {_percentile(wake.other_worker_ms, 0.9):6.2f} / "
            f"{max(wake.other_worker_ms, default=float('nan')):6.2f}   ({other / same:.2f}× the baseline)",
        ]
        for label, values in wake.poll_ms.items():
            lines.append(
                f"  SQLite polled every {label:<7}    {_median(values):6.2f} / {_percentile(values, 0.9):6.2f} / "
                f"{max(values, default=float('nan')):6.2f}   (until the poller saw the row)"
            )
    if report.cost:
        lines += ["", "cost of a second worker on one core (wrk keep-alive -c 64):"]
        for cost in report.cost:
            lines.append(
                f"  workers={cost.workers} r{cost.round}  {cost.requests_per_second:>8,.0f} req/s  p99 "
                f"{cost.p99_ms:6.1f} ms  {cost.cpu_us_per_request:6.0f} µs CPU/req  stub {cost.stub_mib:5.0f} MiB"
            )
        one = [r for r in report.cost if r.workers == 1]
        two = [r for r in report.cost if r.workers == 2]
        if one and two:
            ratio = _median([r.requests_per_second for r in two]) / _median([r.requests_per_second for r in one])
            lines.append(
                f"  median req/s 2 workers / 1 worker: {ratio:.2f}×; CPU/req "
                f"{_median([r.cpu_us_per_request for r in two]):.0f} vs "
                f"{_median([r.cpu_us_per_request for r in one]):.0f} µs"
            )
    return "\n".join(lines)


def _balance_step(report: Report, balance: str, number: int, options: argparse.Namespace, work: Path) -> None:
    report.balance.extend(balance_round(balance, number, options, work))


def _cost_step(report: Report, workers: int, number: int, options: argparse.Namespace, work: Path) -> None:
    report.cost.append(cost_round(workers, number, options, work))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--parts", default="balance,wake,cost", help="comma-separated: balance, wake, cost")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=10, help="seconds per wrk run (default 10)")
    parser.add_argument("--wake-queries", type=int, default=30, help="live queries per kind (default 30)")
    parser.add_argument("--quick", action="store_true", help="1 round, 4 s runs, 5 live queries")
    parser.add_argument("--json", action="store_true")
    options = parser.parse_args(argv)
    if options.quick:
        options.repeats, options.seconds, options.wake_queries = 1, 4, 5
    parts = set(options.parts.split(","))
    if parts - {"balance", "wake", "cost"}:
        parser.error(f"unknown parts: {', '.join(sorted(parts - {'balance', 'wake', 'cost'}))}")
    _name, options.wrk, _detail = pick_generator("wrk")
    _stub_cpus, gen_cpus = plan_cpus()
    if gen_cpus is not None:
        os.sched_setaffinity(0, gen_cpus)
    terminated = forward_sigterm()
    report = Report(options.repeats, options.seconds, list(os.getloadavg()))
    steps: list[Callable[[Path], None]] = []
    for number in range(1, options.repeats + 1):  # A/B alternating, the order flipped every round
        if "balance" in parts:
            for balance in BALANCES if number % 2 else tuple(reversed(BALANCES)):
                steps.append(functools.partial(_balance_step, report, balance, number, options))
        if "cost" in parts:
            for workers in (1, 2) if number % 2 else (2, 1):
                steps.append(functools.partial(_cost_step, report, workers, number, options))
    try:
        with tempfile.TemporaryDirectory(prefix="stub-workers-") as tmp:
            for step in steps:
                step(Path(tmp))
            if "wake" in parts:
                report.wake = wake(options, Path(tmp))
    except KeyboardInterrupt:
        progress("interrupted; processes stopped")
        return 143 if terminated else 130
    except (BenchmarkError, OSError, httpx.HTTPError) as exc:
        progress(f"error: {exc}")
        return 1
    print(json.dumps(json_safe(asdict(report)), indent=2) if options.json else render(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
