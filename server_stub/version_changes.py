"""The versions of orbit, osqueryd and Fleet Desktop a host ran, as the server saw them change.

A row is written when a host's reported version of a target differs from the one on record (the first report has
no previous version). It is what the server observed, not what the agent did: a rollback shows here as a change
back to an older version; why it happened comes from the agent's own reports. A host keeps its newest
``KEEP_PER_HOST`` changes, so a host that flips its version at every report cannot grow the table.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass

KEEP_PER_HOST = 50
TARGET_COLUMNS = {"orbit": "orbit_version", "osqueryd": "osquery_version", "desktop": "desktop_version"}
SELECT_COLUMNS = ", ".join(TARGET_COLUMNS.values())


@dataclass(frozen=True)
class VersionChange:
    host_id: int
    target: str
    version: str
    previous_version: str
    seen_at: float

    def to_json(self) -> dict[str, object]:
        return {
            "target": self.target,
            "version": self.version,
            "previous_version": self.previous_version or None,
            "seen_at": self.seen_at,
        }


def record(
    conn: sqlite3.Connection, host_id: int, before: sqlite3.Row | None, after: Mapping[str, str], now: float
) -> None:
    """Inside the caller's write transaction: a row per target whose version changed from ``before`` to ``after``."""
    changed = False
    for target, column in TARGET_COLUMNS.items():
        new = after.get(column, "")
        old = str(before[column]) if before is not None else ""
        if new and new != old:
            conn.execute(
                "INSERT INTO host_version_changes (host_id, target, version, previous_version, seen_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (host_id, target, new, old, now),
            )
            changed = True
    if changed:
        conn.execute(
            """DELETE FROM host_version_changes WHERE host_id = ? AND id <= (
                   SELECT id FROM host_version_changes WHERE host_id = ? ORDER BY id DESC LIMIT 1 OFFSET ?)""",
            (host_id, host_id, KEEP_PER_HOST),
        )


def for_host(conn: sqlite3.Connection, host_id: int, limit: int = KEEP_PER_HOST) -> list[VersionChange]:
    """Newest first."""
    rows = conn.execute(
        "SELECT host_id, target, version, previous_version, seen_at FROM host_version_changes"
        " WHERE host_id = ? ORDER BY id DESC LIMIT ?",
        (host_id, limit),
    )
    return [
        VersionChange(
            int(r["host_id"]), str(r["target"]), str(r["version"]), str(r["previous_version"]), float(r["seen_at"])
        )
        for r in rows
    ]
