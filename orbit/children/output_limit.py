"""A cap on how much of a child's output reaches orbit's log: a verbose osqueryd must not flood it.

Per child and per window (10 s by default) at most ``max_lines`` lines and ``max_bytes`` bytes pass; the rest is
counted, and the first line after the window says how much was dropped (and so does the end of the output). Pure:
the clock is injected; ``supervisor`` wires it between the pipe and the log.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class OutputCap:
    max_lines: int = 200
    max_bytes: int = 64 * 1024
    window_s: float = 10.0


class OutputLimiter:
    def __init__(
        self, name: str, sink: Callable[[str], None], cap: OutputCap, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._name = name
        self._sink = sink
        self._cap = cap
        self._clock = clock
        self._window_start: float | None = None
        self._lines = 0
        self._bytes = 0
        self.dropped_lines = 0
        self.dropped_bytes = 0
        self.total_dropped_lines = 0

    def __call__(self, line: str) -> None:
        now = self._clock()
        if self._window_start is None or now - self._window_start >= self._cap.window_s:
            self._report_dropped()
            self._window_start, self._lines, self._bytes = now, 0, 0
        size = len(line.encode("utf-8", "replace"))
        if self._lines < self._cap.max_lines and self._bytes + size <= self._cap.max_bytes:
            self._lines += 1
            self._bytes += size
            self._sink(line)
            return
        self.dropped_lines += 1
        self.dropped_bytes += size
        self.total_dropped_lines += 1

    def close(self) -> None:
        """The output ended: say what the last window dropped."""
        self._report_dropped()

    def _report_dropped(self) -> None:
        if self.dropped_lines:
            self._sink(
                f"[orbit] {self._name}: {self.dropped_lines} lines ({self.dropped_bytes} bytes) of output dropped "
                f"(more than {self._cap.max_lines} lines or {self._cap.max_bytes} bytes in {self._cap.window_s:g} s)"
            )
            self.dropped_lines = self.dropped_bytes = 0
