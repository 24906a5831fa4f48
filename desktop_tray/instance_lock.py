"""One fleet-desktop per user: a non-blocking exclusive lock on ``<log dir>/Fleet/fleet-desktop.lock``.

The lock belongs to the open file, so the OS drops it when the process dies (no stale-pidfile problem). The holder
writes its pid into the file so that the refusal message can name it.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from types import TracebackType

if sys.platform == "win32":
    import msvcrt
else:
    import fcntl

LOCK_FILE_NAME = "fleet-desktop.lock"


class AlreadyRunningError(Exception):
    def __init__(self, path: Path, pid: int | None) -> None:
        holder = f" (pid {pid})" if pid else ""
        super().__init__(f"another fleet-desktop is already running for this user{holder}; lock file {path}")
        self.path = path
        self.pid = pid


def _holder_pid(path: Path) -> int | None:
    try:
        text = path.read_text(encoding="ascii", errors="replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _try_lock(fd: int) -> bool:
    if sys.platform == "win32":
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # BlockingIOError (EWOULDBLOCK) when someone holds it
        return False
    return True


class InstanceLock:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        if not _try_lock(fd):
            os.close(fd)
            raise AlreadyRunningError(self.path, _holder_pid(self.path))
        self._fd = fd
        with contextlib.suppress(OSError):
            if sys.platform != "win32":  # on Windows the locked byte cannot be rewritten through another handle
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        os.close(fd)  # closing drops the lock; the file stays (deleting it would race with a starting instance)

    def __enter__(self) -> InstanceLock:
        self.acquire()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()
