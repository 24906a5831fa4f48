"""Teams, enroll secrets and agent options (global and per team).

Agent options use Fleet's document shape: ``{"config": {...osquery config...}, "overrides": {"platforms":
{<platform>: {...config...}}}, "command_line_flags": {...}, "update_channels": {...},
"script_execution_timeout": N}``. ``config`` is what osqueryd gets from ``/api/osquery/config``;
``command_line_flags``, ``update_channels`` and ``script_execution_timeout`` reach orbit through
``/api/fleet/orbit/config``.
"""

from __future__ import annotations

import copy
import json
import sqlite3
from dataclasses import dataclass

from server_stub.json_fields import JsonObject
from server_stub.json_text import decode_json
from server_stub.transactions import write_transaction

GLOBAL_AGENT_OPTIONS_KEY = "global_agent_options"
GLOBAL_NOTIFICATIONS_KEY = "global_orbit_notifications"

DEFAULT_AGENT_OPTIONS: JsonObject = {
    "config": {
        "options": {
            "pack_delimiter": "/",
            "logger_tls_period": 10,
            "distributed_plugin": "tls",
            "disable_distributed": False,
            "logger_tls_endpoint": "/api/osquery/log",
            "distributed_interval": 10,
            "distributed_tls_max_attempts": 3,
        },
        "decorators": {
            "load": [
                "SELECT uuid AS host_uuid FROM system_info;",
                "SELECT hostname AS hostname FROM system_info;",
            ]
        },
    },
    "overrides": {},
}


@dataclass(frozen=True)
class Team:
    id: int
    name: str
    agent_options: JsonObject | None
    orbit_notifications: JsonObject


class SecretNotFound(LookupError):
    pass


def _loads_object(text: str | None) -> JsonObject | None:
    if text is None:
        return None
    # repaired like a client's body: a row written before the stub stored strict JSON may hold NaN
    value = decode_json(text).value
    return value if isinstance(value, dict) else None


def _team_from_row(row: sqlite3.Row) -> Team:
    return Team(
        id=int(row["id"]),
        name=str(row["name"]),
        agent_options=_loads_object(row["agent_options"]),
        orbit_notifications=_loads_object(row["orbit_notifications"]) or {},
    )


def list_teams(conn: sqlite3.Connection) -> list[Team]:
    return [_team_from_row(r) for r in conn.execute("SELECT * FROM teams ORDER BY id")]


def get_team(conn: sqlite3.Connection, team_id: int) -> Team | None:
    row = conn.execute("SELECT * FROM teams WHERE id = ?", (team_id,)).fetchone()
    return _team_from_row(row) if row else None


def find_team_by_name(conn: sqlite3.Connection, name: str) -> Team | None:
    row = conn.execute("SELECT * FROM teams WHERE name = ?", (name,)).fetchone()
    return _team_from_row(row) if row else None


def ensure_team(conn: sqlite3.Connection, name: str, *, source: str = "api") -> Team:
    existing = find_team_by_name(conn, name)
    if existing is not None:
        return existing
    with write_transaction(conn):
        conn.execute("INSERT INTO teams (name, source) VALUES (?, ?)", (name, source))
    team = find_team_by_name(conn, name)
    assert team is not None
    return team


def delete_team(conn: sqlite3.Connection, team_id: int) -> bool:
    with write_transaction(conn):
        cur = conn.execute("DELETE FROM teams WHERE id = ?", (team_id,))
    return cur.rowcount > 0


def set_team_agent_options(conn: sqlite3.Connection, team_id: int, options: JsonObject | None) -> None:
    with write_transaction(conn):
        conn.execute(
            "UPDATE teams SET agent_options = ? WHERE id = ?",
            (None if options is None else json.dumps(options, allow_nan=False), team_id),
        )


def set_team_notifications(conn: sqlite3.Connection, team_id: int, notifications: JsonObject) -> None:
    with write_transaction(conn):
        conn.execute(
            "UPDATE teams SET orbit_notifications = ? WHERE id = ?",
            (json.dumps(notifications, allow_nan=False), team_id),
        )


def _get_setting(conn: sqlite3.Connection, key: str) -> str | None:
    row = conn.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
    return None if row is None else str(row["value"])


def _put_setting(conn: sqlite3.Connection, key: str, value: str) -> None:
    with write_transaction(conn):
        conn.execute(
            "INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, value),
        )


def global_agent_options(conn: sqlite3.Connection) -> JsonObject:
    return _loads_object(_get_setting(conn, GLOBAL_AGENT_OPTIONS_KEY)) or copy.deepcopy(DEFAULT_AGENT_OPTIONS)


def set_global_agent_options(conn: sqlite3.Connection, options: JsonObject) -> None:
    _put_setting(conn, GLOBAL_AGENT_OPTIONS_KEY, json.dumps(options, allow_nan=False))


def global_notifications(conn: sqlite3.Connection) -> JsonObject:
    return _loads_object(_get_setting(conn, GLOBAL_NOTIFICATIONS_KEY)) or {}


def set_global_notifications(conn: sqlite3.Connection, notifications: JsonObject) -> None:
    _put_setting(conn, GLOBAL_NOTIFICATIONS_KEY, json.dumps(notifications, allow_nan=False))


def effective_agent_options(conn: sqlite3.Connection, team_id: int | None) -> JsonObject:
    """A team's own agent options when it has them, else the global ones (Fleet's rule)."""
    if team_id is not None:
        team = get_team(conn, team_id)
        if team is not None and team.agent_options is not None:
            return team.agent_options
    return global_agent_options(conn)


def effective_notifications(conn: sqlite3.Connection, team_id: int | None) -> JsonObject:
    if team_id is not None:
        team = get_team(conn, team_id)
        if team is not None:
            return team.orbit_notifications
    return global_notifications(conn)


# --- enroll secrets ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EnrollSecret:
    secret: str
    team_id: int | None
    source: str


def team_for_secret(conn: sqlite3.Connection, secret: str) -> int | None:
    """The team a secret enrolls into (None = no team); raises SecretNotFound for an unknown or empty one."""
    if not secret:
        raise SecretNotFound("enroll secret is empty")
    row = conn.execute("SELECT team_id FROM enroll_secrets WHERE secret = ?", (secret,)).fetchone()
    if row is None:
        raise SecretNotFound("no matching secret found")
    return None if row["team_id"] is None else int(row["team_id"])


def list_secrets(
    conn: sqlite3.Connection, team_id: int | None = None, *, all_teams: bool = False
) -> list[EnrollSecret]:
    if all_teams:
        rows = conn.execute("SELECT * FROM enroll_secrets ORDER BY created_at")
    elif team_id is None:
        rows = conn.execute("SELECT * FROM enroll_secrets WHERE team_id IS NULL ORDER BY created_at")
    else:
        rows = conn.execute("SELECT * FROM enroll_secrets WHERE team_id = ? ORDER BY created_at", (team_id,))
    return [
        EnrollSecret(str(r["secret"]), None if r["team_id"] is None else int(r["team_id"]), str(r["source"]))
        for r in rows
    ]


class SecretConflict(ValueError):
    pass


def put_secret(conn: sqlite3.Connection, secret: str, team_id: int | None, *, source: str, now: float) -> None:
    """Add a secret (idempotent when it already belongs to the same team; a secret of another team conflicts)."""
    existing = conn.execute("SELECT team_id FROM enroll_secrets WHERE secret = ?", (secret,)).fetchone()
    if existing is not None:
        existing_team = None if existing["team_id"] is None else int(existing["team_id"])
        if existing_team != team_id:
            raise SecretConflict("enroll secret already belongs to another team")
        return
    with write_transaction(conn):
        conn.execute(
            "INSERT INTO enroll_secrets (secret, team_id, source, created_at) VALUES (?, ?, ?, ?)",
            (secret, team_id, source, now),
        )


def replace_secrets(
    conn: sqlite3.Connection, team_id: int | None, secrets: list[str], *, source: str, now: float
) -> None:
    """Make ``secrets`` exactly the secrets of this team (Fleet's replace semantics).

    Secrets managed by another source (``--enroll-secret`` flags, the configuration file) cannot be removed
    here: leaving one out is a SecretConflict rather than a silent no-op, so nobody believes a leaked secret
    was revoked when it was not.
    """
    keep = set(secrets)
    pinned = sorted(s.secret for s in list_secrets(conn, team_id) if s.source != source and s.secret not in keep)
    if pinned:
        raise SecretConflict(
            f"{len(pinned)} enroll secret(s) of this team are managed by the server's --enroll-secret flags or "
            "configuration file; remove them there"
        )
    for secret in secrets:
        put_secret(conn, secret, team_id, source=source, now=now)
    for current in list_secrets(conn, team_id):
        if current.source == source and current.secret not in keep:
            with write_transaction(conn):
                conn.execute("DELETE FROM enroll_secrets WHERE secret = ?", (current.secret,))


def sync_secrets(conn: sqlite3.Connection, source: str, desired: dict[str, int | None], now: float) -> None:
    """Make the secrets managed by ``source`` exactly ``desired`` (secret → team id, None = no team).

    A desired secret that already exists under another source is a SecretConflict; nothing changes then.
    """
    with write_transaction(conn):
        for secret in desired:
            row = conn.execute("SELECT source FROM enroll_secrets WHERE secret = ?", (secret,)).fetchone()
            if row is not None and row["source"] != source:
                raise SecretConflict(f"an enroll secret is already defined elsewhere ({row['source']})")
        current = {
            str(r["secret"]): (None if r["team_id"] is None else int(r["team_id"]))
            for r in conn.execute("SELECT secret, team_id FROM enroll_secrets WHERE source = ?", (source,))
        }
        for secret, team_id in current.items():
            if secret not in desired or desired[secret] != team_id:
                conn.execute("DELETE FROM enroll_secrets WHERE secret = ?", (secret,))
        for secret, team_id in desired.items():
            if secret not in current or current[secret] != team_id:
                conn.execute(
                    "INSERT INTO enroll_secrets (secret, team_id, source, created_at) VALUES (?, ?, ?, ?)",
                    (secret, team_id, source, now),
                )
