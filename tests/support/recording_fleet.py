"""A tiny Fleet orbit API over real TLS on loopback that records every request: the stand-in for "a real Fleet
server" (which advertises no ``update_outcomes``) and for a server whose answers a test scripts (5xx, 400, …).

Only what orbit's client needs is answered: enroll, config (the test sets the body), ping, update outcomes, the
osqueryd restart result. Everything else is a 404 with Fleet's error shape.
"""

from __future__ import annotations

import json
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from server_stub.tls_material import ensure_self_signed, server_ssl_context


@dataclass
class Recorded:
    method: str
    path: str
    body: dict[str, object] | None


@dataclass
class RecordingFleet:
    url: str
    ca: Path
    capabilities: list[str] = field(default_factory=list)
    config: dict[str, object] = field(default_factory=dict)
    status: dict[str, int] = field(default_factory=dict)  # path → the status to answer with
    requests: list[Recorded] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def paths(self) -> list[str]:
        with self.lock:
            return [item.path for item in self.requests]

    def bodies(self, path: str) -> list[dict[str, object]]:
        with self.lock:
            return [item.body or {} for item in self.requests if item.path == path]


@contextmanager
def recording_fleet(tls_dir: Path) -> Iterator[RecordingFleet]:
    tls = ensure_self_signed(tls_dir)
    assert tls.ca is not None
    context: ssl.SSLContext = server_ssl_context(tls.cert, tls.key)
    fleet = RecordingFleet(url="", ca=tls.ca)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            return

        def _answer(self, status: int, body: dict[str, object] | None) -> None:
            payload = b"" if body is None else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            if 200 <= status < 300:
                self.send_header("X-Fleet-Capabilities", ",".join(fleet.capabilities))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)

        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = None
            path = self.path.split("?", 1)[0]
            with fleet.lock:
                fleet.requests.append(Recorded(self.command, path, body if isinstance(body, dict) else None))
                status = fleet.status.get(path)
            if status is not None and status != 200:
                self._answer(status, {"message": f"scripted {status}", "errors": [{"name": "base", "reason": "x"}]})
                return
            if path == "/api/fleet/orbit/enroll":
                self._answer(200, {"orbit_node_key": "node-key-1"})
            elif path == "/api/fleet/orbit/config":
                self._answer(200, dict(fleet.config))
            elif path == "/api/fleet/orbit/ping":
                self._answer(200, None)
            elif path in ("/api/fleet/orbit/update_outcomes", "/api/fleet/orbit/osqueryd_restart/result"):
                self._answer(200, {})
            else:
                self._answer(404, {"message": "Resource Not Found", "errors": [{"name": "base", "reason": "404"}]})

        do_GET = do_POST = do_HEAD = do_PUT = _handle  # noqa: N815 - http.server's names

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server.socket = context.wrap_socket(server.socket, server_side=True)
    fleet.url = f"https://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield fleet
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
