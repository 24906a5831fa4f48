"""How fast ``orbitctl package`` builds each format (issues 7 and 19; goals: the whole ``orbitctl package --type deb``
command ≤ 1.2× a whole ``dpkg-deb --build`` process of the same tree with the binaries cached; pkg, rpm, msi ≤ 5 s
each) from ``--mb`` MB of incompressible binaries (orbit and osqueryd, half each).

Everything is timed as a whole process, as a user runs it: ``orbitctl package`` from its start (interpreter,
imports, the TUF refresh against a local fleet-stub over TLS, the binaries, the build, the output's hash) to its
exit. The binaries come from ``--cache-dir`` (filled by one untimed build first; every cached byte is verified
against the signed hashes again, as a download is). Baseline in the same run: ``dpkg-deb --build --root-owner-group
-Zgzip -z6`` of exactly the tree our .deb holds (unpacked from it with ``dpkg-deb -R``, control files included),
followed by ``sync FILE`` in the same timed shell: orbitctl fsyncs its output before renaming it into place, so the
baseline's output is made as durable (on a busy disk that fsync alone can take seconds).
Also shown: the same deb command without the cache (the binaries downloaded and verified each time).

Each round runs every command once, in an order that rotates from round to round (so no command always runs
first or last); figures are min / median over ``--rounds`` (≥ 3).

    .venv/bin/python benchmarks/packager_speed.py [--mb 60] [--rounds 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.orbit_world import OrbitWorld

ORBITCTL = [sys.executable, "-m", "packager", "package"]
SECRET = "bench-enroll-secret"
EXTENSIONS = {"deb": ".deb", "rpm": ".rpm", "pkg": ".pkg", "msi": ".msi"}


def random_file(path: Path, size: int) -> Path:
    with path.open("wb") as out:
        left = size
        while left:
            step = min(left, 1 << 20)
            out.write(os.urandom(step))
            left -= step
    path.chmod(0o755)
    return path


def app_archive(path: Path, executable: Path) -> Path:
    """osqueryd for macOS is an app bundle in a tar.gz (stored, not compressed: the bytes are random anyway)."""
    with tarfile.open(path, "w:gz", compresslevel=1) as tar:
        for folder in ("osquery.app", "osquery.app/Contents", "osquery.app/Contents/MacOS"):
            info = tarfile.TarInfo(folder)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        info = tarfile.TarInfo("osquery.app/Contents/MacOS/osqueryd")
        info.size, info.mode = executable.stat().st_size, 0o755
        with executable.open("rb") as handle:
            tar.addfile(info, handle)
    return path


def publish_everything(world: OrbitWorld, work: Path, megabytes: int) -> None:
    half = megabytes * 1024 * 1024 // 2
    orbit, osqueryd = random_file(work / "orbit", half), random_file(work / "osqueryd", half)
    world.publish("orbit", orbit, "1.4.2")
    world.publish("osqueryd", osqueryd, "5.14.1")
    world.publish_to("orbit", orbit, "1.4.2", "macos")
    world.publish_to("osqueryd", app_archive(work / "osqueryd.app.tar.gz", osqueryd), "5.14.1", "macos-app")
    windows_orbit = shutil.copyfile(orbit, work / "orbit.exe")
    windows_osqueryd = shutil.copyfile(osqueryd, work / "osqueryd.exe")
    world.publish_to("orbit", windows_orbit, "1.4.2", "windows")
    world.publish_to("osqueryd", windows_osqueryd, "5.14.1", "windows")


CPU_SECONDS: dict[str, list[float]] = {}  # command name → CPU time (user + system, children included) per run


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(argv: list[str], env: dict[str, str] | None = None, name: str = "") -> float:
    """Wall seconds of the whole process; its CPU seconds go to ``CPU_SECONDS[name]``."""
    cpu = children_cpu()
    began = time.perf_counter()
    subprocess.run(argv, env=env, check=True, stdin=subprocess.DEVNULL, capture_output=True)
    wall = time.perf_counter() - began
    CPU_SECONDS.setdefault(name, []).append(children_cpu() - cpu)
    return wall


def summary(values: list[float]) -> dict[str, float]:
    return {"min": round(min(values), 3), "median": round(statistics.median(values), 3)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--mb", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--formats", default="deb,rpm,pkg,msi", help="whole commands to time besides the deb goal")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rounds = max(1, args.rounds)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="packager-speed-") as tmp:
        work = Path(tmp)
        world = OrbitWorld(work / "world")
        try:
            publish_everything(world, work, args.mb)
            cache = work / "cache"
            env = {**os.environ, "ORBITCTL_ENROLL_SECRET": SECRET, "SOURCE_DATE_EPOCH": "1700000000"}
            common = ["--fleet-url", world.url, "--fleet-certificate", world.ca, "--update-url", world.tuf_url]
            common += ["--update-tls-certificate", world.ca, "--update-roots", str(world.root_json)]

            def orbitctl(kind: str, *, cached: bool = True) -> list[str]:
                out = work / f"out-{kind}{'' if cached else '-nocache'}{EXTENSIONS[kind]}"
                return [*ORBITCTL, "--type", kind, *common, "--outfile", str(out)] + (
                    ["--cache-dir", str(cache)] if cached else []
                )

            timed(orbitctl("deb"), env)  # fills the cache (not timed)
            tree = work / "tree"
            subprocess.run(["dpkg-deb", "-R", str(work / "out-deb.deb"), str(tree)], check=True)
            # orbitctl syncs its output before the rename (safe_fs); dpkg-deb does not: the baseline gets the same
            # durability with coreutils' `sync FILE` (an fsync of that file) in the same timed process
            base_deb = work / "base.deb"
            dpkg = ["sh", "-c", 'dpkg-deb --build --root-owner-group -Zgzip -z6 "$1" "$2" && sync "$2"', "sh"]
            dpkg += [str(tree), str(base_deb)]
            kinds = [kind for kind in args.formats.split(",") if kind in EXTENSIONS and kind != "deb"]
            for kind in kinds:
                timed(orbitctl(kind), env)  # each platform's binaries into the cache, untimed
            commands: dict[str, Callable[[], float]] = {
                "deb": lambda: timed(orbitctl("deb"), env, "deb"),
                "dpkg-deb": lambda: timed(dpkg, name="dpkg-deb"),
                "deb-uncached": lambda: timed(orbitctl("deb", cached=False), env, "deb-uncached"),
            }
            for kind in kinds:
                commands[kind] = lambda kind=kind: timed(orbitctl(kind), env, kind)  # type: ignore[misc]
            times: dict[str, list[float]] = {name: [] for name in commands}
            names = list(commands)
            for index in range(rounds):
                shift = index % len(names)
                for name in names[shift:] + names[:shift]:
                    times[name].append(commands[name]())
        finally:
            world.close()
    deb_ratio = statistics.median(times["deb"]) / statistics.median(times["dpkg-deb"])
    uncached_ratio = statistics.median(times["deb-uncached"]) / statistics.median(times["dpkg-deb"])
    result = {
        "mb": args.mb,
        "rounds": rounds,
        "seconds": {name: summary(values) for name, values in times.items()},
        "cpu_seconds": {name: summary(CPU_SECONDS[name]) for name in times},
        "deb_vs_dpkg_deb_cpu_median": round(
            statistics.median(CPU_SECONDS["deb"]) / statistics.median(CPU_SECONDS["dpkg-deb"]), 2
        ),
        "deb_vs_dpkg_deb_median": round(deb_ratio, 2),
        "deb_vs_dpkg_deb_best": round(min(times["deb"]) / min(times["dpkg-deb"]), 2),
        "deb_uncached_vs_dpkg_deb_median": round(uncached_ratio, 2),
        "load_average": {"before": load_before, "after": os.getloadavg()},
    }
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{args.mb} MB of incompressible binaries, whole processes, {rounds} rounds (min / median):")
    for name, values in times.items():
        cpu = CPU_SECONDS[name]
        print(
            f"  {name:>13}: {min(values):.2f} / {statistics.median(values):.2f} s wall, "
            f"{min(cpu):.2f} / {statistics.median(cpu):.2f} s CPU"
        )
    print(
        f"  orbitctl package --type deb (binaries cached) vs dpkg-deb --build: {deb_ratio:.2f}× median, "
        f"{result['deb_vs_dpkg_deb_best']}× best (goal ≤ 1.2×); without the cache {uncached_ratio:.2f}×; "
        f"CPU time {result['deb_vs_dpkg_deb_cpu_median']}× (gzip on every core shortens the wall time, not the CPU)"
    )
    print(f"  load average before {load_before}, after {result['load_average']['after']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
