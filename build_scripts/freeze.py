"""Freeze ``orbit``, ``fleet-desktop`` and ``osqueryd-sim`` with PyInstaller (ADR 0008).

``python build_scripts/freeze.py [--out DIR] [--only NAME] [--version V] [--commit SHA] [--python PY]``

* ``orbit`` and ``osqueryd-sim`` are **one-file** executables (a TUF target for them is a single executable file);
  ``fleet-desktop`` is a **one-folder** build, ``DIR/fleet-desktop/fleet-desktop`` plus ``_internal/`` — the layout
  orbit expects inside ``desktop.tar.gz`` (``build_scripts/publish.py`` packs it).
* Reproducible: PyInstaller runs with ``PYTHONHASHSEED=0`` and ``SOURCE_DATE_EPOCH`` (taken from the environment,
  else ``--source-date-epoch``, else now — then the build is stamped with the current time and says so).
* The version is baked in by a generated runtime hook that sets ``ORBIT_BUILD_VERSION`` / ``ORBIT_BUILD_COMMIT`` /
  ``ORBIT_BUILD_DATE`` (orbit) or ``FLEET_DESKTOP_BUILD_VERSION`` (fleet-desktop) before the program's first import —
  the stamp orbit/version.py and desktop_tray/version.py already read. osqueryd-sim reports the osquery version it
  imitates (osquery_sim/version.py) and needs no stamp.
* Each program is one ``python -m PyInstaller`` subprocess. ``--venvs DIR`` (releases, ADR 0010): each program is
  built by the Python of its own venv ``DIR/NAME``, installed from ``requirements/NAME.lock`` with
  ``--require-hashes`` (that program's dependencies and PyInstaller, nothing else; recreated when the lock changes),
  so the binary carries the locked versions of what it imports. Without it, by ``--python`` (default: this
  interpreter), e.g. the development venv for the tests: the excludes below keep its extras (pytest, pygments, gi,
  other programs' libraries …) out, and the dev lock holds the same versions as the programs' locks.

``--jobs 3`` runs the three PyInstaller processes side by side. Prints one line per program (mode, build seconds,
size) and writes ``DIR/freeze-report.json`` (with the interpreter and lock each program was built with).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

ROOT = Path(__file__).resolve().parent.parent
ENTRY_DIR = Path(__file__).resolve().parent / "pyinstaller"
BUNDLE_MARKER = "orbit-suite-bundle"  # the file orbit/children/stale_bundles.py recognises our bundles by

# never needed by a frozen program; present in a development venv (pytest → pygments → PIL, PyGObject, mypy …)
COMMON_EXCLUDES = (
    "tkinter",
    "_tkinter",
    "pytest",
    "_pytest",
    "pygments",
    "mypy",
    "setuptools",
    "pip",
    "gi",
    "cairo",
    "IPython",
    "starlette",
    "uvicorn",
    "packager",
    "olefile",  # orbitctl's (MSI); also found through the dev venv's other packages
    "server_stub",
    "uvloop",  # fleet-stub's event loop; hooks would collect its 13 MB extension otherwise
    "httptools",
    # httpx's optional command line (httpx._main) imports these where installed: in the dev venv (orbitctl's rich,
    # uvicorn's click), not in the programs' locks — so a build from .venv would carry 1.3 MB a release does not
    "rich",
    "click",
    "markdown_it",
    "mdurl",
)
# a daemon has no tray
NO_GUI_EXCLUDES = ("PIL", "pystray", "Xlib", "desktop_tray")


@dataclass(frozen=True)
class Program:
    name: str
    entry: str
    onefile: bool
    excludes: tuple[str, ...] = ()
    hidden_imports: tuple[str, ...] = ()
    data: tuple[tuple[str, str], ...] = ()  # (source relative to ROOT, destination inside the bundle)

    @property
    def lock(self) -> Path:
        """The hashed lock its release build environment is installed from (build_scripts/lock.py)."""
        return ROOT / "requirements" / f"{self.name}.lock"


PROGRAMS: dict[str, Program] = {
    "orbit": Program(
        name="orbit",
        entry="orbit_entry.py",
        onefile=True,
        excludes=NO_GUI_EXCLUDES,
    ),
    "fleet-desktop": Program(
        name="fleet-desktop",
        entry="fleet_desktop_entry.py",
        onefile=False,
        excludes=("orbit", "osquery_sim", "psutil"),
        # desktop_tray/tray_backend.py imports these with importlib, so the analysis cannot see them. Only pystray's
        # xorg backend is frozen (gtk/appindicator need PyGObject typelibs: gi is excluded, see ADR 0008).
        hidden_imports=("pystray", "pystray._xorg", "pystray._dummy", "Xlib.display", "Xlib.X", "Xlib.XK"),
    ),
    "osqueryd-sim": Program(
        name="osqueryd-sim",
        entry="osqueryd_sim_entry.py",
        onefile=True,
        excludes=(*NO_GUI_EXCLUDES, "orbit"),
        data=(("osquery_sim/data", "osquery_sim/data"),),
    ),
}


@dataclass(frozen=True)
class Stamp:
    version: str
    commit: str
    source_date_epoch: int

    @property
    def date(self) -> str:
        return datetime.fromtimestamp(self.source_date_epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class BuildEnvironment:
    """The interpreter PyInstaller runs with, and the lock its venv was installed from (None: a given interpreter)."""

    python: str
    lock_name: str | None = None
    lock_sha256: str | None = None


@dataclass(frozen=True)
class BuildResult:
    name: str
    onefile: bool
    path: Path
    seconds: float
    size_bytes: int
    environment: BuildEnvironment

    def as_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "mode": "onefile" if self.onefile else "onedir",
            "path": str(self.path),
            "seconds": round(self.seconds, 1),
            "size_bytes": self.size_bytes,
            "python": self.environment.python,
            "lock": self.environment.lock_name,
            "lock_sha256": self.environment.lock_sha256,
        }


class FreezeError(RuntimeError):
    """PyInstaller failed, or its output is not where it should be."""


def project_version() -> str:
    with (ROOT / "pyproject.toml").open("rb") as handle:
        return str(tomllib.load(handle)["project"]["version"])


def runtime_hook_text(program: Program, stamp: Stamp) -> str:
    if program.name == "orbit":
        values = {
            "ORBIT_BUILD_VERSION": stamp.version,
            "ORBIT_BUILD_COMMIT": stamp.commit,
            "ORBIT_BUILD_DATE": stamp.date,
        }
    elif program.name == "fleet-desktop":
        values = {"FLEET_DESKTOP_BUILD_VERSION": stamp.version}
    elif program.name == "osqueryd-sim":
        values = {"ORBIT_BUILD_VERSION": stamp.version}  # osquery_info.version = <version>+sim
    else:
        values = {}
    lines = [f'"""Build stamp of the frozen {program.name} (generated by build_scripts/freeze.py)."""', "import os", ""]
    # set, not setdefault: the stamp is the truth for this binary, also after an execve from another version
    lines += [f"os.environ[{key!r}] = {value!r}" for key, value in values.items()]
    return "\n".join(lines) + "\n"


def size_of(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def pyinstaller_command(python: str, program: Program, *, dist: Path, work: Path, hook: Path) -> list[str]:
    command = [
        python,
        "-m",
        "PyInstaller",
        "--noconfirm",
        "--clean",
        "--log-level",
        "WARN",
        "--console",
        "--onefile" if program.onefile else "--onedir",
        "--name",
        program.name,
        "--distpath",
        str(dist),
        "--workpath",
        str(work / "build"),
        "--specpath",
        str(work),
        "--paths",
        str(ROOT),
        "--runtime-hook",
        str(hook),
    ]
    for module in (*COMMON_EXCLUDES, *program.excludes):
        command += ["--exclude-module", module]
    for module in program.hidden_imports:
        command += ["--hidden-import", module]
    for source, destination in program.data:
        command += ["--add-data", f"{ROOT / source}{os.pathsep}{destination}"]
    if program.onefile:  # marks the folder the bootloader unpacks to as ours (orbit/children/stale_bundles.py)
        command += ["--add-data", f"{ENTRY_DIR / BUNDLE_MARKER}{os.pathsep}."]
    command.append(str(ENTRY_DIR / program.entry))
    return command


def build_environment(base: Mapping[str, str], stamp: Stamp) -> dict[str, str]:
    env = {k: v for k, v in base.items() if not k.startswith(("ORBIT_BUILD_", "FLEET_DESKTOP_BUILD_"))}
    env["PYTHONHASHSEED"] = "0"
    env["SOURCE_DATE_EPOCH"] = str(stamp.source_date_epoch)
    return env


def venv_python(venv: Path) -> Path:
    return venv / "Scripts" / "python.exe" if sys.platform == "win32" else venv / "bin" / "python"


def locked_environment(program: Program, venvs: Path, base_python: str) -> BuildEnvironment:
    """``venvs/NAME`` installed from the program's lock; reused while the lock is unchanged, else made anew."""
    if not program.lock.is_file():
        raise FreezeError(f"{program.lock.relative_to(ROOT)} is missing: run `make lock`")
    digest = hashlib.sha256(program.lock.read_bytes()).hexdigest()
    venv = venvs / program.name
    stamp = venv / f".installed-{digest[:16]}"
    environment = BuildEnvironment(str(venv_python(venv)), str(program.lock.relative_to(ROOT)), digest)
    with _creation_lock(venvs, program.name):
        if not stamp.is_file():
            _install_venv(program, venv, environment, base_python)
            stamp.touch()
    return environment


@contextlib.contextmanager
def _creation_lock(venvs: Path, name: str) -> Iterator[None]:
    """One process at a time makes ``venvs/NAME`` (parallel builds of one program — two versions, or test workers
    side by side — would otherwise install into, or remove, each other's venv). POSIX only: release builds on Windows
    run one process per program anyway."""
    venvs.mkdir(parents=True, exist_ok=True)
    with open(venvs / f".{name}.lock", "a+b") as handle:
        if fcntl is not None:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        yield


def _install_venv(program: Program, venv: Path, environment: BuildEnvironment, base_python: str) -> None:
    if venv.exists():
        if not (venv / "pyvenv.cfg").is_file():
            raise FreezeError(f"{venv} exists and is not a venv: not replacing it")
        shutil.rmtree(venv)  # a fresh venv: nothing from an older lock stays in the build
    pip = [environment.python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    steps = [[base_python, "-m", "venv", str(venv)], [*pip, "--require-hashes", "--requirement", str(program.lock)]]
    for command in steps:
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise FreezeError(f"{program.name}: {' '.join(command[:4])} … failed:\n{result.stderr[-4000:]}")


def freeze(program: Program, *, out: Path, stamp: Stamp, python: str, venvs: Path | None = None) -> BuildResult:
    """Build one program with ``python`` or, given ``venvs``, with the venv of its own lock."""
    environment = locked_environment(program, venvs, python) if venvs else BuildEnvironment(python)
    python = environment.python
    with tempfile.TemporaryDirectory(prefix=f"freeze-{program.name}-") as tmp:
        work = Path(tmp)
        hook = work / "pyi_rth_build_stamp.py"
        hook.write_text(runtime_hook_text(program, stamp), encoding="utf-8")
        command = pyinstaller_command(python, program, dist=out, work=work, hook=hook)
        started = time.monotonic()
        result = subprocess.run(
            command, cwd=work, env=build_environment(os.environ, stamp), capture_output=True, text=True, check=False
        )
        seconds = time.monotonic() - started
    if result.returncode != 0:
        raise FreezeError(f"PyInstaller failed for {program.name} (exit {result.returncode}):\n{result.stderr[-4000:]}")
    executable = program.name + (".exe" if sys.platform == "win32" else "")
    path = out / executable if program.onefile else out / program.name / executable
    if not path.is_file():
        raise FreezeError(f"PyInstaller reported success but {path} is missing")
    bundle = path if program.onefile else path.parent
    return BuildResult(program.name, program.onefile, path, seconds, size_of(bundle), environment)


def source_date_epoch(environ: Mapping[str, str], option: int | None) -> tuple[int, bool]:
    """The build's timestamp and whether it is pinned (reproducible) rather than "now"."""
    text = environ.get("SOURCE_DATE_EPOCH", "").strip()
    if text:
        return int(text), True
    if option is not None:
        return option, True
    return int(time.time()), False


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="freeze.py", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=ROOT / "dist", help="output directory (default: dist/)")
    parser.add_argument("--only", choices=sorted(PROGRAMS), action="append", help="build only this program")
    parser.add_argument("--version", default=None, help="version to stamp (default: pyproject's)")
    parser.add_argument("--commit", default=os.environ.get("GITHUB_SHA", "none"), help="commit to stamp")
    parser.add_argument("--source-date-epoch", type=int, default=None, help="used when SOURCE_DATE_EPOCH is unset")
    parser.add_argument(
        "--mode", choices=("default", "onefile", "onedir"), default="default", help="override (for measurements)"
    )
    parser.add_argument("--jobs", type=int, default=1, help="PyInstaller processes in parallel (default: 1)")
    parser.add_argument("--python", default=sys.executable, help="interpreter with PyInstaller (default: this one)")
    parser.add_argument(
        "--venvs",
        type=Path,
        default=None,
        help="build each program in its own venv DIR/NAME installed from requirements/NAME.lock (for releases); "
        "--python is then the interpreter the venvs are made with",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    epoch, pinned = source_date_epoch(os.environ, args.source_date_epoch)
    if not pinned:
        print(
            f"freeze: SOURCE_DATE_EPOCH unset, stamping now ({epoch}): this build is not reproducible", file=sys.stderr
        )
    stamp = Stamp(version=args.version or project_version(), commit=args.commit, source_date_epoch=epoch)
    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    names: list[str] = args.only or list(PROGRAMS)
    programs = [PROGRAMS[name] for name in names]
    if args.mode != "default":
        programs = [replace(p, onefile=args.mode == "onefile") for p in programs]
    # one PyInstaller process per program, each with its own work directory, so they may run side by side
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        venvs: Path | None = args.venvs.resolve() if args.venvs else None
        futures = [pool.submit(freeze, p, out=out, stamp=stamp, python=args.python, venvs=venvs) for p in programs]
        errors = [f.exception() for f in futures if f.exception() is not None]
    if errors:
        for error in errors:
            print(f"freeze: {error}", file=sys.stderr)
        return 1
    results = [f.result() for f in futures]
    for result in results:
        mode = "onefile" if result.onefile else "onedir"
        built_with = result.environment.lock_name or result.environment.python
        size = f"{result.size_bytes / 1e6:.1f} MB"
        print(f"{result.name}: {mode} {result.seconds:.1f} s {size} {result.path} ({built_with})")
    report = {"version": stamp.version, "commit": stamp.commit, "source_date_epoch": epoch}
    report["programs"] = [r.as_json() for r in results]
    (out / "freeze-report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
