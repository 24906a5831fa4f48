"""A local RFC 3161 time-stamping authority for the signing tests: ``openssl ts -reply`` behind a loopback HTTP
server, with a throw-away TSA certificate (EKU timeStamping) under its own throw-away CA; and a loopback port
nobody listens on, for the unreachable case."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from tests.support.signing_identities import make_ca, make_tsa


class _TimeStampAuthority(BaseHTTPRequestHandler):
    """RFC 3161 over HTTP: the request body is a TimeStampReq, ``openssl ts -reply`` answers it."""

    config: Path

    def do_POST(self) -> None:
        work = self.config.parent
        query = work / f"query-{threading.get_ident()}.tsq"
        reply = query.with_suffix(".tsr")
        query.write_bytes(self.rfile.read(int(self.headers["Content-Length"])))
        answered = subprocess.run(
            ["openssl", "ts", "-reply", "-config", str(self.config), "-queryfile", str(query), "-out", str(reply)],
            capture_output=True,
            timeout=60,
            check=False,
        )
        if answered.returncode != 0:
            self.send_error(500, answered.stderr.decode(errors="replace")[-500:])
            return
        body = reply.read_bytes()
        self.send_response(200)
        self.send_header("Content-Type", "application/timestamp-reply")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@dataclass(frozen=True)
class LocalTsa:
    url: str
    ca_file: Path  # the TSA's CA (PEM)
    cert_file: Path  # the TSA's own certificate (PEM)


@contextlib.contextmanager
def local_tsa(work: Path) -> Iterator[LocalTsa]:
    work.mkdir(parents=True, exist_ok=True)
    ca = make_ca("orbitctl test TSA CA")
    tsa = make_tsa(ca)
    (work / "tsa.crt").write_bytes(tsa.cert_pem)
    (work / "tsa.key").write_bytes(tsa.key_pem())
    (work / "tsa-ca.pem").write_bytes(ca.cert_pem)
    (work / "serial").write_text("01\n")
    config = work / "tsa.cnf"
    config.write_text(
        "[ tsa ]\ndefault_tsa = local\n[ local ]\n"
        f"dir = {work}\nserial = $dir/serial\nsigner_cert = $dir/tsa.crt\nsigner_key = $dir/tsa.key\n"
        "certs = $dir/tsa-ca.pem\nsigner_digest = sha256\ndefault_policy = 1.2.3.4.1\n"
        "digests = sha1, sha256, sha384, sha512\naccuracy = secs:1\nordering = yes\ntsa_name = yes\n"
        "ess_cert_id_chain = no\ness_cert_id_alg = sha256\n"
    )
    handler = type("Handler", (_TimeStampAuthority,), {"config": config})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield LocalTsa(f"http://127.0.0.1:{server.server_address[1]}/tsa", work / "tsa-ca.pem", work / "tsa.crt")
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


class socket_closed_port:  # noqa: N801 - used as a context manager
    """A loopback port nobody listens on (bound, not listening, for the duration)."""

    def __enter__(self) -> int:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        port: int = self.sock.getsockname()[1]
        return port

    def __exit__(self, *exc: object) -> None:
        self.sock.close()
