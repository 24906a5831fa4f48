"""Admin reads off the event loop: one worker thread with its own read-only connection to the stub's database.

The agents' endpoints run on the event loop with the one writing connection; a Hosts page of 10 000 hosts, a
count with a filter or a version summary would hold that loop for milliseconds. Here they run in a thread on a
second connection: SQLite lets go of the GIL while it steps through a query, WAL lets the reader see every committed
write without blocking the writer, and the loop keeps serving agents meanwhile (ADR 0018). One thread, so admin
reads queue behind each other, never in front of agents.
"""

from __future__ import annotations

import asyncio
import functools
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Concatenate, ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")


class DatabaseReader:
    def __init__(self, path: Path) -> None:
        self._path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fleet-stub-reader")
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    def _connection(self) -> sqlite3.Connection:
        with self._lock:
            if self._conn is None:
                uri = self._path.absolute().as_uri() + "?mode=ro"
                conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
                conn.row_factory = sqlite3.Row
                conn.execute("PRAGMA query_only=1")
                conn.execute("PRAGMA busy_timeout=5000")
                self._conn = conn
            return self._conn

    def _call(self, fn: Callable[Concatenate[sqlite3.Connection, P], T], *args: P.args, **kwargs: P.kwargs) -> T:
        return fn(self._connection(), *args, **kwargs)

    async def run(self, fn: Callable[Concatenate[sqlite3.Connection, P], T], *args: P.args, **kwargs: P.kwargs) -> T:
        """``fn(connection, *args, **kwargs)`` in the reader thread; the caller's loop keeps running meanwhile."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(self._call, fn, *args, **kwargs))

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
