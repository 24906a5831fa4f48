"""From a published release to an enrolled host, per installer format (issue 16), next to ``dpkg -i`` of a trivial
package of the same installed size.

The field path of ``tests/field/test_field_lifecycle.py``, timed: frozen release builds (PyInstaller, cached) are
published to a TUF repository signed with real keys and served by fleet-stub; ``orbitctl package`` builds the .deb
and the .rpm from it (a whole process, binaries fetched through TUF); each round, for each format, a fresh clean
Debian 12 root is booted under its own systemd (``systemd-nspawn --boot``) and gets, in alternating order,

- **ours**: ``dpkg -i fleet-osquery_….deb`` (or ``rpm -i`` of the .rpm); its maintainer scripts enable and start
  orbit through the root's systemd; timed until the command returns, until fleet-stub records a new enrollment of
  the host (``last_enrolled_at`` moves: osqueryd, installed and started by orbit, enrolled) and until osqueryd runs;
- **baseline**: ``dpkg -i`` of a trivial package holding one file of random bytes as large as what ours installs,
  no maintainer scripts — what any package of that size costs dpkg on this machine (the same tool for both, so the
  ratio of the install commands is like for like; the rest of ours is the agent starting and enrolling).

Also printed: the package file sizes and what each installs (``du`` of ``/opt/orbit`` right after the install, and
dpkg's ``Installed-Size``). Needs root, mmdebstrap, systemd-container, zstd and rpm, like the field tests.

    .venv/bin/python benchmarks/field_install.py [--rounds 3] [--json]
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
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_support import json_safe

from tests.field.field_fleet import FieldFleet, field_fleet
from tests.field.system_root import (
    BASE_PACKAGES,
    BootedSystem,
    RootSpec,
    booted,
    extract_root,
    missing_prerequisites,
    root_tarball,
    set_hostname,
)

ENROLL_TIMEOUT_S = 180.0
ROOT_SPEC = RootSpec(packages=(*BASE_PACKAGES, "rpm"))


@dataclass
class Timing:
    install_s: float  # the install command, start to exit
    enrolled_s: float  # install start → a new enrollment recorded by fleet-stub
    osqueryd_s: float  # install start → osqueryd running under orbit


@dataclass
class FormatFigures:
    kind: str
    package_bytes: int
    build_s: float  # orbitctl package, whole process, binaries fetched through TUF
    installed_bytes: int = 0
    ours: list[Timing] = field(default_factory=list)
    baseline_s: list[float] = field(default_factory=list)


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _trivial_deb(directory: Path, size: int) -> Path:
    """A package with one incompressible file of ``size`` bytes and no scripts (dpkg-deb, gzip like ours)."""
    tree = directory / "trivial"
    (tree / "DEBIAN").mkdir(parents=True)
    (tree / "opt/trivial").mkdir(parents=True)
    with (tree / "opt/trivial/blob").open("wb") as handle:
        left = size
        while left > 0:
            chunk = min(left, 1 << 20)
            handle.write(os.urandom(chunk))
            left -= chunk
    control = "Package: trivial-blob\nVersion: 1.0\nArchitecture: amd64\nMaintainer: bench <bench@example.com>\n"
    control += f"Installed-Size: {size // 1024}\nDescription: a trivial package of the same size\n"
    (tree / "DEBIAN/control").write_text(control)
    out = directory / "trivial-blob_1.0_amd64.deb"
    subprocess.run(
        ["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", str(tree), str(out)],
        check=True,
        capture_output=True,
    )
    shutil.rmtree(tree)
    return out


def _osqueryd_running(system: BootedSystem) -> bool:
    result = system.run(["ps", "-o", "pid=", "-C", "osqueryd"], check=False)
    return bool(result.stdout.strip())


def _enrolled_at(fleet: FieldFleet) -> str | None:
    """The newest enrollment among the hosts called field-host (each fresh root is a new host to the server: its
    machine id and orbit identifier are new)."""
    times = [
        str(host["last_enrolled_at"])
        for host in fleet.hosts()
        if host.get("hostname") == "field-host" and host.get("last_enrolled_at")
    ]
    return max(times, default=None)


def _install_ours(fleet: FieldFleet, system: BootedSystem, kind: str, package: Path) -> Timing:
    shutil.copy(package, system.host_path("/var/tmp"))
    inside = f"/var/tmp/{package.name}"
    argv = ["dpkg", "-i", inside] if kind == "deb" else ["rpm", "-i", "--nodeps", inside]
    before = _enrolled_at(fleet)
    started = time.monotonic()
    system.run(argv)
    installed = time.monotonic() - started

    def enrolled() -> float | None:
        now = _enrolled_at(fleet)
        return time.monotonic() - started if now is not None and now != before else None

    def osqueryd() -> float | None:
        return time.monotonic() - started if _osqueryd_running(system) else None

    def journal() -> str:
        return system.journal("orbit.service")[-3000:]

    # the poll interval (0.2 s) bounds the error; both are waited for in parallel by polling alternately
    enrolled_s: float | None = None
    osqueryd_s: float | None = None
    deadline = time.monotonic() + ENROLL_TIMEOUT_S
    while enrolled_s is None or osqueryd_s is None:
        if time.monotonic() > deadline:
            raise AssertionError(f"{kind}: not enrolled/running within {ENROLL_TIMEOUT_S} s\n{journal()}")
        enrolled_s = enrolled_s if enrolled_s is not None else enrolled()
        osqueryd_s = osqueryd_s if osqueryd_s is not None else osqueryd()
        time.sleep(0.2)
    return Timing(round(installed, 3), round(enrolled_s, 3), round(osqueryd_s, 3))


def _install_baseline(system: BootedSystem, trivial: Path) -> float:
    shutil.copy(trivial, system.host_path("/var/tmp"))
    started = time.monotonic()
    system.run(["dpkg", "-i", f"/var/tmp/{trivial.name}"])
    return round(time.monotonic() - started, 3)


def _du(system: BootedSystem, path: str) -> int:
    return int(system.run(["du", "-sb", path]).stdout.split()[0])


def _round(
    fleet: FieldFleet, figures: FormatFigures, package: Path, trivial: dict[str, Path], ours_first: bool, work: Path
) -> None:
    """One fresh root for one format: ours and the baseline installed in it, in the given order. The trivial package
    is made after ours was first installed (it needs ours' installed size)."""
    root = extract_root(root_tarball(ROOT_SPEC), work, name=f"root-{figures.kind}")
    set_hostname(root, "field-host")
    try:
        with booted(root) as system:
            if figures.kind == "rpm":
                system.run(["rpm", "--initdb"])

            def ours() -> None:
                figures.ours.append(_install_ours(fleet, system, figures.kind, package))
                figures.installed_bytes = _du(system, "/opt/orbit")
                if figures.kind not in trivial:
                    directory = work / f"trivial-{figures.kind}"
                    directory.mkdir(exist_ok=True)
                    trivial[figures.kind] = _trivial_deb(directory, figures.installed_bytes)

            def baseline() -> None:
                figures.baseline_s.append(_install_baseline(system, trivial[figures.kind]))

            first_ours = ours_first or figures.kind not in trivial  # the baseline needs ours' size first
            steps: list[Callable[[], None]] = [ours, baseline] if first_ours else [baseline, ours]
            for step in steps:
                step()
            system.systemctl("stop", "orbit.service", check=False)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _stats(values: Sequence[float]) -> dict[str, float]:
    return {"min": round(min(values), 2), "median": round(statistics.median(values), 2)}


def report(all_figures: list[FormatFigures], load: tuple[str, str]) -> dict[str, Any]:
    formats: dict[str, Any] = {}
    for figures in all_figures:
        install = [t.install_s for t in figures.ours]
        formats[figures.kind] = {
            "package_mb": round(figures.package_bytes / 1e6, 1),
            "installed_mb": round(figures.installed_bytes / 1e6, 1),
            "build_s": round(figures.build_s, 2),
            "install_command_s": _stats(install),
            "to_enrolled_s": _stats([t.enrolled_s for t in figures.ours]),
            "to_osqueryd_running_s": _stats([t.osqueryd_s for t in figures.ours]),
            "baseline_dpkg_i_same_size_s": _stats(figures.baseline_s),
            "ratio_install_command_to_baseline_median": round(
                statistics.median(install) / statistics.median(figures.baseline_s), 2
            ),
            "rounds": [asdict(t) for t in figures.ours],
        }
    return {"load_average_start": load[0], "load_average_end": load[1], "formats": formats}


def _print(result: dict[str, Any]) -> None:
    print(f"load average: start {result['load_average_start']}, end {result['load_average_end']}")
    header = f"{'format':6} {'pkg MB':>7} {'inst MB':>8} {'build s':>8} {'install s':>15} {'enrolled s':>15}"
    header += f" {'osqueryd s':>15} {'dpkg -i same size s':>20} {'ratio':>6}"
    print(header)
    for kind, f in result["formats"].items():

        def pair(stats: dict[str, float]) -> str:
            return f"{stats['min']:.2f} / {stats['median']:.2f}"

        print(
            f"{kind:6} {f['package_mb']:>7} {f['installed_mb']:>8} {f['build_s']:>8} "
            f"{pair(f['install_command_s']):>15} {pair(f['to_enrolled_s']):>15} "
            f"{pair(f['to_osqueryd_running_s']):>15} {pair(f['baseline_dpkg_i_same_size_s']):>20} "
            f"{f['ratio_install_command_to_baseline_median']:>5}×"
        )
    print("(min / median over rounds; ratio: median install command of ours / median dpkg -i of the trivial package)")


def _load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--formats", default="deb,rpm")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    missing = missing_prerequisites() + ([] if shutil.which("rpm") else ["rpm"])
    if os.geteuid() != 0 or missing:
        print(f"needs root and {', '.join(missing) or 'nothing else'}", file=sys.stderr)
        return 2
    kinds = [k for k in args.formats.split(",") if k]
    if not kinds or any(k not in ("deb", "rpm") for k in kinds) or args.rounds < 1:
        parser.error("--formats is a list of deb,rpm and --rounds at least 1")
    load_start = _load()
    with tempfile.TemporaryDirectory(prefix="field-bench-") as tmp:
        base = Path(tmp)
        _progress("publishing frozen builds and starting fleet-stub …")
        root_tarball(ROOT_SPEC)  # built (or taken from the cache) before anything is timed
        with field_fleet(base / "fleet") as fleet:
            all_figures: list[FormatFigures] = []
            for kind in kinds:
                started = time.monotonic()
                package = fleet.package(kind, "1.0.0", base / "packages")
                all_figures.append(FormatFigures(kind, package.stat().st_size, time.monotonic() - started))
            trivial: dict[str, Path] = {}
            for index in range(args.rounds):
                for figures in all_figures:
                    package = base / "packages" / f"fleet-osquery-1.0.0.{figures.kind}"
                    ours_first = index % 2 == 0  # round 1: ours first, its installed size sizes the trivial package
                    _progress(f"round {index + 1}: {figures.kind} ({'ours' if ours_first else 'baseline'} first)")
                    _round(fleet, figures, package, trivial, ours_first, base)
    result = report(all_figures, (load_start, _load()))
    if args.json:
        print(json.dumps(json_safe(result), indent=2))
    else:
        _print(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
