"""A cache for expensive, deterministic build outputs (the PyInstaller builds of the tests and of ``make demo
FROZEN=1``), keyed by their inputs.

An entry is ``build/cache/<kind>/<key>/``, where ``key`` is a SHA-256 over everything the build can read:

* every file of the project outside ``tests/``, ``docs/`` and generated folders (sources, data files, build
  scripts, ``pyproject.toml``): any edit, new file or removed file gives a new key;
* the interpreter (version, path, the bytes of its executable) and every installed distribution: name, version and
  its ``RECORD`` (which lists each installed file with its hash), so a changed or reinstalled package does too;
* the Debian package database (``/var/lib/dpkg/status``): PyInstaller bundles shared libraries of the system, and
  any ``apt-get install``/upgrade changes this file;
* the environment variables PyInstaller and Python read (``PYTHON*``, ``PYINSTALLER*``) and the caller's own
  ``parts`` (the build's arguments).

A miss builds into a temporary folder beside the entry and renames it into place, so a half-written build is never
used and two sessions building at once both end with one complete entry. ``ORBIT_TESTS_NO_BUILD_CACHE=1`` builds
afresh every time (and does not store). ``make clean`` removes the cache with ``build/``.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE_DIR = ROOT / "build" / "cache"
DISABLE_ENV = "ORBIT_TESTS_NO_BUILD_CACHE"
# not inputs of a build: the tests themselves, documentation, and what tools generate
_SKIPPED_DIRS = frozenset(
    {
        ".git",
        ".venv",
        "build",
        "dist",
        "tests",
        "docs",
        "__pycache__",
        ".mypy_cache",
        ".ruff_cache",
        ".pytest_cache",
        ".demo",
    }
)
_STALE_AFTER_S = 7 * 24 * 3600  # entries of other keys not used for a week are removed


def project_files(root: Path = ROOT) -> Iterator[Path]:
    """Every file of the project a build may read, in a stable order."""
    for directory, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIPPED_DIRS and not d.endswith(".egg-info"))
        for name in sorted(filenames):
            if name != ".git" and not name.endswith(".pyc"):  # .git: a worktree's pointer file
                yield Path(directory) / name


def _add(digest: hashlib._Hash, label: str, data: bytes) -> None:
    digest.update(len(label).to_bytes(8, "big") + label.encode() + len(data).to_bytes(8, "big") + data)


def inputs_key(parts: Iterable[str]) -> str:
    digest = hashlib.sha256()
    for path in project_files():
        _add(digest, f"file:{path.relative_to(ROOT).as_posix()}", path.read_bytes())
    executable = Path(sys.executable).resolve()
    _add(digest, "python", f"{sys.version}\n{executable}".encode())
    _add(digest, "python-binary", hashlib.sha256(executable.read_bytes()).digest())
    for dist in sorted(importlib.metadata.distributions(), key=lambda d: (d.metadata["Name"] or "", d.version)):
        _add(digest, f"dist:{dist.metadata['Name']}=={dist.version}", (dist.read_text("RECORD") or "").encode())
    dpkg_status = Path("/var/lib/dpkg/status")
    if dpkg_status.is_file():
        _add(digest, "dpkg-status", dpkg_status.read_bytes())
    for name in sorted(os.environ):
        if name.startswith(("PYTHON", "PYINSTALLER")):
            _add(digest, f"env:{name}", os.environ[name].encode())
    for part in parts:
        _add(digest, "part", part.encode())
    return digest.hexdigest()[:32]


def cached_build(kind: str, parts: Iterable[str], build: Callable[[Path], None]) -> Path:
    """The output folder of ``build(out)`` for these inputs: from the cache, or built now and stored.

    The returned folder is shared: copy it before changing anything in it.
    """
    if os.environ.get(DISABLE_ENV):
        out = Path(tempfile.mkdtemp(prefix=f"{kind}-uncached-"))
        build(out)
        return out
    entries = CACHE_DIR / kind
    entry = entries / inputs_key(parts)
    if not entry.is_dir():
        entries.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{entry.name}-", dir=entries))
        try:
            build(staging)
            with contextlib.suppress(OSError):  # another session stored the same key meanwhile: keep theirs
                staging.rename(entry)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    os.utime(entry)  # marks it as used
    _remove_stale(entries, keep=entry)
    return entry


def _remove_stale(entries: Path, keep: Path) -> None:
    cutoff = time.time() - _STALE_AFTER_S
    for other in entries.iterdir():
        if other != keep and other.is_dir() and other.stat().st_mtime < cutoff:
            shutil.rmtree(other, ignore_errors=True)
