"""Sending files (TUF repository files, host log downloads): from the page cache on the event loop, from the disk
on a worker thread.

starlette's ``FileResponse`` reads every 64 KiB chunk on a worker thread. For a 100 MB target those 1 600 hops to a
thread and back, not the bytes, were most of the server's CPU (0.18 s of 0.18 s; the whole send costs 0.08 s
without them), and on a 2-core machine that CPU is what the receiving agent needs to hash its download (issue 19,
ADR 0020). Here each chunk is first read with ``preadv(RWF_NOWAIT)``, which copies from the page cache or fails at
once with ``EAGAIN`` instead of waiting for the disk; only then is it read on a thread. A published target was
just written or just sent to another agent, so it is nearly always cached. Bigger chunks would cut the hops too,
but each connection holds up to a chunk in flight: with thousands of agents downloading at once, 64 KiB is the
bound kept.

Exactly the ``Content-Length`` announced is sent: for a host's log, the length of a snapshot taken at a batch
boundary while agents keep appending (``LogSink.snapshot``). A TUF file replaced between its lookup and its opening
(metadata is replaced by renames) ends the response short and the connection is dropped, or sends the new file's
first bytes only: either way the client's signature or hash check refuses it and it asks again.
"""

from __future__ import annotations

import os

from starlette.concurrency import run_in_threadpool
from starlette.responses import FileResponse
from starlette.types import Send

CHUNK_BYTES = 64 * 1024
_NOWAIT = getattr(os, "RWF_NOWAIT", None)  # Linux ≥ 4.14 (preadv2); elsewhere every read goes to a thread


class CachedFirstFileResponse(FileResponse):
    """A ``FileResponse`` (headers, HEAD, ranges, 304s all starlette's) whose whole-file body is read as above."""

    chunk_size = CHUNK_BYTES

    async def _handle_simple(self, send: Send, send_header_only: bool, send_pathsend: bool) -> None:
        if send_header_only or send_pathsend:
            await super()._handle_simple(send, send_header_only, send_pathsend)
            return
        fd = await run_in_threadpool(os.open, self.path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        try:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            left = int(self.headers["content-length"])
            offset = 0
            while True:
                chunk = await read_chunk(fd, offset, min(self.chunk_size, left))
                offset += len(chunk)
                left -= len(chunk)
                more = left > 0 and len(chunk) > 0
                await send({"type": "http.response.body", "body": chunk, "more_body": more})
                if not more:
                    return
        finally:
            os.close(fd)


async def read_chunk(fd: int, offset: int, size: int) -> bytes:
    """``size`` bytes at ``offset`` (fewer at the end of the file): from the page cache here, else on a thread."""
    if size <= 0:
        return b""
    if _NOWAIT is not None:
        buffer = bytearray(size)
        try:
            got = os.preadv(fd, [buffer], offset, _NOWAIT)
        except BlockingIOError:
            pass  # not (all) in the page cache: the disk read must not stall the event loop
        except OSError:
            pass  # a file system without RWF_NOWAIT (EOPNOTSUPP): the thread read below
        else:
            if got == size:
                return bytes(buffer)
            if got > 0:  # a short read: part cached, or the end of the file; the rest from the thread
                return bytes(buffer[:got]) + await read_chunk(fd, offset + got, size - got)
            # 0: the end of the file, or nothing cached where some file systems answer 0, not EAGAIN
    return await run_in_threadpool(os.pread, fd, size, offset)
