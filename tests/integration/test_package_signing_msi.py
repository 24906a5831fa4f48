"""The Authenticode-signed .msi: ``osslsigncode verify`` against the throw-away test CA passes, one changed byte
fails it, two signed builds without a timestamp are byte-identical, and ``--timestamp-url`` gets an RFC 3161
countersignature from a local time-stamping authority (``openssl ts -reply`` behind a loopback HTTP server).
Installing the signed MSI under Wine is part of tests/integration/test_package_msi.py."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from packager.formats import msi
from packager.signing.authenticode import AuthenticodeError
from packager.signing.signing_options import SigningOptions
from tests.support.signing_identities import make_ca, make_code_signing, signing_options, verify
from tests.support.staged_package import make_staged
from tests.support.time_stamp_authority import local_tsa, socket_closed_port


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


@pytest.fixture
def tsa_url(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    with local_tsa(tmp_path / "tsa") as tsa:
        yield tsa.url, tsa.ca_file


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
