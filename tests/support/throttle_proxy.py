"""A TCP relay that slows the server's answers to a fixed rate, so a download is "in the middle" for seconds.

Bytes pass through unchanged (TLS still ends at the real server, whose certificate names 127.0.0.1), in both
directions; only server → client is throttled. Runs its own event loop on a daemon thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time


class ThrottleProxy:
    def __init__(self, upstream_port: int, bytes_per_second: int) -> None:
        self.upstream_port = upstream_port
        self.rate = bytes_per_second
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stopped: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._main, daemon=True, name="throttle-proxy")
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("the throttling proxy did not start")

    def _main(self) -> None:
        self._loop.run_until_complete(self._serve())

    async def _serve(self) -> None:
        self._stopped = asyncio.Event()
        server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        async with server:
            await self._stopped.wait()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(self._pipe(reader, up_writer, None), self._pipe(up_reader, writer, self.rate))

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, rate: int | None) -> None:
        began = time.monotonic()
        sent = 0
        try:
            while data := await reader.read(16 * 1024):
                writer.write(data)
                await writer.drain()
                sent += len(data)
                if rate is not None:
                    ahead = sent / rate - (time.monotonic() - began)
                    if ahead > 0:
                        await asyncio.sleep(ahead)
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            with contextlib.suppress(OSError, RuntimeError):
                writer.close()

    def close(self) -> None:
        stopped = self._stopped
        if stopped is not None:
            self._loop.call_soon_threadsafe(stopped.set)
        self._thread.join(10)
