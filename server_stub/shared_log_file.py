"""``fleet-stub.log`` written by several processes at once (the parent and its workers, ADR 0019), rotated safely.

Each record is one ``write`` on an ``O_APPEND`` descriptor under an exclusive ``flock`` on ``<log>.lock``: before
writing, the process checks that the path still names the file it holds (another process may have rotated it:
then it reopens) and whether the record would take the file past ``max_bytes`` (then it rotates). So lines never
interleave, no two processes rotate the same file, and no file grows past its size. A log line costs two more
system calls than the single process's ``RotatingFileHandler``, which the single-process server keeps; the files
and their sizes are the same. The lock file is opened by each process itself (a descriptor inherited through
``fork`` would share its lock with the parent).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from pathlib import Path


class SharedRotatingLog(logging.Handler):
    def __init__(self, path: Path, max_bytes: int, backup_count: int) -> None:
        super().__init__()
        self._path = path
        self._max = max_bytes
        self._backups = backup_count
        self._lock_path = path.with_name(path.name + ".lock")
        self._fd = self._open()
        self._lock_fd = -1
        self._lock_pid = -1

    def _open(self) -> int:
        return os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)

    def _lock_descriptor(self) -> int:
        if self._lock_pid != os.getpid():
            self._lock_fd = os.open(self._lock_path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
            self._lock_pid = os.getpid()
        return self._lock_fd

    def emit(self, record: logging.LogRecord) -> None:
        try:
            data = (self.format(record) + "\n").encode("utf-8", errors="replace")
            lock = self._lock_descriptor()
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                if not self._same_file():
                    self._reopen()
                if os.fstat(self._fd).st_size + len(data) > self._max and os.fstat(self._fd).st_size > 0:
                    self._rotate()
                    self._reopen()
                os.write(self._fd, data)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
        except Exception:  # logging must never raise into the server
            self.handleError(record)

    def _same_file(self) -> bool:
        try:
            on_disk = os.stat(self._path)
        except FileNotFoundError:
            return False
        held = os.fstat(self._fd)
        return (on_disk.st_dev, on_disk.st_ino) == (held.st_dev, held.st_ino)

    def _rotate(self) -> None:
        for number in range(self._backups - 1, 0, -1):
            with contextlib.suppress(FileNotFoundError):
                os.replace(f"{self._path}.{number}", f"{self._path}.{number + 1}")
        if self._backups > 0:
            os.replace(self._path, f"{self._path}.1")
        else:
            os.truncate(self._path, 0)

    def _reopen(self) -> None:
        fresh = self._open()
        os.close(self._fd)
        self._fd = fresh

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self._fd)
        if self._lock_fd >= 0:  # this process's own, or a copy inherited through fork: closing it is ours to do
            with contextlib.suppress(OSError):
                os.close(self._lock_fd)
            self._lock_fd, self._lock_pid = -1, -1
        super().close()
