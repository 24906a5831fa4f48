"""Thrift's binary protocol as osquery's extension API speaks it: bytes in, typed values out (no sockets here).

osquery uses ``TBinaryProtocol`` over ``TBufferedTransport`` on a Unix socket, so messages are *not* framed: a
reader only learns where a message ends by decoding it. ``MessageDecoder`` is fed bytes as they arrive and returns
completed messages; ``decode_message`` decodes a complete buffer and raises ``Incomplete`` when bytes are missing.
Both raise ``ThriftProtocolError`` as soon as the bytes can never become a valid message (bad version word,
negative or oversized length, unknown type, nesting too deep), before anything big is allocated. Both sides of a
connection write strict messages (version word ``0x8001``); old non-strict headers are accepted on read.

Everything is big-endian. A struct is a run of ``type:i8 id:i16 value`` fields ended by a STOP byte; a map is
``ktype vtype size:i32`` then pairs; a list or set is ``etype size:i32`` then elements; a string is ``size:i32``
then UTF-8 bytes.
"""

from __future__ import annotations

import struct
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import TypeAlias, TypeVar

VERSION_1 = 0x80010000
VERSION_MASK = 0xFFFF0000
TYPE_MASK = 0x000000FF

MAX_STRING_BYTES = 16 * 1024 * 1024
MAX_CONTAINER_ITEMS = 1_000_000
MAX_DEPTH = 32

_T = TypeVar("_T")


class TType(IntEnum):
    STOP = 0
    BOOL = 2
    BYTE = 3
    DOUBLE = 4
    I16 = 6
    I32 = 8
    I64 = 10
    STRING = 11
    STRUCT = 12
    MAP = 13
    SET = 14
    LIST = 15


class MessageType(IntEnum):
    CALL = 1
    REPLY = 2
    EXCEPTION = 3
    ONEWAY = 4


class ThriftProtocolError(Exception):
    """Bytes that are not (and will never become) a valid Thrift binary message."""


class Incomplete(Exception):
    """The buffer ends inside a message; read more bytes and decode again."""


@dataclass(frozen=True)
class Struct:
    """A decoded struct: field id → value (unknown ids are kept; callers pick what they know)."""

    fields: Mapping[int, Value] = field(default_factory=dict)


@dataclass(frozen=True)
class MapValue:
    """A decoded map, as its pairs in wire order (keys may be any Thrift type)."""

    items: tuple[tuple[Value, Value], ...] = ()


Value: TypeAlias = bool | int | float | str | Struct | MapValue | tuple["Value", ...]


@dataclass(frozen=True)
class Message:
    name: str
    type: MessageType
    seqid: int
    body: Struct


# --- encoding ---------------------------------------------------------------------------------------------------


class Writer:
    """Appends binary-protocol values to a buffer; the caller writes field headers in schema order."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def getvalue(self) -> bytes:
        return bytes(self._buffer)

    def message_begin(self, name: str, message_type: MessageType, seqid: int) -> None:
        self.i32(_signed32(VERSION_1 | int(message_type)))
        self.string(name)
        self.i32(seqid)

    def field(self, field_id: int, ttype: TType) -> None:
        self._buffer += struct.pack(">bh", int(ttype), field_id)

    def stop(self) -> None:
        self._buffer.append(TType.STOP)

    def bool(self, value: bool) -> None:
        self._buffer.append(1 if value else 0)

    def byte(self, value: int) -> None:
        self._buffer += struct.pack(">b", value)

    def i16(self, value: int) -> None:
        self._buffer += struct.pack(">h", value)

    def i32(self, value: int) -> None:
        self._buffer += struct.pack(">i", value)

    def i64(self, value: int) -> None:
        self._buffer += struct.pack(">q", value)

    def double(self, value: float) -> None:
        self._buffer += struct.pack(">d", value)

    def string(self, value: str) -> None:
        encoded = value.encode("utf-8", errors="replace")
        self.i32(len(encoded))
        self._buffer += encoded

    def map_begin(self, key_type: TType, value_type: TType, size: int) -> None:
        self._buffer += struct.pack(">bbi", int(key_type), int(value_type), size)

    def list_begin(self, element_type: TType, size: int) -> None:
        self._buffer += struct.pack(">bi", int(element_type), size)

    # Shapes osquery's API uses everywhere.

    def string_map(self, values: Mapping[str, str]) -> None:
        self.map_begin(TType.STRING, TType.STRING, len(values))
        for key, value in values.items():
            self.string(key)
            self.string(value)

    def string_map_list(self, rows: Sequence[Mapping[str, str]]) -> None:
        self.list_begin(TType.MAP, len(rows))
        for row in rows:
            self.string_map(row)


def _signed32(value: int) -> int:
    return value - (1 << 32) if value >= 1 << 31 else value


# --- decoding ---------------------------------------------------------------------------------------------------
#
# The parser is resumable: every read is a generator step that yields the buffer length it needs and resumes once
# the buffer is that long, so bytes arriving in pieces are parsed once (no re-decoding from the start per read).

_Step = Generator[int, None, _T]


class _Parser:
    def __init__(self, buffer: bytearray | bytes) -> None:
        self._buffer = buffer
        self.offset = 0

    def _take(self, size: int) -> _Step[bytes]:
        end = self.offset + size
        while len(self._buffer) < end:
            yield end
        chunk = bytes(self._buffer[self.offset : end])
        self.offset = end
        return chunk

    def _int(self, fmt: str, size: int) -> _Step[int]:
        value: int = struct.unpack(fmt, (yield from self._take(size)))[0]
        return value

    def _string(self) -> _Step[str]:
        size = yield from self._int(">i", 4)
        if size < 0:
            raise ThriftProtocolError(f"negative string length {size}")
        if size > MAX_STRING_BYTES:
            raise ThriftProtocolError(f"string length {size} exceeds the limit of {MAX_STRING_BYTES} bytes")
        raw = yield from self._take(size)
        return raw.decode("utf-8", errors="replace")

    def _size(self) -> _Step[int]:
        size = yield from self._int(">i", 4)
        if size < 0:
            raise ThriftProtocolError(f"negative container size {size}")
        if size > MAX_CONTAINER_ITEMS:
            raise ThriftProtocolError(f"container size {size} exceeds the limit of {MAX_CONTAINER_ITEMS}")
        return size

    def value(self, ttype: int, depth: int) -> _Step[Value]:
        if depth > MAX_DEPTH:
            raise ThriftProtocolError(f"values nested deeper than {MAX_DEPTH} levels")
        if ttype in _INTEGER_FORMATS:
            fmt, size = _INTEGER_FORMATS[ttype]
            return (yield from self._int(fmt, size))
        if ttype == TType.STRING:
            return (yield from self._string())
        if ttype == TType.BOOL:
            return (yield from self._take(1)) != b"\x00"
        if ttype == TType.DOUBLE:
            number: float = struct.unpack(">d", (yield from self._take(8)))[0]
            return number
        if ttype == TType.STRUCT:
            return (yield from self.struct(depth + 1))
        if ttype == TType.MAP:
            key_type = yield from self._int(">b", 1)
            value_type = yield from self._int(">b", 1)
            pairs: list[tuple[Value, Value]] = []
            for _ in range((yield from self._size())):
                key = yield from self.value(key_type, depth + 1)
                pairs.append((key, (yield from self.value(value_type, depth + 1))))
            return MapValue(tuple(pairs))
        if ttype in (TType.LIST, TType.SET):
            element_type = yield from self._int(">b", 1)
            elements: list[Value] = []
            for _ in range((yield from self._size())):
                elements.append((yield from self.value(element_type, depth + 1)))
            return tuple(elements)
        raise ThriftProtocolError(f"unknown field type {ttype}")

    def struct(self, depth: int = 0) -> _Step[Struct]:
        fields: dict[int, Value] = {}
        while True:
            ttype = yield from self._int(">b", 1)
            if ttype == TType.STOP:
                return Struct(fields)
            field_id = yield from self._int(">h", 2)
            fields[field_id] = yield from self.value(ttype, depth)

    def message(self) -> _Step[Message]:
        first = yield from self._int(">i", 4)
        if first < 0:
            if (first & 0xFFFFFFFF) & VERSION_MASK != VERSION_1:
                raise ThriftProtocolError(f"bad protocol version word 0x{first & 0xFFFFFFFF:08x}")
            raw_type = first & TYPE_MASK
            name = yield from self._string()
        else:
            if first > MAX_STRING_BYTES:
                raise ThriftProtocolError(f"method name length {first} exceeds the limit")
            name = (yield from self._take(first)).decode("utf-8", errors="replace")
            raw_type = yield from self._int(">b", 1)
        seqid = yield from self._int(">i", 4)
        try:
            message_type = MessageType(raw_type)
        except ValueError:
            raise ThriftProtocolError(f"unknown message type {raw_type}") from None
        body = yield from self.struct()
        return Message(name, message_type, seqid, body)


_INTEGER_FORMATS: dict[int, tuple[str, int]] = {
    TType.BYTE: (">b", 1),
    TType.I16: (">h", 2),
    TType.I32: (">i", 4),
    TType.I64: (">q", 8),
}


def decode_message(data: bytes | bytearray) -> tuple[Message, int]:
    """The first message in the complete buffer ``data`` and the number of bytes it used."""
    parser = _Parser(data)
    steps = parser.message()
    try:
        needed = next(steps)
    except StopIteration as done:
        message: Message = done.value
        return message, parser.offset
    steps.close()
    raise Incomplete(f"need {needed - len(data)} more bytes")


class MessageDecoder:
    """Turns bytes arriving in arbitrary pieces into messages; each byte is parsed once."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._parser: _Parser | None = None
        self._steps: _Step[Message] | None = None
        self._needed = 0

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def feed(self, data: bytes) -> list[Message]:
        """Add ``data``; returns the messages it completed (raises ThriftProtocolError for garbage)."""
        self._buffer += data
        messages: list[Message] = []
        while self._buffer and len(self._buffer) >= self._needed:
            if self._steps is None or self._parser is None:
                self._parser = _Parser(self._buffer)
                self._steps = self._parser.message()
            try:
                self._needed = next(self._steps)
            except StopIteration as done:
                messages.append(done.value)
                del self._buffer[: self._parser.offset]
                self._parser, self._steps, self._needed = None, None, 0
        return messages


def encode_message(name: str, message_type: MessageType, seqid: int, body: Writer) -> bytes:
    """A message whose body struct (fields and STOP) was written to ``body``."""
    header = Writer()
    header.message_begin(name, message_type, seqid)
    return header.getvalue() + body.getvalue()


# --- reading typed values out of decoded structs -------------------------------------------------------------------


def field_str(body: Struct, field_id: int, default: str = "") -> str:
    value = body.fields.get(field_id)
    return value if isinstance(value, str) else default


def field_int(body: Struct, field_id: int, default: int = 0) -> int:
    value = body.fields.get(field_id)
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def field_struct(body: Struct, field_id: int) -> Struct:
    value = body.fields.get(field_id)
    return value if isinstance(value, Struct) else Struct()


def as_string_map(value: Value | None) -> dict[str, str]:
    """A ``map<string,string>``; pairs of other types are skipped (Thrift skips what does not match)."""
    if not isinstance(value, MapValue):
        return {}
    return {k: v for k, v in value.items if isinstance(k, str) and isinstance(v, str)}


def as_string_map_list(value: Value | None) -> list[dict[str, str]]:
    """A ``list<map<string,string>>``."""
    if not isinstance(value, tuple):
        return []
    return [as_string_map(item) for item in value if isinstance(item, MapValue)]


class ApplicationError(Exception):
    """Thrift's ``TApplicationException``: a message the server could not process at all."""

    UNKNOWN = 0
    UNKNOWN_METHOD = 1
    INVALID_MESSAGE_TYPE = 2
    WRONG_METHOD_NAME = 3
    BAD_SEQUENCE_ID = 4
    MISSING_RESULT = 5
    INTERNAL_ERROR = 6
    PROTOCOL_ERROR = 7

    def __init__(self, kind: int, message: str) -> None:
        super().__init__(kind, message)
        self.kind = kind
        self.message = message

    def __str__(self) -> str:
        return f"thrift application error {self.kind}: {self.message}"

    def write(self, writer: Writer) -> None:
        writer.field(1, TType.STRING)
        writer.string(self.message)
        writer.field(2, TType.I32)
        writer.i32(self.kind)
        writer.stop()

    @classmethod
    def from_struct(cls, body: Struct) -> ApplicationError:
        return cls(field_int(body, 2), field_str(body, 1))
