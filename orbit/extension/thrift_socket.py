"""Thrift messages over a Unix stream socket with asyncio, as osquery's ``TBufferedTransport`` sends them.

There is no framing: a message ends where its encoding ends, so ``MessageStream.read`` feeds what arrives to a
resumable ``MessageDecoder`` until a message is complete. A message may not grow beyond
``MAX_MESSAGE_BYTES`` (a peer announcing more is cut off), and a connection closed inside a message is a protocol
error, not a hang. ``call`` is one client round trip on a fresh connection, as osquery's clients do.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
from pathlib import Path

from orbit.extension.thrift_codec import (
    ApplicationError,
    Message,
    MessageDecoder,
    MessageType,
    ThriftProtocolError,
    Value,
    Writer,
    encode_message,
)

MAX_MESSAGE_BYTES = 32 * 1024 * 1024
READ_CHUNK = 64 * 1024

_sequence = itertools.count(1)


class ThriftTransportError(Exception):
    """The peer could not be reached, went away, or answered with something that is not a reply."""


class MessageStream:
    """Reads and writes whole messages on one connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._decoder = MessageDecoder()
        self._ready: collections.deque[Message] = collections.deque()

    async def read(self) -> Message | None:
        """The next message, or None when the peer closed the connection between messages."""
        while not self._ready:
            if self._decoder.buffered >= MAX_MESSAGE_BYTES:
                raise ThriftProtocolError(f"message larger than {MAX_MESSAGE_BYTES} bytes")
            chunk = await self._reader.read(READ_CHUNK)
            if not chunk:
                if self._decoder.buffered:
                    raise ThriftProtocolError(
                        f"connection closed inside a message after {self._decoder.buffered} bytes"
                    )
                return None
            self._ready.extend(self._decoder.feed(chunk))
        return self._ready.popleft()

    async def send(self, data: bytes) -> None:
        self._writer.write(data)
        await self._writer.drain()

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(OSError, TimeoutError):
            await asyncio.wait_for(self._writer.wait_closed(), 1.0)


async def call(socket_path: Path, method: str, args: Writer, *, timeout: float) -> Value | None:
    """Call ``method`` on the service at ``socket_path``; returns the reply's field 0 (None for ``void``).

    Raises ``ThriftTransportError`` when the service is unreachable, silent or garbled, and ``ApplicationError``
    when it answered with a Thrift exception (e.g. an unknown method).
    """
    seqid = next(_sequence) & 0x7FFFFFFF
    stream: MessageStream | None = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_unix_connection(str(socket_path))
            stream = MessageStream(reader, writer)
            await stream.send(encode_message(method, MessageType.CALL, seqid, args))
            reply = await stream.read()
    except TimeoutError:
        raise ThriftTransportError(f"{method}: no reply from {socket_path} within {timeout:g} s") from None
    except OSError as exc:
        raise ThriftTransportError(f"{method}: cannot reach {socket_path}: {exc.strerror or exc}") from None
    except ThriftProtocolError as exc:
        raise ThriftTransportError(f"{method}: malformed reply from {socket_path}: {exc}") from None
    finally:
        if stream is not None:
            await stream.close()
    if reply is None:
        raise ThriftTransportError(f"{method}: {socket_path} closed the connection without a reply")
    if reply.type is MessageType.EXCEPTION:
        raise ApplicationError.from_struct(reply.body)
    if reply.type is not MessageType.REPLY:
        raise ThriftTransportError(f"{method}: expected a reply, got message type {reply.type.name}")
    if reply.name != method:
        raise ApplicationError(ApplicationError.WRONG_METHOD_NAME, f"{method}: reply is for {reply.name!r}")
    if reply.seqid != seqid:
        raise ApplicationError(ApplicationError.BAD_SEQUENCE_ID, f"{method}: reply has sequence id {reply.seqid}")
    return reply.body.fields.get(0)
