"""``make demo FROZEN=1``: the demo's Linux targets as frozen release builds instead of launchers.

Each program is frozen by ``build_scripts/freeze.py`` (PyInstaller, the same as a release: in its own venv from
``requirements/NAME.lock``, under ``build/venvs/``) at each version the demo
publishes — orbit 1.0.0, osqueryd-sim 5.14.1 and 5.15.0 (the update the demo shows), fleet-desktop 1.0.0 — with a
fixed ``SOURCE_DATE_EPOCH``, and kept in ``build/cache/demo-frozen/`` under a key of every input
(``build_cache``), so only the first run after a change pays for PyInstaller (about a minute per program on 2
cores). macOS and Windows binaries cannot be frozen on Linux: the demo's .pkg and .msi still carry launchers.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from build_scripts.build_cache import cached_build
from build_scripts.freeze import PROGRAMS

ROOT = Path(__file__).resolve().parent.parent
EPOCH = "1700000000"  # a fixed stamp: the same sources give the same binaries, and the cache key stays put
# what the demo publishes: (program, version); the program names are freeze.py's
WANTED = (("orbit", "1.0.0"), ("osqueryd-sim", "5.14.1"), ("osqueryd-sim", "5.15.0"), ("fleet-desktop", "1.0.0"))
FREEZE_TIMEOUT_S = 900.0
VENVS = ROOT / "build" / "venvs"  # one per program, reused while its lock is unchanged (freeze.py)


class FrozenBuildError(RuntimeError):
    pass


@dataclass(frozen=True)
class FrozenBuild:
    program: str
    version: str
    path: Path  # the one-file executable, or fleet-desktop's one-folder build directory
    seconds: float  # spent now (0 when it came from the cache)

    @property
    def size_bytes(self) -> int:
        if self.path.is_file():
            return self.path.stat().st_size
        return sum(p.stat().st_size for p in self.path.rglob("*") if p.is_file() and not p.is_symlink())


def _freeze(program: str, version: str, out: Path) -> None:
    command = [
        sys.executable,
        str(ROOT / "build_scripts" / "freeze.py"),
        "--out",
        str(out),
        "--only",
        program,
        "--version",
        version,
        "--commit",
        "demo",
        "--source-date-epoch",
        EPOCH,
        # as a release is built: each program in its own venv from its lock, not this development venv
        "--venvs",
        str(VENVS),
    ]
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=FREEZE_TIMEOUT_S, check=False, stdin=subprocess.DEVNULL
    )
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-10:])
        raise FrozenBuildError(f"freezing {program} {version} failed (exit {result.returncode}):\n{tail}")


def frozen_build(program: str, version: str) -> FrozenBuild:
    started = time.monotonic()
    built: list[bool] = []

    def build(out: Path) -> None:
        built.append(True)
        _freeze(program, version, out)

    entry = cached_build("demo-frozen", [program, version, f"SOURCE_DATE_EPOCH={EPOCH}", "venvs"], build)
    path = entry / program
    if not (path.is_file() or path.is_dir()):
        raise FrozenBuildError(f"{entry} holds no {program} build")
    return FrozenBuild(program, version, path, time.monotonic() - started if built else 0.0)


def frozen_builds(progress: Callable[[str], None]) -> dict[tuple[str, str], FrozenBuild]:
    """Every build the demo publishes, from the cache or frozen now (two PyInstaller processes at a time)."""
    unknown = {program for program, _version in WANTED} - set(PROGRAMS)
    if unknown:
        raise FrozenBuildError(f"freeze.py has no program {sorted(unknown)}")
    progress("frozen builds: from build/cache/demo-frozen, or PyInstaller now (about a minute each the first time)")
    found: dict[tuple[str, str], FrozenBuild] = {}
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {wanted: pool.submit(frozen_build, *wanted) for wanted in WANTED}
        for wanted, future in futures.items():
            build = future.result()
            found[wanted] = build
            how = f"frozen in {build.seconds:.0f} s" if build.seconds else "from the cache"
            progress(f"  {build.program} {build.version}: {build.size_bytes / 1e6:.1f} MB, {how}")
    return found
