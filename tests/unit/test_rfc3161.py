"""The RFC 3161 request and the checks on the authority's answer (packager/signing/rfc3161.py), with answers built
here: a granted token for our digest is taken whole; a refusal, a missing token, garbage or a token for other data
fail the build with a clear message. (The integration test talks to ``openssl ts -reply`` over HTTP.)"""

from __future__ import annotations

import hashlib

import pytest

from packager.signing import der
from packager.signing.rfc3161 import OID_SHA256, OID_SIGNED_DATA, OID_TST_INFO, TimestampError, request_body
from packager.signing.rfc3161 import token_from_response as token_of

DIGEST = hashlib.sha256(b"the signature value").digest()


def token_for(digest: bytes, *, content_type: str = OID_TST_INFO) -> bytes:
    imprint = der.sequence(der.sequence(der.oid(OID_SHA256), der.null()), der.octet_string(digest))
    tst_info = der.sequence(der.integer(1), der.oid("1.2.3.4.1"), imprint, der.integer(7), der.tlv(0x18, b"20261205Z"))
    encap = der.sequence(der.oid(content_type), der.explicit(0, der.octet_string(tst_info)))
    signed_data = der.sequence(der.integer(3), der.set_of([]), encap, der.set_of([]))
    return der.sequence(der.oid(OID_SIGNED_DATA), der.explicit(0, signed_data))


def response(status: int, token: bytes | None) -> bytes:
    return der.sequence(der.sequence(der.integer(status)), *([token] if token is not None else []))


def test_the_request_asks_for_our_sha256_with_the_tsa_certificate() -> None:
    body = request_body(DIGEST, nonce=12345)
    imprint = der.sequence(der.sequence(der.oid(OID_SHA256), der.null()), der.octet_string(DIGEST))
    assert body == der.sequence(der.integer(1), imprint, der.integer(12345), b"\x01\x01\xff")
    with pytest.raises(ValueError, match="32 bytes"):
        request_body(b"short", nonce=1)


@pytest.mark.parametrize("status", [0, 1])
def test_a_granted_token_for_our_digest_is_taken_whole(status: int) -> None:
    token = token_for(DIGEST)
    assert token_of(response(status, token), DIGEST) == token


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (response(2, None), "not granted"),
        (response(0, None), "no token"),
        (response(0, token_for(hashlib.sha256(b"other").digest())), "other data"),
        (response(0, token_for(DIGEST, content_type="1.2.840.113549.1.7.1")), "no TSTInfo"),
        (response(0, der.sequence(der.oid("1.2.840.113549.1.7.1"), der.explicit(0, b""))), "not CMS SignedData"),
        (b"<html>busy</html>", "malformed"),
        (der.octet_string(b"x"), "not a DER SEQUENCE"),
        (b"\x30\x84\xff\xff\xff\xff", "malformed"),
        (der.sequence(), "empty response"),
    ],
)
def test_bad_answers_fail_with_a_message(answer: bytes, message: str) -> None:
    with pytest.raises(TimestampError, match=message):
        token_of(answer, DIGEST)
