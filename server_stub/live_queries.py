"""Ad-hoc live queries on one host: the admin caller waits while the query travels through distributed/read.

The query is stored (state ``pending``), handed out on the host's next ``distributed/read`` as
``fleet_distributed_query_<id>`` (state ``sent``), and completed by the matching ``distributed/write``
(``done``). The waiting caller is woken by an in-memory event; when it gives up the query is ``expired`` and is
no longer handed out. Queries outstanding when the server stopped are expired at the next start.

With several worker processes (ADR 0019) the answer may arrive at another worker than the one holding the caller:
``complete`` then ``announce``s the query id (the worker publishes it through the parent) and every other worker's
``answered_elsewhere`` wakes its waiter. Whatever happens to that message, the waiter reads the row when it wakes,
so a lost message costs time (until the caller's timeout), never a wrong answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass

from server_stub.int_ranges import parse_id_or_none
from server_stub.transactions import write_transaction

QUERY_PREFIX = "fleet_distributed_query_"


@dataclass(frozen=True)
class LiveQueryOutcome:
    query_id: int
    answered: bool
    rows: list[dict[str, str]]
    error: str | None


@dataclass(frozen=True)
class PendingQuery:
    query_id: int
    sql: str

    @property
    def name(self) -> str:
        return f"{QUERY_PREFIX}{self.query_id}"


def query_id_from_name(name: str) -> int | None:
    if not name.startswith(QUERY_PREFIX):
        return None
    suffix = name[len(QUERY_PREFIX) :]
    return parse_id_or_none(suffix)


class LiveQueryHub:
    def __init__(self, conn: sqlite3.Connection, clock: Callable[[], float]) -> None:
        self._conn = conn
        self._clock = clock
        self._events: dict[int, asyncio.Event] = {}
        self._closing = False
        self.announce: Callable[[int], None] | None = None  # set by a worker process: tell the other workers

    def expire_leftovers(self) -> int:
        with write_transaction(self._conn):
            cur = self._conn.execute("UPDATE live_queries SET state = 'expired' WHERE state IN ('pending', 'sent')")
        return cur.rowcount

    def create(self, host_id: int, sql: str) -> int:
        with write_transaction(self._conn):
            cur = self._conn.execute(
                "INSERT INTO live_queries (host_id, sql, state, created_at) VALUES (?, ?, 'pending', ?)",
                (host_id, sql, self._clock()),
            )
        query_id = int(cur.lastrowid or 0)
        self._events[query_id] = asyncio.Event()
        return query_id

    def take_pending(self, host_id: int) -> list[PendingQuery]:
        """Queries to hand out to this host now (pending ones, marked sent)."""
        rows = self._conn.execute(
            "SELECT id, sql FROM live_queries WHERE host_id = ? AND state = 'pending' ORDER BY id", (host_id,)
        ).fetchall()
        if not rows:
            return []
        with write_transaction(self._conn):
            self._conn.executemany(
                "UPDATE live_queries SET state = 'sent', sent_at = ? WHERE id = ?",
                [(self._clock(), int(r["id"])) for r in rows],
            )
        return [PendingQuery(int(r["id"]), str(r["sql"])) for r in rows]

    def complete(self, host_id: int, query_id: int, rows: list[dict[str, str]], error: str | None) -> bool:
        """Record a host's answer; answers for other hosts' or expired queries are ignored."""
        with write_transaction(self._conn):
            cur = self._conn.execute(
                """UPDATE live_queries SET state = 'done', answered_at = ?, rows = ?, error = ?
                   WHERE id = ? AND host_id = ? AND state IN ('pending', 'sent')""",
                (self._clock(), json.dumps(rows, allow_nan=False), error, query_id, host_id),
            )
        if cur.rowcount == 0:
            return False
        event = self._events.get(query_id)
        if event is not None:
            event.set()
        elif self.announce is not None:
            self.announce(query_id)
        return True

    def answered_elsewhere(self, query_id: int) -> bool:
        """Another worker stored the answer to ``query_id``: wake its waiter here, if here it waits."""
        event = self._events.get(query_id)
        if event is None:
            return False
        event.set()
        return True

    async def wait(self, query_id: int, timeout: float) -> LiveQueryOutcome:
        event = self._events.setdefault(query_id, asyncio.Event())
        try:
            if not self._closing:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), timeout)
            row = self._conn.execute("SELECT state, rows, error FROM live_queries WHERE id = ?", (query_id,)).fetchone()
            if row is not None and row["state"] == "done":
                rows = json.loads(row["rows"] or "[]")  # written by complete(): strict JSON of strings
                return LiveQueryOutcome(query_id, True, rows, row["error"])
            with write_transaction(self._conn):
                self._conn.execute(
                    "UPDATE live_queries SET state = 'expired' WHERE id = ? AND state IN ('pending', 'sent')",
                    (query_id,),
                )
            return LiveQueryOutcome(query_id, False, [], None)
        finally:
            self._events.pop(query_id, None)

    def pending_count(self) -> int:
        row = self._conn.execute("SELECT COUNT(*) FROM live_queries WHERE state IN ('pending', 'sent')").fetchone()
        return int(row[0])

    def close(self) -> None:
        """Wake every waiter (server shutting down): they answer at once with what they have."""
        self._closing = True
        for event in self._events.values():
            event.set()


@dataclass(frozen=True)
class StoredQuery:
    """A live query as stored: what was asked, its state (pending, sent, done, expired) and the host's answer."""

    query_id: int
    host_id: int
    sql: str
    state: str
    created_at: float
    answered_at: float | None
    rows: list[dict[str, str]]
    error: str | None

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.query_id,
            "host_id": self.host_id,
            "query": self.sql,
            "state": self.state,
            "created_at": self.created_at,
            "answered_at": self.answered_at,
            "error": self.error,
            "rows": self.rows,
        }


def _stored(row: sqlite3.Row) -> StoredQuery:
    rows = json.loads(row["rows"]) if row["rows"] else []  # written by complete(): strict JSON of strings
    return StoredQuery(
        query_id=int(row["id"]),
        host_id=int(row["host_id"]),
        sql=str(row["sql"]),
        state=str(row["state"]),
        created_at=float(row["created_at"]),
        answered_at=None if row["answered_at"] is None else float(row["answered_at"]),
        rows=rows if isinstance(rows, list) else [],
        error=None if row["error"] is None else str(row["error"]),
    )


_STORED_COLUMNS = "id, host_id, sql, state, created_at, answered_at, rows, error"


def stored_query(conn: sqlite3.Connection, host_id: int, query_id: int) -> StoredQuery | None:
    row = conn.execute(
        f"SELECT {_STORED_COLUMNS} FROM live_queries WHERE id = ? AND host_id = ?", (query_id, host_id)
    ).fetchone()
    return _stored(row) if row else None


def recent_for_host(conn: sqlite3.Connection, host_id: int, limit: int = 10) -> list[StoredQuery]:
    """The host's newest live queries, newest first, without their rows (a list, not the answers)."""
    rows = conn.execute(
        "SELECT id, host_id, sql, state, created_at, answered_at, NULL AS rows, error FROM live_queries"
        " WHERE host_id = ? ORDER BY id DESC LIMIT ?",
        (host_id, limit),
    )
    return [_stored(r) for r in rows]
