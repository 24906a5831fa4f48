"""orbit's footprint while it does its job (issues 5 and 19; goal ≤ 40 MB RSS steady, update checks included, ≤ 0.5 %
of a core): RSS, USS and CPU of the orbit process (not osqueryd) over ``--minutes`` of Fleet's real intervals —
config every 30 s, an update check every minute (``--update-interval 1m``, orbit's floor; Fleet's default is
15 min), osqueryd supervised, the status file every 5 s.

Baseline in the same run: a bare interpreter that imports what orbit's daemon imports (``orbit.__main__`` and
``orbit.agent``) and then idles. The run is cut into ``--rounds`` windows; each window starts a fresh baseline and
samples both processes once a second, in alternating order (orbit first, then the baseline first), so both see the
same machine at the same moments. Reported per window and as min / median over the windows.

Update checks run in a short-lived helper process (``orbit update-helper``, ADR 0020): the script watches orbit's
children ten times a second and reports how many helpers ran and their peak RSS, which is *not* in orbit's figure.

    .venv/bin/python benchmarks/agent_footprint.py [--minutes 10] [--rounds 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psutil

from tests.support.orbit_world import OrbitWorld, wait_for

BASELINE = "import orbit.__main__, orbit.agent; import time; time.sleep(86400)"
REAL_TIMINGS = ("ORBIT_DEV_CONFIG_INTERVAL", "ORBIT_DEV_CONFIG_MAX_BACKOFF", "ORBIT_DEV_STATUS_INTERVAL")
MIB = 2**20
MB = 10**6


@dataclass
class Series:
    rss: list[float] = field(default_factory=list)
    uss: list[float] = field(default_factory=list)
    cpu_seconds: float = 0.0
    wall_seconds: float = 0.0

    def add(self, process: psutil.Process) -> None:
        info = process.memory_full_info()
        self.rss.append(info.rss / MIB)
        self.uss.append(info.uss / MIB)

    def figures(self) -> dict[str, float]:
        return {
            "rss_max_mib": round(max(self.rss), 1),
            "rss_median_mib": round(statistics.median(self.rss), 1),
            "uss_max_mib": round(max(self.uss), 1),
            "cpu_percent": round(100.0 * self.cpu_seconds / self.wall_seconds, 3),
        }


class HelperWatch:
    """Orbit's update helpers, seen every 0.1 s: how many ran and their peak RSS."""

    def __init__(self, orbit: psutil.Process) -> None:
        self._orbit = orbit
        self.seen: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.wait(0.1):
            try:
                children = self._orbit.children()
            except psutil.Error:
                continue
            for child in children:
                try:
                    if "update-helper" not in child.cmdline():
                        continue
                    rss = child.memory_info().rss / MIB
                except psutil.Error:
                    continue
                self.seen[child.pid] = max(rss, self.seen.get(child.pid, 0.0))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def window(orbit: psutil.Process, seconds: float, index: int) -> tuple[Series, Series]:
    """One window: a fresh baseline beside orbit, both sampled once a second in alternating order."""
    bare = subprocess.Popen([sys.executable, "-c", BASELINE], cwd=Path(__file__).resolve().parent.parent)
    try:
        baseline = psutil.Process(bare.pid)
        wait_for(lambda: "orbit.agent" in " ".join(baseline.cmdline()) and baseline.memory_info().rss > 25 * MIB)
        time.sleep(3)  # the imports are done
        ours, theirs = Series(), Series()
        began = time.monotonic()
        cpu_orbit, cpu_base = cpu_seconds(orbit), cpu_seconds(baseline)
        tick = 0
        while time.monotonic() - began < seconds:
            pair = (orbit, ours), (baseline, theirs)
            for process, series in pair if (tick + index) % 2 == 0 else reversed(pair):
                series.add(process)
            tick += 1
            time.sleep(1.0)
        wall = time.monotonic() - began
        ours.cpu_seconds, ours.wall_seconds = cpu_seconds(orbit) - cpu_orbit, wall
        theirs.cpu_seconds, theirs.wall_seconds = cpu_seconds(baseline) - cpu_base, wall
        return ours, theirs
    finally:
        bare.kill()
        bare.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--minutes", type=float, default=10.0, help="measured time in all (default 10)")
    parser.add_argument("--rounds", type=int, default=3, help="windows the time is cut into (≥ 3 for a median)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rounds = max(1, args.rounds)
    seconds = args.minutes * 60 / rounds
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="agent-footprint-") as tmp:
        world = OrbitWorld(Path(tmp))
        try:
            world.publish_osqueryd("5.14.1")
            world.publish_orbit("1.0.0")
            world.install_package("1.0.0")
            env = {k: v for k, v in world.orbit_env().items() if k not in REAL_TIMINGS}
            service = world.start_service("--update-interval", "1m", env=env)
            wait_for(lambda: world.status().get("enrolled") and world.osqueryd_pid(), timeout=60)
            time.sleep(5)
            orbit = psutil.Process(service.pid)
            helpers = HelperWatch(orbit)
            windows = [window(orbit, seconds, index) for index in range(rounds)]
            helpers.close()
            status = world.status()
            polls = status["config"]["polls"]
            same_orbit = service.pid == orbit.pid
        finally:
            world.close()
    per_window = [
        {"orbit": ours.figures(), "baseline": theirs.figures(), "rss_ratio": round(max(ours.rss) / max(theirs.rss), 2)}
        for ours, theirs in windows
    ]
    orbit_max = [max(ours.rss) for ours, _ in windows]
    base_max = [max(theirs.rss) for _, theirs in windows]
    result = {
        "minutes": args.minutes,
        "rounds": rounds,
        "orbit_rss_max_mib": {"min": round(min(orbit_max), 1), "median": round(statistics.median(orbit_max), 1)},
        "orbit_rss_max_overall_mib": round(max(orbit_max), 1),
        "orbit_rss_max_overall_mb": round(max(orbit_max) * MIB / MB, 1),
        "baseline_rss_max_mib": {"min": round(min(base_max), 1), "median": round(statistics.median(base_max), 1)},
        "rss_ratio_median": round(statistics.median(o / b for o, b in zip(orbit_max, base_max, strict=True)), 2),
        "windows": per_window,
        "config_polls": polls,
        "update_helpers_run": len(helpers.seen),
        "update_helper_rss_max_mib": round(max(helpers.seen.values()), 1) if helpers.seen else None,
        "same_orbit_process": same_orbit,
        "load_average": {"before": load_before, "after": os.getloadavg()},
    }
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"orbit over {args.minutes:g} min in {rounds} windows ({polls} config polls):")
    for index, item in enumerate(per_window, 1):
        o, b = item["orbit"], item["baseline"]
        assert isinstance(o, dict) and isinstance(b, dict)
        print(
            f"  window {index}: orbit RSS max {o['rss_max_mib']} MiB (median {o['rss_median_mib']}), USS max "
            f"{o['uss_max_mib']} MiB, CPU {o['cpu_percent']} %  |  baseline RSS {b['rss_max_mib']} MiB, USS "
            f"{b['uss_max_mib']} MiB  →  {item['rss_ratio']}×"
        )
    print(
        f"orbit RSS max: {max(orbit_max):.1f} MiB = {result['orbit_rss_max_overall_mb']} MB over the whole run "
        f"(per window min {result['orbit_rss_max_mib']['min']}, median {result['orbit_rss_max_mib']['median']} MiB; "
        f"goal ≤ 40 MB); baseline median {result['baseline_rss_max_mib']['median']} MiB → {result['rss_ratio_median']}×"
    )
    print(
        f"update checks: {result['update_helpers_run']} helper processes, peak RSS "
        f"{result['update_helper_rss_max_mib']} MiB each at most (not in orbit's figure; they exit after the check)"
    )
    print(f"load average before {load_before}, after {result['load_average']['after']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
