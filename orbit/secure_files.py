"""Atomic, mode-exact writes for orbit's state files (node key, token, flagfile, overrides, markers).

A reader sees either the old or the new complete content, never a partial file: the content goes to a hidden temp
file in the same directory, created with the final mode (so a secret is never world-readable, not even briefly),
fsynced, renamed over the target, and the directory fsynced. Windows ACL restriction is the installer's job
(the root directory is SYSTEM/Administrators only); ``os.chmod`` there only toggles read-only.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

from orbit.update.atomic_fs import fsync_dir

SECRET_MODE = 0o600
PUBLIC_MODE = 0o644


def write_atomic(path: Path, data: bytes | str, mode: int = SECRET_MODE) -> None:
    """Replace ``path`` with ``data`` (str is UTF-8) atomically, the file having exactly ``mode``."""
    payload = data.encode("utf-8") if isinstance(data, str) else data
    temp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp, mode)  # the umask may have narrowed O_CREAT's mode (0644 files must stay readable)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise
    fsync_dir(path.parent)


def read_text_or_none(path: Path) -> str | None:
    """The file's text with surrounding whitespace removed; ``None`` when it is missing or empty."""
    try:
        text = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    return text or None


def remove_stale_temps(directory: Path) -> int:
    """Delete temp files left by a write that was killed half-way; returns how many."""
    removed = 0
    with contextlib.suppress(OSError):
        for entry in directory.iterdir():
            if entry.name.startswith(".") and entry.name.endswith(".tmp") and entry.is_file():
                with contextlib.suppress(OSError):
                    entry.unlink()
                    removed += 1
    return removed
