"""Files replaced whole or not at all.

A reader sees either the old or the new complete content, never a partial file: the content goes to a hidden temp
file in the same directory, created with the final mode (so a secret is never world-readable, not even briefly),
fsynced, renamed over the target, and the directory fsynced. Windows ACL restriction is the installer's job (the
root directory is SYSTEM/Administrators only); ``os.chmod`` there only toggles read-only.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

SECRET_MODE = 0o600
PUBLIC_MODE = 0o644
TEMP_SUFFIX = ".tmp"


def temp_path(path: Path) -> Path:
    """The hidden temporary that becomes ``path`` (``.<name>.<random>.tmp``, swept by ``remove_stale_temps``)."""
    return path.with_name(f".{path.name}.{secrets.token_hex(6)}{TEMP_SUFFIX}")


@contextlib.contextmanager
def atomic_output(path: Path, mode: int = SECRET_MODE) -> Iterator[BinaryIO]:
    """A new file beside ``path`` that replaces it (fsynced, renamed, directory fsynced) only when the block
    completes; on any error the temp file is removed and an existing ``path`` is left as it was."""
    temp = temp_path(path)
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    fd = os.open(temp, flags, mode)
    try:
        with os.fdopen(fd, "w+b") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp, mode)  # the umask may have narrowed O_CREAT's mode (0644 files must stay readable)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise
    fsync_dir(path.parent)


def install_file(finished: Path, path: Path, mode: int) -> None:
    """Put a complete file written by someone else (a tool) in place: chmod, fsync, rename over ``path``, fsync
    the directory. ``finished`` must be on ``path``'s file system (a temp directory beside it)."""
    os.chmod(finished, mode)
    with finished.open("rb") as handle:
        os.fsync(handle.fileno())
    os.replace(finished, path)
    fsync_dir(path.parent)


def write_atomic(path: Path, data: bytes | str, mode: int = SECRET_MODE) -> None:
    """Replace ``path`` with ``data`` (str is UTF-8) atomically, the file having exactly ``mode``."""
    payload = data.encode("utf-8") if isinstance(data, str) else data
    with atomic_output(path, mode) as handle:
        handle.write(payload)


def write_json_atomic(path: Path, data: object, mode: int = PUBLIC_MODE) -> None:
    """``write_atomic`` of ``data`` as indented, key-sorted JSON."""
    write_atomic(path, json.dumps(data, indent=1, sort_keys=True), mode)


def fsync_dir(path: Path) -> None:
    """Make a rename or a new entry in ``path`` durable (a no-op on Windows, where directories cannot be opened)."""
    if sys.platform == "win32":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    """fsync every regular file and directory under ``root`` (symlinks are not followed)."""
    if sys.platform == "win32":
        return
    for directory, _dirs, files in os.walk(root):
        for name in files:
            path = Path(directory, name)
            if not path.is_symlink():
                with path.open("rb") as handle:
                    os.fsync(handle.fileno())
        fsync_dir(Path(directory))


def remove_stale_temps(directory: Path) -> int:
    """Delete temp files left by a write that was killed half-way; returns how many."""
    removed = 0
    with contextlib.suppress(OSError):
        for entry in directory.iterdir():
            if entry.name.startswith(".") and entry.name.endswith(TEMP_SUFFIX) and entry.is_file():
                with contextlib.suppress(OSError):
                    entry.unlink()
                    removed += 1
    return removed
