"""Fleet Desktop device tokens (docs/reference/fleet-api.md §1.8, §4.4, §5).

A token is valid for one hour after it was last *changed*; registering the same value again does not extend it.
One token per host; a new one replaces the old one at once (no grace period for the previous token). Tokens must
be unique across hosts and contain only characters that URL query-escaping leaves alone.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass
from enum import Enum

from server_stub.transactions import write_transaction

TOKEN_TTL_SECONDS = 3600
_URL_SAFE = re.compile(r"[A-Za-z0-9\-_.~]+")
MAX_TOKEN_LENGTH = 512


class TokenProblem(Enum):
    EMPTY = "device_auth_token is empty"
    NOT_URL_SAFE = "device_auth_token contains characters that are not URL-safe"
    TOO_LONG = "device_auth_token is too long"
    CONFLICT = "auth token conflicts with another host"


def validate_token_text(token: str) -> TokenProblem | None:
    if not token:
        return TokenProblem.EMPTY
    if len(token) > MAX_TOKEN_LENGTH:
        return TokenProblem.TOO_LONG
    if not _URL_SAFE.fullmatch(token):  # not match(): its $ also matches before a trailing newline
        return TokenProblem.NOT_URL_SAFE
    return None


def token_is_fresh(updated_at: float, now: float) -> bool:
    # A token registered "in the future" (clock stepped back) stays valid until an hour after that time.
    return now - updated_at <= TOKEN_TTL_SECONDS


def register(conn: sqlite3.Connection, host_id: int, token: str, now: float) -> TokenProblem | None:
    """Store ``token`` for ``host_id``; returns the problem when it cannot be stored."""
    problem = validate_token_text(token)
    if problem is not None:
        return problem
    with write_transaction(conn):
        owner = conn.execute("SELECT host_id FROM device_tokens WHERE token = ?", (token,)).fetchone()
        if owner is not None and int(owner["host_id"]) != host_id:
            return TokenProblem.CONFLICT
        if owner is not None:
            return None  # same host, same token: unchanged, expiry not extended
        current = conn.execute("SELECT token FROM device_tokens WHERE host_id = ?", (host_id,)).fetchone()
        if current is None:
            conn.execute(
                "INSERT INTO device_tokens (host_id, token, updated_at) VALUES (?, ?, ?)",
                (host_id, token, now),
            )
        else:
            conn.execute(
                "UPDATE device_tokens SET previous_token = token, token = ?, updated_at = ? WHERE host_id = ?",
                (token, now, host_id),
            )
    return None


def host_for_token(conn: sqlite3.Connection, token: str, now: float) -> int | None:
    """The host a fresh token belongs to, or None when the token is unknown or expired."""
    if not token:
        return None
    row = conn.execute("SELECT host_id, updated_at FROM device_tokens WHERE token = ?", (token,)).fetchone()
    if row is None or not token_is_fresh(float(row["updated_at"]), now):
        return None
    return int(row["host_id"])


@dataclass(frozen=True)
class TokenState:
    """What an admin may know of a host's Desktop token: whether one is valid and until when, never its value."""

    state: str  # "valid", "expired" or "none"
    updated_at: float | None
    expires_at: float | None
    rotations: int  # 1 when a previous token was replaced (the stub keeps one previous value), else 0

    def to_json(self) -> dict[str, object]:
        return {
            "state": self.state,
            "updated_at": self.updated_at,
            "expires_at": self.expires_at,
            "replaced_a_previous_token": bool(self.rotations),
        }


def token_state(conn: sqlite3.Connection, host_id: int, now: float) -> TokenState:
    row = conn.execute(
        "SELECT updated_at, previous_token IS NOT NULL AS rotated FROM device_tokens WHERE host_id = ?", (host_id,)
    ).fetchone()
    if row is None:
        return TokenState("none", None, None, 0)
    updated = float(row["updated_at"])
    state = "valid" if token_is_fresh(updated, now) else "expired"
    return TokenState(state, updated, updated + TOKEN_TTL_SECONDS, int(row["rotated"]))
