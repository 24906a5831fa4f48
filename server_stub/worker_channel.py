"""The control channel between fleet-stub's parent and each worker process (ADR 0019): framing, and the worker's end.

One ``socketpair`` per worker. A frame is a 4-byte big-endian length and a JSON object with a type ``t``:

* worker → parent: ``ready`` (serving); ``pub`` (``topic``, ``value``: tell the other workers, e.g. a live query was
  answered); ``scrape`` (``req``, ``data``: my figures, send me the other workers'); ``snap`` (``req``, ``data``: my
  figures).
* parent → worker: ``pub`` (from another worker); ``snap?`` (``req``: send your figures); ``scraped`` (``req``,
  ``data``: the other workers' figures, the parent's own counters).

The framing (``encode``, ``FrameReader``) is pure; ``WorkerLink`` is the worker's end on its event loop. When the
parent goes away (its end closes: it exited or was killed) the worker is told, and stops: workers never outlive it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import socket
import struct
from collections.abc import Callable, Mapping, Sequence
from typing import cast

from server_stub.metrics import Gauge, Metrics, Series, Snapshot

log = logging.getLogger(__name__)

HEADER = struct.Struct(">I")
MAX_FRAME = 8 * 1024 * 1024
SCRAPE_TIMEOUT = 3.0  # the parent waits 1.5 s for the workers, then answers with what it has
TOPIC_LIVE_QUERY_DONE = "live_query_done"
TOPIC_ROLLOUT_NUDGE = "rollout_nudge"  # a failure was reported: the worker with the rollout ticker evaluates soon

Message = dict[str, object]


class ChannelError(ValueError):
    pass


def encode(message: Mapping[str, object]) -> bytes:
    data = json.dumps(message, separators=(",", ":"), allow_nan=False).encode("utf-8")
    if len(data) > MAX_FRAME:
        raise ChannelError(f"control message of {len(data)} bytes exceeds {MAX_FRAME}")
    return HEADER.pack(len(data)) + data


class FrameReader:
    """Bytes in, whole messages out; a frame that is too long or not a JSON object is a ``ChannelError``."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Message]:
        self._buffer += data
        messages: list[Message] = []
        while len(self._buffer) >= HEADER.size:
            (size,) = HEADER.unpack_from(self._buffer)
            if size > MAX_FRAME:
                raise ChannelError(f"control frame of {size} bytes exceeds {MAX_FRAME}")
            if len(self._buffer) < HEADER.size + size:
                break
            raw = bytes(self._buffer[HEADER.size : HEADER.size + size])
            del self._buffer[: HEADER.size + size]
            try:
                message = json.loads(raw)
            except ValueError as exc:
                raise ChannelError(f"control frame is not JSON: {exc}") from None
            if not isinstance(message, dict) or not isinstance(message.get("t"), str):
                raise ChannelError("control frame is not a typed JSON object")
            messages.append(message)
        return messages


def int_field(message: Mapping[str, object], name: str) -> int | None:
    value = message.get(name)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


# --- the worker's end ---------------------------------------------------------------------------------------------


class WorkerLink:
    """A worker's end of its control channel: readiness, publish/subscribe between workers, and the cluster-wide
    ``/metrics`` (``render``: this worker's figures plus the others', fetched through the parent)."""

    def __init__(
        self,
        worker: int,
        snapshot: Callable[[], Snapshot],
        on_publish: Callable[[str, object], None],
        on_parent_gone: Callable[[], None],
    ) -> None:
        self.worker = worker
        self._snapshot = snapshot
        self._on_publish = on_publish
        self._on_parent_gone = on_parent_gone
        self._transport: asyncio.Transport | None = None
        self._reader = FrameReader()
        self._requests = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[Message]] = {}

    async def connect(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        await loop.create_unix_connection(lambda: _LinkProtocol(self), sock=sock)

    # --- sending

    def _send(self, message: Mapping[str, object]) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(encode(message))

    def ready(self) -> None:
        self._send({"t": "ready"})

    def publish(self, topic: str, value: object) -> None:
        self._send({"t": "pub", "topic": topic, "value": value})

    # --- /metrics across workers

    async def others(self, mine: Snapshot, timeout: float = SCRAPE_TIMEOUT) -> Message | None:
        """What the parent knows of the other workers (their snapshots, its own counters), None if it did not answer.

        ``mine`` goes along: the parent keeps every worker's last reported figures, so that what a worker reported
        stays in the sums after it is replaced (counters never go back)."""
        if self._transport is None or self._transport.is_closing():
            return None
        request = next(self._requests)
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._waiting[request] = future
        try:
            self._send({"t": "scrape", "req": request, "data": mine})
            async with asyncio.timeout(timeout):
                answer = await future
            return answer if answer.get("t") == "scraped" else None
        except TimeoutError:
            return None
        finally:
            self._waiting.pop(request, None)

    async def render(self, own: Metrics, gauges: Sequence[Gauge]) -> str:
        """``/metrics`` for the whole server: every worker's counters summed, plus per-worker series."""
        mine = self._snapshot()
        answer = await self.others(mine)
        snapshots: list[Mapping[str, object]] = [mine]
        found = answer.get("data") if answer is not None else None
        snapshots += [s for s in found if isinstance(s, dict)] if isinstance(found, list) else []
        total = Metrics()
        for snapshot in snapshots:
            figures = snapshot.get("metrics")
            if isinstance(figures, dict):
                total.absorb(figures)
        requests, connections = [], []
        for snapshot in snapshots:
            worker = int_field(snapshot, "worker")
            if worker is None:
                continue  # workers that were replaced: in the sums, not in the per-worker series
            requests.append((str(worker), float(int_field(snapshot, "requests") or 0)))
            connections.append((str(worker), float(int_field(snapshot, "connections") or 0)))
        restarts = int_field(answer, "restarts") if answer is not None else None
        total.set_counter("worker_restarts", restarts or 0)  # worker processes replaced after they exited
        workers = int_field(answer, "workers") if answer is not None else None
        extra = [
            *gauges,
            Gauge("workers", "Worker processes serving (--workers).", float(workers or len(requests))),
            Gauge(
                "metrics_complete",
                "1 when every worker's figures are in this answer, 0 when a worker did not answer in time.",
                1.0 if answer is not None and not answer.get("missing") else 0.0,
            ),
        ]
        series = [
            Series(
                "worker_requests_total",
                "HTTP requests served by each worker process since it started.",
                "counter",
                "worker",
                tuple(sorted(requests)),
            ),
            Series(
                "worker_connections_open",
                "Connections each worker process holds open.",
                "gauge",
                "worker",
                tuple(sorted(connections)),
            ),
        ]
        return total.render(extra, series)

    # --- receiving

    def _connected(self, transport: asyncio.Transport) -> None:
        self._transport = transport

    def _received(self, data: bytes) -> None:
        try:
            messages = self._reader.feed(data)
        except ChannelError as exc:
            log.error("event=control_channel_broken error=%s", exc)
            if self._transport is not None:
                self._transport.close()
            return
        for message in messages:
            kind = message["t"]
            if kind == "pub":
                topic = message.get("topic")
                if isinstance(topic, str):
                    self._on_publish(topic, message.get("value"))
            elif kind == "snap?":
                self._send({"t": "snap", "req": int_field(message, "req") or 0, "data": self._snapshot()})
            elif kind == "scraped":
                future = self._waiting.get(int_field(message, "req") or 0)
                if future is not None and not future.done():
                    future.set_result(message)

    def _lost(self) -> None:
        self._transport = None
        for future in self._waiting.values():
            if not future.done():
                future.set_result({})  # no answer will come
        self._on_parent_gone()


class _LinkProtocol(asyncio.Protocol):
    def __init__(self, link: WorkerLink) -> None:
        self._link = link

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._link._connected(cast(asyncio.Transport, transport))

    def data_received(self, data: bytes) -> None:
        self._link._received(data)

    def eof_received(self) -> bool | None:
        return None  # close: the parent is gone

    def connection_lost(self, exc: Exception | None) -> None:
        with contextlib.suppress(Exception):
            self._link._lost()
