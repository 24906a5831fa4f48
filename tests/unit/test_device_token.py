"""Device token (orbit/fleet/device_token.py): pure decisions, the 0644 file store, start-up ensure, rotation loop.

A fake API and a fake clock; the injected sleep advances the clock instead of waiting.
"""

from __future__ import annotations

import asyncio
import logging
import os
import stat
import sys
import uuid
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import pytest

from orbit.fleet.device_token import (
    LOCAL_CHECK_INTERVAL,
    TOKEN_TTL,
    DeviceTokenConflictError,
    DeviceTokenManager,
    LocalCheck,
    RotationReason,
    TokenFile,
    TokenState,
    decide_local_check,
    is_valid_token,
    redact,
    rotation_reason,
    token_from_bytes,
)

T0 = 1_700_000_000.0
KNOWN = "0b8f5a5e-2c1d-4e4f-9a6b-7c8d9e0f1a2b"
OTHER = "5d0c1b2a-3e4f-4a5b-8c6d-7e8f9a0b1c2d"
posix_only = pytest.mark.skipif(sys.platform == "win32", reason="POSIX file modes")


class FakeTime:
    """Wall and monotonic clocks that move only when the code under test sleeps."""

    def __init__(self) -> None:
        self.wall = T0
        self.mono = 1000.0
        self.sleeps: list[float] = []
        self.stop: asyncio.Event | None = None
        self.stop_after: float | None = None  # set ``stop`` once more than this has elapsed
        self.mono_start = self.mono

    def time(self) -> float:
        return self.wall

    def monotonic(self) -> float:
        return self.mono

    def elapsed(self) -> float:
        return self.mono - self.mono_start

    async def sleep(self, delay: float) -> None:
        self.sleeps.append(delay)
        self.wall += delay
        self.mono += delay
        if self.stop is not None and self.stop_after is not None and self.elapsed() > self.stop_after:
            self.stop.set()
        await asyncio.sleep(0)


class FakeApi:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.accepted: set[str] = set()
        self.registered: list[str] = []
        self.register_calls: list[str] = []
        self.file_at_register: list[str | None] = []
        self.register_failures = 0
        self.conflicts = 0
        self.check_calls: list[str] = []
        self.check_error: Exception | None = None
        self.on_check: Any = None

    async def register_device_token(self, token: str) -> None:
        self.register_calls.append(token)
        self.file_at_register.append(self.path.read_text() if self.path.exists() else None)
        if self.conflicts:
            self.conflicts -= 1
            raise DeviceTokenConflictError("auth token conflicts with another host")
        if self.register_failures:
            self.register_failures -= 1
            raise ConnectionError(f"POST https://fleet.example/api/fleet/orbit/device_token failed for {token}")
        self.registered.append(token)
        self.accepted.add(token)

    async def check_device_token(self, token: str) -> bool:
        self.check_calls.append(token)
        if self.on_check is not None:
            self.on_check()
        if self.check_error is not None:
            raise self.check_error
        return token in self.accepted


def make(tmp_path: Path) -> tuple[Path, FakeApi, FakeTime, DeviceTokenManager]:
    path = tmp_path / "identifier"
    api = FakeApi(path)
    fake = FakeTime()
    manager = DeviceTokenManager(path, api, clock=fake.time, monotonic=fake.monotonic, sleep=fake.sleep)
    return path, api, fake, manager


def put(path: Path, token: str, mtime: float, mode: int = 0o644) -> None:
    path.write_text(token)
    os.chmod(path, mode)
    os.utime(path, (mtime, mtime))


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout=10))


async def loop_for(manager: DeviceTokenManager, fake: FakeTime, seconds: float) -> None:
    """Run the loop until more than ``seconds`` of fake time have passed from now."""
    stop = asyncio.Event()
    fake.stop, fake.stop_after, fake.mono_start = stop, seconds, fake.mono
    await manager.run(stop)


def status(manager: DeviceTokenManager) -> tuple[str | None, str | None]:
    return manager.token, manager.last_error


# ---------------------------------------------------------------------------------------------- pure core


def test_local_check_decisions() -> None:
    state = TokenState(KNOWN, T0)
    assert decide_local_check(None, None, T0) == LocalCheck(True, LOCAL_CHECK_INTERVAL)
    assert decide_local_check(state, None, T0).rotate_now  # file deleted
    assert decide_local_check(state, T0 + 5, T0 + 10).rotate_now  # replaced by someone
    assert decide_local_check(state, T0, T0 + 100) == LocalCheck(False, 30.0)
    assert decide_local_check(state, T0, T0 + TOKEN_TTL - 12.5) == LocalCheck(False, 12.5)  # re-check at expiry
    assert decide_local_check(state, T0, T0 + TOKEN_TTL - 1.0).rotate_now  # ≤ 1 s left
    assert decide_local_check(state, T0, T0 + TOKEN_TTL).rotate_now
    assert decide_local_check(state, T0, T0 + 2 * TOKEN_TTL).rotate_now
    assert decide_local_check(state, T0, T0 - 2 * TOKEN_TTL).rotate_now  # clock went back: cannot age it


def test_rotation_reasons() -> None:
    state = TokenState(KNOWN, T0)
    assert rotation_reason(None, None, T0) is RotationReason.MISSING
    assert rotation_reason(state, T0 + 1, T0) is RotationReason.CHANGED
    assert rotation_reason(state, T0, T0 + TOKEN_TTL + 1) is RotationReason.EXPIRED
    assert rotation_reason(state, T0, T0 + TOKEN_TTL - 0.5) is RotationReason.EXPIRING
    assert rotation_reason(state, T0, T0 + TOKEN_TTL - 1.5) is None


def test_token_shape_and_redaction() -> None:
    assert is_valid_token(KNOWN)
    assert is_valid_token(str(uuid.uuid4()))
    assert not is_valid_token(str(uuid.uuid1()))
    assert not is_valid_token("garbage")
    assert not is_valid_token(KNOWN + "/../x")
    assert not is_valid_token("")
    token = token_from_bytes(b"\x00" * 16)
    assert is_valid_token(token) and uuid.UUID(token).version == 4
    with pytest.raises(ValueError):
        token_from_bytes(b"short")
    assert redact(KNOWN) == "0b8f…"
    assert redact(None) == "-"
    assert KNOWN not in repr(TokenState(KNOWN, T0))


# ---------------------------------------------------------------------------------------------- file store


@posix_only
def test_token_file_write_sets_mode_and_mtime(tmp_path: Path) -> None:
    old_umask = os.umask(0o077)
    try:
        state = TokenFile(tmp_path / "identifier").write(KNOWN, T0 - 42)
    finally:
        os.umask(old_umask)
    path = tmp_path / "identifier"
    assert path.read_text() == KNOWN  # no newline
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert path.stat().st_mtime == T0 - 42 == state.mtime
    assert state.token == KNOWN


def test_token_file_load_strips_and_rejects_garbage(tmp_path: Path) -> None:
    path = tmp_path / "identifier"
    store = TokenFile(path)
    assert store.load() is None
    put(path, f"  {KNOWN}\n", T0)
    assert store.load() == TokenState(KNOWN, T0)
    for garbage in ("", "not-a-token", "x" * 5000, f"{KNOWN} {OTHER}"):
        put(path, garbage, T0)
        assert store.load() is None
    path.write_bytes(b"\xff\xfe\x00")
    assert store.load() is None
    with pytest.raises(ValueError):
        store.write("garbage", T0)


@posix_only
def test_legacy_0600_file_is_fixed_to_0644_and_kept(tmp_path: Path) -> None:
    path, api, _fake, manager = make(tmp_path)
    put(path, KNOWN, T0 - 60, mode=0o600)
    api.accepted.add(KNOWN)

    assert run(manager.ensure(server_reachable=True)) == KNOWN
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert path.stat().st_mtime == T0 - 60  # chmod does not age or refresh the token
    assert api.register_calls == []


# ---------------------------------------------------------------------------------------------- ensure


@posix_only
def test_start_without_file_registers_first_then_writes(tmp_path: Path) -> None:
    path, api, fake, manager = make(tmp_path)

    token = run(manager.ensure(server_reachable=True))

    assert token is not None and is_valid_token(token) and uuid.UUID(token).version == 4
    assert api.registered == [token]
    assert api.file_at_register == [None]  # the file did not exist while the server was being asked
    assert path.read_text() == token
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert path.stat().st_mtime == T0
    assert manager.token == token
    assert manager.last_rotated == T0
    assert manager.expires_at == T0 + TOKEN_TTL
    assert manager.last_error is None
    assert fake.sleeps == []


def test_expired_token_is_rotated_even_when_server_unreachable(tmp_path: Path) -> None:
    path, api, _fake, manager = make(tmp_path)
    put(path, KNOWN, T0 - TOKEN_TTL - 1)
    api.accepted.add(KNOWN)  # the server's opinion does not matter: the hour is over

    token = run(manager.ensure(server_reachable=False))

    assert token is not None and token != KNOWN
    assert api.file_at_register == [KNOWN]  # registered while the old token was still on disk
    assert path.read_text() == token
    assert api.check_calls == []


def test_valid_token_accepted_by_server_is_kept(tmp_path: Path) -> None:
    path, api, _fake, manager = make(tmp_path)
    put(path, KNOWN, T0 - 600)
    api.accepted.add(KNOWN)

    assert run(manager.ensure(server_reachable=True)) == KNOWN

    assert api.check_calls == [KNOWN]
    assert api.register_calls == []
    assert path.stat().st_mtime == T0 - 600
    assert manager.last_rotated is None


def test_valid_token_not_checked_when_server_unreachable(tmp_path: Path) -> None:
    path, api, _fake, manager = make(tmp_path)
    put(path, KNOWN, T0 - 600)

    assert run(manager.ensure(server_reachable=False)) == KNOWN
    assert api.check_calls == []


def test_valid_token_rejected_by_server_is_rotated(tmp_path: Path) -> None:
    path, api, _fake, manager = make(tmp_path)
    put(path, KNOWN, T0 - 600)  # e.g. the server's database was restored

    token = run(manager.ensure(server_reachable=True))

    assert token is not None and token != KNOWN
    assert api.check_calls == [KNOWN]
    assert path.read_text() == token


def test_network_error_on_startup_check_keeps_token(tmp_path: Path) -> None:
    path, api, _fake, manager = make(tmp_path)
    put(path, KNOWN, T0 - 600)
    api.check_error = ConnectionError(f"HEAD https://fleet.example/api/latest/fleet/device/{KNOWN}/ping: reset")

    assert run(manager.ensure(server_reachable=True)) == KNOWN
    assert api.register_calls == []
    assert manager.last_error is not None and "ConnectionError" in manager.last_error
    assert KNOWN not in manager.last_error


def test_garbage_file_is_treated_as_missing(tmp_path: Path) -> None:
    path, api, _fake, manager = make(tmp_path)
    put(path, "hello, i am not a token\n", T0 - 5)

    token = run(manager.ensure(server_reachable=True))

    assert token is not None and is_valid_token(token)
    assert api.check_calls == []  # nothing worth asking the server about
    assert path.read_text() == token


def test_registration_failing_three_times_writes_nothing_and_next_tick_retries(tmp_path: Path) -> None:
    path, api, fake, manager = make(tmp_path)
    api.register_failures = 3

    assert run(manager.ensure(server_reachable=True)) is None

    assert len(api.register_calls) == 3
    assert len(set(api.register_calls)) == 3  # a fresh UUID per attempt
    assert fake.sleeps == [5.0, 5.0]
    assert not path.exists()
    assert manager.token is None
    assert manager.last_error is not None and "ConnectionError" in manager.last_error
    assert all(token not in manager.last_error for token in api.register_calls)

    run(loop_for(manager, fake, LOCAL_CHECK_INTERVAL))

    token, error = status(manager)  # (a call, so mypy forgets the narrowing above)
    assert len(api.register_calls) == 4
    assert path.read_text() == api.registered[0] == token
    assert error is None


def test_failed_rotation_of_a_rejected_token_is_retried_on_next_tick(tmp_path: Path) -> None:
    path, api, fake, manager = make(tmp_path)
    put(path, KNOWN, T0 - 600)  # not expired locally, but the server does not know it
    api.register_failures = 3

    assert run(manager.ensure(server_reachable=True)) == KNOWN  # the best there is; the loop keeps trying
    assert path.read_text() == KNOWN

    run(loop_for(manager, fake, LOCAL_CHECK_INTERVAL))

    assert len(api.register_calls) == 4
    assert path.read_text() == api.registered[0] != KNOWN


def test_conflict_generates_a_new_token_and_counts_as_an_attempt(tmp_path: Path) -> None:
    path, api, fake, manager = make(tmp_path)
    api.conflicts = 1

    token = run(manager.ensure(server_reachable=True))

    assert len(api.register_calls) == 2
    assert api.register_calls[0] != api.register_calls[1] == token
    assert path.read_text() == token
    assert fake.sleeps == [5.0]


def test_conflicts_on_every_attempt_give_up_after_three(tmp_path: Path) -> None:
    path, api, _fake, manager = make(tmp_path)
    api.conflicts = 5

    assert run(manager.ensure(server_reachable=True)) is None
    assert len(api.register_calls) == 3
    assert not path.exists()


def test_injected_rng_makes_the_token(tmp_path: Path) -> None:
    path = tmp_path / "identifier"
    api = FakeApi(path)
    fake = FakeTime()
    manager = DeviceTokenManager(
        path, api, clock=fake.time, monotonic=fake.monotonic, sleep=fake.sleep, rng=lambda n: b"\x11" * n
    )
    assert run(manager.ensure(server_reachable=True)) == token_from_bytes(b"\x11" * 16)


def test_full_token_never_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path, api, _fake, manager = make(tmp_path)
    put(path, KNOWN, T0 - 600)
    api.register_failures = 1
    api.conflicts = 1
    caplog.set_level(logging.DEBUG, logger="orbit.fleet.device_token")

    token = run(manager.ensure(server_reachable=True))  # rejected → conflict → network error → success

    assert token is not None
    assert len(api.register_calls) == 3
    assert caplog.records
    for secret in (KNOWN, *api.register_calls):
        assert secret not in caplog.text
    assert redact(token) in caplog.text


# ---------------------------------------------------------------------------------------------- rotation loop


def test_replaced_file_is_rotated_on_next_local_check(tmp_path: Path) -> None:
    path, api, fake, manager = make(tmp_path)
    first = run(manager.ensure(server_reachable=True))
    put(path, OTHER, T0 + 7)  # someone (or something) swapped the file

    run(loop_for(manager, fake, LOCAL_CHECK_INTERVAL))

    current = path.read_text()
    assert current not in (first, OTHER)
    assert api.registered == [first, current]
    assert manager.token == current
    assert fake.sleeps[0] == LOCAL_CHECK_INTERVAL


def test_unchanged_valid_token_is_left_alone_by_local_checks(tmp_path: Path) -> None:
    path, api, fake, manager = make(tmp_path)
    first = run(manager.ensure(server_reachable=True))

    run(loop_for(manager, fake, 20 * 60))

    assert api.registered == [first]
    assert path.read_text() == first


def test_token_rotated_at_expiry_not_thirty_seconds_late(tmp_path: Path) -> None:
    path, api, fake, manager = make(tmp_path)
    put(path, KNOWN, T0 - TOKEN_TTL + 45)  # 45 s left
    api.accepted.add(KNOWN)
    assert run(manager.ensure(server_reachable=True)) == KNOWN

    run(loop_for(manager, fake, 60))

    assert fake.sleeps[:2] == [30.0, 15.0]  # the second check lands exactly at expiry
    assert len(api.registered) == 1
    assert path.stat().st_mtime == T0 + 45
    assert manager.last_rotated == T0 + 45


def test_remote_check_every_five_minutes(tmp_path: Path) -> None:
    _path, api, fake, manager = make(tmp_path)
    first = run(manager.ensure(server_reachable=False))
    assert api.check_calls == []

    run(loop_for(manager, fake, 11 * 60))

    assert api.check_calls == [first, first]  # at 5 and 10 min
    assert api.registered == [first]


def test_remote_rejection_rotates(tmp_path: Path) -> None:
    path, api, fake, manager = make(tmp_path)
    first = run(manager.ensure(server_reachable=False))
    api.accepted.clear()  # token revoked on the server

    run(loop_for(manager, fake, 6 * 60))

    assert api.check_calls == [first]
    assert len(api.registered) == 2
    assert path.read_text() == api.registered[1] == manager.token


def test_network_error_on_remote_check_keeps_token(tmp_path: Path) -> None:
    path, api, fake, manager = make(tmp_path)
    first = run(manager.ensure(server_reachable=False))
    api.check_error = ConnectionError("connection refused")

    run(loop_for(manager, fake, 11 * 60))

    assert len(api.check_calls) == 2
    assert api.registered == [first]
    assert path.read_text() == first == manager.token
    assert manager.last_error is not None and "connection refused" in manager.last_error


def test_loop_survives_unexpected_errors(tmp_path: Path) -> None:
    _path, api, fake, manager = make(tmp_path)
    first = run(manager.ensure(server_reachable=False))

    def explode() -> None:
        raise RuntimeError("bug in the client")

    api.on_check = explode
    run(loop_for(manager, fake, 11 * 60))

    assert len(api.check_calls) == 2  # it kept going after the first failure
    assert manager.token == first


def test_loop_exits_promptly_when_stop_is_set(tmp_path: Path) -> None:
    path = tmp_path / "identifier"
    api = FakeApi(path)
    sleeping = asyncio.Event()

    async def sleep_forever(delay: float) -> None:
        sleeping.set()
        await asyncio.Event().wait()

    async def scenario() -> None:
        manager = DeviceTokenManager(path, api, sleep=sleep_forever)
        stop = asyncio.Event()
        task = asyncio.create_task(manager.run(stop))
        await sleeping.wait()
        stop.set()
        await asyncio.wait_for(task, timeout=2)

    asyncio.run(scenario())
    assert api.register_calls == []


def test_stop_interrupts_rotation_retries(tmp_path: Path) -> None:
    path = tmp_path / "identifier"
    api = FakeApi(path)
    api.register_failures = 100
    fake = FakeTime()
    retry_sleep_started = asyncio.Event()

    async def sleep(delay: float) -> None:
        if delay == 5.0:
            retry_sleep_started.set()
            await asyncio.Event().wait()
        await fake.sleep(delay)

    async def scenario() -> None:
        manager = DeviceTokenManager(path, api, clock=fake.time, monotonic=fake.monotonic, sleep=sleep)
        stop = asyncio.Event()
        task = asyncio.create_task(manager.run(stop))
        await retry_sleep_started.wait()
        stop.set()
        await asyncio.wait_for(task, timeout=2)

    asyncio.run(scenario())
    assert len(api.register_calls) == 1
    assert not path.exists()
