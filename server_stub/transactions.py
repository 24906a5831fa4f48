"""A context manager for one SQLite write transaction (the connection runs in autocommit mode)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def write_transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    conn.execute("BEGIN IMMEDIATE")
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
