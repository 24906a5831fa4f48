"""Staged rollouts at fleet scale (issue 18): how few hosts a bad release reaches, and how fast a good one lands.

One fleet-stub and one ``osqueryd-sim load --with-orbit`` process with N simulated hosts (default 5 000) on the same
machine. The hosts follow the osqueryd channel the stub pins and report update outcomes; 20 % of them (chosen by a
hash, ``--fail-fraction-on``) crash-loop on each *bad* version. Each round, alternating their order:

- **staged** (what is measured): a rollout of a bad version in waves 1, 10, 50, 100 % with the halt rules
  ``max_failed_percent`` 5 / ``min_healthy_percent`` 80;
- **all at once** (the baseline, same run): a rollout of another bad version in one wave of 100 % and the same rules —
  the stub's own mechanism without the staging, i.e. what publishing to ``stable`` does to a fleet;

for each: seconds from creation to the halt, hosts that ever ran the bad version (the generator's ground truth, not
the server's view), whether every host is back on the good version, and the server's offline count. Then a **good**
release is rolled out in the same waves: seconds until every host runs it, until all are healthy, and until the
rollout completes, against the configured wave time (waves × soak).

Clocks are shortened, and say so: orbit config poll 10 s (Fleet 30 s), stable period 15 s (orbit 60 s), a failing
host notices after 10 s (orbit: the breaker after ~5 fast exits, or the trial's deadline), soak 60 s per wave
(default 3 600 s), rollout evaluation every second (default 5 s, and at once after a failure report).

    .venv/bin/python benchmarks/rollout.py [--hosts 5000] [--rounds 3] [--soak 60] [--quick] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
from bench_support import forward_sigterm, json_safe
from rollout_fleet import SimFleet, SimSettings, Stub, make_repository, start_stub, wait_until
from stub_throughput import BenchmarkError

SECRET = "rollout-bench-secret-0123"
GOOD_START = "5.14.1"
WAVES = [1, 10, 50, 100]
RULES = {"max_failed_percent": 5, "min_healthy_percent": 80}


def progress(message: str) -> None:
    print(f"rollout: {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class BadRun:
    kind: str  # "staged" or "all at once"
    version: str
    halted_after_s: float
    ever_ran: int
    failed: int
    back_after_s: float  # from creation until every host ran the good version again
    all_back: bool
    offline: int
    halt_reason: str


@dataclass(frozen=True)
class GoodRun:
    version: str
    all_running_after_s: float
    all_healthy_after_s: float
    completed_after_s: float
    configured_s: float
    offline: int


class Admin:
    """The stub's admin REST on one kept-alive connection; a request that meets a dropped connection (the stub sheds
    connections while thousands of hosts handshake) is tried again."""

    def __init__(self, stub: Stub) -> None:
        self._client = stub.admin()

    def close(self) -> None:
        self._client.close()

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        for attempt in range(5):
            try:
                answer = self._client.request(method, path, json=body)
            except httpx.TransportError as exc:
                if attempt == 4:
                    raise BenchmarkError(f"{method} {path}: {exc}") from None
                time.sleep(1.0)
                continue
            if answer.status_code != 200:
                raise BenchmarkError(f"{method} {path}: {answer.status_code} {answer.text[:300]}")
            rollout: dict[str, Any] = answer.json()["rollout"]
            return rollout
        raise AssertionError("unreachable")

    def create(self, **definition: Any) -> dict[str, Any]:
        return self._request("POST", "/api/latest/fleet/rollouts", definition)

    def status(self, rollout_id: int) -> dict[str, Any]:
        return self._request("GET", f"/api/latest/fleet/rollouts/{rollout_id}")


def bad_release(admin: Admin, sim: SimFleet, kind: str, version: str, good: str, soak: int) -> BadRun:
    waves = WAVES if kind == "staged" else [100]
    progress(f"{kind}: bad osqueryd {version} from {good}, waves {waves}")
    began = time.monotonic()
    rollout = admin.create(
        target="osqueryd", version=version, from_version=good, waves=waves, soak_seconds=soak, halt_rules=RULES
    )
    halted = wait_until(
        lambda: (found := admin.status(rollout["id"]))["state"] != "running" and found,
        timeout=len(waves) * soak + 300,
        what=f"the {kind} rollout of {version} to halt",
        every=0.5,
    )
    assert isinstance(halted, dict)
    halted_after = time.monotonic() - began
    if halted["state"] != "halted":
        raise BenchmarkError(f"the bad release was not halted: {halted['state']} {halted.get('halt_reason')}")
    progress(f"{kind}: halted after {halted_after:.1f} s: {halted['halt_reason']}")
    hosts = sim.hosts

    def everyone_back() -> bool:
        return sim.version(version)["running"] == 0 and sim.version(good)["running"] == hosts

    back = bool(wait_until(everyone_back, timeout=300, what="every host back on the good version"))
    back_after = time.monotonic() - began
    final = admin.status(rollout["id"])
    ran = sim.version(version)
    return BadRun(
        kind,
        version,
        round(halted_after, 1),
        ran["ever_ran"],
        ran["failed"],
        round(back_after, 1),
        back,
        int(final["totals"]["offline"]),
        str(halted["halt_reason"]),
    )


def good_release(admin: Admin, sim: SimFleet, version: str, good: str, soak: int) -> GoodRun:
    progress(f"good osqueryd {version} from {good}, waves {WAVES}, soak {soak} s")
    began = time.monotonic()
    rollout = admin.create(
        target="osqueryd", version=version, from_version=good, waves=WAVES, soak_seconds=soak, halt_rules=RULES
    )
    hosts = sim.hosts
    marks: dict[str, float] = {}
    deadline = began + len(WAVES) * soak + 300
    while time.monotonic() < deadline:
        now = time.monotonic() - began
        if "running" not in marks and sim.version(version)["running"] == hosts:
            marks["running"] = now
        found = admin.status(rollout["id"])
        if "healthy" not in marks and found["totals"]["healthy"] == hosts:
            marks["healthy"] = now
        if found["state"] == "completed":
            marks.setdefault("completed", now)
            if "running" in marks and "healthy" in marks:
                return GoodRun(
                    version,
                    round(marks["running"], 1),
                    round(marks["healthy"], 1),
                    round(marks["completed"], 1),
                    float(len(WAVES) * soak),
                    int(found["totals"]["offline"]),
                )
        elif found["state"] != "running":
            raise BenchmarkError(f"the good release stopped: {found['state']} {found.get('halt_reason')}")
        time.sleep(0.5)
    raise BenchmarkError(f"the good release {version} did not reach every host in time: {marks}")


def summarize(values: Sequence[float]) -> str:
    return f"min {min(values):g} / median {statistics.median(values):g}"


def run(args: argparse.Namespace, work: Path) -> dict[str, object]:
    rounds = range(1, args.rounds + 1)
    plan = [(r, f"5.20.{r}", f"5.21.{r}", f"5.30.{r}") for r in rounds]
    versions = [GOOD_START, *(v for _, staged, once, good in plan for v in (staged, once, good))]
    progress(f"publishing {len(versions)} osqueryd versions as exact-version channels")
    repository = make_repository(work, versions)
    rules = tuple(f"osqueryd:{v}={args.fail}" for _, staged, once, _ in plan for v in (staged, once))
    with contextlib.ExitStack() as stack:
        stub = start_stub(work, SECRET, repository, stack, FLEET_STUB_ROLLOUT_TICK="1")
        admin = Admin(stub)
        stack.callback(admin.close)
        settings = SimSettings(
            hosts=args.hosts,
            config_interval=args.config_interval,
            stable_period=args.stable_period,
            failure_after=args.failure_after,
            fail_rules=rules,
            ramp=args.hosts / 30,  # ~33 enrollments a second: TLS handshakes on 2 shared cores
        )
        sim = SimFleet(work, stub, SECRET, settings, stack)
        progress(f"enrolling {args.hosts} simulated hosts")
        wait_until(lambda: sim.enrolled() == args.hosts, timeout=900, what="every host enrolled", every=2.0)
        time.sleep(args.config_interval * 2)  # every host has polled its orbit config since
        good = GOOD_START
        bad_runs: list[BadRun] = []
        good_runs: list[GoodRun] = []
        for number, staged_version, once_version, good_version in plan:
            order = [("staged", staged_version), ("all at once", once_version)]
            if number % 2 == 0:
                order.reverse()  # alternate A/B
            for kind, version in order:
                bad_runs.append(bad_release(admin, sim, kind, version, good, args.soak))
                progress(f"  {asdict(bad_runs[-1])}")
            good_runs.append(good_release(admin, sim, good_version, good, args.soak))
            progress(f"  {asdict(good_runs[-1])}")
            good = good_version
    staged = [run for run in bad_runs if run.kind == "staged"]
    once = [run for run in bad_runs if run.kind == "all at once"]
    exposure = [100.0 * run.ever_ran / args.hosts for run in staged]
    baseline = [100.0 * run.ever_ran / args.hosts for run in once]
    return {
        "hosts": args.hosts,
        "rounds": args.rounds,
        "timings": {
            "orbit_config_interval_s": args.config_interval,
            "stable_period_s": args.stable_period,
            "failure_after_s": args.failure_after,
            "soak_s": args.soak,
            "waves": WAVES,
            "halt_rules": RULES,
            "fail_fraction": args.fail,
        },
        "bad_releases": [asdict(run) for run in bad_runs],
        "good_releases": [asdict(run) for run in good_runs],
        "staged_exposure_percent": exposure,
        "all_at_once_exposure_percent": baseline,
        "exposure_ratio_staged_to_all_at_once": [
            round(s / b, 4) if b else None for s, b in zip(exposure, baseline, strict=True)
        ],
    }


def report(result: dict[str, Any]) -> None:
    hosts = result["hosts"]
    print(f"staged rollouts over {hosts} simulated hosts, {result['rounds']} round(s); timings {result['timings']}")
    for run in result["bad_releases"]:
        print(
            f"  bad {run['version']:<8} {run['kind']:<12} halted after {run['halted_after_s']:6.1f} s; "
            f"ever ran it: {run['ever_ran']:5d} hosts ({100.0 * run['ever_ran'] / hosts:5.2f} %), "
            f"{run['failed']} failed; all back on the good version: {run['all_back']} after {run['back_after_s']} s; "
            f"offline: {run['offline']}"
        )
    for run in result["good_releases"]:
        print(
            f"  good {run['version']:<7} every host runs it after {run['all_running_after_s']} s, all healthy after "
            f"{run['all_healthy_after_s']} s, completed after {run['completed_after_s']} s "
            f"(configured wave time {run['configured_s']:g} s); offline: {run['offline']}"
        )
    staged = [r for r in result["bad_releases"] if r["kind"] == "staged"]
    print(f"halt (staged): {summarize([r['halted_after_s'] for r in staged])} s")
    print(f"exposure (staged): {summarize(result['staged_exposure_percent'])} % of the fleet (goal <= 2 %)")
    print(f"exposure (all at once, baseline): {summarize(result['all_at_once_exposure_percent'])} %")
    print(f"ratio staged / all at once: {summarize(result['exposure_ratio_staged_to_all_at_once'])}")
    good = result["good_releases"]
    print(
        f"good release to 100 % of hosts: {summarize([r['all_running_after_s'] for r in good])} s; completed "
        f"{summarize([r['completed_after_s'] for r in good])} s of a configured {good[0]['configured_s']:g} s"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hosts", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3, help="A/B rounds (each: staged, all at once, good)")
    parser.add_argument("--soak", type=int, default=60, help="seconds per wave")
    parser.add_argument("--config-interval", type=float, default=10.0)
    parser.add_argument("--stable-period", type=float, default=15.0)
    parser.add_argument("--failure-after", type=float, default=10.0)
    parser.add_argument("--fail", type=float, default=0.2, help="share of hosts failing on a bad version")
    parser.add_argument("--quick", action="store_true", help="1 000 hosts, one round, 30 s soak (a smoke run)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it (logs of the stub and generator)")
    args = parser.parse_args(argv)
    if args.quick:
        args.hosts, args.rounds, args.soak = 1000, 1, 30
    if args.hosts < 100 or args.rounds < 1 or args.soak < 1:
        parser.error("--hosts must be >= 100 (the first wave is 1 %), --rounds and --soak >= 1")
    forward_sigterm()
    try:
        if args.keep is not None:
            args.keep.mkdir(parents=True, exist_ok=True)
            result = run(args, args.keep)
        else:
            with tempfile.TemporaryDirectory(prefix="rollout-bench-") as tmp:
                result = run(args, Path(tmp))
    except BenchmarkError as exc:
        print(f"rollout: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(json_safe(result), indent=2))
    else:
        report(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
