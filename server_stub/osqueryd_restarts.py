"""Restart osqueryd on demand (docs/adr/0017, protocol §4): requests per host, carried to orbit in its config.

An admin asks for a host or a team (team 0 = the hosts without a team, Fleet's "No team"); each request gets an id
and one row per host. The host's orbit config answer carries ``notifications.restart_osqueryd_request_id`` while
its newest request is pending; orbit restarts osqueryd once per id and acknowledges through
``POST /api/fleet/orbit/osqueryd_restart/result``, which ends the request for that host. A newer request for a host
supersedes its pending one (one restart serves both).
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from server_stub.rfc3339 import iso_time
from server_stub.transactions import write_transaction

MAX_ERROR_LENGTH = 4096
MAX_REQUEST_ID_LENGTH = 128


class RestartState(StrEnum):
    PENDING = "pending"
    DONE = "done"
    FAILED = "failed"
    SUPERSEDED = "superseded"


@dataclass(frozen=True)
class HostRestart:
    host_id: int
    state: RestartState
    error: str | None
    created_at: float
    answered_at: float | None

    def to_json(self) -> dict[str, object]:
        return {
            "host_id": self.host_id,
            "state": str(self.state),
            "error": self.error,
            "created_at": iso_time(self.created_at),
            "answered_at": iso_time(self.answered_at),
        }


def request_restart(conn: sqlite3.Connection, host_ids: Sequence[int], now: float) -> str:
    """A new request for ``host_ids``; returns its id."""
    request_id = str(uuid.uuid4())
    with write_transaction(conn):
        for host_id in host_ids:
            conn.execute(
                "UPDATE osqueryd_restarts SET state = ?, answered_at = ? WHERE host_id = ? AND state = ?",
                (str(RestartState.SUPERSEDED), now, host_id, str(RestartState.PENDING)),
            )
            conn.execute(
                "INSERT INTO osqueryd_restarts (request_id, host_id, created_at, state) VALUES (?, ?, ?, ?)",
                (request_id, host_id, now, str(RestartState.PENDING)),
            )
    return request_id


def pending_request(conn: sqlite3.Connection, host_id: int) -> str | None:
    """The id orbit must act on, or None (an indexed lookup: the config poll asks this every 30 s)."""
    # at most one pending request per host (a new one supersedes the old): the partial index answers alone
    row = conn.execute(
        "SELECT request_id FROM osqueryd_restarts WHERE host_id = ? AND state = 'pending' LIMIT 1", (host_id,)
    ).fetchone()
    return None if row is None else str(row[0])


def acknowledge(conn: sqlite3.Connection, host_id: int, request_id: str, error: str | None, now: float) -> bool:
    """orbit restarted osqueryd (or failed to); False when the host had no such pending request (a repeat)."""
    state = RestartState.DONE if error is None else RestartState.FAILED
    with write_transaction(conn):
        cursor = conn.execute(
            "UPDATE osqueryd_restarts SET state = ?, error = ?, answered_at = ? "
            "WHERE request_id = ? AND host_id = ? AND state = ?",
            (
                str(state),
                None if error is None else error[:MAX_ERROR_LENGTH],
                now,
                request_id,
                host_id,
                str(RestartState.PENDING),
            ),
        )
    return cursor.rowcount > 0


def request_hosts(conn: sqlite3.Connection, request_id: str) -> list[HostRestart]:
    rows = conn.execute(
        "SELECT host_id, state, error, created_at, answered_at FROM osqueryd_restarts WHERE request_id = ? "
        "ORDER BY host_id",
        (request_id,),
    ).fetchall()
    return [
        HostRestart(int(r[0]), RestartState(r[1]), r[2], float(r[3]), None if r[4] is None else float(r[4]))
        for r in rows
    ]
