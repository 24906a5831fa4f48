"""Scripts queued for a host and run by orbit (docs/reference/fleet-api.md §4.6).

Queued scripts show up in the host's orbit config as ``notifications.pending_script_execution_ids`` until orbit
posts a result; orbit then fetches each with ``scripts/request`` and reports with ``scripts/result``.
"""

from __future__ import annotations

import sqlite3
import uuid
from dataclasses import dataclass

from server_stub.transactions import write_transaction

MAX_OUTPUT_CHARS = 40_000


@dataclass(frozen=True)
class ScriptExecution:
    execution_id: str
    host_id: int
    contents: str
    timeout: int | None
    created_at: float
    exit_code: int | None
    output: str
    runtime: int
    completed_at: float | None

    def to_json(self, team_id: int | None) -> dict[str, object]:
        """Fleet's HostScriptResult."""
        return {
            "host_id": self.host_id,
            "execution_id": self.execution_id,
            "script_contents": self.contents,
            "output": self.output,
            "runtime": self.runtime,
            "exit_code": self.exit_code,
            "timeout": self.timeout,
            "script_id": None,
            "policy_id": None,
            "team_id": team_id,
            "message": ""
            if self.completed_at is not None
            else "Script is running or will run when the host comes online.",
            "created_at": self.created_at,
        }


def _execution(row: sqlite3.Row) -> ScriptExecution:
    return ScriptExecution(
        execution_id=str(row["execution_id"]),
        host_id=int(row["host_id"]),
        contents=str(row["contents"]),
        timeout=None if row["timeout"] is None else int(row["timeout"]),
        created_at=float(row["created_at"]),
        exit_code=None if row["exit_code"] is None else int(row["exit_code"]),
        output=str(row["output"]),
        runtime=int(row["runtime"]),
        completed_at=None if row["completed_at"] is None else float(row["completed_at"]),
    )


def queue(conn: sqlite3.Connection, host_id: int, contents: str, timeout: int | None, now: float) -> ScriptExecution:
    execution_id = str(uuid.uuid4())
    with write_transaction(conn):
        conn.execute(
            "INSERT INTO scripts (execution_id, host_id, contents, timeout, created_at) VALUES (?, ?, ?, ?, ?)",
            (execution_id, host_id, contents, timeout, now),
        )
    found = get(conn, execution_id)
    assert found is not None
    return found


def get(conn: sqlite3.Connection, execution_id: str) -> ScriptExecution | None:
    row = conn.execute("SELECT * FROM scripts WHERE execution_id = ?", (execution_id,)).fetchone()
    return _execution(row) if row else None


def recent_for_host(conn: sqlite3.Connection, host_id: int, limit: int = 10) -> list[ScriptExecution]:
    """The host's newest script executions, newest first (pending ones included)."""
    rows = conn.execute(
        "SELECT * FROM scripts WHERE host_id = ? ORDER BY created_at DESC, rowid DESC LIMIT ?", (host_id, limit)
    )
    return [_execution(r) for r in rows]


def pending_ids(conn: sqlite3.Connection, host_id: int) -> list[str]:
    rows = conn.execute(
        "SELECT execution_id FROM scripts WHERE host_id = ? AND completed_at IS NULL ORDER BY created_at",
        (host_id,),
    )
    return [str(r["execution_id"]) for r in rows]


def record_result(
    conn: sqlite3.Connection,
    execution_id: str,
    host_id: int,
    output: str,
    runtime: int,
    exit_code: int,
    now: float,
) -> bool:
    """Store the result once; a repeated post of the same result is accepted and changes nothing."""
    with write_transaction(conn):
        cur = conn.execute(
            """UPDATE scripts SET output = ?, runtime = ?, exit_code = ?, completed_at = ?
               WHERE execution_id = ? AND host_id = ? AND completed_at IS NULL""",
            (output[-MAX_OUTPUT_CHARS:], runtime, exit_code, now, execution_id, host_id),
        )
    if cur.rowcount:
        return True
    existing = get(conn, execution_id)
    return existing is not None and existing.host_id == host_id
