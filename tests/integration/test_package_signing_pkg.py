"""The signed .pkg: its two xar signatures checked without our xar module — a small reader here (struct, zlib,
ElementTree) finds the TOC, its SHA-1, the RSA signature and the CMS signature in the heap. ``openssl`` verifies the
RSA one against the certificate the TOC carries (which chains to the test CA) and the CMS one with
``openssl cms -verify`` against the test CA; rcodesign (apple-platform-py) verifies the CMS one too and reads the
chain; 7-Zip still lists and tests the archive. One changed byte of the TOC, of the signed checksum or of either
signature fails."""

from __future__ import annotations

import base64
import hashlib
import struct
import subprocess
import zlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import pytest
from apple_platform import reading
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from packager.formats import pkg
from packager.package import cli as package_cli
from packager.signing.rfc3161 import TimestampError
from packager.signing.signing_options import SigningOptions
from packager.signing.x509_identity import parse_identity
from tests.support.signing_identities import Issued, make_ca, make_developer_id_installer
from tests.support.staged_package import make_staged
from tests.support.time_stamp_authority import local_tsa, socket_closed_port

DSIG = "{http://www.w3.org/2000/09/xmldsig#}"


@dataclass(frozen=True)
class XarSignature:
    """What an independent reader finds in a signed xar."""

    toc_compressed: bytes
    toc: ElementTree.Element
    checksum_style: str
    stored_checksum: bytes
    signature: bytes
    certificates: list[bytes]  # DER, as listed
    cms: bytes  # the <x-signature style="CMS"> bytes, b"" without one
    cms_certificates: list[bytes]


def read_xar_signature(data: bytes) -> XarSignature:
    magic, header_size, version, toc_length, _, algorithm = struct.unpack(">4sHHQQI", data[:28])
    assert (magic, version, algorithm) == (b"xar!", 1, 1)
    toc_compressed = data[header_size : header_size + toc_length]
    heap = header_size + toc_length
    toc = ElementTree.fromstring(zlib.decompress(toc_compressed)).find("toc")
    assert toc is not None
    checksum, signature = toc.find("checksum"), toc.find("signature")
    assert checksum is not None and signature is not None and signature.get("style") == "RSA"

    def span(element: ElementTree.Element) -> bytes:
        offset, size = int(element.findtext("offset", "")), int(element.findtext("size", ""))
        return data[heap + offset : heap + offset + size]

    def chain(element: ElementTree.Element | None) -> list[bytes]:
        if element is None:
            return []
        return [
            base64.b64decode(node.text or "")
            for node in element.iterfind(f"{DSIG}KeyInfo/{DSIG}X509Data/{DSIG}X509Certificate")
        ]

    cms = toc.find("x-signature")
    assert cms is None or cms.get("style") == "CMS"
    return XarSignature(
        toc_compressed,
        toc,
        checksum.get("style", ""),
        span(checksum),
        span(signature),
        chain(signature),
        span(cms) if cms is not None else b"",
        chain(cms),
    )


def _openssl(*argv: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["openssl", *map(str, argv)], capture_output=True, text=True, timeout=60, check=False)


def openssl_verifies(found: XarSignature, work: Path) -> bool:
    """``openssl pkeyutl -verify`` of the signature over the stored TOC checksum and ``openssl dgst -verify`` over
    the compressed TOC itself, with the public key of the first certificate in the TOC."""
    work.mkdir(parents=True, exist_ok=True)
    leaf = x509.load_der_x509_certificate(found.certificates[0])
    (work / "leaf.pem").write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    (work / "checksum.bin").write_bytes(found.stored_checksum)
    (work / "signature.bin").write_bytes(found.signature)
    (work / "toc.bin").write_bytes(found.toc_compressed)
    digest = found.checksum_style  # sha1
    pkeyutl = _openssl(
        *("pkeyutl", "-verify", "-certin", "-inkey", work / "leaf.pem", "-pkeyopt", f"digest:{digest}"),
        *("-in", work / "checksum.bin", "-sigfile", work / "signature.bin"),
    )
    _openssl("x509", "-in", work / "leaf.pem", "-pubkey", "-noout", "-out", work / "public.pem")
    dgst = _openssl(
        "dgst", f"-{digest}", "-verify", work / "public.pem", "-signature", work / "signature.bin", work / "toc.bin"
    )
    assert ("Signature Verified Successfully" in pkeyutl.stdout) == (pkeyutl.returncode == 0), pkeyutl
    assert ("Verified OK" in dgst.stdout) == (dgst.returncode == 0), dgst
    return pkeyutl.returncode == 0 and dgst.returncode == 0


def openssl_cms_verifies(found: XarSignature, ca_pem: bytes, work: Path) -> bool:
    """``openssl cms -verify`` of the detached CMS signature with the stored TOC checksum as its content, the chain
    checked against ``ca_pem`` (``-purpose any``: the leaf's only EKU is Apple's package signing one;
    ``-ignore_critical``: Apple's critical Developer ID Installer marker extension is unknown to OpenSSL)."""
    work.mkdir(parents=True, exist_ok=True)
    (work / "cms.der").write_bytes(found.cms)
    (work / "checksum.bin").write_bytes(found.stored_checksum)
    (work / "ca.pem").write_bytes(ca_pem)
    result = _openssl(
        *("cms", "-verify", "-binary", "-inform", "DER", "-in", work / "cms.der", "-content", work / "checksum.bin"),
        *("-CAfile", work / "ca.pem", "-purpose", "any", "-ignore_critical", "-out", work / "content.out"),
    )
    assert ("Verification successful" in result.stderr) == (result.returncode == 0), result
    return result.returncode == 0


def rcodesign_toc(path: Path) -> dict[str, Any]:
    entity = reading.read_signature(str(path))[0]["entity"]
    assert isinstance(entity, dict)
    toc = entity["xar_table_of_contents"]
    assert isinstance(toc, dict)
    return toc


@dataclass(frozen=True)
class Signed:
    path: Path
    ca: Issued
    signer: Issued
    signing: SigningOptions


@pytest.fixture(scope="module")
def signed(tmp_path_factory: pytest.TempPathFactory) -> Signed:
    base = tmp_path_factory.mktemp("signed-pkg")
    ca = make_ca()
    signer = make_developer_id_installer(ca)
    identity = parse_identity(signer.cert_pem + ca.cert_pem, signer.key_pem(), None, source="test")
    signing = SigningOptions(identity=identity, timestamp_url=None)
    staged = make_staged(base / "stage", "macos", version="4.5.6", payload_bytes=50_000)
    result = pkg.build(staged, base / "signed.pkg", signing=signing)
    return Signed(result.path, ca, signer, signing)


def test_openssl_verifies_the_rsa_signature_over_the_toc_checksum(signed: Signed, tmp_path: Path) -> None:
    found = read_xar_signature(signed.path.read_bytes())
    assert found.checksum_style == "sha1"
    assert found.stored_checksum == hashlib.sha1(found.toc_compressed).digest()
    assert len(found.signature) == 256  # RSA 2048
    assert openssl_verifies(found, tmp_path)
    # the chain in the TOC: the Developer ID Installer style leaf, then the CA; it verifies against the CA
    assert found.certificates == [
        signed.signer.certificate.public_bytes(serialization.Encoding.DER),
        signed.ca.certificate.public_bytes(serialization.Encoding.DER),
    ]
    (tmp_path / "ca.pem").write_bytes(signed.ca.cert_pem)
    (tmp_path / "leaf-cert.pem").write_bytes(signed.signer.cert_pem)
    # -ignore_critical: Apple's Developer ID Installer marker extension is critical and unknown to OpenSSL
    chain = _openssl("verify", "-ignore_critical", "-CAfile", tmp_path / "ca.pem", tmp_path / "leaf-cert.pem")
    assert chain.returncode == 0 and "OK" in chain.stdout, chain.stderr


def test_the_signatures_sit_in_the_heap_before_the_members_as_productsign_lays_them_out(signed: Signed) -> None:
    """productsign's TOC (a real one: apple-platform-rs' testdata-zoom-toc.xml) holds the checksum at 0 (20 bytes),
    ``<signature style="RSA">`` at 20 (256 bytes), ``<x-signature style="CMS">`` at 276, both with the same
    KeyInfo chain; the members follow."""
    found = read_xar_signature(signed.path.read_bytes())
    signature, cms = found.toc.find("signature"), found.toc.find("x-signature")
    assert signature is not None and cms is not None
    assert (signature.findtext("offset"), signature.findtext("size")) == ("20", "256")
    assert cms.get("style") == "CMS" and cms.findtext("offset") == "276"
    cms_size = int(cms.findtext("size", ""))
    assert cms_size == len(found.cms) > 1000
    assert found.cms_certificates == found.certificates
    offsets = sorted(int(node.text or "") for node in found.toc.iter("offset"))
    assert offsets[:4] == [0, 20, 276, 276 + cms_size]  # checksum, RSA, CMS, first member


def test_openssl_cms_verifies_the_cms_signature_against_the_test_ca(signed: Signed, tmp_path: Path) -> None:
    found = read_xar_signature(signed.path.read_bytes())
    assert openssl_cms_verifies(found, signed.ca.cert_pem, tmp_path / "ca")
    assert not openssl_cms_verifies(found, make_ca("another CA").cert_pem, tmp_path / "other")
    printed = _openssl("cms", "-cmsout", "-print", "-inform", "DER", "-in", tmp_path / "ca" / "cms.der", "-noout")
    assert "eContent: <ABSENT>" in printed.stdout  # detached: the content is the TOC checksum
    assert "signingTime" in printed.stdout and "UTCTIME:Nov 14 22:13:20 2023 GMT" in printed.stdout  # the epoch


def test_rcodesign_verifies_the_cms_signature_and_reads_the_developer_id_installer_chain(signed: Signed) -> None:
    toc = rcodesign_toc(signed.path)
    assert toc["checksum_type"] == "SHA-1" and toc["checksum_verifies"] is True
    signature = toc["signature"]
    assert (signature["style"], signature["offset"], signature["size"]) == ("RSA", 20, 256)
    leaf = signature["certificates"][0]
    assert leaf["apple_certificate_profile"] == "developer-id-installer" and leaf["apple_team_id"] == "ABCDE12345"
    assert toc["x_signature"]["style"] == "CMS" and toc["x_signature"]["offset"] == 276
    assert toc["cms_signature_verifies"] is True
    (signer,) = toc["cms_signature"]["signers"]
    found = read_xar_signature(signed.path.read_bytes())
    assert signer["signature_verifies"] is True and signer["digest_algorithm"] == "SHA-256"
    assert signer["message_digest"] == hashlib.sha256(found.stored_checksum).hexdigest()
    assert signer["signing_time"] == "2023-11-14T22:13:20Z"  # SOURCE_DATE_EPOCH of the staged package
    # rcodesign's RSA check is its own convention (SHA256withRSA over the 20 checksum bytes, a hash of the hash,
    # apple-xar reader.rs verify_rsa_checksum_signature); productsign signs the checksum itself as a SHA-1 digest
    # (PKCS#1 v1.5 DigestInfo SHA-1, the key asked for rsaSignatureDigestPKCS1v15SHA1; xar --digestinfo-to-sign),
    # which openssl verifies above. Measured, not hidden: docs/adr/0015-signed-installers.md "## .pkg".
    assert toc["rsa_signature_verifies"] is False


def test_7zip_still_lists_and_tests_the_signed_archive(signed: Signed) -> None:
    tested = subprocess.run(["7z", "t", str(signed.path)], capture_output=True, text=True, timeout=60, check=False)
    assert tested.returncode == 0 and "Everything is Ok" in tested.stdout, tested.stdout[-2000:]
    listed = subprocess.run(["7z", "l", str(signed.path)], capture_output=True, text=True, timeout=60, check=True)
    assert "base.pkg/Payload" in listed.stdout and "Distribution" in listed.stdout


@pytest.mark.parametrize("where", ["toc", "stored checksum", "rsa signature", "cms signature"])
def test_one_changed_byte_fails_verification(signed: Signed, tmp_path: Path, where: str) -> None:
    data = bytearray(signed.path.read_bytes())
    found = read_xar_signature(bytes(data))
    heap = 28 + len(found.toc_compressed)
    if where == "toc":
        # one byte of the compressed TOC as stored in the file (the offsets were read before the change: a changed
        # zlib stream need not inflate any more, but the signature check runs over the stored bytes)
        data[28 + len(found.toc_compressed) // 2] ^= 0x01
        tampered = replace(found, toc_compressed=bytes(data[28:heap]))
        assert tampered.stored_checksum != hashlib.sha1(tampered.toc_compressed).digest()
    else:
        offset = {"stored checksum": 3, "rsa signature": 20 + 100, "cms signature": 276 + len(found.cms) - 100}[where]
        data[heap + offset] ^= 0x01
        tampered = read_xar_signature(bytes(data))
    assert openssl_verifies(found, tmp_path / "before")
    assert openssl_cms_verifies(found, signed.ca.cert_pem, tmp_path / "cms-before")
    rsa_ok = openssl_verifies(tampered, tmp_path / "after")
    cms_ok = openssl_cms_verifies(tampered, signed.ca.cert_pem, tmp_path / "cms-after")
    # the TOC is covered by the stored checksum, which both signatures sign; each signature covers itself only
    assert (rsa_ok, cms_ok) == {
        "toc": (False, True),  # the signatures still match the stored checksum: the checksum check catches it
        "stored checksum": (False, False),
        "rsa signature": (False, True),
        "cms signature": (True, False),
    }[where]
    tampered_path = tmp_path / "tampered.pkg"
    tampered_path.write_bytes(bytes(data))
    if where != "toc":  # a changed compressed TOC need not parse; rcodesign then refuses the file
        toc = rcodesign_toc(tampered_path)
        verdict = (toc["checksum_verifies"], toc["cms_signature_verifies"])
        assert verdict == (where != "stored checksum", where not in ("stored checksum", "cms signature"))
    else:
        assert hashlib.sha1(bytes(data[28:heap])).digest() != found.stored_checksum


def _tlvs(data: bytes) -> list[tuple[int, bytes]]:
    """The test's own DER walk (definite lengths): [(tag, content), ...] of the TLVs in ``data``."""
    found, offset = [], 0
    while offset < len(data):
        tag, size, offset = data[offset], data[offset + 1], offset + 2
        if size & 0x80:
            count = size & 0x7F
            size, offset = int.from_bytes(data[offset : offset + count], "big"), offset + count
        found.append((tag, data[offset : offset + size]))
        offset += size
    return found


def signature_and_token(cms: bytes) -> tuple[bytes, bytes]:
    """The SignerInfo's signature value and its id-aa-timeStampToken (a whole ContentInfo) from the x-signature."""
    ((_, content_info),) = _tlvs(cms[: _length(cms)])
    signed_data = _tlvs(_tlvs(content_info)[1][1])[0][1]
    signer_info = _tlvs(_tlvs(signed_data)[-1][1])[0][1]
    fields = _tlvs(signer_info)
    assert fields[-1][0] == 0xA1, "no unsigned attributes"
    signature = fields[-2][1]
    (attribute,) = _tlvs(fields[-1][1])
    oid, values = _tlvs(attribute[1])
    assert oid[1] == bytes.fromhex("2a864886f70d010910020e")  # 1.2.840.113549.1.9.16.2.14 id-aa-timeStampToken
    (token,) = _tlvs(values[1])
    return signature, bytes([token[0]]) + _encode_length(len(token[1])) + token[1]


def _length(der: bytes) -> int:
    """How long the DER value at the start of ``der`` is (the x-signature slot is zero-padded after it)."""
    size = der[1]
    if size & 0x80:
        count = size & 0x7F
        return 2 + count + int.from_bytes(der[2 : 2 + count], "big")
    return 2 + size


def _encode_length(size: int) -> bytes:
    if size < 0x80:
        return bytes([size])
    encoded = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(encoded)]) + encoded


def test_a_timestamp_from_a_local_rfc3161_authority_is_embedded_and_verifies(signed: Signed, tmp_path: Path) -> None:
    """``--timestamp-url``: the CMS signature carries the authority's token over its signature value, in a
    zero-padded slot; openssl verifies the package signature with it and ``openssl ts -verify`` the token."""
    staged = make_staged(tmp_path / "stage", "macos", version="4.5.6", payload_bytes=20_000)
    with local_tsa(tmp_path / "tsa") as tsa:
        options = replace(signed.signing, timestamp_url=tsa.url)
        stamped = pkg.build(staged, tmp_path / "stamped.pkg", signing=options)
    found = read_xar_signature(stamped.path.read_bytes())
    exact = len(read_xar_signature(signed.path.read_bytes()).cms)
    assert len(found.cms) == exact + pkg.TIMESTAMP_RESERVE  # the slot
    assert found.cms.endswith(b"\0" * 16) and _length(found.cms) > exact  # the token is inside, padding after
    assert openssl_cms_verifies(found, signed.ca.cert_pem, tmp_path / "cms")
    signature, token = signature_and_token(found.cms)
    (tmp_path / "signature.bin").write_bytes(signature)
    (tmp_path / "token.der").write_bytes(token)
    checked = _openssl(
        *("ts", "-verify", "-data", tmp_path / "signature.bin", "-in", tmp_path / "token.der", "-token_in"),
        *("-CAfile", tsa.ca_file, "-untrusted", tsa.cert_file),
    )
    assert checked.returncode == 0 and "Verification: OK" in checked.stdout, checked
    (tmp_path / "other.bin").write_bytes(bytes(len(signature)))
    other = _openssl(
        *("ts", "-verify", "-data", tmp_path / "other.bin", "-in", tmp_path / "token.der", "-token_in"),
        *("-CAfile", tsa.ca_file, "-untrusted", tsa.cert_file),
    )
    assert other.returncode != 0  # the token is bound to this signature
    toc = rcodesign_toc(stamped.path)
    assert toc["cms_signature_verifies"] is True
    (signer,) = toc["cms_signature"]["signers"]
    stamp = signer["time_stamp_token"]  # rcodesign reads the token and checks the TSA's signature too
    assert stamp["signers"][0]["signature_verifies"] is True
    assert stamp["signers"][0]["content_type"] == "1.2.840.113549.1.9.16.1.4"  # TSTInfo
    assert "CN=orbitctl test TSA" in {cert["subject"] for cert in stamp["certificates"]}


def test_an_unreachable_timestamp_server_fails_the_build_and_keeps_the_old_file(signed: Signed, tmp_path: Path) -> None:
    staged = make_staged(tmp_path / "stage", "macos", version="4.5.6", payload_bytes=20_000)
    outfile = tmp_path / "kept.pkg"
    outfile.write_bytes(b"previous")
    with socket_closed_port() as port:
        options = replace(signed.signing, timestamp_url=f"http://127.0.0.1:{port}/tsa")
        with pytest.raises(TimestampError, match="unreachable"):
            pkg.build(staged, outfile, signing=options)
    assert outfile.read_bytes() == b"previous"


def test_signed_builds_are_byte_identical(signed: Signed, tmp_path: Path) -> None:
    staged = make_staged(tmp_path / "stage", "macos", version="4.5.6", payload_bytes=50_000)
    again = pkg.build(staged, tmp_path / "again.pkg", signing=signed.signing)
    assert again.path.read_bytes() == signed.path.read_bytes()


def test_orbitctl_passes_the_checked_identity_to_the_pkg_builder(signed: Signed, tmp_path: Path) -> None:
    """The path ``orbitctl package`` takes after validation: ``build_with(kind, staged, outfile, options.signing)``."""
    staged = make_staged(tmp_path / "stage", "macos", version="4.5.6", payload_bytes=50_000)
    result = package_cli.build_with("pkg", staged, tmp_path / "via-cli.pkg", signed.signing)
    assert result.path.read_bytes() == signed.path.read_bytes()
    unsigned = package_cli.build_with("pkg", staged, tmp_path / "unsigned.pkg", None)
    toc = zlib.decompress(
        unsigned.path.read_bytes()[28 : 28 + struct.unpack(">Q", unsigned.path.read_bytes()[8:16])[0]]
    )
    assert b"<signature" not in toc
