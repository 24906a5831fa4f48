"""An exclusive inter-process lock on a directory (``safe_fs.file_lock``).

python-tuf's ``Updater`` is single-instance: two processes (the agent and ``orbitctl`` or a second agent) must
never refresh one metadata directory at the same time; likewise two installs of one target. The lock file is
``<directory>/.lock``; the lock is re-entrant within one ``DirectoryLock``.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from safe_fs.file_lock import try_lock, unlock
from tuf_updates.errors import DirectoryLockedError

LOCK_FILE_NAME = ".lock"  # not "*.json": the directory's metadata files stay the only JSON in it


class DirectoryLock:
    """Hold ``<directory>/.lock`` exclusively; waits up to ``timeout`` seconds, then ``DirectoryLockedError``."""

    def __init__(
        self,
        directory: Path,
        *,
        timeout: float = 10.0,
        poll_interval: float = 0.05,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        label: str = "metadata directory",
    ) -> None:
        self.path = directory / LOCK_FILE_NAME
        self._timeout = timeout
        self._poll = poll_interval
        self._monotonic = monotonic
        self._sleep = sleep
        self._label = label
        self._fd: int | None = None
        self._depth = 0
        self._thread_lock = threading.RLock()

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        self._thread_lock.acquire()
        if self._depth > 0:
            self._depth += 1
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            self._thread_lock.release()
            raise DirectoryLockedError(f"cannot open the lock of {self._label} {self.path}: {exc}") from exc
        give_up = self._monotonic() + self._timeout
        while not try_lock(fd):
            if self._monotonic() >= give_up:
                os.close(fd)
                self._thread_lock.release()
                raise DirectoryLockedError(f"{self._label} {self.path.parent} is in use by another process")
            self._sleep(self._poll)
        self._fd = fd
        self._depth = 1

    def release(self) -> None:
        if self._depth == 0:
            raise RuntimeError("release of an unheld DirectoryLock")
        self._depth -= 1
        if self._depth == 0 and self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                unlock(fd)
            finally:
                os.close(fd)
        self._thread_lock.release()

    def __enter__(self) -> DirectoryLock:
        self.acquire()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()
