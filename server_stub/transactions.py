"""A context manager for one SQLite write transaction (the connection runs in autocommit mode).

``BEGIN IMMEDIATE`` takes the database's write lock at once. In one process nothing else holds it; with several
worker processes (ADR 0019) another may, and SQLite's busy handler then sleeps (1, 2, 5, 10 … ms, up to the
connection's ``busy_timeout``) — inside the event loop. How often and how long that happened is counted in
``WRITE_LOCK_WAITS`` (per process; ``/metrics`` sums the workers'), the figure that says whether the single SQLite
writer has become the limit.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

LOCK_WAIT_THRESHOLD = 0.0005  # an uncontended BEGIN IMMEDIATE takes microseconds; the busy handler sleeps ≥ 1 ms


@dataclass
class LockWaits:
    count: int = 0
    microseconds: int = 0

    def observe(self, seconds: float) -> None:
        if seconds >= LOCK_WAIT_THRESHOLD:
            self.count += 1
            self.microseconds += int(seconds * 1_000_000)


WRITE_LOCK_WAITS = LockWaits()


@contextmanager
def write_transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    started = time.perf_counter()
    conn.execute("BEGIN IMMEDIATE")
    WRITE_LOCK_WAITS.observe(time.perf_counter() - started)
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    try:
        conn.execute("COMMIT")
    except sqlite3.Error:
        # a COMMIT that fails (disk full) leaves the transaction open: roll it back, or every later BEGIN fails too
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
