"""How fast orbit gets osqueryd back (issue 5): kill -9 → the new osqueryd has written its pidfile, and the time
from starting orbit to "enrolled with osqueryd running" with the binaries already present.

Everything is real and on loopback: fleet-stub, a TUF repository made with orbitctl, orbit run as a service would
run it, osqueryd-sim as the published osqueryd. Baselines measured in the same run: launching the same osqueryd
command line directly until its pidfile appears (the floor any supervisor pays), and ``python -m orbit version``
(interpreter start + imports).

``--rounds`` (default 3) alternate the two: orbit starts (timed: start → enrolled, binaries present), osqueryd is
killed ``--kills`` times, orbit stops, then the direct launches and ``orbit version`` run; figures are min / median
over all samples of all rounds.

    .venv/bin/python benchmarks/restart_latency.py [--kills 10] [--rounds 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psutil

from tests.support.orbit_world import OrbitWorld, wait_for


def pidfile_pid(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def kill_and_wait(pidfile: Path) -> float:
    """kill -9 the running osqueryd; seconds until a new one has written its pidfile."""
    old = wait_for(lambda: pidfile_pid(pidfile), timeout=30)
    time.sleep(1.0)  # let it settle into its loop
    killed = time.perf_counter()
    os.kill(old, signal.SIGKILL)
    wait_for(lambda: (pid := pidfile_pid(pidfile)) not in (None, old) and psutil.pid_exists(pid), 30, 0.002)
    return time.perf_counter() - killed


def direct_launch(world: OrbitWorld, argv: list[str], env: dict[str, str], pidfile: Path) -> float:
    pidfile.unlink(missing_ok=True)
    began = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: pidfile_pid(pidfile) == proc.pid, timeout=30, interval=0.002)
    elapsed = time.perf_counter() - began
    proc.send_signal(signal.SIGTERM)
    proc.wait(30)
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--kills", type=int, default=10, help="kills in all, spread over the rounds")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rounds = max(1, args.rounds)
    latencies: list[float] = []
    launches: list[float] = []
    starts: list[float] = []
    versions: list[float] = []
    with tempfile.TemporaryDirectory(prefix="restart-latency-") as tmp:
        world = OrbitWorld(Path(tmp))
        try:
            world.publish_osqueryd("5.14.1")
            world.publish_orbit("1.0.0")
            world.install_package("1.0.0")
            # the first start downloads osqueryd (untimed); every measured start has the binaries present
            world.start_service()
            wait_for(lambda: world.status().get("enrolled") and world.osqueryd_pid(), timeout=60)
            assert world.service is not None
            world.service.stop()
            pidfile = world.root / "osquery.pid"
            for index in range(rounds):
                (world.root / "state" / "status.json").unlink(missing_ok=True)
                began = time.perf_counter()
                # each kill below is a first failure, not a crash loop: runs of 0.5 s count as stable here
                world.start_service(env=world.orbit_env(ORBIT_DEV_STABLE_RESET="0.5"))
                wait_for(lambda: world.status().get("enrolled") and world.osqueryd_pid(), timeout=60, interval=0.01)
                starts.append(time.perf_counter() - began)
                kills = args.kills // rounds + (1 if index < args.kills % rounds else 0)
                latencies.extend(kill_and_wait(pidfile) for _ in range(max(1, kills)))
                osqueryd = psutil.Process(pidfile_pid(pidfile))
                argv, env = osqueryd.cmdline(), osqueryd.environ()
                world.service.stop()
                launches.extend(direct_launch(world, argv, env, pidfile) for _ in range(3))
                version_started = time.perf_counter()
                subprocess.run([sys.executable, "-m", "orbit", "version"], check=True, capture_output=True)
                versions.append(time.perf_counter() - version_started)
        finally:
            world.close()
    median = statistics.median(latencies)
    baseline_launch = statistics.median(launches)
    start, baseline_start = statistics.median(starts), statistics.median(versions)
    result = {
        "kill_to_running_median_s": round(median, 3),
        "kill_to_running_min_s": round(min(latencies), 3),
        "kill_to_running_max_s": round(max(latencies), 3),
        "direct_launch_baseline_median_s": round(baseline_launch, 3),
        "direct_launch_baseline_min_s": round(min(launches), 3),
        "restart_ratio": round(median / baseline_launch, 2),
        "enroll_to_running_median_s": round(start, 3),
        "enroll_to_running_min_s": round(min(starts), 3),
        "interpreter_start_baseline_median_s": round(baseline_start, 3),
        "enroll_ratio": round(start / baseline_start, 2),
        "kills": len(latencies),
        "rounds": rounds,
        "load_average": os.getloadavg(),
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"kill -9 → new osqueryd running: median {median * 1000:.0f} ms (min {min(latencies) * 1000:.0f}, max "
            f"{max(latencies) * 1000:.0f}; goal ≤ 1 s); direct launch of the same argv median "
            f"{baseline_launch * 1000:.0f} ms (min {min(launches) * 1000:.0f}) → {result['restart_ratio']}×"
        )
        print(
            f"orbit start → enrolled, osqueryd running: median {start:.2f} s (min {min(starts):.2f}; goal ≤ 3 s); "
            f"python -m orbit version median {baseline_start:.2f} s → {result['enroll_ratio']}×  "
            f"({len(latencies)} kills, {rounds} rounds, load {result['load_average']})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
