"""uvicorn's httptools protocol with limits on the request line and headers, and each request's phase reported to the
connection guard (ADR 0014).

* The parser is never fed more than ``max_header_bytes`` of an unfinished header block: httptools joins a header
  value's pieces by repeated concatenation (quadratic in the number of pieces), so a 150 MiB header used to cost
  16 s of CPU. Past the limit the answer is 431 and the connection closes.
* A request line longer than ``max_header_line`` is a 414, a longer header line or more than ``max_headers``
  fields a 431 — answered before the request reaches the application, so before any authentication or parsing.
* Deadlines (headers, body, idle) are kept by the guard, which calls ``deadline_passed``: headers or body not
  complete in time are a 408; a connection that never started a request or sat idle is closed without a word.
* A response that begins while its request body is still arriving says ``connection: close`` and closes the
  connection once sent, instead of reading the rest of a body nobody wants: the client is told, so it never sends its
  next request on a connection that is going away (it did not say so once, and a keep-alive client's next request
  met a bare close: "Server disconnected without sending a response").
"""

from __future__ import annotations

import asyncio
from typing import Any

import httptools
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from server_stub.connection_guard import EXTENSION, TLS_SHUTDOWN_TIMEOUT, Connection, ConnectionGuard, Phase

ANSWER_GRACE = 2.0  # after a 4xx of ours: time for the answer to leave before the connection is dropped
# An answer given before its request's body is in (a 401 before a small body, a 413 for a declared 200 MB): when at
# most this much of the declared body is still to come, the connection closes the usual way (TLS's goodbye, which
# reads and discards what is still arriving, so a client's next request on it meets a clean close); when more is
# to come, or no length was declared, nothing more is read (``_hang_up``).
LINGER_BODY_LIMIT = 1024 * 1024


class _Stop(Exception):
    """Raised inside a parser callback to stop parsing; the answer is in ``_rejection``."""


class LimitedHttpProtocol(HttpToolsProtocol):
    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        guard: ConnectionGuard,
        conn: Connection,
    ) -> None:
        super().__init__(config, server_state, app_state)
        self._guard = guard
        self._conn = conn
        self._limits = guard.limits
        self._reading_head = True  # between requests or inside a header block
        self._head_bytes = 0
        self._header_count = 0
        self._message_complete = True
        self._closing = False
        self._rejection: tuple[int, str, str] | None = None
        # Phase changes seen by the parser are told to the guard once per data_received (a request usually arrives
        # whole: waiting → headers → body → app in one call, one update).
        self._next: Phase | None = None
        self._headers_keep_deadline = False
        self._keep_alive_after_body = True
        self._made = False  # connection_made: the TLS handshake finished
        self._extensions = {EXTENSION: {"vouch": conn.vouch}}

    # --- connection ------------------------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._made = True
        super().connection_made(transport)
        self._guard.enter(self._conn, Phase.WAITING, self.loop.time() + self._limits.header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._guard.release(self._conn)
        super().connection_lost(exc)

    def released(self) -> None:
        """A connection whose TLS handshake never finished gets no ``connection_lost`` (the TLS protocol calls it only
        after ``connection_made``), and its parser, which calls back into this protocol, would keep both alive in a
        reference cycle until a full pass of the collector."""
        if not self._made:
            self.parser = None  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        limit = self._limits.max_header_bytes
        while data:
            if self._reading_head:
                room = limit - self._head_bytes
                if room <= 0:
                    self._answer(431, f"the request's headers exceed {limit} bytes", "requests_headers_too_large")
                    return
                piece, data = (data[:room], data[room:]) if len(data) > room else (data, b"")
                self._head_bytes += len(piece)
            else:
                piece, data = data, b""
            try:
                self.parser.feed_data(piece)
            except httptools.HttpParserUpgrade:
                self._unsupported_upgrade_warning()
                return
            except httptools.HttpParserError:
                status, reason, event = self._rejection or (400, "Invalid HTTP request received.", "requests_malformed")
                self._answer(status, reason, event)
                return
            if self.closing:
                return
        self._settle()

    def _settle(self) -> None:
        phase = self._next
        if phase is None:
            return
        self._next = None
        conn = self._conn
        if phase is Phase.HEADERS:
            deadline = conn.deadline if self._headers_keep_deadline else self.loop.time() + self._limits.header_timeout
        elif phase is Phase.BODY:
            deadline = self.loop.time() + self._limits.body_timeout
        else:
            deadline = None
        self._guard.enter(conn, phase, deadline)

    @property
    def closing(self) -> bool:
        """We answered or timed out and are closing: whatever else arrives is ignored."""
        return self._closing

    # --- parser callbacks ------------------------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.scope["extensions"] = self._extensions  # type: ignore[typeddict-item]
        self._header_count = 0
        self._message_complete = False
        self._body_received = 0
        phase = self._next or self._conn.phase
        if phase in (Phase.WAITING, Phase.IDLE):
            self._next = Phase.HEADERS
            # a new connection: the headers' time started with the connection
            self._headers_keep_deadline = phase is Phase.WAITING

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        if len(self.url) > self._limits.max_header_line:
            self._stop(414, f"the request line exceeds {self._limits.max_header_line} bytes", "requests_uri_too_long")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count > self._limits.max_headers:
            self._stop(431, f"more than {self._limits.max_headers} header fields", "requests_too_many_headers")
        if len(name) + len(value) + 4 > self._limits.max_header_line:
            self._stop(
                431, f"a header line exceeds {self._limits.max_header_line} bytes", "requests_header_line_too_long"
            )
        super().on_header(name, value)

    def on_body(self, body: bytes) -> None:
        self._body_received += len(body)
        super().on_body(body)

    def _body_still_to_come(self) -> int | None:
        """Bytes of the declared body not received yet (None: no Content-Length)."""
        for name, value in self.headers or ():
            if name == b"content-length":
                try:
                    return max(0, int(value) - self._body_received)
                except ValueError:
                    return None
        return None

    def on_headers_complete(self) -> None:
        pipelined = self.cycle is not None and not self.cycle.response_complete
        self._reading_head = False
        super().on_headers_complete()
        # Until the body is in, an answer says "connection: close" and ends the connection (on_response_complete):
        # a response that begins before the body is complete must tell the client so (RFC 9112 §9.6), or it sends
        # its next request into the close. uvicorn reads keep_alive when the answer starts and when it ends, and
        # adds the header itself. A flag, not a wrapper around the cycle's send: that would make every request's
        # cycle a reference cycle, garbage for the collector's slow full passes.
        self._keep_alive_after_body = self.cycle.keep_alive
        self.cycle.keep_alive = False
        if not pipelined:
            self._next = Phase.BODY

    def on_message_complete(self) -> None:
        super().on_message_complete()
        if not self.cycle.response_started:
            self.cycle.keep_alive = self._keep_alive_after_body
        self._message_complete = True
        self._reading_head = True
        self._head_bytes = 0
        if (self._next or self._conn.phase) is Phase.BODY:
            self._next = Phase.APP

    def on_response_complete(self) -> None:
        """uvicorn's, but the idle deadline is the guard's (no keep-alive timer per response)."""
        self.server_state.total_requests += 1
        if self._closing:
            return
        if not self._message_complete:  # answered while the body is still arriving: "connection: close" was said
            left = self._body_still_to_come()
            if left is not None and left <= LINGER_BODY_LIMIT:
                self._close()
            else:
                self._hang_up()  # do not read (decrypt) the rest only to discard it
            return
        if self.transport.is_closing():
            self._mark_closing()
            return
        self.flow.resume_reading()
        if self.pipeline:
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
        else:
            self._guard.enter(self._conn, Phase.IDLE, self.loop.time() + self._limits.idle_timeout)

    # --- deadlines (called by the guard) ---------------------------------------------------------------------------

    def deadline_passed(self, phase: Phase) -> None:
        if self._closing:
            return
        limits = self._limits
        if phase is Phase.HEADERS:
            reason = f"request headers not complete within {limits.header_timeout:g} s"
            self._answer(408, reason, "requests_header_timeouts")
        elif phase is Phase.BODY:
            reason = f"request body not complete within {limits.body_timeout:g} s"
            self._answer(408, reason, "requests_body_timeouts")
        elif phase is Phase.WAITING:
            # never a byte of a request: dropped without TLS's goodbye, which would cost a write, a read of the
            # peer's answer and a second close for a connection that never did anything
            self._guard.event("connections_without_request_closed")
            self._mark_closing()
            self._guard.drop(self._conn)
        elif phase is Phase.IDLE:
            self._close()

    # --- answering and closing -------------------------------------------------------------------------------------

    def _stop(self, status: int, reason: str, event: str) -> None:
        self._rejection = (status, reason, event)
        raise _Stop(reason)

    def _answer(self, status: int, reason: str, event: str) -> None:
        """Answer ``status`` with ``reason`` (plain text), unless an answer has begun, and close the connection."""
        self._guard.event(event)
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            if cycle.response_started:
                self._close()
                return
            # the application is waiting for the body: it sees a disconnect, and its answer goes nowhere
            cycle.disconnected = True
            cycle.message_event.set()
        body = (reason + "\n").encode()
        content = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            content.extend([name, b": ", value, b"\r\n"])
        content.append(
            b"content-type: text/plain; charset=utf-8\r\ncontent-length: %d\r\nconnection: close\r\n\r\n" % len(body)
        )
        content.append(body)
        self.transport.write(b"".join(content))
        self._hang_up()

    def _hang_up(self) -> None:
        """Close a connection whose client may still be sending (a body, a header without end): the answer leaves,
        and nothing more is read. A TLS close would read on, decrypting and discarding whatever arrives until the
        peer's close_notify — for a client streaming a 200 MB body, seconds of CPU per connection. Reading stops on
        the socket itself, so the client's sends stall in TCP's window at no cost to us, and the guard drops the
        connection when ``ANSWER_GRACE`` has passed (time for the answer to be read)."""
        self._close(ANSWER_GRACE)
        self._conn.raw.pause_reading()

    def _close(self, grace: float = TLS_SHUTDOWN_TIMEOUT + 1) -> None:
        if not self.transport.is_closing():
            self.transport.close()
        self._mark_closing(grace)

    def _mark_closing(self, grace: float = TLS_SHUTDOWN_TIMEOUT + 1) -> None:
        """Closing: dropped after ``grace`` seconds at the latest (a TLS close waits for the peer's goodbye)."""
        self._closing = True
        self._next = None
        self._guard.enter(self._conn, Phase.CLOSING, self.loop.time() + grace)
