"""osqueryd's pidfile: refuse to start while a live process holds it, unless ``--force``."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import psutil


class PidfileBusy(RuntimeError):
    pass


def holder(path: Path) -> int | None:
    """The live process recorded in ``path`` (not us), or None when absent, stale or unreadable."""
    try:
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    if not text.isdigit():
        return None
    pid = int(text)
    if pid == os.getpid() or not psutil.pid_exists(pid):
        return None
    try:
        if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
            return None
    except psutil.Error:
        return None
    return pid


def acquire(path: Path, *, force: bool) -> None:
    busy = holder(path)
    if busy is not None and not force:
        raise PidfileBusy(f"Pidfile::Error::Busy: {path} is held by running process {busy}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(f"{os.getpid()}\n", encoding="ascii")
    os.replace(tmp, path)


def release(path: Path) -> None:
    if holder(path) is None:
        with contextlib.suppress(OSError):
            if path.read_text(encoding="ascii").strip() == str(os.getpid()):
                path.unlink()
