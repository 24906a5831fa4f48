"""Thrift's binary protocol for the sim's extension manager, written from Thrift's protocol description and osquery's
IDL (it shares nothing with orbit's codec: the two sides meet only on the wire).

Reading is stream-shaped: ``read_message(source)`` pulls exactly the bytes a message needs from a ``ByteSource`` —
a connected socket (``SocketSource``, which buffers ``recv``) or a byte string (``BytesSource``). Input that ends
inside a message raises ``TruncatedMessage``; input that cannot be a message (bad version word, negative or huge
sizes, unknown types, nesting too deep) raises ``WireError`` at once, before anything big is allocated, so a garbage
peer costs a short read at most. Writing is schema-driven: a struct is a list of ``(field id, kind, value)`` and
the kind (``T_*`` code, ``MapOf``, ``ListOf``) decides the encoding, so a Python ``int`` becomes the i32 or i64 the
IDL says. Messages are written strict (``0x80010000 | type``); old non-strict headers are accepted on read.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeAlias

T_STOP = 0
T_BOOL = 2
T_BYTE = 3
T_DOUBLE = 4
T_I16 = 6
T_I32 = 8
T_I64 = 10
T_STRING = 11
T_STRUCT = 12
T_MAP = 13
T_SET = 14
T_LIST = 15

CALL = 1
REPLY = 2
EXCEPTION = 3
ONEWAY = 4

_STRICT_VERSION = 0x80010000
STRING_LIMIT = 16 * 1024 * 1024
CONTAINER_LIMIT = 1_000_000
DEPTH_LIMIT = 32

# TApplicationException types
UNKNOWN_METHOD = 1
INVALID_MESSAGE_TYPE = 2
INTERNAL_ERROR = 6


class WireError(Exception):
    """Bytes that are not a Thrift binary-protocol message."""


class TruncatedMessage(WireError):
    """The input ended inside a message."""


class PeerClosed(Exception):
    """The peer closed the connection between messages (the normal end of a connection)."""


class ByteSource(Protocol):
    def read_exact(self, size: int) -> bytes: ...


class BytesSource:
    """A complete byte string as a source; running out of bytes is a truncated message."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self.position = 0

    def read_exact(self, size: int) -> bytes:
        end = self.position + size
        if end > len(self._data):
            raise TruncatedMessage(
                f"message truncated: needed {size} bytes at offset {self.position}, "
                f"{len(self._data) - self.position} left"
            )
        chunk = self._data[self.position : end]
        self.position = end
        return chunk


class SocketSource:
    """A connected stream socket as a source; the socket's timeout bounds each wait, ``deadline`` (a
    ``time.monotonic`` value) the whole exchange, so a peer dripping bytes cannot hold the reader forever."""

    def __init__(self, sock: socket.socket, *, deadline: float | None = None, chunk: int = 65536) -> None:
        self._sock = sock
        self._deadline = deadline
        self._chunk = chunk
        self._buffer = bytearray()
        self._position = 0  # bytes before this were consumed (compacted away now and then, not per read)

    def _fill(self) -> bool:
        if self._deadline is not None:
            remaining = self._deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no complete message before the deadline")
            self._sock.settimeout(remaining)
        data = self._sock.recv(self._chunk)
        if not data:
            return False
        if self._position >= self._chunk:
            del self._buffer[: self._position]
            self._position = 0
        self._buffer += data
        return True

    def wait_for_message(self) -> None:
        """Block until a message starts; ``PeerClosed`` if the peer closed the connection instead."""
        if len(self._buffer) == self._position and not self._fill():
            raise PeerClosed

    def read_exact(self, size: int) -> bytes:
        while len(self._buffer) - self._position < size:
            if not self._fill():
                raise TruncatedMessage(f"connection closed inside a message (needed {size} bytes)")
        end = self._position + size
        chunk = bytes(self._buffer[self._position : end])
        self._position = end
        return chunk


# --- decoded values -------------------------------------------------------------------------------------------------


class Fields(dict[int, "Wire"]):
    """A decoded struct: field id → value."""


class Pairs(list[tuple["Wire", "Wire"]]):
    """A decoded map's entries in wire order."""


Wire: TypeAlias = bool | int | float | str | Fields | Pairs | tuple["Wire", ...]


@dataclass(frozen=True)
class Envelope:
    name: str
    kind: int
    seqid: int
    fields: Fields


def _unpack(source: ByteSource, fmt: str, size: int) -> int:
    value: int = struct.unpack(fmt, source.read_exact(size))[0]
    return value


def _read_string(source: ByteSource) -> str:
    size = _unpack(source, ">i", 4)
    if size < 0 or size > STRING_LIMIT:
        raise WireError(f"invalid string size {size}")
    return source.read_exact(size).decode("utf-8", errors="replace")


def _read_count(source: ByteSource) -> int:
    count = _unpack(source, ">i", 4)
    if count < 0 or count > CONTAINER_LIMIT:
        raise WireError(f"invalid container size {count}")
    return count


_INTEGERS = {T_BYTE: (">b", 1), T_I16: (">h", 2), T_I32: (">i", 4), T_I64: (">q", 8)}


def read_value(source: ByteSource, kind: int, depth: int = 0) -> Wire:
    if depth > DEPTH_LIMIT:
        raise WireError(f"nesting deeper than {DEPTH_LIMIT}")
    if kind in _INTEGERS:
        fmt, size = _INTEGERS[kind]
        return _unpack(source, fmt, size)
    if kind == T_STRING:
        return _read_string(source)
    if kind == T_BOOL:
        return source.read_exact(1) != b"\x00"
    if kind == T_DOUBLE:
        number: float = struct.unpack(">d", source.read_exact(8))[0]
        return number
    if kind == T_STRUCT:
        return read_struct(source, depth + 1)
    if kind == T_MAP:
        key_kind, value_kind = struct.unpack(">bb", source.read_exact(2))
        pairs = Pairs()
        for _ in range(_read_count(source)):
            key = read_value(source, key_kind, depth + 1)
            pairs.append((key, read_value(source, value_kind, depth + 1)))
        return pairs
    if kind in (T_SET, T_LIST):
        element_kind = _unpack(source, ">b", 1)
        return tuple(read_value(source, element_kind, depth + 1) for _ in range(_read_count(source)))
    raise WireError(f"unknown type code {kind}")


def read_struct(source: ByteSource, depth: int = 0) -> Fields:
    fields = Fields()
    while True:
        kind = _unpack(source, ">b", 1)
        if kind == T_STOP:
            return fields
        field_id = _unpack(source, ">h", 2)
        fields[field_id] = read_value(source, kind, depth)


def read_message(source: ByteSource) -> Envelope:
    word = _unpack(source, ">I", 4)
    if word & 0x80000000:
        if word & 0xFFFF0000 != _STRICT_VERSION:
            raise WireError(f"bad version word 0x{word:08x}")
        kind = word & 0xFF
        name = _read_string(source)
    else:
        if word > STRING_LIMIT:
            raise WireError(f"invalid method name size {word}")
        name = source.read_exact(word).decode("utf-8", errors="replace")
        kind = _unpack(source, ">b", 1)
    seqid = _unpack(source, ">i", 4)
    if kind not in (CALL, REPLY, EXCEPTION, ONEWAY):
        raise WireError(f"unknown message type {kind}")
    return Envelope(name, kind, seqid, read_struct(source))


# --- encoding -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MapOf:
    key: Kind
    value: Kind


@dataclass(frozen=True)
class ListOf:
    element: Kind


Kind: TypeAlias = int | MapOf | ListOf
Field = tuple[int, Kind, object]

STRING_MAP = MapOf(T_STRING, T_STRING)
STRING_MAP_LIST = ListOf(STRING_MAP)


def _code(kind: Kind) -> int:
    if isinstance(kind, MapOf):
        return T_MAP
    if isinstance(kind, ListOf):
        return T_LIST
    return kind


def _integer(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"expected an integer, got {type(value).__name__}")
    return value


def write_value(out: bytearray, kind: Kind, value: object) -> None:
    if isinstance(kind, MapOf):
        if not isinstance(value, Mapping):
            raise TypeError(f"expected a mapping, got {type(value).__name__}")
        out += struct.pack(">bbi", _code(kind.key), _code(kind.value), len(value))
        for key, item in value.items():
            write_value(out, kind.key, key)
            write_value(out, kind.value, item)
    elif isinstance(kind, ListOf):
        if not isinstance(value, Sequence) or isinstance(value, str | bytes):
            raise TypeError(f"expected a sequence, got {type(value).__name__}")
        out += struct.pack(">bi", _code(kind.element), len(value))
        for item in value:
            write_value(out, kind.element, item)
    elif kind == T_STRING:
        if not isinstance(value, str):
            raise TypeError(f"expected a string, got {type(value).__name__}")
        encoded = value.encode("utf-8", errors="replace")
        out += struct.pack(">i", len(encoded)) + encoded
    elif kind == T_STRUCT:
        if not isinstance(value, Iterable):
            raise TypeError(f"expected struct fields, got {type(value).__name__}")
        write_struct(out, value)
    elif kind == T_BOOL:
        out.append(1 if value else 0)
    elif kind == T_BYTE:
        out += struct.pack(">b", _integer(value))
    elif kind == T_I16:
        out += struct.pack(">h", _integer(value))
    elif kind == T_I32:
        out += struct.pack(">i", _integer(value))
    elif kind == T_I64:
        out += struct.pack(">q", _integer(value))
    elif kind == T_DOUBLE:
        if not isinstance(value, int | float):
            raise TypeError(f"expected a number, got {type(value).__name__}")
        out += struct.pack(">d", float(value))
    else:
        raise TypeError(f"cannot encode type code {kind}")


def write_struct(out: bytearray, fields: Iterable[object]) -> None:
    for entry in fields:
        if not isinstance(entry, tuple) or len(entry) != 3:
            raise TypeError("a struct field is (id, kind, value)")
        field_id, kind, value = entry
        if value is None:
            continue  # an unset field is simply not written
        out += struct.pack(">bh", _code(kind), field_id)
        write_value(out, kind, value)
    out.append(T_STOP)


def encode_message(name: str, kind: int, seqid: int, fields: Iterable[Field]) -> bytes:
    out = bytearray(struct.pack(">I", _STRICT_VERSION | kind))
    write_value(out, T_STRING, name)
    out += struct.pack(">i", seqid)
    write_struct(out, fields)
    return bytes(out)


def application_exception(message: str, error_type: int) -> list[Field]:
    """``TApplicationException {1:string message, 2:i32 type}``."""
    return [(1, T_STRING, message), (2, T_I32, error_type)]


# --- reading typed values out of decoded structs --------------------------------------------------------------------


def text(fields: Fields, field_id: int) -> str:
    value = fields.get(field_id)
    return value if isinstance(value, str) else ""


def integer(fields: Fields, field_id: int) -> int:
    value = fields.get(field_id)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def substruct(fields: Fields, field_id: int) -> Fields:
    value = fields.get(field_id)
    return value if isinstance(value, Fields) else Fields()


def string_map(value: Wire | None) -> dict[str, str]:
    if not isinstance(value, Pairs):
        return {}
    return {key: item for key, item in value if isinstance(key, str) and isinstance(item, str)}


def string_map_list(value: Wire | None) -> list[dict[str, str]]:
    if not isinstance(value, tuple):
        return []
    return [string_map(item) for item in value if isinstance(item, Pairs)]
