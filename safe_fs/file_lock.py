"""Non-blocking inter-process locks on an open file: ``flock`` on POSIX, ``msvcrt.locking`` of byte 0 on Windows.

Locks die with their process, so there is never a stale lock to clean up. Windows has no shared mode here: a
shared probe takes the lock briefly.
"""

from __future__ import annotations

import os
import sys

if sys.platform == "win32":
    import msvcrt

    def try_lock(fd: int, *, exclusive: bool = True) -> bool:
        """Take the lock without waiting; False when another process holds it."""
        os.lseek(fd, 0, os.SEEK_SET)
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True

    def unlock(fd: int) -> None:
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)

else:
    import fcntl

    def try_lock(fd: int, *, exclusive: bool = True) -> bool:
        """Take the lock without waiting; False when another process holds it."""
        try:
            fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def unlock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)
