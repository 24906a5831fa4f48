"""Throw-away X.509 material for the signing tests: a CA, code-signing (Authenticode) and Developer ID Installer
style leaves, a time-stamping authority — generated per test session, never stored in the repository."""

from __future__ import annotations

import datetime
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from packager.signing.signing_options import SigningOptions
from packager.signing.x509_identity import (
    APPLE_DEVELOPER_ID_INSTALLER,
    APPLE_PACKAGE_SIGNING_EKU,
    parse_identity,
)

NOW = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
DAY = datetime.timedelta(days=1)
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


@dataclass(frozen=True)
class Issued:
    certificate: x509.Certificate
    key: PrivateKey

    @property
    def cert_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def key_pem(self, passphrase: bytes | None = None) -> bytes:
        encryption: serialization.KeySerializationEncryption = (
            serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption()
        )
        return self.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)


def _name(common_name: str, unit: str | None = None) -> x509.Name:
    parts = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if unit:
        parts.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, unit))
    return x509.Name(parts)


def rsa_key(bits: int = 2048) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def make_ca(name: str = "orbitctl test CA") -> Issued:
    key = rsa_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(_name(name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - 30 * DAY)
        .not_valid_after(NOW + 3650 * DAY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )  # keyCertSign, cRLSign
        .sign(key, hashes.SHA256())
    )
    return Issued(cert, key)


def make_leaf(
    ca: Issued,
    common_name: str,
    *,
    ekus: Sequence[x509.ObjectIdentifier] = (ExtendedKeyUsageOID.CODE_SIGNING,),
    not_before: datetime.datetime | None = None,
    not_after: datetime.datetime | None = None,
    key: PrivateKey | None = None,
    developer_id_installer: bool = False,
    unit: str | None = None,
) -> Issued:
    key = key or rsa_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name, unit))
        .issuer_name(ca.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or NOW - DAY)
        .not_valid_after(not_after or NOW + 365 * DAY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True
        )  # digitalSignature
    )
    if ekus:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(ekus)), critical=True)
    if developer_id_installer:
        builder = builder.add_extension(
            x509.UnrecognizedExtension(APPLE_DEVELOPER_ID_INSTALLER, b"\x05\x00"), critical=True
        )
    return Issued(builder.sign(ca.key, hashes.SHA256()), key)


def make_code_signing(ca: Issued) -> Issued:
    return make_leaf(ca, "orbitctl test code signing")


def make_developer_id_installer(ca: Issued) -> Issued:
    return make_leaf(
        ca,
        "Developer ID Installer: Orbit Test (ABCDE12345)",
        unit="ABCDE12345",
        ekus=(APPLE_PACKAGE_SIGNING_EKU,),
        developer_id_installer=True,
    )


def make_tsa(ca: Issued) -> Issued:
    return make_leaf(ca, "orbitctl test TSA", ekus=(ExtendedKeyUsageOID.TIME_STAMPING,))


def write_identity(
    directory: Path, leaf: Issued, ca: Issued, *, passphrase: bytes | None = None, name: str = "signer"
) -> tuple[Path, Path]:
    """``<name>.crt`` (leaf + CA) and ``<name>.key`` (0600); returns both paths."""
    directory.mkdir(parents=True, exist_ok=True)
    cert = directory / f"{name}.crt"
    cert.write_bytes(leaf.cert_pem + ca.cert_pem)
    key = directory / f"{name}.key"
    key.touch(mode=0o600)
    key.write_bytes(leaf.key_pem(passphrase))
    return cert, key


def signing_options(ca: Issued, leaf: Issued, timestamp_url: str | None = None) -> SigningOptions:
    identity = parse_identity(leaf.cert_pem + ca.cert_pem, leaf.key_pem(), None, source="test")
    return SigningOptions(identity=identity, timestamp_url=timestamp_url)


def verify(path: Path, ca_file: Path, *extra: str | Path) -> subprocess.CompletedProcess[str]:
    """``osslsigncode verify`` of an Authenticode-signed file against ``ca_file``."""
    argv = ["osslsigncode", "verify", "-CAfile", str(ca_file), *map(str, extra), "-in", str(path)]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
