"""An RFC 3161 time-stamp for the .pkg's CMS signature (``orbitctl package --type pkg --timestamp-url URL``), as
productsign adds one for Developer ID: the token is stored as the SignerInfo's unsigned attribute
id-aa-timeStampToken, its message imprint the SHA-256 of the signature value (RFC 5652 Appendix A / RFC 3161 §2.4).

``request_body`` and ``token_from_response`` are pure; ``fetch_token`` POSTs ``application/timestamp-query`` with
httpx (TLS verified, bounded time and size). The answer is checked before it is used: status granted, a token that
is CMS SignedData, and a TSTInfo whose message imprint is exactly the SHA-256 we asked about — a server answering
for other data fails the build instead of shipping a useless timestamp. The token's own signature and chain are
the verifier's business (``openssl ts -verify``; Apple's tools).
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Final

import httpx

from packager.signing import der

OID_SHA256: Final = "2.16.840.1.101.3.4.2.1"
OID_SIGNED_DATA: Final = "1.2.840.113549.1.7.2"
OID_TST_INFO: Final = "1.2.840.113549.1.9.16.1.4"
TIMEOUT_S: Final = 30.0
MAX_RESPONSE_BYTES: Final = 64 * 1024
_GRANTED: Final = (0, 1)  # granted, grantedWithMods


class TimestampError(OSError):
    """No usable token: the server is unreachable, refuses, or answers something else (the build fails)."""


def request_body(digest: bytes, nonce: int) -> bytes:
    """TimeStampReq { version 1, messageImprint { sha256, digest }, nonce, certReq TRUE }."""
    if len(digest) != 32:
        raise ValueError("rfc3161: a SHA-256 digest is 32 bytes")
    return der.sequence(
        der.integer(1),
        der.sequence(der.sequence(der.oid(OID_SHA256), der.null()), der.octet_string(digest)),
        der.integer(nonce),
        der.tlv(0x01, b"\xff"),  # certReq: the TSA's certificate in the token
    )


def _sequence(encoded: bytes, what: str) -> list[tuple[int, bytes, bytes]]:
    tag, content, end = der.read(encoded)
    if tag != der.TAG_SEQUENCE or end != len(encoded):
        raise TimestampError(f"timestamp server: {what} is not a DER SEQUENCE")
    return der.children(content)


def token_from_response(response: bytes, digest: bytes) -> bytes:
    """The TimeStampToken (a whole ContentInfo) from a TimeStampResp, checked against ``digest``."""
    try:
        parts = _sequence(response, "the response")
        if not parts:
            raise TimestampError("timestamp server: an empty response")
        status = der.children(parts[0][1])
        if not status or status[0][0] != der.TAG_INTEGER or int.from_bytes(status[0][1], "big") not in _GRANTED:
            raise TimestampError("timestamp server: the request was not granted")
        if len(parts) < 2:
            raise TimestampError("timestamp server: granted, but no token")
        token = parts[1][2]
        content_info = _sequence(token, "the token")
        if len(content_info) != 2 or content_info[0][2] != der.oid(OID_SIGNED_DATA):
            raise TimestampError("timestamp server: the token is not CMS SignedData")
        (signed_data,) = der.children(content_info[1][1])  # [0] EXPLICIT
        encap = der.children(signed_data[1])[2]  # version, digestAlgorithms, encapContentInfo
        encap_parts = der.children(encap[1])
        if encap_parts[0][2] != der.oid(OID_TST_INFO) or len(encap_parts) != 2:
            raise TimestampError("timestamp server: the token holds no TSTInfo")
        (tst_octets,) = der.children(encap_parts[1][1])
        tst_info = _sequence(tst_octets[1], "TSTInfo")
        imprint = der.children(tst_info[2][1])  # version, policy, messageImprint
        algorithm = der.children(imprint[0][1])[0][2]  # AlgorithmIdentifier's OID (parameters NULL or absent)
        if algorithm != der.oid(OID_SHA256) or imprint[1][1] != digest:
            raise TimestampError("timestamp server: the token time-stamps other data than the signature")
    except (der.DerError, IndexError, ValueError) as exc:
        if isinstance(exc, TimestampError):
            raise
        raise TimestampError(f"timestamp server: a malformed answer ({exc})") from None
    return token


def fetch_token(url: str, data: bytes) -> bytes:
    """A checked token for ``data`` (the signature value) from the authority at ``url``."""
    digest = hashlib.sha256(data).digest()
    body = request_body(digest, secrets.randbits(63))
    try:
        with (
            httpx.Client(timeout=TIMEOUT_S) as client,
            client.stream("POST", url, content=body, headers={"Content-Type": "application/timestamp-query"}) as answer,
        ):
            if answer.status_code != 200:
                raise TimestampError(f"timestamp server {url} answered HTTP {answer.status_code}")
            received = bytearray()
            for chunk in answer.iter_bytes():
                received += chunk
                if len(received) > MAX_RESPONSE_BYTES:
                    raise TimestampError(f"timestamp server {url} answered more than {MAX_RESPONSE_BYTES} bytes")
    except httpx.HTTPError as exc:
        raise TimestampError(f"timestamp server {url} is unreachable: {exc}") from None
    return token_from_response(bytes(received), digest)
