"""How healthy load mode's own event loop is: its lag (a 50 ms ticker's overshoot) and time in the garbage collector.

A generator whose loop lags reports its own delay as the server's latency; these figures, printed with each
progress line, tell the two apart.
"""

from __future__ import annotations

import asyncio
import gc
import time

TICK_SECONDS = 0.05


class LoopHealth:
    def __init__(self) -> None:
        self.max_lag = 0.0
        self.gc_seconds = 0.0
        self._gc_started: float | None = None

    def start(self) -> None:
        gc.callbacks.append(self._on_gc)

    def close(self) -> None:
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
        elif self._gc_started is not None:
            self.gc_seconds += time.perf_counter() - self._gc_started
            self._gc_started = None

    async def watch(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            before = loop.time()
            await asyncio.sleep(TICK_SECONDS)
            self.max_lag = max(self.max_lag, loop.time() - before - TICK_SECONDS)

    def take(self) -> tuple[float, float]:
        """(max lag, seconds in GC) since the last call."""
        figures = (self.max_lag, self.gc_seconds)
        self.max_lag = self.gc_seconds = 0.0
        return figures
