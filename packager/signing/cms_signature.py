"""A CMS signature (RFC 5652 SignedData, "PKCS#7"): detached over a short message for the .pkg's
``<x-signature style="CMS">``, whose message is the xar TOC checksum (docs/adr/0015-signed-installers.md); attached
(the message inside, as ``eContent``) for a signed ``.mobileconfig`` (docs/adr/0021-mdm-deployment.md).

Layout written (what rcodesign's xar signer and Apple's productsign store; ``openssl cms -cmsout -print`` shows it):

    ContentInfo { signedData, [0] SignedData {
      version 1, digestAlgorithms { sha256 },
      encapContentInfo { id-data [, [0] OCTET STRING message] }   -- detached: no eContent (the .pkg's checksum)
      certificates [0] { the chain, as a DER SET: sorted by encoding }
      signerInfos { SignerInfo {
        version 1, sid = issuerAndSerialNumber of the signer, digestAlgorithm sha256,
        signedAttrs [0] { contentType id-data, signingTime, messageDigest SHA-256(message) }   -- DER order
        signatureAlgorithm sha256WithRSAEncryption, signature = RSASSA-PKCS1-v1_5 over DER(signedAttrs as SET)
        [, unsignedAttrs [1] { id-aa-timeStampToken: an RFC 3161 token over SHA-256(signature) }] }}}}

Deterministic: RSA PKCS#1 v1.5 is, and the signing time is the caller's (``SOURCE_DATE_EPOCH``), so the bytes are
a function of the inputs; ``size()`` gives the exact length before signing (the xar TOC declares it up front).
Pure: the private key stays behind ``sign`` (bytes to sign → signature of ``signature_size`` bytes).
"""

from __future__ import annotations

import datetime
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from packager.signing import der

OID_DATA: Final = "1.2.840.113549.1.7.1"
OID_SIGNED_DATA: Final = "1.2.840.113549.1.7.2"
OID_CONTENT_TYPE: Final = "1.2.840.113549.1.9.3"
OID_MESSAGE_DIGEST: Final = "1.2.840.113549.1.9.4"
OID_SIGNING_TIME: Final = "1.2.840.113549.1.9.5"
OID_SHA256: Final = "2.16.840.1.101.3.4.2.1"
OID_SHA256_WITH_RSA: Final = "1.2.840.113549.1.1.11"
OID_TIME_STAMP_TOKEN: Final = "1.2.840.113549.1.9.16.2.14"  # noqa: S105 - id-aa-timeStampToken, an OID


@dataclass(frozen=True)
class CmsSigner:
    """Who signs: the certificates to embed (DER, the signer's first) and the RSA key behind ``sign``, which takes
    the bytes to sign and returns a ``signature_size``-byte SHA256withRSA (PKCS#1 v1.5) signature."""

    certificates: tuple[bytes, ...]
    signature_size: int
    sign: Callable[[bytes], bytes]

    def __post_init__(self) -> None:
        if not self.certificates:
            raise ValueError("cms: a signer needs its certificate")
        if self.signature_size <= 0:
            raise ValueError("cms: the signature size must be positive")


def _algorithm(dotted: str) -> bytes:
    return der.sequence(der.oid(dotted), der.null())


def _attribute(dotted: str, value: bytes) -> bytes:
    return der.sequence(der.oid(dotted), der.set_of([value]))


def _signed_attributes(message: bytes, signing_time: datetime.datetime) -> bytes:
    """The signed attributes as a DER SET (the form the signature covers, RFC 5652 §5.4)."""
    return der.set_of(
        [
            _attribute(OID_CONTENT_TYPE, der.oid(OID_DATA)),
            _attribute(OID_SIGNING_TIME, der.time(signing_time)),
            _attribute(OID_MESSAGE_DIGEST, der.octet_string(hashlib.sha256(message).digest())),
        ]
    )


def _issuer_and_serial(certificate_der: bytes) -> bytes:
    certificate = x509.load_der_x509_certificate(certificate_der)
    return der.sequence(
        certificate.issuer.public_bytes(serialization.Encoding.DER), der.integer(certificate.serial_number)
    )


def _assemble(
    signer: CmsSigner, attributes: bytes, signature: bytes, content: bytes | None = None, token: bytes | None = None
) -> bytes:
    unsigned = []
    if token is not None:  # [1] IMPLICIT SET OF Attribute { id-aa-timeStampToken, { TimeStampToken } }
        unsigned.append(der.implicit_constructed(1, der.set_of([_attribute(OID_TIME_STAMP_TOKEN, token)])))
    signer_info = der.sequence(
        der.integer(1),
        _issuer_and_serial(signer.certificates[0]),
        _algorithm(OID_SHA256),
        der.implicit_constructed(0, attributes),
        _algorithm(OID_SHA256_WITH_RSA),
        der.octet_string(signature),
        *unsigned,
    )
    certificates = der.implicit_constructed(0, der.set_of(signer.certificates))  # [0] IMPLICIT, DER-sorted
    signed_data = der.sequence(
        der.integer(1),
        der.set_of([_algorithm(OID_SHA256)]),
        der.sequence(der.oid(OID_DATA), *([der.explicit(0, der.octet_string(content))] if content is not None else [])),
        certificates,
        der.set_of([signer_info]),
    )
    return der.sequence(der.oid(OID_SIGNED_DATA), der.explicit(0, signed_data))


def size(signer: CmsSigner, signing_time: datetime.datetime) -> int:
    """The exact length ``detached_signature`` will return: no field's length depends on the message (only its
    SHA-256 is stored) or on the signature's value."""
    attributes = _signed_attributes(b"", signing_time)
    return len(_assemble(signer, attributes, bytes(signer.signature_size)))


def detached_signature(
    signer: CmsSigner,
    message: bytes,
    signing_time: datetime.datetime,
    timestamp: Callable[[bytes], bytes] | None = None,
) -> bytes:
    """``timestamp`` (the signature value → an RFC 3161 TimeStampToken, ``rfc3161.fetch_token``) adds the token as
    an unsigned attribute; its length is the server's, so ``size()`` no longer holds (the caller reserves room)."""
    attributes = _signed_attributes(message, signing_time)
    signature = signer.sign(attributes)
    if len(signature) != signer.signature_size:
        raise ValueError(f"cms: the signature is {len(signature)} bytes, expected {signer.signature_size}")
    token = timestamp(signature) if timestamp is not None else None
    return _assemble(signer, attributes, signature, token=token)


def attached_signature(signer: CmsSigner, message: bytes, signing_time: datetime.datetime) -> bytes:
    """The same signature with ``message`` inside (what ``openssl cms -sign -nodetach`` and Apple's signed
    configuration profiles carry)."""
    attributes = _signed_attributes(message, signing_time)
    signature = signer.sign(attributes)
    if len(signature) != signer.signature_size:
        raise ValueError(f"cms: the signature is {len(signature)} bytes, expected {signer.signature_size}")
    return _assemble(signer, attributes, signature, message)
