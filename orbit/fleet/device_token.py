"""The Fleet Desktop device token: load-or-generate, validate, rotate hourly, publish in ``<root>/identifier``.

The token is a random UUID v4 in a world-readable (0644) file so that the user-level Desktop process can read it;
orbit hands Desktop the file's *path*, never the token. Its age is the file's mtime; it expires after one hour.

- Pure core (no files, no clocks): :class:`TokenState`, :func:`is_valid_token`, :func:`token_from_bytes`,
  :func:`rotation_reason` and :func:`decide_local_check` — "rotate if the file's mtime changed since the last read,
  the token expired or ≤ 1 s is left; if it expires within the next 30 s, re-check exactly at expiry".
- File store: :class:`TokenFile` (atomic 0644 writes with an explicit mtime, chmod-fix of legacy 0600 files).
- Shell: :class:`DeviceTokenManager` — start-up :meth:`~DeviceTokenManager.ensure` and the rotation loop
  :meth:`~DeviceTokenManager.run` (local check every 30 s, remote check every 5 min). A token is registered with
  the server *before* it is written, so the file never holds a token the server has not accepted.

Logs never carry a whole token: at most its first four characters (:func:`redact`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import secrets
import stat
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import NamedTuple, Protocol

from safe_fs.atomic_write import PUBLIC_MODE, write_atomic

log = logging.getLogger(__name__)

TOKEN_TTL = 3600.0
"""A token expires this many seconds after the file's mtime."""
ROTATE_MARGIN = 1.0
"""Rotate when this many seconds or fewer are left."""
LOCAL_CHECK_INTERVAL = 30.0
REMOTE_CHECK_INTERVAL = 300.0
WRITE_ATTEMPTS = 3
WRITE_RETRY_DELAY = 5.0
FUTURE_MTIME_SLACK = 60.0
"""An mtime further in the future than this (the clock went back) cannot be aged: the token is rotated."""

_MAX_FILE_BYTES = 1024
_UUID4 = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", re.IGNORECASE)


# --------------------------------------------------------------------------------------------------- pure core


class RotationReason(Enum):
    MISSING = "missing"
    CHANGED = "changed"
    EXPIRED = "expired"
    EXPIRING = "expiring"
    FUTURE_MTIME = "future_mtime"
    REJECTED = "rejected"
    RETRY = "retry"


@dataclass(frozen=True)
class TokenState:
    """A token as last read from the file, with the file's mtime at that read (epoch seconds)."""

    token: str
    mtime: float

    def age(self, now: float) -> float:
        return now - self.mtime

    def remaining(self, now: float) -> float:
        return TOKEN_TTL - self.age(now)

    def expires_at(self) -> float:
        return self.mtime + TOKEN_TTL

    def __repr__(self) -> str:  # keep the token out of tracebacks and debug output
        return f"TokenState(token={redact(self.token)!r}, mtime={self.mtime!r})"


class LocalCheck(NamedTuple):
    rotate_now: bool
    next_check_in: float


def redact(token: str | None) -> str:
    """What a log line may show of a token: its first four characters."""
    if not token:
        return "-"
    return f"{token[:4]}…"


def is_valid_token(text: str) -> bool:
    """True for a canonical UUID v4 string (which is also URL-safe: query-escaping leaves it unchanged)."""
    return _UUID4.fullmatch(text) is not None


def token_from_bytes(raw: bytes) -> str:
    """A UUID v4 string from 16 random bytes (version and variant bits are forced)."""
    if len(raw) != 16:
        raise ValueError(f"a token needs 16 random bytes, got {len(raw)}")
    return str(uuid.UUID(bytes=raw, version=4))


def rotation_reason(state: TokenState | None, current_mtime: float | None, now: float) -> RotationReason | None:
    """Why the token must be rotated now (``None``: keep it). ``current_mtime`` is the file's mtime now."""
    if state is None or current_mtime is None:
        return RotationReason.MISSING
    if current_mtime != state.mtime:
        return RotationReason.CHANGED
    if state.age(now) < -FUTURE_MTIME_SLACK:
        return RotationReason.FUTURE_MTIME
    remaining = state.remaining(now)
    if remaining <= 0:
        return RotationReason.EXPIRED
    if remaining <= ROTATE_MARGIN:
        return RotationReason.EXPIRING
    return None


def decide_local_check(
    state: TokenState | None, current_mtime: float | None, now: float, *, interval: float = LOCAL_CHECK_INTERVAL
) -> LocalCheck:
    """The 30-second local check: rotate now?, and when to check next (exactly at expiry if that comes sooner)."""
    if rotation_reason(state, current_mtime, now) is not None or state is None:
        return LocalCheck(rotate_now=True, next_check_in=interval)
    return LocalCheck(rotate_now=False, next_check_in=min(interval, state.remaining(now)))


# --------------------------------------------------------------------------------------------------- file store


class TokenFileError(Exception):
    """The token file could not be written or did not read back as written."""


class TokenFile:
    """``<root>/identifier``: the token, no newline, mode 0644, mtime = time of the last rotation."""

    def __init__(self, path: Path) -> None:
        self._path = path

    @property
    def path(self) -> Path:
        return self._path

    def load(self) -> TokenState | None:
        """The token and the file's mtime; ``None`` when the file is missing or does not hold a valid token.

        A file with another mode than 0644 (old orbit wrote 0600) is chmod-fixed so that Desktop can read it.
        """
        try:
            with open(self._path, "rb") as handle:
                info = os.fstat(handle.fileno())
                if not stat.S_ISREG(info.st_mode):
                    return None
                data = handle.read(_MAX_FILE_BYTES + 1)
        except (FileNotFoundError, IsADirectoryError):
            return None
        self._fix_mode(info.st_mode)
        if len(data) > _MAX_FILE_BYTES:
            return None
        try:
            text = data.decode("utf-8").strip()
        except UnicodeDecodeError:
            return None
        if not is_valid_token(text):
            return None
        return TokenState(token=text, mtime=info.st_mtime)

    def mtime(self) -> float | None:
        """The file's current mtime, ``None`` when it is missing."""
        try:
            return os.stat(self._path).st_mtime
        except FileNotFoundError:
            return None

    def write(self, token: str, now: float) -> TokenState:
        """Atomically replace the file with ``token`` (0644), set its mtime to ``now`` and read it back."""
        if not is_valid_token(token):
            raise ValueError("refusing to write a token that is not a UUID v4")
        write_atomic(self._path, token, PUBLIC_MODE)
        os.utime(self._path, (now, now))  # some filesystems did not update the mtime on rename
        state = self.load()
        if state is None or state.token != token:
            raise TokenFileError(f"{self._path} did not read back as written")
        return state

    def _fix_mode(self, st_mode: int) -> None:
        if sys.platform == "win32" or stat.S_IMODE(st_mode) == PUBLIC_MODE:
            return
        try:
            os.chmod(self._path, PUBLIC_MODE)
        except OSError as exc:
            log.warning("device token file mode not fixed path=%s mode=%o error=%s", self._path, st_mode, exc)
        else:
            log.info("device token file mode fixed path=%s old_mode=%o new_mode=%o", self._path, st_mode, PUBLIC_MODE)


# --------------------------------------------------------------------------------------------------- shell


class DeviceTokenConflictError(Exception):
    """The server refused a token because another host owns it (HTTP 409); a new token is generated."""


class DeviceTokenApi(Protocol):
    async def register_device_token(self, token: str) -> None:
        """``POST /api/fleet/orbit/device_token``; raises on failure (:class:`DeviceTokenConflictError` on 409)."""
        ...

    async def check_device_token(self, token: str) -> bool:
        """``HEAD /api/latest/fleet/device/{token}/ping``; False when the server rejects the token; raises on
        network errors."""
        ...


SleepFn = Callable[[float], Awaitable[None]]


class DeviceTokenManager:
    """Keeps ``<root>/identifier`` holding a token the server accepts; see the module docstring."""

    def __init__(
        self,
        path: Path,
        api: DeviceTokenApi,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: SleepFn = asyncio.sleep,
        rng: Callable[[int], bytes] = secrets.token_bytes,
    ) -> None:
        self._file = TokenFile(path)
        self._api = api
        self._clock = clock
        self._monotonic = monotonic
        self._sleep = sleep
        self._rng = rng
        self._state: TokenState | None = None
        self._rotation_pending = False
        self._last_rotated: float | None = None
        self._last_error: str | None = None
        self._lock = asyncio.Lock()

    # ---- read-only views (orbit doctor, orbit_info)

    @property
    def path(self) -> Path:
        return self._file.path

    @property
    def token(self) -> str | None:
        """The cached token while it has not expired; ``None`` otherwise."""
        state = self._state
        if state is None or state.remaining(self._clock()) <= 0:
            return None
        return state.token

    @property
    def expires_at(self) -> float | None:
        return None if self._state is None else self._state.expires_at()

    @property
    def last_rotated(self) -> float | None:
        """Wall-clock time of the last successful rotation by this process."""
        return self._last_rotated

    @property
    def last_error(self) -> str | None:
        """The last rotation or remote-check failure (tokens redacted); cleared by the next success."""
        return self._last_error

    # ---- start-up

    async def ensure(self, server_reachable: bool) -> str | None:
        """Load or generate the token at start-up; returns it, or ``None`` when none could be obtained.

        Missing, garbage or expired → rotate. If the server is reachable and rejects the token → rotate at once;
        a network error during that check keeps the token. Never raises for network or file failures.
        """
        try:
            self._state = self._file.load()
        except OSError as exc:
            self._note_error(f"reading {self._file.path}: {exc}")
            log.warning("device token file unreadable path=%s error=%s", self._file.path, self._last_error)
            self._state = None
        state = self._state
        reason = rotation_reason(state, None if state is None else state.mtime, self._clock())
        if reason is None and state is not None and server_reachable:
            reason = await self._remote_reason(state)
        if reason is not None:
            await self._rotate(reason, stop=None)
        return self.token

    # ---- rotation loop

    async def run(self, stop: asyncio.Event) -> None:
        """Local check every 30 s (exactly at expiry when sooner), remote check every 5 min, until ``stop``."""
        now = self._monotonic()
        next_local = now + self._first_local_delay()
        next_remote = now + REMOTE_CHECK_INTERVAL
        while not stop.is_set():
            try:
                delay = max(0.0, min(next_local, next_remote) - self._monotonic())
                if await self._sleep_or_stop(delay, stop):
                    break
                now = self._monotonic()
                if now >= next_local:
                    local_delay = await self._guarded(self._local_check(stop), "local check")
                    next_local = self._monotonic() + local_delay
                if now >= next_remote and not stop.is_set():
                    await self._guarded(self._remote_check(stop), "remote check")
                    next_remote += REMOTE_CHECK_INTERVAL
                    if next_remote <= now:  # suspended for longer than an interval: no burst of catch-up checks
                        next_remote = now + REMOTE_CHECK_INTERVAL
            except asyncio.CancelledError:
                raise
            except Exception:  # the injected sleep itself failed: back off on the event, never spin or raise
                log.exception("device token loop error")
                next_local = next_remote = self._monotonic() + LOCAL_CHECK_INTERVAL
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), LOCAL_CHECK_INTERVAL)
        log.debug("device token loop stopped")

    async def _guarded(self, check: Awaitable[float | None], what: str) -> float:
        try:
            delay = await check
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._note_error(f"{what}: {type(exc).__name__}: {exc}")
            log.error("device token %s failed error=%s", what, self._last_error)  # no traceback: it may hold the token
            return LOCAL_CHECK_INTERVAL
        return LOCAL_CHECK_INTERVAL if delay is None else delay

    def _first_local_delay(self) -> float:
        state = self._state
        if state is None:
            return LOCAL_CHECK_INTERVAL
        return max(0.0, decide_local_check(state, state.mtime, self._clock()).next_check_in)

    async def _local_check(self, stop: asyncio.Event) -> float:
        now = self._clock()
        current_mtime = self._file.mtime()
        decision = decide_local_check(self._state, current_mtime, now)
        if not decision.rotate_now and not self._rotation_pending:
            return decision.next_check_in
        reason = rotation_reason(self._state, current_mtime, now) or RotationReason.RETRY
        await self._rotate(reason, stop)
        return LOCAL_CHECK_INTERVAL

    async def _remote_check(self, stop: asyncio.Event) -> None:
        state = self._state
        if state is None:
            return
        reason = await self._remote_reason(state)
        if reason is not None:
            await self._rotate(reason, stop)

    async def _remote_reason(self, state: TokenState) -> RotationReason | None:
        try:
            accepted = await self._api.check_device_token(state.token)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._note_error(f"checking token: {type(exc).__name__}: {exc}", state.token)
            log.warning(
                "device token check failed, keeping token token=%s error=%s", redact(state.token), self._last_error
            )
            return None
        if accepted:
            return None
        log.info("device token rejected by server token=%s", redact(state.token))
        return RotationReason.REJECTED

    # ---- rotation

    async def _rotate(self, reason: RotationReason, stop: asyncio.Event | None) -> bool:
        """New UUID → register → write the file → re-read; up to 3 attempts 5 s apart (a 409 is one attempt)."""
        async with self._lock:
            old = self._state
            for attempt in range(1, WRITE_ATTEMPTS + 1):
                token = token_from_bytes(self._rng(16))
                try:
                    await self._api.register_device_token(token)
                    state = await asyncio.to_thread(self._file.write, token, self._clock())
                except asyncio.CancelledError:
                    raise
                except DeviceTokenConflictError:
                    self._note_error("registering token: conflicts with another host")
                    log.warning(
                        "device token conflicts with another host token=%s attempt=%d/%d",
                        redact(token),
                        attempt,
                        WRITE_ATTEMPTS,
                    )
                except Exception as exc:
                    self._note_error(f"rotating token: {type(exc).__name__}: {exc}", token)
                    log.warning(
                        "device token rotation attempt failed token=%s attempt=%d/%d error=%s",
                        redact(token),
                        attempt,
                        WRITE_ATTEMPTS,
                        self._last_error,
                    )
                else:
                    self._state = state
                    self._rotation_pending = False
                    self._last_rotated = self._clock()
                    self._last_error = None
                    log.info(
                        "device token rotated reason=%s old=%s new=%s",
                        reason.value,
                        redact(None if old is None else old.token),
                        redact(token),
                    )
                    return True
                if attempt < WRITE_ATTEMPTS and await self._sleep_or_stop(WRITE_RETRY_DELAY, stop):
                    break
            self._rotation_pending = True
            log.error("device token rotation failed reason=%s attempts=%d", reason.value, WRITE_ATTEMPTS)
            return False

    # ---- helpers

    def _note_error(self, message: str, *tokens: str) -> None:
        for secret in (*tokens, *([] if self._state is None else [self._state.token])):
            message = message.replace(secret, redact(secret))
        self._last_error = message

    async def _sleep_or_stop(self, delay: float, stop: asyncio.Event | None) -> bool:
        """Sleep ``delay`` with the injected sleep; returns True (early) once ``stop`` is set."""
        if stop is None:
            await self._sleep(delay)
            return False
        if stop.is_set():
            return True
        sleeper = asyncio.ensure_future(self._sleep(delay))
        waiter = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({sleeper, waiter}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (sleeper, waiter):
                task.cancel()
            await asyncio.gather(sleeper, waiter, return_exceptions=True)
        if stop.is_set():
            return True
        sleeper.result()  # re-raise a failure of the injected sleep
        return False
