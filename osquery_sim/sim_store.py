"""What osqueryd keeps in its database (``--database_path``): node key, instance id, buffered logs, query state.

Real osquery uses RocksDB; the sim uses one SQLite file in the same directory. Buffered log lines stay until the
server acknowledged them, so nothing is lost across outages or restarts. With ``--ephemeral`` or
``--disable_database`` everything lives in memory only.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from dataclasses import dataclass
from pathlib import Path

STORE_FILE = "osquery-sim.sqlite3"

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS log_buffer (
        id INTEGER PRIMARY KEY AUTOINCREMENT, log_type TEXT NOT NULL, line TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS log_buffer_by_type ON log_buffer(log_type, id)",
    """CREATE TABLE IF NOT EXISTS query_state (
        name TEXT PRIMARY KEY, sql TEXT NOT NULL, rows TEXT NOT NULL, counter INTEGER NOT NULL, last_run REAL)""",
    """CREATE TABLE IF NOT EXISTS distributed_running (
        sql TEXT PRIMARY KEY, started REAL NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS distributed_denylist (
        sql TEXT PRIMARY KEY, until REAL NOT NULL)""",
)


@dataclass(frozen=True)
class BufferedLine:
    id: int
    line: str


@dataclass(frozen=True)
class QueryState:
    rows: list[dict[str, str]]
    counter: int


class SimStore:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        for statement in _SCHEMA:
            conn.execute(statement)

    @classmethod
    def open(cls, database_path: str, *, in_memory: bool = False) -> SimStore:
        if in_memory or not database_path:
            return cls(sqlite3.connect(":memory:", isolation_level=None))
        directory = Path(database_path)
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        conn = sqlite3.connect(directory / STORE_FILE, isolation_level=None, timeout=10)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        return cls(conn)

    def close(self) -> None:
        self._conn.close()

    # --- key/value ----------------------------------------------------------------------------------------

    def get(self, key: str) -> str | None:
        row = self._conn.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def put(self, key: str, value: str) -> None:
        self._conn.execute(
            "INSERT INTO kv (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    def delete(self, key: str) -> None:
        self._conn.execute("DELETE FROM kv WHERE key = ?", (key,))

    def instance_id(self) -> str:
        """A random id created with the database and kept for its life (osquery's ``instance_id``)."""
        existing = self.get("instance_id")
        if existing:
            return existing
        created = str(uuid.uuid4())
        self.put("instance_id", created)
        return created

    # --- buffered logs --------------------------------------------------------------------------------------

    def buffer_lines(self, log_type: str, lines: list[str], max_lines: int) -> int:
        """Append lines; beyond ``max_lines`` buffered in all, the oldest are purged. Returns lines purged."""
        self._conn.execute("BEGIN")
        self._conn.executemany(
            "INSERT INTO log_buffer (log_type, line) VALUES (?, ?)", [(log_type, line) for line in lines]
        )
        purged = 0
        if max_lines > 0:
            total = int(self._conn.execute("SELECT COUNT(*) FROM log_buffer").fetchone()[0])
            if total > max_lines:
                purged = total - max_lines
                self._conn.execute(
                    "DELETE FROM log_buffer WHERE id IN (SELECT id FROM log_buffer ORDER BY id LIMIT ?)", (purged,)
                )
        self._conn.execute("COMMIT")
        return purged

    def peek_lines(self, log_type: str, limit: int) -> list[BufferedLine]:
        rows = self._conn.execute(
            "SELECT id, line FROM log_buffer WHERE log_type = ? ORDER BY id LIMIT ?", (log_type, limit)
        )
        return [BufferedLine(int(r[0]), str(r[1])) for r in rows]

    def drop_lines(self, ids: list[int]) -> None:
        self._conn.execute("BEGIN")
        self._conn.executemany("DELETE FROM log_buffer WHERE id = ?", [(i,) for i in ids])
        self._conn.execute("COMMIT")

    def buffered_count(self, log_type: str | None = None) -> int:
        if log_type is None:
            return int(self._conn.execute("SELECT COUNT(*) FROM log_buffer").fetchone()[0])
        return int(self._conn.execute("SELECT COUNT(*) FROM log_buffer WHERE log_type = ?", (log_type,)).fetchone()[0])

    # --- scheduled query state --------------------------------------------------------------------------------

    def query_state(self, name: str, sql: str) -> QueryState | None:
        """The previous results of a scheduled query; a changed SQL text starts over (as osquery does)."""
        row = self._conn.execute("SELECT sql, rows, counter FROM query_state WHERE name = ?", (name,)).fetchone()
        if row is None or row[0] != sql:
            return None
        return QueryState(json.loads(row[1]), int(row[2]))

    def save_query_state(self, name: str, sql: str, rows: list[dict[str, str]], counter: int, now: float) -> None:
        self._conn.execute(
            """INSERT INTO query_state (name, sql, rows, counter, last_run) VALUES (?, ?, ?, ?, ?)
               ON CONFLICT(name) DO UPDATE SET sql = excluded.sql, rows = excluded.rows, counter = excluded.counter,
               last_run = excluded.last_run""",
            (name, sql, json.dumps(rows), counter, now),
        )

    # --- distributed denylist ---------------------------------------------------------------------------------

    def mark_running(self, sql: str, now: float) -> None:
        self._conn.execute("INSERT OR REPLACE INTO distributed_running (sql, started) VALUES (?, ?)", (sql, now))

    def clear_running(self, sql: str) -> None:
        self._conn.execute("DELETE FROM distributed_running WHERE sql = ?", (sql,))

    def denylist_crashed(self, now: float, duration: float) -> int:
        """Queries that were running when the process died are denylisted for ``duration`` seconds."""
        rows = self._conn.execute("SELECT sql FROM distributed_running").fetchall()
        for (sql,) in rows:
            self._conn.execute(
                "INSERT OR REPLACE INTO distributed_denylist (sql, until) VALUES (?, ?)", (sql, now + duration)
            )
        self._conn.execute("DELETE FROM distributed_running")
        return len(rows)

    def is_denylisted(self, sql: str, now: float) -> bool:
        row = self._conn.execute("SELECT until FROM distributed_denylist WHERE sql = ?", (sql,)).fetchone()
        return row is not None and float(row[0]) > now
