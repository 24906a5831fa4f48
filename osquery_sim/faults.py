"""Fault knobs for tests (``--sim_*``): crash, hang, slow start, ignored SIGTERM, memory growth.

They exist so orbit's supervision can be tested against the ways a real osqueryd misbehaves.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Faults:
    crash_after: float = 0.0
    exit_code: int = 1
    ignore_sigterm: bool = False
    slow_start: float = 0.0
    hang_after: float = 0.0
    memory_growth_mb_per_min: float = 0.0

    @property
    def any(self) -> bool:
        return bool(self.crash_after or self.hang_after or self.memory_growth_mb_per_min)


def slow_start(faults: Faults) -> None:
    if faults.slow_start > 0:
        time.sleep(faults.slow_start)


async def crash_later(faults: Faults) -> None:
    """Die abruptly (no cleanup, pidfile left behind) with ``--sim_exit_code``."""
    await asyncio.sleep(faults.crash_after)
    log.error("event=sim_crash exit_code=%d", faults.exit_code)
    os._exit(faults.exit_code)


async def hang_later(faults: Faults) -> None:
    """Stop doing anything, signals included: only SIGKILL ends the process now."""
    await asyncio.sleep(faults.hang_after)
    log.error("event=sim_hang")
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    while True:  # blocks the event loop on purpose
        time.sleep(3600)


async def grow_memory(faults: Faults) -> None:
    hoard: list[bytearray] = []
    per_second = faults.memory_growth_mb_per_min * 1024 * 1024 / 60.0
    while True:
        await asyncio.sleep(1.0)
        chunk = bytearray(int(per_second))
        for index in range(0, len(chunk), 4096):  # touch the pages so they count as resident
            chunk[index] = 1
        hoard.append(chunk)
