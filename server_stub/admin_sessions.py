"""Console sessions: who logged in with the admin token, until when, and the CSRF token of their forms (ADR 0018).

A session is created by a login with the admin token and named by a random cookie value (256 bits); the store
keeps only its SHA-256, so the table reveals no usable cookie. A session ends at logout, after ``idle_seconds``
without a request, or ``max_age_seconds`` after login, whichever comes first. Sessions live in memory: a restart
of the stub logs everyone out, and nothing about them is ever written to disk. Pure apart from the injected
clock; the table is bounded (the least recently used sessions go first).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

IDLE_SECONDS = 30 * 60
MAX_AGE_SECONDS = 12 * 3600
MAX_SESSIONS = 1000
COOKIE_VALUE_MAX_CHARS = 128


@dataclass
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
        clock: Callable[[], float],
        *,
        idle_seconds: float = IDLE_SECONDS,
        max_age_seconds: float = MAX_AGE_SECONDS,
        max_sessions: int = MAX_SESSIONS,
    ) -> None:
        self._clock = clock
        self.idle_seconds = idle_seconds
        self.max_age_seconds = max_age_seconds
        self._max = max_sessions
        self._sessions: OrderedDict[str, AdminSession] = OrderedDict()

    def create(self) -> tuple[str, AdminSession]:
        """A new session: (the cookie value to give the browser, the session)."""
        now = self._clock()
        cookie_value = secrets.token_urlsafe(32)
        session = AdminSession(csrf_token=secrets.token_urlsafe(32), created_at=now, last_used=now)
        self._sessions[_key(cookie_value)] = session
        while len(self._sessions) > self._max:
            self._sessions.popitem(last=False)
        return cookie_value, session

    def _expired(self, session: AdminSession, now: float) -> bool:
        return now - session.last_used > self.idle_seconds or now - session.created_at > self.max_age_seconds

    def lookup(self, cookie_value: str | None) -> SessionLookup:
        """The session of a cookie; a valid one counts as used now (its idle time starts again)."""
        if not cookie_value or len(cookie_value) > COOKIE_VALUE_MAX_CHARS:
            return SessionLookup(SessionState.NONE)
        key = _key(cookie_value)
        session = self._sessions.get(key)
        if session is None:
            return SessionLookup(SessionState.NONE)
        now = self._clock()
        if self._expired(session, now):
            del self._sessions[key]
            return SessionLookup(SessionState.EXPIRED)
        session.last_used = now
        self._sessions.move_to_end(key)
        return SessionLookup(SessionState.VALID, session)

    def end(self, cookie_value: str | None) -> None:
        if cookie_value:
            self._sessions.pop(_key(cookie_value), None)

    def remaining_seconds(self, session: AdminSession) -> float:
        """Seconds this session may live at most (the cookie's Max-Age)."""
        return max(0.0, session.created_at + self.max_age_seconds - self._clock())

    def __len__(self) -> int:
        return len(self._sessions)


def csrf_matches(session: AdminSession, submitted: str | None) -> bool:
    return bool(submitted) and hmac.compare_digest(session.csrf_token.encode(), (submitted or "").encode())
