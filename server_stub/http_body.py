"""Reading request bodies safely: size limits before and after gzip, and JSON decoding.

Limits (docs/reference/fleet-api.md §1.7): the body is never read past its limit, and a gzip body is inflated in bounded
steps so a small bomb cannot inflate past the same limit. Truncated or malformed JSON is a 400; an empty body is a
400 "Expected JSON Body" on endpoints that need fields. Text is decoded as Fleet's Go server decodes it
(``json_text``): invalid UTF-8 and lone surrogates become U+FFFD and unrepresentable numbers null, counted in
``/metrics`` as ``json_values_repaired``, never refused.
"""

from __future__ import annotations

import zlib

from starlette.requests import Request

from server_stub.errors import ApiError, bad_request, too_large
from server_stub.json_fields import JsonObject
from server_stub.json_text import decode_json
from server_stub.state import StubState

KIB = 1024
MIB = 1024 * KIB
DEFAULT_LIMIT = 1 * MIB
LOG_LIMIT = 10 * MIB
DISTRIBUTED_WRITE_LIMIT = 10 * MIB


async def read_limited(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise too_large(limit)
        except ValueError:
            raise bad_request("invalid Content-Length header") from None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def inflate_gzip(raw: bytes, limit: int) -> bytes:
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(raw, limit + 1)
    except zlib.error as exc:
        raise bad_request(f"invalid gzip body: {exc}") from None
    if len(out) > limit:
        raise too_large(limit)
    if not inflater.eof:
        raise bad_request("invalid gzip body: truncated stream")
    return out


async def read_json_object(request: Request, limit: int = DEFAULT_LIMIT, *, allow_empty: bool = False) -> JsonObject:
    raw = await read_limited(request, limit)
    encoding = request.headers.get("content-encoding", "").strip().lower()
    if encoding == "gzip":
        raw = inflate_gzip(raw, limit)
    elif encoding not in ("", "identity"):
        raise ApiError(415, f"unsupported Content-Encoding {encoding!r}")
    if not raw.strip():
        if allow_empty:
            return {}
        raise bad_request("Expected JSON Body")
    try:
        decoded = decode_json(raw)
    except (ValueError, RecursionError) as exc:
        raise bad_request(f"json decoder error: {exc}") from None
    if decoded.repairs:
        state: StubState = request.app.state.stub
        state.metrics.count("json_values_repaired", decoded.repairs)
    if not isinstance(decoded.value, dict):
        raise bad_request("json decoder error: body must be a JSON object")
    return decoded.value
