"""A minimal DER encoder (ITU-T X.690) for the few ASN.1 shapes the CMS signature of the .pkg needs: SEQUENCE,
SET OF (sorted, as DER requires), INTEGER, OBJECT IDENTIFIER, NULL, OCTET STRING, UTCTime / GeneralizedTime and
context-specific tags. Values are bytes already encoded (``tlv`` output), so structures nest by concatenation.

Pure and deterministic: the same input gives the same bytes, which keeps a signed .pkg reproducible. A minimal
reader (``read``, ``children``) walks the time-stamping authority's answer; what we write is read back in the tests
by openssl and rcodesign, not by this module.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable
from typing import Final

TAG_INTEGER: Final = 0x02
TAG_OCTET_STRING: Final = 0x04
TAG_NULL: Final = 0x05
TAG_OID: Final = 0x06
TAG_UTC_TIME: Final = 0x17
TAG_GENERALIZED_TIME: Final = 0x18
TAG_SEQUENCE: Final = 0x30
TAG_SET: Final = 0x31
_CONTEXT_CONSTRUCTED: Final = 0xA0


def length(size: int) -> bytes:
    if size < 0:
        raise ValueError("der: negative length")
    if size < 0x80:
        return bytes([size])
    encoded = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(encoded)]) + encoded


def tlv(tag: int, content: bytes) -> bytes:
    if not 0 <= tag <= 0xFF or tag & 0x1F == 0x1F:
        raise ValueError(f"der: tag {tag:#x} is not a one-byte tag")
    return bytes([tag]) + length(len(content)) + content


def sequence(*items: bytes) -> bytes:
    return tlv(TAG_SEQUENCE, b"".join(items))


def set_of(items: Iterable[bytes]) -> bytes:
    """DER orders the members of a SET OF by their encodings."""
    return tlv(TAG_SET, b"".join(sorted(items)))


def integer(value: int) -> bytes:
    magnitude = value if value >= 0 else ~value
    size = magnitude.bit_length() // 8 + 1  # the fewest bytes that keep the sign bit right
    return tlv(TAG_INTEGER, value.to_bytes(size, "big", signed=True))


def oid(dotted: str) -> bytes:
    try:
        arcs = [int(part) for part in dotted.split(".")]
    except ValueError:
        raise ValueError(f"der: {dotted!r} is not an object identifier") from None
    if len(arcs) < 2 or arcs[0] > 2 or (arcs[0] < 2 and arcs[1] > 39) or any(arc < 0 for arc in arcs):
        raise ValueError(f"der: {dotted!r} is not an object identifier")
    body = bytearray()
    for arc in [arcs[0] * 40 + arcs[1], *arcs[2:]]:
        chunk = [arc & 0x7F]
        rest = arc >> 7
        while rest:
            chunk.append(0x80 | (rest & 0x7F))
            rest >>= 7
        body += bytes(reversed(chunk))
    return tlv(TAG_OID, bytes(body))


def null() -> bytes:
    return tlv(TAG_NULL, b"")


def octet_string(data: bytes) -> bytes:
    return tlv(TAG_OCTET_STRING, data)


def time(moment: datetime.datetime) -> bytes:
    """RFC 5280 §4.1.2.5: UTCTime for 1950..2049, GeneralizedTime otherwise; seconds, no fraction, ``Z``."""
    if moment.tzinfo is None:
        raise ValueError("der: a time needs a time zone")
    moment = moment.astimezone(datetime.UTC)
    if 1950 <= moment.year < 2050:
        return tlv(TAG_UTC_TIME, moment.strftime("%y%m%d%H%M%SZ").encode("ascii"))
    return tlv(TAG_GENERALIZED_TIME, f"{moment.year:04d}{moment:%m%d%H%M%S}Z".encode("ascii"))


def explicit(number: int, content: bytes) -> bytes:
    """``[number] EXPLICIT``: the encoded value wrapped in a constructed context tag."""
    return tlv(_CONTEXT_CONSTRUCTED | _tag_number(number), content)


def implicit_constructed(number: int, encoded: bytes) -> bytes:
    """``[number] IMPLICIT`` over a constructed value (SET, SEQUENCE): its tag byte replaced, content kept."""
    if not encoded or not encoded[0] & 0x20:
        raise ValueError("der: IMPLICIT here needs a constructed value")
    return bytes([_CONTEXT_CONSTRUCTED | _tag_number(number)]) + encoded[1:]


def _tag_number(number: int) -> int:
    if not 0 <= number < 0x1F:
        raise ValueError(f"der: context tag [{number}] out of range")
    return number


class DerError(ValueError):
    """Bytes that are not the DER this module reads (a malformed answer from a server)."""


def read(data: bytes, offset: int = 0) -> tuple[int, bytes, int]:
    """One TLV at ``offset``: (tag byte, content, offset after it). One-byte tags and definite lengths only."""
    if offset + 2 > len(data):
        raise DerError("der: truncated")
    tag, first = data[offset], data[offset + 1]
    position = offset + 2
    if first & 0x80:
        count = first & 0x7F
        if count == 0 or count > 4 or position + count > len(data):
            raise DerError("der: unsupported or truncated length")
        size = int.from_bytes(data[position : position + count], "big")
        position += count
    else:
        size = first
    end = position + size
    if end > len(data):
        raise DerError("der: truncated content")
    return tag, data[position:end], end


def children(content: bytes) -> list[tuple[int, bytes, bytes]]:
    """The TLVs inside a constructed value's content: (tag, content, the whole encoding)."""
    found = []
    offset = 0
    while offset < len(content):
        tag, inner, end = read(content, offset)
        found.append((tag, inner, content[offset:end]))
        offset = end
    return found
