"""fleet-stub's connection limits (ADR 0014): settings, the cap from the open-files limit, who is shed, deadlines."""

from __future__ import annotations

import asyncio
import gc
import ssl
import weakref
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from uvicorn.server import ServerState

from server_stub.connection_guard import (
    EXPIRIES_PER_TURN,
    HANDSHAKES_PER_TURN,
    MAX_EARLY_BYTES,
    Connection,
    ConnectionGuard,
    Phase,
    _Accepted,
    vouch_for,
)
from server_stub.connection_limits import (
    ConnectionLimits,
    SettingsValueError,
    WhenFull,
    connection_cap,
    descriptor_budget,
    limits_from,
)
from server_stub.limited_http import LimitedHttpProtocol
from server_stub.settings import SettingsError, build_settings

# --- settings ---------------------------------------------------------------------------------------------------


def test_defaults_suit_thousands_of_agents() -> None:
    limits = limits_from({})
    assert limits == ConnectionLimits()
    assert (limits.max_header_line, limits.max_header_bytes, limits.max_headers) == (8192, 65536, 100)
    assert (limits.header_timeout, limits.body_timeout, limits.tls_handshake_timeout) == (10.0, 60.0, 10.0)
    assert limits.idle_timeout == 75.0
    assert limits.max_connections is None and limits.when_full is WhenFull.SHED_IDLE


def test_every_limit_is_changeable_by_environment_and_the_flag_wins() -> None:
    env = {
        "FLEET_STUB_MAX_HEADER_LINE": "4096",
        "FLEET_STUB_MAX_HEADER_BYTES": "32_768",
        "FLEET_STUB_MAX_HEADERS": "50",
        "FLEET_STUB_HEADER_TIMEOUT": "2.5",
        "FLEET_STUB_BODY_TIMEOUT": "30",
        "FLEET_STUB_TLS_HANDSHAKE_TIMEOUT": "5",
        "FLEET_STUB_IDLE_TIMEOUT": "600",
        "FLEET_STUB_MAX_CONNECTIONS": "5000",
        "FLEET_STUB_WHEN_FULL": "refuse-new",
    }
    limits = limits_from(env)
    assert limits == ConnectionLimits(4096, 32768, 50, 2.5, 30.0, 5.0, 600.0, 5000, WhenFull.REFUSE_NEW)
    assert limits_from(env, max_connections="700").max_connections == 700
    assert limits_from({"FLEET_STUB_MAX_CONNECTIONS": "auto"}).max_connections is None


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"FLEET_STUB_MAX_HEADERS": "0"}, "FLEET_STUB_MAX_HEADERS must be positive"),
        ({"FLEET_STUB_MAX_HEADER_BYTES": "64k"}, "FLEET_STUB_MAX_HEADER_BYTES must be a whole number"),
        ({"FLEET_STUB_HEADER_TIMEOUT": "soon"}, "FLEET_STUB_HEADER_TIMEOUT must be a number of seconds"),
        ({"FLEET_STUB_IDLE_TIMEOUT": "-1"}, "FLEET_STUB_IDLE_TIMEOUT must be a positive number"),
        ({"FLEET_STUB_BODY_TIMEOUT": "inf"}, "FLEET_STUB_BODY_TIMEOUT must be a positive number"),
        ({"FLEET_STUB_WHEN_FULL": "panic"}, "FLEET_STUB_WHEN_FULL must be one of shed-idle, refuse-new"),
        ({"FLEET_STUB_MAX_HEADER_LINE": "100000"}, "must not exceed FLEET_STUB_MAX_HEADER_BYTES"),
    ],
)
def test_bad_values_are_named(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsValueError, match=message):
        limits_from(env)


def test_serve_settings_carry_the_limits_and_report_mistakes_as_settings_errors(tmp_path: Path) -> None:
    common: dict[str, Any] = {
        "listen": None,
        "enroll_secrets": None,
        "tuf_repo": None,
        "admin_token": None,
        "tls_cert": None,
        "tls_key": None,
        "config_file": None,
    }
    env = {"FLEET_STUB_HEADER_TIMEOUT": "3"}
    settings = build_settings(data_dir=str(tmp_path), max_connections="900", env=env, **common)
    assert settings.limits.header_timeout == 3.0 and settings.limits.max_connections == 900
    with pytest.raises(SettingsError, match="--max-connections must be a whole number"):
        build_settings(data_dir=str(tmp_path), max_connections="lots", env={}, **common)


def test_the_open_files_limit_never_decides_who_gets_in() -> None:
    assert descriptor_budget(None) is None
    assert descriptor_budget(20000) == 20000 - 64 - 1250
    assert descriptor_budget(256) == 256 - 64 - 16
    assert connection_cap(ConnectionLimits(), 20000) == 18686  # the default: what the limit leaves room for
    assert connection_cap(ConnectionLimits(max_connections=500), 20000) == 500
    assert connection_cap(ConnectionLimits(max_connections=500), 256) == 176  # never past the descriptors
    assert connection_cap(ConnectionLimits(max_connections=500), None) == 500
    assert connection_cap(ConnectionLimits(), None) is None


# --- the guard ------------------------------------------------------------------------------------------------------


class FakeTransport:
    def __init__(self, name: str) -> None:
        self.name = name
        self.aborted = False
        self.protocol: object = None

    def abort(self) -> None:
        self.aborted = True

    def set_protocol(self, protocol: object) -> None:
        self.protocol = protocol

    def is_closing(self) -> bool:
        return self.aborted


class FakeHttp:
    """Stands in for LimitedHttpProtocol: a new connection waits for its first request."""

    def __init__(self, guard: Callable[[], ConnectionGuard], conn: Connection) -> None:
        self._guard = guard
        self.conn = conn
        self.expired: list[Phase] = []
        self.conn_released = False

    def connection_made(self, transport: asyncio.Transport) -> None:
        guard = self._guard()
        guard.enter(self.conn, Phase.WAITING, guard.now() + guard.limits.header_timeout)

    def deadline_passed(self, phase: Phase) -> None:
        self.expired.append(phase)

    def released(self) -> None:
        self.conn_released = True


def make_guard(cap: int | None, **limits: Any) -> tuple[ConnectionGuard, list[FakeHttp], list[str]]:
    made: list[FakeHttp] = []
    counted: list[str] = []
    holder: list[ConnectionGuard] = []

    def make_http(conn: Connection) -> FakeHttp:
        http = FakeHttp(lambda: holder[0], conn)
        made.append(http)
        return http

    guard = ConnectionGuard(ConnectionLimits(**limits), cap, None, make_http, counted.append)
    holder.append(guard)
    return guard, made, counted


def run(test: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(test())


async def advance(guard: ConnectionGuard, now: float) -> None:
    """The wheel's tick at ``now``, and the turns of the loop that act on what it found."""
    guard.advance(now)
    for _turn in range(1000):
        if not guard.waiting_turns:
            return
        await asyncio.sleep(0)
    raise AssertionError("the guard's paced work never ended")


def accept(guard: ConnectionGuard, name: str) -> tuple[FakeTransport, Connection | None]:
    transport = FakeTransport(name)
    return transport, guard.accepted(transport)  # type: ignore[arg-type]


def test_shed_idle_closes_the_unproven_idle_first_then_the_proven_and_never_one_being_served() -> None:
    async def scenario() -> None:
        guard, _made, counted = make_guard(cap=4)
        busy_t, busy = accept(guard, "busy")
        proven_t, proven = accept(guard, "proven")
        old_t, old = accept(guard, "old unproven")
        new_t, new = accept(guard, "new unproven")
        assert busy and proven and old and new
        guard.enter(busy, Phase.APP, None)  # answering a request
        proven.vouch()
        guard.enter(proven, Phase.IDLE, guard.now() + 75)
        assert guard.open_connections == 4

        _fifth_t, fifth = accept(guard, "fifth")
        assert fifth is not None and old_t.is_closing() and not new_t.is_closing() and not proven_t.is_closing()
        sixth_t, sixth = accept(guard, "sixth")
        assert sixth is not None and new_t.is_closing() and not proven_t.is_closing()
        guard.enter(fifth, Phase.BODY, guard.now() + 60)  # a request arriving: not sheddable
        _seventh_t, seventh = accept(guard, "seventh")
        assert seventh is not None and sixth_t.is_closing() and not proven_t.is_closing()
        guard.enter(seventh, Phase.APP, None)
        _eighth_t, eighth = accept(guard, "eighth")  # only the proven idle one is left to shed
        assert eighth is not None and proven_t.is_closing()
        guard.enter(eighth, Phase.APP, None)
        ninth_t, ninth = accept(guard, "ninth")  # nothing idle at all: the newcomer is refused
        assert ninth is None and ninth_t.is_closing() and not busy_t.is_closing()
        assert guard.open_connections == 4
        assert counted.count("connections_shed_unproven") == 3
        assert counted.count("connections_shed_proven") == 1
        assert counted.count("connections_refused") == 1

    run(scenario)


def test_closing_connections_are_shed_before_anyone() -> None:
    async def scenario() -> None:
        guard, _made, _counted = make_guard(cap=2)
        _first_t, first = accept(guard, "first")
        closing_t, closing = accept(guard, "closing")
        assert first and closing
        guard.enter(closing, Phase.CLOSING, guard.now() + 2)
        _third_t, third = accept(guard, "third")
        assert third is not None and closing_t.is_closing()

    run(scenario)


def test_refuse_new_keeps_everyone_already_in() -> None:
    async def scenario() -> None:
        guard, _made, counted = make_guard(cap=2, when_full=WhenFull.REFUSE_NEW)
        first_t, _ = accept(guard, "first")
        second_t, _ = accept(guard, "second")
        third_t, third = accept(guard, "third")
        assert third is None and third_t.is_closing() and not first_t.is_closing() and not second_t.is_closing()
        assert counted == ["connections_refused"]

    run(scenario)


def test_a_released_connection_makes_room() -> None:
    async def scenario() -> None:
        guard, _made, _counted = make_guard(cap=1, when_full=WhenFull.REFUSE_NEW)
        _first_t, first = accept(guard, "first")
        assert first is not None
        guard.release(first)
        guard.release(first)  # idempotent
        assert guard.open_connections == 0
        _second_t, second = accept(guard, "second")
        assert second is not None

    run(scenario)


def test_a_released_connection_lets_go_of_its_http_side() -> None:
    """Connection and HTTP side refer to each other: release breaks that, so a closed connection is freed by its
    reference count, not by one of the collector's full passes (which held the loop 50–140 ms under attack)."""

    async def scenario() -> None:
        guard, _made, _counted = make_guard(cap=None)
        conn = guard.accepted(FakeTransport("t"))  # type: ignore[arg-type]
        assert conn is not None
        http = FakeHttp(lambda: guard, conn)
        conn.http = http
        guard.release(conn)
        assert http.conn_released
        assert conn.http is None

    run(scenario)


def test_a_protocol_whose_handshake_never_finished_is_freed_without_the_collector(tmp_path: Path) -> None:
    """Its TLS handshake never done, LimitedHttpProtocol gets no connection_lost; released() breaks the cycle with
    its parser, so it dies with its last reference, the collector off."""

    async def scenario() -> None:
        guard, _made, _counted = make_guard(cap=None)
        conn = guard.accepted(FakeTransport("t"))  # type: ignore[arg-type]
        assert conn is not None
        config = uvicorn.Config(app=lambda *_: None, http="httptools")
        config.load()
        protocol = LimitedHttpProtocol(config, ServerState(), {}, guard, conn)
        conn.http = protocol
        alive = weakref.ref(protocol)
        del protocol
        gc.disable()
        try:
            guard.release(conn)
            del conn
            assert alive() is None
        finally:
            gc.enable()

    run(scenario)


def test_deadlines_reach_the_protocol_in_the_phase_they_were_set_for() -> None:
    async def scenario() -> None:
        guard, made, _counted = make_guard(cap=None, header_timeout=1.0, body_timeout=3.0, idle_timeout=5.0)
        start = guard.now()
        _t1, waiting = accept(guard, "waiting")
        _t2, body = accept(guard, "body")
        _t3, idle = accept(guard, "idle")
        _t4, served = accept(guard, "served")
        assert waiting and body and idle and served
        guard.enter(body, Phase.BODY, start + 3.0)
        guard.enter(idle, Phase.IDLE, start + 5.0)
        guard.enter(served, Phase.APP, None)
        await advance(guard, start + 0.5)
        assert [h.expired for h in made] == [[], [], [], []]
        await advance(guard, start + 1.3)
        assert [h.expired for h in made] == [[Phase.WAITING], [], [], []]
        await advance(guard, start + 3.3)
        assert [h.expired for h in made] == [[Phase.WAITING], [Phase.BODY], [], []]
        await advance(guard, start + 5.3)
        assert [h.expired for h in made] == [[Phase.WAITING], [Phase.BODY], [Phase.IDLE], []]
        await advance(guard, start + 1000)
        assert made[3].expired == []  # a request being answered has no deadline of ours

    run(scenario)


def test_moving_on_replaces_the_deadline() -> None:
    async def scenario() -> None:
        guard, made, _counted = make_guard(cap=None, header_timeout=1.0)
        start = guard.now()
        _t, conn = accept(guard, "conn")
        assert conn is not None
        guard.enter(conn, Phase.HEADERS, conn.deadline)  # a first request starts: the connection's deadline runs on
        guard.enter(conn, Phase.BODY, start + 10)
        await advance(guard, start + 5)
        assert made[0].expired == []
        guard.enter(conn, Phase.IDLE, start + 20)
        await advance(guard, start + 15)
        assert made[0].expired == []
        await advance(guard, start + 21)
        assert made[0].expired == [Phase.IDLE]

    run(scenario)


def test_vouching_goes_through_the_request_scope() -> None:
    conn = Connection(FakeTransport("t"))  # type: ignore[arg-type]
    vouch_for({"type": "http"})  # a scope from elsewhere (tests' ASGI clients): nothing happens
    vouch_for({"type": "http", "extensions": {"fleet_stub.connection": {"vouch": conn.vouch}}})
    assert conn.vouched


# --- pacing: bursts spread over turns of the loop -------------------------------------------------------------------


class ReadingTransport(FakeTransport):
    """What the TLS protocol and the pacing need of a raw transport: writes are kept, reading can pause."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.reading = True
        self.written = b""

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def is_reading(self) -> bool:
        return self.reading

    def write(self, data: bytes) -> None:
        self.written += data

    def get_extra_info(self, _name: str, default: object = None) -> object:
        return default


def tls_guard(context: ssl.SSLContext) -> ConnectionGuard:
    holder: list[ConnectionGuard] = []
    guard = ConnectionGuard(
        ConnectionLimits(), None, context, lambda conn: FakeHttp(lambda: holder[0], conn), lambda _name: None
    )
    holder.append(guard)
    return guard


def test_a_burst_of_new_connections_handshakes_a_few_per_turn_newest_first() -> None:
    async def scenario() -> None:
        guard = tls_guard(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
        burst = [ReadingTransport(f"c{n}") for n in range(3 * HANDSHAKES_PER_TURN + 1)]
        accepted = [_Accepted(guard) for _t in burst]
        for protocol, transport in zip(accepted, burst, strict=True):
            transport.protocol = protocol
            protocol.connection_made(transport)  # type: ignore[arg-type]
            protocol.data_received(b"\x16\x03\x01")  # the start of a hello
        assert not any(isinstance(t.protocol, asyncio.BaseProtocol) and t.protocol not in accepted for t in burst)
        assert not any(t.is_reading() for t in burst)  # no TLS work in the turn the hellos arrived in
        accepted[1].eof_received()  # e.g. gone while it waited: skipped when its turn comes
        await asyncio.sleep(0)
        started = [t.name for t in burst if t.protocol not in accepted]
        assert started == [f"c{n}" for n in range(len(burst) - HANDSHAKES_PER_TURN, len(burst))]  # newest first
        for _turn in range(10):
            await asyncio.sleep(0)
        assert [t.protocol not in accepted for t in burst] == [n != 1 for n in range(len(burst))]
        assert not guard.waiting_turns

    run(scenario)


def test_a_hello_sent_before_its_turn_is_kept_and_handed_to_tls(tmp_path: Path) -> None:
    from server_stub.tls_material import ensure_self_signed, server_ssl_context  # noqa: PLC0415

    files = ensure_self_signed(tmp_path / "tls")
    client = ssl.create_default_context(cafile=str(files.ca)).wrap_bio(
        ssl.MemoryBIO(), outgoing := ssl.MemoryBIO(), server_hostname="localhost"
    )
    with pytest.raises(ssl.SSLWantReadError):
        client.do_handshake()
    hello = outgoing.read()

    async def scenario() -> None:
        guard = tls_guard(server_ssl_context(files.cert, files.key))
        raw = ReadingTransport("early")
        accepted = _Accepted(guard)
        raw.protocol = accepted
        accepted.connection_made(raw)  # type: ignore[arg-type]
        accepted.data_received(hello[:10])  # the hello arrives (in pieces) before the connection's turn
        assert not raw.is_reading()
        accepted.data_received(hello[10:])
        await advance(guard, guard.now())
        assert raw.protocol is not accepted and raw.is_reading()  # TLS took over and reads on
        assert raw.written.startswith(b"\x16\x03")  # a TLS handshake record: the server answered the hello

        junk = ReadingTransport("junk")
        other = _Accepted(guard)
        other.connection_made(junk)  # type: ignore[arg-type]
        other.data_received(b"x" * (MAX_EARLY_BYTES + 1))  # no hello is this long
        assert junk.aborted

    run(scenario)


def test_deadlines_passed_together_are_acted_on_a_few_per_turn_and_only_if_still_due() -> None:
    async def scenario() -> None:
        guard, made, _counted = make_guard(cap=None, header_timeout=1.0)
        start = guard.now()
        conns = [accept(guard, f"c{n}")[1] for n in range(2 * EXPIRIES_PER_TURN + 5)]
        guard.advance(start + 1.5)  # all of them waited too long for a first request
        moved = conns[-1]
        assert moved is not None
        guard.enter(moved, Phase.HEADERS, start + 30)  # ... but this one's request began before its turn came
        assert sum(bool(h.expired) for h in made) == 0
        await asyncio.sleep(0)
        assert sum(bool(h.expired) for h in made) == EXPIRIES_PER_TURN
        await advance(guard, start + 1.5)
        assert [bool(h.expired) for h in made] == [True] * (len(conns) - 1) + [False]

    run(scenario)
