"""orbit's footprint while it does its job (issue 5; goal ≤ 40 MB RSS, ≤ 0.5 % of a core): RSS and CPU of the
orbit process alone (not osqueryd) over ``--minutes`` with Fleet's real intervals — config every 30 s, an update
check every minute (``--update-interval 1m``, Fleet's default is 15 min), osqueryd supervised.

Baseline in the same run: a bare interpreter that imports the same libraries orbit imports and then idles.

    .venv/bin/python benchmarks/agent_footprint.py [--minutes 10] [--json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psutil

from tests.support.orbit_world import OrbitWorld, wait_for

BASELINE = "import orbit, orbit.agent, orbit.__main__, httpx, psutil, tuf.ngclient; import time; time.sleep(3600)"
REAL_TIMINGS = ("ORBIT_DEV_CONFIG_INTERVAL", "ORBIT_DEV_CONFIG_MAX_BACKOFF", "ORBIT_DEV_STATUS_INTERVAL")


def sample(process: psutil.Process, seconds: float) -> tuple[float, float, float, float]:
    """(max RSS MiB, mean RSS MiB, CPU % of one core, max USS MiB) over ``seconds``.

    USS (memory unique to the process) leaves out shared library pages that RSS counts for every process."""
    cpu_before = sum(process.cpu_times()[:2])
    rss: list[float] = []
    uss: list[float] = []
    began = time.monotonic()
    while time.monotonic() - began < seconds:
        info = process.memory_full_info()
        rss.append(info.rss / 2**20)
        uss.append(info.uss / 2**20)
        time.sleep(1.0)
    cpu = sum(process.cpu_times()[:2]) - cpu_before
    return max(rss), sum(rss) / len(rss), 100.0 * cpu / (time.monotonic() - began), max(uss)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    seconds = args.minutes * 60
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
            max_rss, mean_rss, cpu, max_uss = sample(orbit, seconds)
            polls = world.status()["config"]["polls"]
            bare = subprocess.Popen([sys.executable, "-c", BASELINE])
            try:
                time.sleep(3)
                base_max, _base_mean, base_cpu, base_uss = sample(psutil.Process(bare.pid), min(seconds, 30))
            finally:
                bare.kill()
                bare.wait()
        finally:
            world.close()
    result = {
        "minutes": args.minutes,
        "orbit_rss_max_mib": round(max_rss, 1),
        "orbit_rss_mean_mib": round(mean_rss, 1),
        "orbit_uss_max_mib": round(max_uss, 1),
        "orbit_cpu_percent": round(cpu, 3),
        "config_polls": polls,
        "baseline_rss_mib": round(base_max, 1),
        "baseline_uss_mib": round(base_uss, 1),
        "baseline_cpu_percent": round(base_cpu, 3),
        "rss_ratio": round(max_rss / base_max, 2),
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"orbit over {args.minutes:g} min: RSS max {max_rss:.1f} MiB (mean {mean_rss:.1f}; goal ≤ 40 MB), "
            f"USS max {max_uss:.1f} MiB, "
            f"CPU {cpu:.3f} % of a core (goal ≤ 0.5 %), {polls} config polls"
        )
        print(
            f"bare interpreter with the same imports: RSS {base_max:.1f} MiB, USS {base_uss:.1f} MiB, "
            f"CPU {base_cpu:.3f} % "
            f"→ orbit/baseline RSS {result['rss_ratio']}×"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
