"""How fast ``orbitctl package`` builds each format (issue 7; goals: deb ≤ 1.2× ``dpkg-deb --build`` of the same
tree, pkg/rpm/msi ≤ 5 s each) from a fixed 60 MB payload of incompressible bytes with local targets.

Baseline in the same run: ``dpkg-deb --build --root-owner-group -Zgzip -z6`` of the same files laid out as a tree.

    .venv/bin/python benchmarks/packager_speed.py [--mb 60] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from packager.formats import deb, msi, pkg, rpm
from packager.package.staged import StagedPackage
from tests.support.staged_package import make_staged

BUILDERS = {"deb": deb.build, "rpm": rpm.build, "pkg": pkg.build, "msi": msi.build}
PLATFORM = {"deb": "linux", "rpm": "linux", "pkg": "macos", "msi": "windows"}


def incompressible(staged: StagedPackage, megabytes: int) -> None:
    """Replace the two executables' bytes with random data, half the payload each."""
    for item in staged.files:
        if item.mode == 0o755:
            item.source.write_bytes(os.urandom(megabytes * 1024 * 1024 // 2))


def timed(build: object, staged: StagedPackage, outfile: Path, runs: int = 3) -> float:
    times = []
    for _ in range(runs):
        outfile.unlink(missing_ok=True)
        began = time.perf_counter()
        build(staged, outfile)  # type: ignore[operator]
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def dpkg_deb_baseline(staged: StagedPackage, work: Path) -> float:
    tree = work / "tree"
    shutil.rmtree(tree, ignore_errors=True)
    (tree / "DEBIAN").mkdir(parents=True)
    (tree / "DEBIAN" / "control").write_text(
        "Package: fleet-osquery\nVersion: 1.2.3\nArchitecture: amd64\nMaintainer: bench <bench@example.com>\n"
        "Description: baseline\n"
    )
    for item in staged.files:
        target = tree / "opt" / "orbit" / item.path
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(item.source, target)
    times = []
    for _ in range(3):
        began = time.perf_counter()
        subprocess.run(
            ["dpkg-deb", "--build", "--root-owner-group", "-Zgzip", "-z6", str(tree), str(work / "baseline.deb")],
            check=True,
            capture_output=True,
        )
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=60)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="packager-speed-") as tmp:
        work = Path(tmp)
        for kind, build in BUILDERS.items():
            staged = make_staged(work / kind, PLATFORM[kind])
            incompressible(staged, args.mb)
            results[kind] = timed(build, staged, work / f"out-{kind}")
            if kind == "deb":
                results["dpkg_deb_baseline"] = dpkg_deb_baseline(staged, work)
    results["deb_ratio"] = results["deb"] / results["dpkg_deb_baseline"]
    if args.json:
        print(json.dumps({key: round(value, 3) for key, value in results.items()}))
    else:
        print(f"{args.mb} MB of incompressible payload, median of 3 builds each:")
        for kind in BUILDERS:
            print(f"  {kind}: {results[kind]:.2f} s")
        print(
            f"  dpkg-deb --build (gzip -6) of the same tree: {results['dpkg_deb_baseline']:.2f} s "
            f"→ deb {results['deb_ratio']:.2f}× (goal ≤ 1.2×; pkg, rpm, msi goal ≤ 5 s)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
