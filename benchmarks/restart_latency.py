"""How fast orbit gets osqueryd back (issue 5): kill -9 → the new osqueryd has written its pidfile, and the time
from starting orbit to "enrolled with osqueryd running" with the binaries already present.

Everything is real and on loopback: fleet-stub, a TUF repository made with orbitctl, orbit run as a service would
run it, osqueryd-sim as the published osqueryd. Baselines measured in the same run: launching the same osqueryd
command line directly until its pidfile appears (the floor any supervisor pays), and ``python -m orbit version``
(interpreter start + imports).

    .venv/bin/python benchmarks/restart_latency.py [--kills 10] [--json]
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
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="restart-latency-") as tmp:
        world = OrbitWorld(Path(tmp))
        try:
            world.publish_osqueryd("5.14.1")
            world.publish_orbit("1.0.0")
            world.install_package("1.0.0")
            # enroll-to-running: first start downloads osqueryd; the measured start has the binaries present
            world.start_service()
            wait_for(lambda: world.status().get("enrolled") and world.osqueryd_pid(), timeout=60)
            assert world.service is not None
            world.service.stop()
            (world.root / "state" / "status.json").unlink()
            began = time.perf_counter()
            # each kill below is a first failure, not a crash loop: runs of 0.5 s count as stable here
            world.start_service(env=world.orbit_env(ORBIT_DEV_STABLE_RESET="0.5"))
            wait_for(lambda: world.status().get("enrolled") and world.osqueryd_pid(), timeout=60, interval=0.01)
            enroll_to_running = time.perf_counter() - began
            pidfile = world.root / "osquery.pid"
            latencies = []
            for _ in range(args.kills):
                latencies.append(kill_and_wait(pidfile))
            osqueryd = psutil.Process(pidfile_pid(pidfile))
            argv, env = osqueryd.cmdline(), osqueryd.environ()
            world.service.stop()
            baseline_launch = statistics.median(direct_launch(world, argv, env, pidfile) for _ in range(5))
            version_started = time.perf_counter()
            subprocess.run([sys.executable, "-m", "orbit", "version"], check=True, capture_output=True)
            baseline_start = time.perf_counter() - version_started
        finally:
            world.close()
    median = statistics.median(latencies)
    result = {
        "kill_to_running_median_s": round(median, 3),
        "kill_to_running_max_s": round(max(latencies), 3),
        "direct_launch_baseline_s": round(baseline_launch, 3),
        "restart_ratio": round(median / baseline_launch, 2),
        "enroll_to_running_s": round(enroll_to_running, 3),
        "interpreter_start_baseline_s": round(baseline_start, 3),
        "enroll_ratio": round(enroll_to_running / baseline_start, 2),
        "kills": len(latencies),
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"kill -9 → new osqueryd running: median {median * 1000:.0f} ms, max {max(latencies) * 1000:.0f} ms "
            f"(goal ≤ 1 s); direct launch of the same argv {baseline_launch * 1000:.0f} ms → {result['restart_ratio']}×"
        )
        print(
            f"orbit start → enrolled, osqueryd running: {enroll_to_running:.2f} s (goal ≤ 3 s); "
            f"python -m orbit version {baseline_start:.2f} s → {result['enroll_ratio']}×"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
