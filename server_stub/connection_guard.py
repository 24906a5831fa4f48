"""Every connection from accept() to close: the connection cap and load shedding, the TLS handshake, time limits.

The stub listens with a plain TCP server whose protocol is ``ConnectionGuard.protocol`` (ADR 0014). On accept the
guard counts the connection against the cap and, when the cap is reached, makes room by its ``WhenFull`` policy:
``shed-idle`` closes the connection that has waited longest without a request being served — connections that
never proved a credential before those that did (``vouch_for``) — and ``refuse-new`` closes the newcomer. Then it
puts the loop's TLS protocol on the raw transport itself, so a handshake that never finishes is a connection it
can time out and shed like any other; the TLS protocol hands the connection to the HTTP protocol
(``limited_http``) once the handshake is done.

The HTTP protocol reports each connection's phase (``Phase``); the guard keeps one deadline per connection on a
timing wheel (one loop timer for all connections, no timer per request) and calls the protocol back when a
deadline passes: a handshake, a first request or headers not complete in time, a body not complete in time, an
idle keep-alive connection. What is answered (408) or just closed is the protocol's decision.
"""

from __future__ import annotations

import asyncio
import asyncio.sslproto
import contextlib
import enum
import logging
import math
import ssl
from collections import Counter, OrderedDict, deque
from collections.abc import Callable
from typing import Any, Protocol, cast

from starlette.types import Scope

from server_stub.connection_limits import ConnectionLimits, WhenFull

log = logging.getLogger(__name__)

EXTENSION = "fleet_stub.connection"
TLS_SHUTDOWN_TIMEOUT = 10.0  # a closing TLS connection waits this long for the peer's close_notify, then drops
SUMMARY_EVERY = 60.0  # seconds between log lines that sum up what the limits did
MAX_TICK = 0.25
# TLS handshakes started per turn of the event loop. A server-side handshake costs about half a millisecond of CPU
# (ECDHE and an ECDSA signature), and a burst of new connections (an attacker's, or a fleet reconnecting after an
# outage) would otherwise run all of them in one turn while every request already received waits: 400 of them are
# a 200 ms stall. Paced, a turn holds a few handshakes and the requests that arrived meanwhile.
HANDSHAKES_PER_TURN = 2
MAX_EARLY_BYTES = 64 * 1024  # what a client may send before its TLS handshake's turn (a hello is a few hundred bytes)
# Deadlines acted on per turn: connections opened together time out together (400 idle ones closing, 200 slow ones
# answered 408 in the same tick), and each costs a TLS write and a close. A deadline met a few turns late is still met.
EXPIRIES_PER_TURN = 32


class Phase(enum.Enum):
    HANDSHAKE = "handshake"  # accepted, TLS handshake running
    WAITING = "waiting"  # TLS done, no byte of a first request yet
    HEADERS = "headers"  # a request has started, its headers are not complete
    BODY = "body"  # headers complete (the application has the request), body still arriving
    APP = "app"  # request complete, the application is answering
    IDLE = "idle"  # keep-alive, between requests
    CLOSING = "closing"  # we or uvicorn closed it; the TLS goodbye may still be under way


SHEDDABLE = frozenset({Phase.HANDSHAKE, Phase.WAITING, Phase.HEADERS, Phase.IDLE, Phase.CLOSING})


class HttpSide(Protocol):
    """What the guard needs from the HTTP protocol of a connection (``limited_http.LimitedHttpProtocol``)."""

    def connection_made(self, transport: asyncio.Transport) -> None: ...

    def deadline_passed(self, phase: Phase) -> None: ...

    def released(self) -> None:
        """The guard is done with the connection: drop what would keep the protocol alive in a reference cycle."""


class Connection:
    """One accepted connection as the guard sees it."""

    __slots__ = ("deadline", "early", "http", "phase", "pool", "raw", "released", "slot", "vouched")

    def __init__(self, raw: asyncio.Transport) -> None:
        self.raw = raw
        self.phase = Phase.HANDSHAKE
        self.vouched = False
        self.released = False
        self.deadline: float | None = None
        self.slot: int | None = None
        self.http: HttpSide | None = None
        self.pool: OrderedDict[Connection, None] | None = None  # the guard's shedding pool it is in, if any
        self.early: bytearray | None = None  # bytes that came before the TLS protocol was in place (the hello)

    def vouch(self) -> None:
        """A request on this connection proved a credential (node key, enroll secret, device or admin token)."""
        self.vouched = True


def vouch_for(scope: Scope) -> None:
    """Called by the endpoint wrapper after a 2xx answer to a request that needed a credential."""
    extension = scope.get("extensions", {}).get(EXTENSION)
    if isinstance(extension, dict):
        vouch = extension.get("vouch")
        if callable(vouch):
            vouch()


class ConnectionGuard:
    def __init__(
        self,
        limits: ConnectionLimits,
        cap: int | None,
        ssl_context: ssl.SSLContext | None,
        make_http: Callable[[Connection], HttpSide],
        count: Callable[[str], None],
    ) -> None:
        self.limits = limits
        self.cap = cap
        self._ssl = ssl_context
        self._make_http = make_http
        self._count_metric = count
        self._open = 0
        # Connections that may be shed, oldest first: closing ones, then unproven, then proven (vouched) ones.
        self._closing: OrderedDict[Connection, None] = OrderedDict()
        self._unproven: OrderedDict[Connection, None] = OrderedDict()
        self._proven: OrderedDict[Connection, None] = OrderedDict()
        self._tick = max(0.01, min(MAX_TICK, self._shortest_timeout() / 4))
        self._wheel: dict[int, set[Connection]] = {}
        self._next_slot = 0
        self._ticker: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._events: Counter[str] = Counter()
        self._summary_at = 0.0
        self._hellos: deque[Connection] = deque()  # hello received, waiting for the handshake's turn
        self._due: deque[tuple[Connection, float]] = deque()  # past this deadline, waiting for their turn
        self._pacing = False
        self.stopping = False

    def _shortest_timeout(self) -> float:
        lim = self.limits
        return min(lim.header_timeout, lim.body_timeout, lim.tls_handshake_timeout, lim.idle_timeout)

    # --- life of the guard -----------------------------------------------------------------------------------------

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._next_slot = self._slot_of(self._loop.time())
        self._summary_at = self._loop.time() + SUMMARY_EVERY
        self._ticker = self._loop.create_task(self._run_wheel())

    async def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        self._ticker = None
        self._log_summary()

    def protocol(self) -> asyncio.Protocol:
        """The protocol factory for ``loop.create_server``."""
        return _Accepted(self)

    @property
    def open_connections(self) -> int:
        return self._open

    def abort_idle(self) -> int:
        """At shutdown: drop every connection that is not serving a request (idle ones never say goodbye)."""
        victims = [*self._closing, *self._unproven, *self._proven]
        for conn in victims:
            self._abort(conn)
        return len(victims)

    # --- accept, shed, handshake -----------------------------------------------------------------------------------

    def accepted(self, raw: asyncio.Transport) -> Connection | None:
        """A TCP connection was accepted: count it against the cap (making room, or refusing it), start TLS.

        Called from the accepted transport's ``connection_made``, before the loop starts reading from it: the TLS
        protocol is put in place here, so no byte of the client's hello can reach anything else.
        """
        if self.stopping or (self.cap is not None and self._open >= self.cap and not self._make_room()):
            raw.abort()
            self._event("connections_refused")
            return None
        conn = Connection(raw)
        self._open += 1
        self.enter(conn, Phase.HANDSHAKE, self.now() + self.limits.tls_handshake_timeout)
        if self._ssl is None:
            http = self._make_http(conn)
            conn.http = http
            raw.set_protocol(cast(asyncio.Protocol, http))
            http.connection_made(raw)
            return conn
        # The client's hello is kept by ``_Accepted``, which then stops reading and asks for a turn (``hello``); in
        # its turn the TLS protocol is put in place and does the handshake's work.
        return conn

    def hello(self, conn: Connection) -> None:
        """The first bytes of ``conn`` arrived (kept in ``conn.early``, reading paused): handshake in its turn."""
        self._hellos.append(conn)
        self._pace()

    def _start_tls(self, conn: Connection) -> None:
        """What loop.create_server(ssl=...) does for each accepted connection, but with the raw transport in our hands,
        so that a handshake that never finishes can be timed out and shed like any other connection. The app
        protocol's connection_made comes from the TLS protocol once the handshake is done."""
        raw = conn.raw
        loop = asyncio.get_running_loop()
        http = self._make_http(conn)
        conn.http = http
        waiter = loop.create_future()
        waiter.add_done_callback(lambda done: self._handshake_over(conn, done))
        tls = ssl_protocol_class(loop)(
            loop,
            http,
            self._ssl,
            waiter,
            server_side=True,
            call_connection_made=True,
            ssl_handshake_timeout=self.limits.tls_handshake_timeout * 2 + 1,  # the wheel times it out; a backstop
            ssl_shutdown_timeout=TLS_SHUTDOWN_TIMEOUT,
        )
        raw.set_protocol(tls)
        tls.connection_made(raw)
        early, conn.early = conn.early, None
        if early:
            feed_protocol(tls, early)
        if not raw.is_closing():
            raw.resume_reading()

    # --- pacing: bursts of work spread over turns of the loop ----------------------------------------------------

    def _pace(self) -> None:
        if not self._pacing:
            self._pacing = True
            (self._loop or asyncio.get_running_loop()).call_soon(self._turn)

    def _turn(self) -> None:
        """A few waiting handshakes start and a few passed deadlines are acted on; again next turn while any wait."""
        hellos, budget = self._hellos, HANDSHAKES_PER_TURN
        while hellos and budget:
            # newest first ("adaptive LIFO"): in a burst, a client that just arrived is served at once instead of
            # after everyone queued before it; the oldest wait, and the handshake deadline drops those that wait
            # too long. Without a backlog the order makes no difference.
            conn = hellos.pop()
            if conn.released or conn.raw.is_closing():
                continue
            self._start_tls(conn)
            budget -= 1
        due, budget = self._due, EXPIRIES_PER_TURN
        while due and budget:
            conn, deadline = due.popleft()
            if conn.released or conn.deadline != deadline:  # moved on since it was found due
                continue
            self._expire(conn)
            budget -= 1
        self._pacing = False
        if hellos or due:
            self._pace()

    def _handshake_over(self, conn: Connection, waiter: asyncio.Future[object]) -> None:
        failed = waiter.cancelled() or waiter.exception() is not None
        if failed and not conn.released:
            self._event("tls_handshakes_failed")
        if failed or conn.phase is Phase.HANDSHAKE:  # an abort mid-handshake ends the wait without an error
            self.release(conn)

    def _make_room(self) -> bool:
        if self.limits.when_full is WhenFull.REFUSE_NEW:
            return False
        for pool in (self._closing, self._unproven, self._proven):
            if pool:
                victim = next(iter(pool))
                self._event("connections_shed_" + ("proven" if victim.vouched else "unproven"))
                self._abort(victim)
                return True
        return False

    # --- phases and deadlines --------------------------------------------------------------------------------------

    def enter(self, conn: Connection, phase: Phase, deadline: float | None) -> None:
        """Move ``conn`` to ``phase`` with a new deadline (None: none)."""
        if conn.released:
            return
        was = conn.phase
        conn.phase = phase
        if phase in SHEDDABLE:
            pool = self._pool(conn)
            # Keep its place while it only moves on within one wait (waiting or idle → headers); else to the back.
            if not (phase is Phase.HEADERS and was in (Phase.WAITING, Phase.IDLE) and conn.pool is pool):
                self._forget(conn)
                pool[conn] = None
                conn.pool = pool
        elif conn.pool is not None:
            self._forget(conn)
        self._set_deadline(conn, deadline)

    def _pool(self, conn: Connection) -> OrderedDict[Connection, None]:
        if conn.phase is Phase.CLOSING:
            return self._closing
        return self._proven if conn.vouched else self._unproven

    def _forget(self, conn: Connection) -> None:
        if conn.pool is not None:
            conn.pool.pop(conn, None)
            conn.pool = None

    def _slot_of(self, when: float) -> int:
        return math.ceil(when / self._tick)

    def _set_deadline(self, conn: Connection, deadline: float | None) -> None:
        if conn.slot is not None:
            bucket = self._wheel.get(conn.slot)
            if bucket is not None:
                bucket.discard(conn)
            conn.slot = None
        conn.deadline = deadline
        if deadline is not None:
            conn.slot = max(self._slot_of(deadline), self._next_slot)
            self._wheel.setdefault(conn.slot, set()).add(conn)

    async def _run_wheel(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self._tick)
            self.advance(loop.time())

    @property
    def waiting_turns(self) -> bool:
        """Handshakes or passed deadlines are waiting for a turn of the loop (``advance`` acts in later turns)."""
        return bool(self._hellos or self._due)

    def advance(self, now: float) -> None:
        """Find every deadline up to ``now`` (the wheel calls this each tick); they are acted on in the next turns of
        the loop, ``EXPIRIES_PER_TURN`` at a time."""
        current = math.floor(now / self._tick)
        while self._next_slot <= current:
            bucket = self._wheel.pop(self._next_slot, None)
            self._next_slot += 1
            for conn in bucket or ():
                conn.slot = None
                if conn.deadline is not None and conn.deadline <= now + self._tick and not conn.released:
                    self._due.append((conn, conn.deadline))
        if self._due:
            self._pace()
        if now >= self._summary_at:
            self._summary_at = now + SUMMARY_EVERY
            self._log_summary()

    def _expire(self, conn: Connection) -> None:
        phase = conn.phase
        conn.deadline = None
        if phase is Phase.HANDSHAKE or conn.http is None:
            self._event("tls_handshakes_timed_out")
            self._abort(conn)
            return
        if phase is Phase.CLOSING:
            self._abort(conn)
            return
        conn.http.deadline_passed(phase)

    # --- closing -------------------------------------------------------------------------------------------------

    def drop(self, conn: Connection) -> None:
        """Close at once, without a word (for a connection that is not speaking TLS or HTTP at all)."""
        self._abort(conn)

    def _abort(self, conn: Connection) -> None:
        self.release(conn)
        conn.raw.abort()

    def release(self, conn: Connection) -> None:
        """The connection is gone (or going at once): it no longer counts against the cap."""
        if conn.released:
            return
        conn.released = True
        self._forget(conn)
        self._set_deadline(conn, None)
        self._open -= 1
        # The HTTP side holds its Connection and the Connection its HTTP side: a reference cycle, which only the
        # collector's full passes reclaim once the connection has lived a few seconds. Under an attack's churn those
        # passes held the event loop 50–140 ms (issue 15). Broken here, a closed connection is freed at once.
        if conn.http is not None:
            conn.http.released()
        conn.http = None
        conn.early = None

    def now(self) -> float:
        loop = self._loop or asyncio.get_running_loop()
        return loop.time()

    # --- counting and telling ------------------------------------------------------------------------------------

    def event(self, name: str) -> None:
        """Count a limit that was applied (also in ``/metrics`` as ``fleet_stub_<name>_total``)."""
        self._event(name)

    def _event(self, name: str) -> None:
        self._events[name] += 1
        self._count_metric(name)

    def _log_summary(self) -> None:
        if not self._events:
            return
        parts = " ".join(f"{name}={n}" for name, n in sorted(self._events.items()))
        pressure = any(name.startswith(("connections_shed", "connections_refused")) for name in self._events)
        level = logging.WARNING if pressure else logging.INFO
        log.log(level, "event=connection_limits_applied open=%d cap=%s %s", self._open, self.cap, parts)
        self._events.clear()


class _Accepted(asyncio.Protocol):
    """The protocol of a just-accepted TCP connection: it hands the transport to the guard, which replaces it with
    the TLS protocol in the connection's turn. Whatever the client sends before that (its hello) is kept for the TLS
    protocol, and reading stops until then."""

    def __init__(self, guard: ConnectionGuard) -> None:
        self._guard = guard
        self._conn: Connection | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._conn = self._guard.accepted(cast(asyncio.Transport, transport))

    def data_received(self, data: bytes) -> None:
        conn = self._conn
        if conn is None or conn.released:
            return
        first = conn.early is None
        if conn.early is None:
            conn.early = bytearray()
        conn.early += data
        conn.raw.pause_reading()
        if len(conn.early) > MAX_EARLY_BYTES:  # no TLS hello is this long: not a TLS client
            self._guard.event("tls_handshakes_failed")
            self._guard.drop(conn)
        elif first:
            self._guard.hello(conn)

    def eof_received(self) -> bool | None:
        if self._conn is not None:
            self._guard.drop(self._conn)
        return None

    def connection_lost(self, exc: Exception | None) -> None:  # only before the TLS protocol took over
        if self._conn is not None:
            self._guard.release(self._conn)


def feed_protocol(protocol: Any, data: bytes | bytearray) -> None:
    """Hand ``data`` to a protocol as if its transport had read it (buffered protocols, like the TLS ones, or not)."""
    if not hasattr(protocol, "get_buffer"):
        protocol.data_received(bytes(data))
        return
    view = memoryview(data)
    while view:
        buffer = memoryview(protocol.get_buffer(len(view))).cast("B")
        size = min(len(buffer), len(view))
        buffer[:size] = view[:size]
        protocol.buffer_updated(size)
        view = view[size:]


def ssl_protocol_class(loop: asyncio.AbstractEventLoop) -> Any:
    """The loop's own TLS protocol class (uvloop's or asyncio's; the same constructor, ADR 0014)."""
    try:
        import uvloop  # noqa: PLC0415 - optional accelerator, absent on Windows
    except ImportError:
        return asyncio.sslproto.SSLProtocol
    if isinstance(loop, uvloop.Loop):
        return uvloop.loop.SSLProtocol  # type: ignore[attr-defined]  # not in its stub, public in the module
    return asyncio.sslproto.SSLProtocol
