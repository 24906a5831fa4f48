"""TUF files sent from the page cache first (server_stub.file_sending): the same bytes whichever way each chunk is
read, exactly the announced length, and starlette's behaviour for everything else."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
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


_REAL_PREADV = os.preadv


def _not_cached(fd: int, buffers: list[bytearray], offset: int, flags: int = 0) -> int:
    raise BlockingIOError(11, "Resource temporarily unavailable")


def _half_cached(fd: int, buffers: list[bytearray], offset: int, flags: int = 0) -> int:
    got = bytearray(len(buffers[0]) // 2)
    n = _REAL_PREADV(fd, [got], offset)
    buffers[0][:n] = got[:n]
    return n


def _no_nowait(fd: int, buffers: list[bytearray], offset: int, flags: int = 0) -> int:
    raise OSError(95, "Operation not supported")


@pytest.mark.parametrize(
    "preadv",
    [_not_cached, _half_cached, _no_nowait],
    ids=["not-in-the-page-cache", "partly-cached-rest-from-a-thread", "file-system-without-nowait"],
)
def test_whatever_the_cache_says_the_bytes_are_the_same(
    target: tuple[Path, bytes], monkeypatch: pytest.MonkeyPatch, preadv: Callable[..., int]
) -> None:
    path, data = target
    monkeypatch.setattr(os, "preadv", preadv)
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
