"""Serving a TUF repository folder under ``/tuf/`` (docs/reference/fleet-api.md §6, docs/contracts.md
``--tuf-repo``)."""

from __future__ import annotations

import hashlib
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.stub_server import RunningStub, running_stub

ROOT = json.dumps({"signed": {"_type": "root", "version": 1, "consistent_snapshot": False}, "signatures": []})
TIMESTAMP = json.dumps({"signed": {"_type": "timestamp", "version": 7}, "signatures": []}, indent=1)
ORBIT_BINARY = b"\x7fELF" + os.urandom(300_000) + b"\n\x00end"

TRAVERSALS = [
    "/tuf/../fleet-stub.sqlite3",
    "/tuf/../server.json",
    "/tuf/%2e%2e/server.json",
    "/tuf/%2E%2E/fleet-stub.sqlite3",
    "/tuf/..%2fserver.json",
    "/tuf/%2e%2e%2fserver.json",
    "/tuf/targets/../../server.json",
    "/tuf/targets/%2e%2e/%2e%2e/server.json",
    "/tuf/..%5cserver.json",
    "/tuf//etc/passwd",
    "/tuf/%2fetc%2fpasswd",
    "/tuf/../admin_token",
    "/tuf/../tls/ca.key",
    "/tuf/outside-link/server.json",
]


@pytest.fixture
def tuf_stub(tmp_path: Path) -> Iterator[RunningStub]:
    data_dir = tmp_path / "s"
    # the repository lives inside the data dir, so "../" from it would reach the server's own files
    repo = data_dir / "repository"
    (repo / "targets" / "orbit" / "linux" / "stable").mkdir(parents=True)
    (repo / "1.root.json").write_text(ROOT)
    (repo / "timestamp.json").write_text(TIMESTAMP)
    (repo / "targets" / "orbit" / "linux" / "stable" / "orbit").write_bytes(ORBIT_BINARY)
    (repo / "outside-link").symlink_to(data_dir, target_is_directory=True)
    with running_stub(data_dir, tuf_repo=repo) as running:
        yield running


def _raw_get(stub: RunningStub, target: str, method: str = "GET") -> tuple[int, bytes]:
    """Send the request target byte for byte (an HTTP client library would normalise the dot segments)."""
    port = int(stub.url.rsplit(":", 1)[1])
    context = stub.ssl_context()
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        tls.sendall(f"{method} {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode())
        chunks = []
        while chunk := tls.recv(65536):
            chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, body


def test_repository_files_are_served_byte_identical(tuf_stub: RunningStub) -> None:
    with tuf_stub.client() as client:
        root = client.get("/tuf/1.root.json")
        timestamp = client.get("/tuf/timestamp.json")
        orbit = client.get("/tuf/targets/orbit/linux/stable/orbit")
    assert root.status_code == 200 and root.content == ROOT.encode()
    assert timestamp.status_code == 200 and timestamp.content == TIMESTAMP.encode()
    assert orbit.status_code == 200
    assert hashlib.sha512(orbit.content).digest() == hashlib.sha512(ORBIT_BINARY).digest()
    assert int(orbit.headers["content-length"]) == len(ORBIT_BINARY)
    # never compressed unless asked (httpx asks, so ask for identity explicitly)
    with tuf_stub.client(headers={"Accept-Encoding": "identity"}) as client:
        plain = client.get("/tuf/timestamp.json")
    assert "content-encoding" not in plain.headers
    assert plain.content == TIMESTAMP.encode()


def test_next_root_and_absent_files_are_404(tuf_stub: RunningStub) -> None:
    with tuf_stub.client() as client:
        for path in (
            "/tuf/2.root.json",
            "/tuf/snapshot.json",
            "/tuf/targets/orbit/linux/edge/orbit",
            "/tuf/targets/osqueryd/linux/stable/osqueryd",
            "/tuf/targets/orbit",  # a directory is not a file
            "/tuf/targets/",
        ):
            response = client.get(path)
            assert response.status_code == 404, (path, response.status_code)
            assert "error" not in response.json()  # a Fleet-style error body, not an osquery one


def test_head_requests_work(tuf_stub: RunningStub) -> None:
    with tuf_stub.client() as client:
        head = client.head("/tuf/targets/orbit/linux/stable/orbit")
        missing = client.head("/tuf/2.root.json")
    assert head.status_code == 200
    assert head.content == b""
    assert int(head.headers["content-length"]) == len(ORBIT_BINARY)
    assert missing.status_code == 404
    status, body = _raw_get(tuf_stub, "/tuf/timestamp.json", method="HEAD")
    assert status == 200 and body == b""


def test_path_traversal_never_reaches_data_dir_files(tuf_stub: RunningStub) -> None:
    assert (tuf_stub.data_dir / "fleet-stub.sqlite3").is_file()
    secrets = [tuf_stub.admin_token.encode(), b"SQLite format 3", b"PRIVATE KEY", b"root:x:0:0"]
    for target in TRAVERSALS:
        status, body = _raw_get(tuf_stub, target)
        assert 400 <= status < 500, (target, status, body[:200])
        for secret in secrets:
            assert secret not in body, target
    # the sanity check that the raw requests do reach the repository
    assert _raw_get(tuf_stub, "/tuf/timestamp.json") == (200, TIMESTAMP.encode())


def test_without_tuf_repo_every_tuf_path_is_404(stub: RunningStub) -> None:
    with stub.client() as client:
        for path in ("/tuf/1.root.json", "/tuf/timestamp.json", "/tuf/targets/orbit/linux/stable/orbit", "/tuf/"):
            assert client.get(path).status_code == 404, path
            assert client.head(path).status_code == 404, path
    status, body = _raw_get(stub, "/tuf/../server.json")
    assert status == 404
    assert stub.admin_token.encode() not in body
