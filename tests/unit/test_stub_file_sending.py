"""TUF files sent from the page cache first (server_stub.file_sending): the same bytes whichever way each chunk is
read, exactly the announced length, and starlette's behaviour for everything else."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from starlette.types import Message

from server_stub import file_sending
from server_stub.file_sending import CachedFirstFileResponse

SIZE = 5 * file_sending.CHUNK_BYTES + 1234  # five whole chunks and a short one


def _send(path: Path, method: str = "GET", stat: os.stat_result | None = None) -> list[Message]:
    scope = {"type": "http", "method": method, "headers": [], "asgi": {"spec_version": "2.4"}, "extensions": {}}
    messages: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        messages.append(message)

    response = CachedFirstFileResponse(path, stat_result=stat or os.stat(path))
    asyncio.run(response(scope, receive, send))
    return messages


def _body(messages: list[Message]) -> bytes:
    bodies = [m for m in messages if m["type"] == "http.response.body"]
    assert [m.get("more_body", False) for m in bodies][-1] is False
    return b"".join(m["body"] for m in bodies)


@pytest.fixture
def target(tmp_path: Path) -> tuple[Path, bytes]:
    data = os.urandom(SIZE)
    path = tmp_path / "osqueryd"
    path.write_bytes(data)
    return path, data


def test_a_cached_file_is_sent_whole_in_chunks(target: tuple[Path, bytes]) -> None:
    path, data = target
    messages = _send(path)
    start = messages[0]
    assert start["status"] == 200 and (b"content-length", str(SIZE).encode()) in start["headers"]
    assert _body(messages) == data
    assert len(messages) == 1 + 6  # the start and six chunks of at most 64 KiB


def test_chunks_not_in_the_page_cache_are_read_on_a_thread(
    target: tuple[Path, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, data = target

    def not_cached(fd: int, buffers: list[bytearray], offset: int, flags: int = 0) -> int:
        raise BlockingIOError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(os, "preadv", not_cached)
    assert _body(_send(path)) == data


def test_a_partly_cached_chunk_gets_its_rest_from_a_thread(
    target: tuple[Path, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, data = target
    real = os.preadv

    def half(fd: int, buffers: list[bytearray], offset: int, flags: int = 0) -> int:
        size = len(buffers[0]) // 2
        got = bytearray(size)
        n = real(fd, [got], offset)
        buffers[0][:n] = got[:n]
        return n

    monkeypatch.setattr(os, "preadv", half)
    assert _body(_send(path)) == data


def test_a_file_system_without_nowait_reads_are_thread_reads(
    target: tuple[Path, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, data = target

    def unsupported(fd: int, buffers: list[bytearray], offset: int, flags: int = 0) -> int:
        raise OSError(95, "Operation not supported")

    monkeypatch.setattr(os, "preadv", unsupported)
    assert _body(_send(path)) == data


def test_head_sends_the_headers_only(target: tuple[Path, bytes]) -> None:
    path, _data = target
    messages = _send(path, "HEAD")
    assert (b"content-length", str(SIZE).encode()) in messages[0]["headers"]
    assert _body(messages) == b""


def test_never_more_than_the_announced_length(target: tuple[Path, bytes]) -> None:
    """A file that grew after its lookup: the announced bytes only (the client's hash check judges them)."""
    path, data = target
    stat = os.stat(path)
    with path.open("ab") as grow:
        grow.write(b"appended later")
    assert _body(_send(path, stat=stat)) == data


def test_a_file_cut_short_ends_the_body_early(target: tuple[Path, bytes]) -> None:
    """Fewer bytes than announced: the body ends (uvicorn then drops the connection, the client retries)."""
    path, data = target
    stat = os.stat(path)
    os.truncate(path, 1000)
    assert _body(_send(path, stat=stat)) == data[:1000]
