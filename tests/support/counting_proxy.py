"""A TCP relay on loopback that counts what crosses it: connections and bytes each way, TLS records included.

Benchmarks point a client at ``proxy.port`` instead of the server's port; the TLS session is end to end (the relay
sees only ciphertext), so the counts are what the wire carries above TCP. One thread runs a selector loop over all
connections; ``close()`` stops it.

Used by tests (connection reuse) and by benchmarks/update_check.py (bytes on the wire).
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading
from dataclasses import dataclass


@dataclass
class WireCounts:
    connections: int = 0
    bytes_up: int = 0  # client → server
    bytes_down: int = 0  # server → client

    @property
    def total(self) -> int:
        return self.bytes_up + self.bytes_down


class CountingProxy:
    """Relay ``127.0.0.1:<port>`` → ``upstream``; ``counts`` since the last ``reset()``."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self._upstream = upstream
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.setblocking(False)
        self.port: int = self._listener.getsockname()[1]
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ, None)
        self._lock = threading.Lock()
        self._counts = WireCounts()
        self._open: set[socket.socket] = set()
        self._stop_r, self._stop_w = socket.socketpair()
        self._selector.register(self._stop_r, selectors.EVENT_READ, "stop")
        self._thread = threading.Thread(target=self._loop, name="counting-proxy", daemon=True)
        self._thread.start()

    def reset(self) -> None:
        with self._lock:
            self._counts = WireCounts()

    @property
    def counts(self) -> WireCounts:
        with self._lock:
            return WireCounts(self._counts.connections, self._counts.bytes_up, self._counts.bytes_down)

    def close(self) -> None:
        self._stop_w.send(b"x")
        self._thread.join(10)
        for sock in (*self._open, self._listener, self._stop_r, self._stop_w):
            with contextlib.suppress(OSError):
                sock.close()
        self._selector.close()

    def _loop(self) -> None:
        while True:
            for key, _events in self._selector.select():
                if key.data == "stop":
                    return
                if key.data is None:
                    self._accept()
                else:
                    self._relay(key.fileobj, *key.data)  # type: ignore[arg-type]

    def _accept(self) -> None:
        try:
            client, _ = self._listener.accept()
        except BlockingIOError:
            return
        server = socket.create_connection(self._upstream)
        for sock in (client, server):
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._open.add(sock)
        with self._lock:
            self._counts.connections += 1
        self._selector.register(client, selectors.EVENT_READ, (server, True))
        self._selector.register(server, selectors.EVENT_READ, (client, False))

    def _relay(self, source: socket.socket, sink: socket.socket, upstream: bool) -> None:
        try:
            data = source.recv(1 << 16)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._drop(source, sink)
            return
        with self._lock:
            if upstream:
                self._counts.bytes_up += len(data)
            else:
                self._counts.bytes_down += len(data)
        try:
            sink.setblocking(True)  # loopback: a short blocking send keeps the relay simple
            sink.sendall(data)
            sink.setblocking(False)
        except OSError:
            self._drop(source, sink)

    def _drop(self, *socks: socket.socket) -> None:
        for sock in socks:
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(sock)
            self._open.discard(sock)
            with contextlib.suppress(OSError):
                sock.close()
