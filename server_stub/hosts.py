"""Host records and the identity rules that keep one record per machine (docs/reference/fleet-api.md §1.8).

orbit enrolls with ``hardware_uuid`` (or ``osquery_identifier``) and osqueryd with its ``host_identifier``; both
land on the row whose ``osquery_host_id`` equals that identifier. Every enrollment reissues the family's key, so
the previous key stops working; deleting a host deletes its keys with it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass, fields

from server_stub import version_changes
from server_stub.node_keys import new_node_key
from server_stub.transactions import write_transaction

DETAIL_COLUMNS = (
    "uuid",
    "hardware_serial",
    "hardware_model",
    "hostname",
    "computer_name",
    "platform",
    "platform_like",
    "os_version",
    "osquery_version",
    "orbit_version",
    "desktop_version",
)


@dataclass(frozen=True)
class Host:
    id: int
    osquery_host_id: str
    uuid: str
    hardware_serial: str
    hardware_model: str
    hostname: str
    computer_name: str
    platform: str
    platform_like: str
    os_version: str
    osquery_version: str
    orbit_version: str
    team_id: int | None
    created_at: float
    seen_time: float | None
    osquery_enrolled_at: float | None
    orbit_enrolled_at: float | None
    detail_updated_at: float | None
    policy_updated_at: float | None
    distributed_interval: int
    config_tls_refresh: int
    logger_tls_period: int
    desktop_version: str = ""


HOST_COLUMNS = tuple(f.name for f in fields(Host))  # never the node keys: they are credentials
_SELECT = "SELECT " + ", ".join(HOST_COLUMNS) + " FROM hosts"


def host_from_row(row: sqlite3.Row) -> Host:
    return Host(**{name: row[name] for name in HOST_COLUMNS})


def get_host(conn: sqlite3.Connection, host_id: int) -> Host | None:
    row = conn.execute(_SELECT + " WHERE id = ?", (host_id,)).fetchone()
    return host_from_row(row) if row else None


def list_hosts(conn: sqlite3.Connection, team_id: int | None = None) -> list[Host]:
    if team_id is None:
        return [host_from_row(r) for r in conn.execute(_SELECT + " ORDER BY id")]
    return [host_from_row(r) for r in conn.execute(_SELECT + " WHERE team_id = ? ORDER BY id", (team_id,))]


def count_team_hosts(conn: sqlite3.Connection, team_id: int) -> int:
    return int(conn.execute("SELECT COUNT(*) FROM hosts WHERE team_id = ?", (team_id,)).fetchone()[0])


def count_hosts(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT COUNT(*) FROM hosts").fetchone()[0])


def count_hosts_seen_since(conn: sqlite3.Connection, since: float) -> int:
    return int(conn.execute("SELECT COUNT(*) FROM hosts WHERE seen_time >= ?", (since,)).fetchone()[0])


def host_by_node_key(conn: sqlite3.Connection, node_key: str) -> Host | None:
    if not node_key:
        return None
    row = conn.execute(_SELECT + " WHERE node_key = ?", (node_key,)).fetchone()
    return host_from_row(row) if row else None


def host_by_orbit_node_key(conn: sqlite3.Connection, orbit_node_key: str) -> Host | None:
    if not orbit_node_key:
        return None
    row = conn.execute(_SELECT + " WHERE orbit_node_key = ?", (orbit_node_key,)).fetchone()
    return host_from_row(row) if row else None


def _clean_details(details: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in details.items() if k in DETAIL_COLUMNS and v}


def _upsert_enrollment(
    conn: sqlite3.Connection,
    identifier: str,
    team_id: int | None,
    details: Mapping[str, str],
    key_column: str,
    enrolled_column: str,
    now: float,
) -> tuple[int, str]:
    key = new_node_key()
    clean = _clean_details(details)
    with write_transaction(conn):
        row = conn.execute(
            f"SELECT id, {version_changes.SELECT_COLUMNS} FROM hosts WHERE osquery_host_id = ?", (identifier,)
        ).fetchone()
        if row is None:
            columns = [
                "osquery_host_id",
                "team_id",
                key_column,
                "created_at",
                "seen_time",
                enrolled_column,
                *clean,
            ]
            values: list[object] = [identifier, team_id, key, now, now, now, *clean.values()]
            placeholders = ", ".join("?" for _ in columns)
            cur = conn.execute(f"INSERT INTO hosts ({', '.join(columns)}) VALUES ({placeholders})", values)
            host_id = int(cur.lastrowid or 0)
            version_changes.record(conn, host_id, None, clean, now)
        else:
            host_id = int(row["id"])
            assignments = [f"{key_column} = ?", "team_id = ?", "seen_time = ?", f"{enrolled_column} = ?"]
            values = [key, team_id, now, now]
            for column, value in clean.items():
                assignments.append(f"{column} = ?")
                values.append(value)
            conn.execute(f"UPDATE hosts SET {', '.join(assignments)} WHERE id = ?", (*values, host_id))
            version_changes.record(conn, host_id, row, clean, now)
    return host_id, key


def enroll_osquery(
    conn: sqlite3.Connection, identifier: str, team_id: int | None, details: Mapping[str, str], now: float
) -> tuple[int, str]:
    """Create or re-enroll the host for an osqueryd; returns (host id, new node key)."""
    return _upsert_enrollment(conn, identifier, team_id, details, "node_key", "osquery_enrolled_at", now)


def enroll_orbit(
    conn: sqlite3.Connection, identifier: str, team_id: int | None, details: Mapping[str, str], now: float
) -> tuple[int, str]:
    """Create or re-enroll the host for an orbit; returns (host id, new orbit node key)."""
    return _upsert_enrollment(conn, identifier, team_id, details, "orbit_node_key", "orbit_enrolled_at", now)


def update_details(conn: sqlite3.Connection, host_id: int, details: Mapping[str, str], now: float) -> None:
    clean = _clean_details(details)
    if not clean:
        return
    assignments = ", ".join(f"{column} = ?" for column in clean)
    with write_transaction(conn):
        before = conn.execute(f"SELECT {version_changes.SELECT_COLUMNS} FROM hosts WHERE id = ?", (host_id,)).fetchone()
        if before is None:
            return
        conn.execute(f"UPDATE hosts SET {assignments} WHERE id = ?", (*clean.values(), host_id))
        version_changes.record(conn, host_id, before, clean, now)


def set_timestamps(conn: sqlite3.Connection, host_id: int, **stamps: float | None) -> None:
    allowed = {"detail_updated_at", "policy_updated_at"}
    assignments = []
    for column in stamps:
        if column not in allowed:
            raise ValueError(f"unknown timestamp column {column}")
        assignments.append(f"{column} = ?")
    with write_transaction(conn):
        conn.execute(
            f"UPDATE hosts SET {', '.join(assignments)} WHERE id = ?",
            (*stamps.values(), host_id),
        )


def record_intervals(
    conn: sqlite3.Connection,
    host_id: int,
    distributed_interval: int,
    config_tls_refresh: int,
    logger_tls_period: int,
) -> None:
    with write_transaction(conn):
        conn.execute(
            "UPDATE hosts SET distributed_interval = ?, config_tls_refresh = ?, logger_tls_period = ? WHERE id = ?",
            (distributed_interval, config_tls_refresh, logger_tls_period, host_id),
        )


def delete_host(conn: sqlite3.Connection, host_id: int) -> bool:
    with write_transaction(conn):
        cur = conn.execute("DELETE FROM hosts WHERE id = ?", (host_id,))
        conn.execute("DELETE FROM live_queries WHERE host_id = ?", (host_id,))
    return cur.rowcount > 0


ONLINE_GRACE_SECONDS = 60


def host_status(host: Host, now: float) -> str:
    """Fleet's online rule: seen within the host's check-in interval plus a grace period."""
    online = is_online(host.seen_time, host.distributed_interval, host.config_tls_refresh, host.logger_tls_period, now)
    return "online" if online else "offline"


def is_online(
    seen_time: float | None, distributed_interval: int, config_tls_refresh: int, logger_tls_period: int, now: float
) -> bool:
    """``host_status``'s rule on the bare columns (for callers that read many hosts without building ``Host``).

    ``host_listing.ONLINE_SQL`` is its twin in SQL, held to it by a unit test."""
    if seen_time is None:
        return False
    # the smaller positive of the two check-in intervals, else the logger period (written out: this runs per host
    # in the rollout engine's passes)
    if distributed_interval > 0 and (config_tls_refresh <= 0 or distributed_interval <= config_tls_refresh):
        interval = distributed_interval
    elif config_tls_refresh > 0:
        interval = config_tls_refresh
    else:
        interval = max(logger_tls_period, 0)
    return now - seen_time <= interval + ONLINE_GRACE_SECONDS
