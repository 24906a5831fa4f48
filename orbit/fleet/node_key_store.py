"""orbit's node key in ``<root>/secret-orbit-node-key.txt``: the raw key, no newline, 0600, replaced atomically.

Admins treat the file's presence as "enrolled", so a valid key is never deleted: a re-enrollment writes the new
key over the old one in one rename (Fleet #47650 lost keys by deleting first).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from safe_fs.atomic_write import SECRET_MODE, write_atomic
from safe_fs.secret_read import read_text_or_none

MAX_NODE_KEY_LENGTH = 1024


class NodeKeyStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._cached: str | None = None

    def load(self) -> str | None:
        with self._lock:
            if self._cached is None:
                try:
                    key = read_text_or_none(self.path, MAX_NODE_KEY_LENGTH + 64)
                except (OSError, ValueError):  # unreadable, not UTF-8, far too large
                    key = None
                if key is not None and (len(key) > MAX_NODE_KEY_LENGTH or not key.isprintable()):
                    key = None  # garbage: enroll again rather than send it
                self._cached = key
                if key is not None and os.name == "posix" and self.path.stat().st_mode & 0o077:
                    self.path.chmod(SECRET_MODE)
            return self._cached

    def save(self, key: str) -> None:
        if not key or len(key) > MAX_NODE_KEY_LENGTH or not key.isprintable():
            raise ValueError("the server returned an unusable node key")
        with self._lock:
            write_atomic(self.path, key, SECRET_MODE)
            self._cached = key

    def forget_cache(self) -> None:
        with self._lock:
            self._cached = None
