"""The Authenticode-signed .msi: ``osslsigncode verify`` against the throw-away test CA passes, one changed byte
fails it, two signed builds without a timestamp are byte-identical, and ``--timestamp-url`` gets an RFC 3161
countersignature from a local time-stamping authority (``openssl ts -reply`` behind a loopback HTTP server).
Installing the signed MSI under Wine is part of tests/integration/test_package_msi.py."""

from __future__ import annotations

import re
import socket
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from packager.formats import msi
from packager.signing.authenticode import AuthenticodeError
from packager.signing.signing_options import SigningOptions
from tests.support.signing_identities import make_ca, make_code_signing, make_tsa, signing_options, verify
from tests.support.staged_package import make_staged


@dataclass(frozen=True)
class Signed:
    path: Path
    ca_file: Path
    signing: SigningOptions
    base: Path


@pytest.fixture(scope="module")
def signed(tmp_path_factory: pytest.TempPathFactory) -> Signed:
    base = tmp_path_factory.mktemp("signed-msi")
    ca = make_ca()
    ca_file = base / "ca.pem"
    ca_file.write_bytes(ca.cert_pem)
    signing = signing_options(ca, make_code_signing(ca))
    staged = make_staged(base / "stage", "windows", version="1.2.3", payload_bytes=20_000)
    result = msi.build(staged, base / "signed.msi", signing=signing)
    return Signed(result.path, ca_file, signing, base)


def test_osslsigncode_verifies_the_signature_against_the_test_ca(signed: Signed) -> None:
    result = verify(signed.path, signed.ca_file)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "Signature verification: ok" in result.stdout
    assert "Subject: /CN=orbitctl test code signing" in result.stdout
    assert re.search(r"Message digest algorithm\s*: SHA256", result.stdout)
    assert "Text description: Fleet osquery" in result.stdout
    assert "Signing time: Nov 14 22:13:20 2023 GMT" in result.stdout  # SOURCE_DATE_EPOCH of make_staged
    assert "Signature verification: ok" not in verify(signed.path, Path("/dev/null")).stdout  # an unknown CA


def test_one_changed_byte_fails_verification(signed: Signed, tmp_path: Path) -> None:
    data = bytearray(signed.path.read_bytes())
    # a byte of the summary information stream (its "Creating Application" value), which the signature covers
    at = data.index(b"orbitctl")
    data[at] ^= 0x20
    tampered = tmp_path / "tampered.msi"
    tampered.write_bytes(data)
    result = verify(tampered, signed.ca_file)
    assert result.returncode != 0
    assert "MISMATCH" in result.stdout and "Signature verification: ok" not in result.stdout


def test_signed_builds_without_a_timestamp_are_byte_identical(signed: Signed, tmp_path: Path) -> None:
    staged = make_staged(tmp_path / "stage", "windows", version="1.2.3", payload_bytes=20_000)
    again = msi.build(staged, tmp_path / "again.msi", signing=signed.signing)
    assert again.path.read_bytes() == signed.path.read_bytes()


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


@pytest.fixture
def tsa_url(signed: Signed, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    ca = make_ca("orbitctl test TSA CA")
    tsa = make_tsa(ca)
    (tmp_path / "tsa.crt").write_bytes(tsa.cert_pem)
    (tmp_path / "tsa.key").write_bytes(tsa.key_pem())
    (tmp_path / "tsa-ca.pem").write_bytes(ca.cert_pem)
    (tmp_path / "serial").write_text("01\n")
    config = tmp_path / "tsa.cnf"
    config.write_text(
        "[ tsa ]\ndefault_tsa = local\n[ local ]\n"
        f"dir = {tmp_path}\nserial = $dir/serial\nsigner_cert = $dir/tsa.crt\nsigner_key = $dir/tsa.key\n"
        "certs = $dir/tsa-ca.pem\nsigner_digest = sha256\ndefault_policy = 1.2.3.4.1\n"
        "digests = sha1, sha256, sha384, sha512\naccuracy = secs:1\nordering = yes\ntsa_name = yes\n"
        "ess_cert_id_chain = no\ness_cert_id_alg = sha256\n"
    )
    handler = type("Handler", (_TimeStampAuthority,), {"config": config})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/tsa", tmp_path / "tsa-ca.pem"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_a_timestamp_from_a_local_rfc3161_authority_is_embedded_and_verifies(
    signed: Signed, tsa_url: tuple[str, Path], tmp_path: Path
) -> None:
    url, tsa_ca = tsa_url
    staged = make_staged(tmp_path / "stage", "windows", version="1.2.3", payload_bytes=20_000)
    options = SigningOptions(identity=signed.signing.identity, timestamp_url=url)
    stamped = msi.build(staged, tmp_path / "stamped.msi", signing=options)
    result = verify(stamped.path, signed.ca_file, "-TSA-CAfile", tsa_ca)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "Timestamp Server Signature verification: ok" in result.stdout, result.stdout[-3000:]
    assert "CN=orbitctl test TSA" in result.stdout.replace("/CN=", "CN=")


def test_an_unreachable_timestamp_server_fails_the_build_and_keeps_the_old_file(signed: Signed, tmp_path: Path) -> None:
    staged = make_staged(tmp_path / "stage", "windows", version="1.2.3", payload_bytes=20_000)
    outfile = tmp_path / "kept.msi"
    outfile.write_bytes(b"previous")
    with socket_closed_port() as port:
        options = SigningOptions(identity=signed.signing.identity, timestamp_url=f"http://127.0.0.1:{port}/tsa")
        with pytest.raises(AuthenticodeError, match="osslsigncode sign failed"):
            msi.build(staged, outfile, signing=options)
    assert outfile.read_bytes() == b"previous"


class socket_closed_port:  # noqa: N801 - used as a context manager
    """A loopback port nobody listens on (bound, not listening, for the duration)."""

    def __enter__(self) -> int:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        port: int = self.sock.getsockname()[1]
        return port

    def __exit__(self, *exc: object) -> None:
        self.sock.close()
