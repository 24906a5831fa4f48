"""Console sessions: who logged in with the admin token, until when, and the CSRF token of their forms (ADR 0018).

A session is created by a login with the admin token and named by a random cookie value (256 bits); the store
keeps only its SHA-256, so the table reveals no usable cookie. A session ends at logout, after ``idle_seconds``
without a request, or ``max_age_seconds`` after login, whichever comes first.

Sessions live in SQLite (``console_sessions``), not in one process's memory: with several worker processes
(ADR 0019) a browser's requests reach any of them, and a logout in one must end the session in all. They do not
outlive the server: its start empties the table (``clear``), so a restart logs everyone out, as before. A request
costs one indexed read; the last use is written at most every ``TOUCH_SECONDS`` (a session may so end up to that
much before its idle time is over). The table is bounded: the least recently used sessions go first.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from server_stub.transactions import write_transaction

IDLE_SECONDS = 30 * 60
MAX_AGE_SECONDS = 12 * 3600
MAX_SESSIONS = 1000
COOKIE_VALUE_MAX_CHARS = 128
TOUCH_SECONDS = 5.0


@dataclass(frozen=True)
class AdminSession:
    csrf_token: str
    created_at: float
    last_used: float


class SessionState(Enum):
    VALID = "valid"
    EXPIRED = "expired"
    NONE = "none"


@dataclass(frozen=True)
class SessionLookup:
    state: SessionState
    session: AdminSession | None = None


def _key(cookie_value: str) -> str:
    return hashlib.sha256(cookie_value.encode("utf-8", "replace")).hexdigest()


class SessionStore:
    def __init__(
        self,
        conn: sqlite3.Connection,
        clock: Callable[[], float],
        *,
        idle_seconds: float = IDLE_SECONDS,
        max_age_seconds: float = MAX_AGE_SECONDS,
        max_sessions: int = MAX_SESSIONS,
    ) -> None:
        self._conn = conn
        self._clock = clock
        self.idle_seconds = idle_seconds
        self.max_age_seconds = max_age_seconds
        self._max = max_sessions

    def clear(self) -> None:
        """Forget every session (the server starts: nobody is logged in)."""
        with write_transaction(self._conn):
            self._conn.execute("DELETE FROM console_sessions")

    def create(self) -> tuple[str, AdminSession]:
        """A new session: (the cookie value to give the browser, the session)."""
        now = self._clock()
        cookie_value = secrets.token_urlsafe(32)
        session = AdminSession(csrf_token=secrets.token_urlsafe(32), created_at=now, last_used=now)
        with write_transaction(self._conn):
            self._conn.execute(
                "INSERT INTO console_sessions (key, csrf_token, created_at, last_used) VALUES (?, ?, ?, ?)",
                (_key(cookie_value), session.csrf_token, now, now),
            )
            self._conn.execute(
                "DELETE FROM console_sessions WHERE key IN (SELECT key FROM console_sessions "
                "ORDER BY last_used DESC, rowid DESC LIMIT -1 OFFSET ?)",
                (self._max,),
            )
        return cookie_value, session

    def _expired(self, session: AdminSession, now: float) -> bool:
        return now - session.last_used > self.idle_seconds or now - session.created_at > self.max_age_seconds

    def lookup(self, cookie_value: str | None) -> SessionLookup:
        """The session of a cookie; a valid one counts as used now (its idle time starts again)."""
        if not cookie_value or len(cookie_value) > COOKIE_VALUE_MAX_CHARS:
            return SessionLookup(SessionState.NONE)
        key = _key(cookie_value)
        row = self._conn.execute(
            "SELECT csrf_token, created_at, last_used FROM console_sessions WHERE key = ?", (key,)
        ).fetchone()
        if row is None:
            return SessionLookup(SessionState.NONE)
        session = AdminSession(str(row[0]), float(row[1]), float(row[2]))
        now = self._clock()
        if self._expired(session, now):
            with write_transaction(self._conn):
                self._conn.execute("DELETE FROM console_sessions WHERE key = ?", (key,))
            return SessionLookup(SessionState.EXPIRED)
        if now - session.last_used >= TOUCH_SECONDS:
            with write_transaction(self._conn):
                self._conn.execute(
                    "UPDATE console_sessions SET last_used = MAX(last_used, ?) WHERE key = ?", (now, key)
                )
            session = AdminSession(session.csrf_token, session.created_at, now)
        return SessionLookup(SessionState.VALID, session)

    def end(self, cookie_value: str | None) -> None:
        if cookie_value and len(cookie_value) <= COOKIE_VALUE_MAX_CHARS:
            with write_transaction(self._conn):
                self._conn.execute("DELETE FROM console_sessions WHERE key = ?", (_key(cookie_value),))

    def remaining_seconds(self, session: AdminSession) -> float:
        """Seconds this session may live at most (the cookie's Max-Age)."""
        return max(0.0, session.created_at + self.max_age_seconds - self._clock())

    def __len__(self) -> int:
        return int(self._conn.execute("SELECT count(*) FROM console_sessions").fetchone()[0])


def csrf_matches(session: AdminSession, submitted: str | None) -> bool:
    return bool(submitted) and hmac.compare_digest(session.csrf_token.encode(), (submitted or "").encode())
