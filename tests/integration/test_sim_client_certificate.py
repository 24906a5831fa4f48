"""A server that demands a client certificate osqueryd-sim does not have: each request fails and is retried by
osquery's rules (as osqueryd does); the daemon never dies on the TLS alert."""

from __future__ import annotations

import contextlib
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from server_stub.tls_material import ensure_self_signed
from tests.support.stub_process import clean_env


@pytest.fixture
def demanding_server(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    files = ensure_self_signed(tmp_path / "tls")
    assert files.ca is not None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(files.cert, files.key)
    context.verify_mode = ssl.CERT_REQUIRED  # no client certificate, no service
    context.load_verify_locations(files.ca)
    listener = socket.create_server(("127.0.0.1", 0))
    stopped = threading.Event()

    def serve() -> None:
        listener.settimeout(0.2)
        while not stopped.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with contextlib.suppress(OSError), context.wrap_socket(conn, server_side=True) as tls:
                tls.recv(1024)
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield int(listener.getsockname()[1]), files.ca
    finally:
        stopped.set()
        listener.close()
        thread.join(10)


def test_a_missing_client_certificate_is_a_failed_request_not_a_crash(
    demanding_server: tuple[int, Path], tmp_path: Path
) -> None:
    port, ca = demanding_server
    log = tmp_path / "sim.log"
    with log.open("wb") as out:
        sim = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "osquery_sim",
                f"--tls_hostname=127.0.0.1:{port}",
                f"--tls_server_certs={ca}",
                "--enroll_secret_env=ENROLL_SECRET",
                f"--database_path={tmp_path / 'db'}",
                f"--pidfile={tmp_path / 'osquery.pid'}",
                f"--extensions_socket={tmp_path / 'osquery.em'}",
                "--config_plugin=tls",
                "--config_tls_endpoint=/api/v1/osquery/config",
                "--enroll_tls_endpoint=/api/v1/osquery/enroll",
            ],
            env=clean_env(ENROLL_SECRET="s"),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 90
        while log.read_text(errors="replace").count("enroll_failed") < 3:
            assert sim.poll() is None, log.read_text(errors="replace")  # it must keep running and retrying
            assert time.monotonic() < deadline, log.read_text(errors="replace")
            time.sleep(0.05)
        text = log.read_text(errors="replace")
        assert "Traceback" not in text
        assert "certificate required" in text or "ReadError" in text
    finally:
        sim.send_signal(signal.SIGTERM)
        code = sim.wait(60)
    assert code == 0, log.read_text(errors="replace")
