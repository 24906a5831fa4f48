"""An X.509 signing identity (certificate chain + private key) for the .msi (Authenticode) and the .pkg (xar RSA
signature): parsed from PEM and checked before anything is built, so a bad identity fails in seconds with a clear
message rather than after the build.

Pure: ``parse_identity`` takes bytes, ``check_usable`` takes the time to check against; reading the files is
``packager.signing.signing_options``'s job. The key never leaves this object except as ``key_pem()`` (unencrypted
PKCS#8, for osslsigncode's in-memory key file) and through ``sign_digest`` / ``sign_data``; ``repr`` never shows it.
"""

from __future__ import annotations

import datetime
import enum
import re
from dataclasses import dataclass, field
from typing import Final, TypeVar

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from cryptography.x509.oid import ExtendedKeyUsageOID

# Apple's "Developer ID Installer" certificates carry the package-signing EKU; their leaf marker extension is
# 1.2.840.113635.100.6.1.14.
APPLE_PACKAGE_SIGNING_EKU: Final = x509.ObjectIdentifier("1.2.840.113635.100.4.13")
APPLE_DEVELOPER_ID_INSTALLER: Final = x509.ObjectIdentifier("1.2.840.113635.100.6.1.14")
_KEY_BLOCK = re.compile(rb"-----BEGIN ((?:ENCRYPTED |RSA |EC )?PRIVATE KEY)-----\r?\n.*?-----END \1-----", re.DOTALL)
_DIGESTS: Final = {"sha1": hashes.SHA1, "sha256": hashes.SHA256}
_Extension = TypeVar("_Extension", bound=x509.ExtensionType)


class SigningIdentityError(ValueError):
    """The identity cannot be used; the message names the input (never the key or the passphrase)."""


class Purpose(enum.Enum):
    MSI = "msi"  # Authenticode: needs the code-signing EKU
    PKG = "pkg"  # xar RSA signature: needs an RSA key; Apple's package-signing EKU if the certificate lists EKUs
    PROFILE = "profile"  # a signed .mobileconfig (CMS): needs an RSA key (our CMS writer signs with RSA), any EKU


@dataclass(frozen=True)
class SigningIdentity:
    chain: tuple[x509.Certificate, ...]  # the signing certificate first, then its issuers as given
    private_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey = field(repr=False)
    source: str  # where it came from, for messages

    def __repr__(self) -> str:
        return f"SigningIdentity(subject={self.certificate.subject.rfc4514_string()!r}, source={self.source!r})"

    @property
    def certificate(self) -> x509.Certificate:
        return self.chain[0]

    def chain_pem(self) -> bytes:
        return b"".join(cert.public_bytes(serialization.Encoding.PEM) for cert in self.chain)

    def chain_der(self) -> tuple[bytes, ...]:
        return tuple(cert.public_bytes(serialization.Encoding.DER) for cert in self.chain)

    def key_pem(self) -> bytes:
        return self.private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    @property
    def rsa_signature_size(self) -> int:
        if not isinstance(self.private_key, rsa.RSAPrivateKey):
            raise SigningIdentityError(f"{self.source}: a xar signature needs an RSA key")
        return (self.private_key.key_size + 7) // 8

    def sign_digest(self, digest: bytes, algorithm: str) -> bytes:
        """RSASSA-PKCS1-v1_5 over an already computed ``algorithm`` digest (what xar's RSA signature holds)."""
        if not isinstance(self.private_key, rsa.RSAPrivateKey):
            raise SigningIdentityError(f"{self.source}: a xar signature needs an RSA key")
        hash_algorithm = _DIGESTS[algorithm]()
        return self.private_key.sign(digest, padding.PKCS1v15(), Prehashed(hash_algorithm))

    def sign_data(self, data: bytes, algorithm: str) -> bytes:
        """RSASSA-PKCS1-v1_5 with ``algorithm`` over ``data`` (the CMS signed attributes of the .pkg)."""
        if not isinstance(self.private_key, rsa.RSAPrivateKey):
            raise SigningIdentityError(f"{self.source}: a xar signature needs an RSA key")
        return self.private_key.sign(data, padding.PKCS1v15(), _DIGESTS[algorithm]())


def parse_identity(
    certificates_pem: bytes, key_pem: bytes, passphrase: bytes | None, *, source: str
) -> SigningIdentity:
    """Certificates (leaf first) and one private key (PKCS#8 or traditional, optionally encrypted) from PEM."""
    try:
        chain = tuple(x509.load_pem_x509_certificates(certificates_pem))
    except ValueError:
        raise SigningIdentityError(f"{source}: no PEM certificate found") from None
    match = _KEY_BLOCK.search(key_pem)
    if match is None:
        raise SigningIdentityError(f"{source}: no PEM private key found")
    encrypted = match.group(1) == b"ENCRYPTED PRIVATE KEY" or b"Proc-Type: 4,ENCRYPTED" in match.group(0)
    if encrypted and not passphrase:
        raise SigningIdentityError(f"{source}: the private key is encrypted and no passphrase was given")
    try:
        key = serialization.load_pem_private_key(match.group(0), passphrase if encrypted else None)
    except ValueError:
        if encrypted:
            raise SigningIdentityError(f"{source}: wrong passphrase for the private key") from None
        raise SigningIdentityError(f"{source}: the private key cannot be read") from None
    except (TypeError, UnsupportedAlgorithm):
        raise SigningIdentityError(f"{source}: the private key cannot be read") from None
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise SigningIdentityError(f"{source}: the private key must be RSA or ECDSA")
    identity = SigningIdentity(chain=chain, private_key=key, source=source)
    if _spki(identity.certificate.public_key()) != _spki(key.public_key()):
        raise SigningIdentityError(
            f"{source}: the private key does not match the certificate "
            f"{identity.certificate.subject.rfc4514_string()!r} (the first certificate must be the signer's)"
        )
    return identity


def check_usable(identity: SigningIdentity, purpose: Purpose, now: datetime.datetime) -> None:
    """Every certificate valid at ``now``; the signer's key usage and EKU fit ``purpose``."""
    for cert in identity.chain:
        subject = cert.subject.rfc4514_string()
        start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
        if now < start:
            raise SigningIdentityError(
                f"{identity.source}: certificate {subject!r} is not yet valid (from {start:%Y-%m-%d %H:%M:%S} UTC)"
            )
        if now > end:
            raise SigningIdentityError(
                f"{identity.source}: certificate {subject!r} expired ({end:%Y-%m-%d %H:%M:%S} UTC)"
            )
    leaf = identity.certificate
    usage = _extension(leaf, x509.KeyUsage)
    if usage is not None and not usage.digital_signature:
        raise SigningIdentityError(f"{identity.source}: the certificate's key usage does not allow digitalSignature")
    ekus = _extension(leaf, x509.ExtendedKeyUsage)
    listed = set(ekus) if ekus is not None else set()
    if purpose is Purpose.MSI and ExtendedKeyUsageOID.CODE_SIGNING not in listed:
        raise SigningIdentityError(
            f"{identity.source}: the certificate has no code-signing extended key usage (1.3.6.1.5.5.7.3.3); "
            "Authenticode needs a code-signing certificate"
        )
    if purpose is Purpose.PROFILE:
        identity.rsa_signature_size  # noqa: B018 - raises for a non-RSA key (our CMS writer signs with RSA)
    if purpose is Purpose.PKG:
        identity.rsa_signature_size  # noqa: B018 - raises for a non-RSA key
        allowed = {APPLE_PACKAGE_SIGNING_EKU, ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE}
        if ekus is not None and not listed & allowed:
            raise SigningIdentityError(
                f"{identity.source}: the certificate's extended key usage does not include Apple package signing "
                "(1.2.840.113635.100.4.13); use a Developer ID Installer certificate"
            )


def is_developer_id_installer(cert: x509.Certificate) -> bool:
    return _extension_by_oid(cert, APPLE_DEVELOPER_ID_INSTALLER)


def _extension(cert: x509.Certificate, kind: type[_Extension]) -> _Extension | None:
    try:
        return cert.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None


def _extension_by_oid(cert: x509.Certificate, oid: x509.ObjectIdentifier) -> bool:
    try:
        cert.extensions.get_extension_for_oid(oid)
    except x509.ExtensionNotFound:
        return False
    return True


def _spki(public_key: object) -> bytes:
    if not isinstance(public_key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        return b""
    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
