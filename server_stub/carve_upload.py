"""``carve/block`` bodies read as a stream: the carve session is checked before the block's data is held in memory.

A block may be 64 MiB (≈ 86 MB of base64 inside JSON), and ``carve/block`` carries no node key: the session id is
its credential (docs/reference/fleet-api.md §3.7). Reading such a body whole before looking at the session let
anyone make the stub hold 86 MB per request (20 concurrent posts: 1.9 GiB). So the body is scanned as it
arrives. The members before ``data`` are parsed (at most ``HEAD_LIMIT`` bytes of them); when ``data`` begins, the
session named so far must exist, match the request id and expect this block id (``CarveStore.check_block``), and
only then may the data grow — to what the session's block size allows. osquery sends ``block_id``,
``session_id``, ``request_id``, ``data`` in that order (osquery/carver/carver.cpp). A body that puts ``data``
before ``session_id`` is held to the limit of any unauthenticated body (1 MiB), and answered 413 beyond it.

The result is the same JSON object ``json.loads`` would give, so the route validates it as before.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable

from starlette.requests import Request

from server_stub.carves import MAX_BLOCK_SIZE, CarveError, CarveStore
from server_stub.errors import ApiError, bad_request, too_large
from server_stub.json_fields import JsonObject, optional_str, required_int
from server_stub.json_text import decode_json

KIB = 1024
MIB = 1024 * KIB
HEAD_LIMIT = 16 * KIB  # JSON outside the data string (osquery sends ≈ 150 bytes)
UNPROVEN_DATA_LIMIT = 1 * MIB  # data before any session_id: the limit of every unauthenticated body
BODY_LIMIT = (MAX_BLOCK_SIZE + 2) // 3 * 4 + MIB  # the largest block, base64 in JSON
INFLATE_STEP = 256 * KIB
WHITESPACE = b" \t\r\n"
BACKSLASH = 0x5C


def data_limit(block_size: int) -> int:
    """The longest data string a session's block may need: base64, where every '/' might be written '\\/'."""
    return min(2 * ((block_size + 2) // 3 * 4) + 16, BODY_LIMIT)


# finds where a value ends without converting its numbers (``int`` refuses a literal of more than 4,300 digits; the
# value itself is decoded by ``decode_json``, which turns such a number into null)
_END_FINDER = json.JSONDecoder(parse_int=len, parse_float=len, parse_constant=len)


class CarveBodyScanner:
    """One JSON object, fed in pieces; its string member ``data`` may be long, everything else must be short.

    ``on_data(members_so_far)`` is called when the ``data`` string begins and returns how long it may be; it
    raises to refuse the request before the data is held.
    """

    def __init__(self, on_data: Callable[[JsonObject], int]) -> None:
        self._on_data = on_data
        self.members: JsonObject = {}
        self._head = bytearray()  # unparsed JSON outside the data string
        self._head_total = 0
        self._state = "start"
        self._key = ""
        self._unfinished_from = 0  # where to look for a ',' or '}' that might end the value at the head's start
        self._data = bytearray()
        self._data_cap = 0

    def feed(self, chunk: bytes) -> None:
        while chunk:
            if self._state == "data":
                rest = self._feed_data(chunk)
                if rest is None:
                    return
                chunk = rest
                continue
            self._head += chunk
            rest = self._parse(final=False)  # what follows the opening quote of "data", if it began
            self._head_total += len(chunk) - len(rest)
            if self._head_total > HEAD_LIMIT:
                raise ApiError(413, f"carve block: more than {HEAD_LIMIT} bytes of JSON outside the block data")
            chunk = rest

    def finish(self) -> JsonObject:
        if self._state != "data":
            self._parse(final=True)
        if self._state == "data":
            raise bad_request("json decoder error: unterminated string in field 'data'")
        if self._state == "start" and not self._head.strip():
            raise bad_request("Expected JSON Body")
        if self._state != "end":
            raise bad_request("json decoder error: the body is not a complete JSON object")
        return self.members

    # --- outside the data string ---------------------------------------------------------------------------------

    def _skip_space(self, pos: int) -> int:
        head = self._head
        while pos < len(head) and head[pos] in WHITESPACE:
            pos += 1
        return pos

    def _parse(self, *, final: bool) -> bytes:
        """Parse what the head holds; returns bytes that belong to the data string (the state is then "data")."""
        pos = 0
        head = self._head
        while True:
            pos = self._skip_space(pos)
            if pos >= len(head):
                break
            char = bytes(head[pos : pos + 1])
            state = self._state
            if state == "start":
                if char != b"{":
                    raise bad_request("json decoder error: body must be a JSON object")
                self._state, pos = "first_key", pos + 1
            elif state in ("first_key", "key"):
                if char == b"}" and state == "first_key":
                    self._state, pos = "end", pos + 1
                    continue
                end = self._string_end(pos)
                if end is None:
                    break
                try:
                    key = decode_json(bytes(head[pos:end])).value
                except ValueError as exc:
                    raise bad_request(f"json decoder error: {exc}") from None
                if not isinstance(key, str):
                    raise bad_request("json decoder error: expected a member name in double quotes")
                self._key = key
                self._state, pos = "colon", end
            elif state == "colon":
                if char != b":":
                    raise bad_request("json decoder error: expected ':' after a member name")
                self._state, pos = "value", pos + 1
            elif state == "value":
                if self._key == "data" and char == b'"':
                    self._data_cap = self._on_data(dict(self.members))
                    self._state = "data"
                    rest = bytes(head[pos + 1 :])
                    self._head = bytearray()
                    return rest
                value_end = self._value_end(pos, final=final) if final or self._may_end(pos) else None
                if value_end is None:
                    self._unfinished_from = len(head) - pos
                    break
                self._unfinished_from = 0
                self.members[self._key] = decode_json(bytes(head[pos:value_end])).value
                self._state, pos = "after_value", value_end
            elif state == "after_value":
                if char not in (b",", b"}"):
                    raise bad_request("json decoder error: expected ',' or '}' after a member")
                self._state, pos = ("key" if char == b"," else "end"), pos + 1
            else:  # end
                raise bad_request("json decoder error: extra data after the JSON object")
        del head[:pos]
        return b""

    def _string_end(self, pos: int) -> int | None:
        """The index after the closing quote of the string starting at ``pos`` (None: not all here yet)."""
        head = self._head
        if head[pos : pos + 1] != b'"':
            raise bad_request("json decoder error: expected a member name in double quotes")
        search = pos + 1
        while True:
            quote = head.find(b'"', search)
            if quote < 0:
                return None
            slashes = 0
            back = quote - 1
            while head[back] == BACKSLASH:
                slashes += 1
                back -= 1
            if slashes % 2 == 0:
                return quote + 1
            search = quote + 1

    def _may_end(self, pos: int) -> bool:
        """Only a ',' or '}' can end a value: look for one in what arrived since the last try (else a value sent a
        byte at a time would be decoded again for every byte)."""
        start = pos + self._unfinished_from
        return self._head.find(b",", start) >= 0 or self._head.find(b"}", start) >= 0

    def _value_end(self, pos: int, *, final: bool) -> int | None:
        """The end of the JSON value at ``pos``, once it is certain (a number might go on in the next piece)."""
        try:
            text = self._head[pos:].decode("utf-8")
        except UnicodeDecodeError as exc:
            if not final and exc.start >= len(self._head) - pos - 3:
                return None
            raise bad_request("json decoder error: invalid UTF-8") from None
        try:
            _value, end = _END_FINDER.raw_decode(text)
        except json.JSONDecodeError as exc:
            if final:
                raise bad_request(f"json decoder error: {exc}") from None
            return None
        except RecursionError:
            raise bad_request("json decoder error: nested too deeply") from None
        following = text[end:].lstrip()
        if not final and following[:1] not in (",", "}"):
            return None  # "12" might be "123", "-1." might be "-1.5": wait until a ',' or '}' follows
        return pos + len(text[:end].encode("utf-8"))

    # --- the data string -----------------------------------------------------------------------------------------

    def _feed_data(self, chunk: bytes) -> bytes | None:
        """Take data string bytes; returns what follows the closing quote, or None while the string goes on."""
        search = 0
        while True:
            quote = chunk.find(b'"', search)
            if quote < 0:
                self._take_data(chunk)
                return None
            if self._escaped(chunk, quote):
                search = quote + 1
                continue
            self._take_data(chunk[:quote])
            raw = self._data
            self._data = bytearray()
            if BACKSLASH in raw or not raw.isascii():
                try:
                    value: object = json.loads(b'"' + raw + b'"')
                except ValueError as exc:
                    raise bad_request(f"json decoder error: {exc}") from None
            else:
                value = raw.decode("ascii")
            del raw
            self.members["data"] = value
            self._state = "after_value"
            return chunk[quote + 1 :]

    def _escaped(self, chunk: bytes, quote: int) -> bool:
        slashes = 0
        back = quote - 1
        while back >= 0 and chunk[back] == BACKSLASH:
            slashes += 1
            back -= 1
        if back < 0:  # the run of backslashes may go on in what came before
            earlier = len(self._data) - 1
            while earlier >= 0 and self._data[earlier] == BACKSLASH:
                slashes += 1
                earlier -= 1
        return slashes % 2 == 1

    def _take_data(self, piece: bytes) -> None:
        if len(self._data) + len(piece) > self._data_cap:
            if self._data_cap == UNPROVEN_DATA_LIMIT:
                raise ApiError(
                    413,
                    f"carve block: block data over {UNPROVEN_DATA_LIMIT} bytes must come after session_id",
                )
            raise bad_request("validate carve block: block exceeds block_size")
        self._data += piece


def _authorize(carves: CarveStore) -> Callable[[JsonObject], int]:
    def on_data(members: JsonObject) -> int:
        session_id = members.get("session_id")
        if not isinstance(session_id, str) or not session_id:
            return UNPROVEN_DATA_LIMIT
        # the fields before the data are checked as the route checks them (a 400 for a wrong type or an integer
        # beyond int64), so a bad block costs no more than its head
        request_id = optional_str(members, "request_id")
        block_id = required_int(members, "block_id") if "block_id" in members else None
        try:
            carve = carves.check_block(session_id, request_id, block_id)
        except CarveError as exc:
            raise ApiError(exc.status, str(exc)) from None
        return data_limit(carve.block_size)

    return on_data


async def read_carve_block(request: Request, carves: CarveStore) -> JsonObject:
    """The decoded ``carve/block`` body, read with the session checked before the data is buffered."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > BODY_LIMIT:
                raise too_large(BODY_LIMIT)
        except ValueError:
            raise bad_request("invalid Content-Length header") from None
    encoding = request.headers.get("content-encoding", "").strip().lower()
    if encoding not in ("", "identity", "gzip"):
        raise ApiError(415, f"unsupported Content-Encoding {encoding!r}")
    scanner = CarveBodyScanner(_authorize(carves))
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS) if encoding == "gzip" else None
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > BODY_LIMIT:
            raise too_large(BODY_LIMIT)
        if inflater is None:
            scanner.feed(chunk)
            continue
        pending = chunk
        while pending and not inflater.eof:
            try:
                scanner.feed(inflater.decompress(pending, INFLATE_STEP))
            except zlib.error as exc:
                raise bad_request(f"invalid gzip body: {exc}") from None
            pending = inflater.unconsumed_tail
    if inflater is not None and not inflater.eof and received:
        raise bad_request("invalid gzip body: truncated stream")
    return scanner.finish()
