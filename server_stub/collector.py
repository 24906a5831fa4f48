"""The cyclic garbage collector kept off the agents' latency: long-lived objects are frozen out of its passes.

A worker serving 10 000 hosts holds ~12 000 keep-alive connections, hundreds of thousands of live objects, and every
full pass of CPython's collector walks all of them with the event loop held. Measured at 10 000 hosts
(``benchmarks/stub_capacity.py`` with each pass timed): 23 full passes in three minutes, growing to 1 s each as the
hosts enrolled, and freeing nothing at all — closed connections are freed by their reference count (ADR 0014,
amended) and the objects a request creates die with it (10 objects found by all passes of the run together).

So every ``freeze_every`` seconds everything alive is frozen (``gc.freeze``, no collection first): the collector's
passes then walk only what was allocated since. Frozen objects are still freed by their reference count — a
connection that closes goes away as before — but one that becomes part of an unreachable cycle after it was frozen
would stay; so every ``thaw_every`` seconds everything is thawed and one full pass runs before the next freeze: one
long pause an hour instead of one every ten seconds under load.

``CollectorPacing`` decides (pure, clock given); ``keep_collector_paced`` runs it beside the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

FREEZE_EVERY = 10.0
THAW_EVERY = 3600.0


@dataclass
class CollectorPacing:
    """When to freeze and when to thaw; ``step(now)`` says which to do (``"freeze"``, ``"thaw"`` or ``None``)."""

    started: float
    freeze_every: float = FREEZE_EVERY
    thaw_every: float = THAW_EVERY
    _last_freeze: float = field(init=False)
    _last_thaw: float = field(init=False)

    def __post_init__(self) -> None:
        self._last_freeze = self.started
        self._last_thaw = self.started

    def step(self, now: float) -> str | None:
        if now - self._last_thaw >= self.thaw_every:
            self._last_thaw = self._last_freeze = now
            return "thaw"
        if now - self._last_freeze >= self.freeze_every:
            self._last_freeze = now
            return "freeze"
        return None


def freeze() -> None:
    """Everything alive out of the collector's sight (no collection first: it would walk what the young generations
    hold, up to a hundred milliseconds at 10 000 hosts, to free next to nothing)."""
    gc.freeze()


def thaw_and_collect() -> None:
    """Everything back in sight, one full pass (cycles among long-frozen objects freed), and frozen again."""
    gc.unfreeze()
    began = time.perf_counter()
    found = gc.collect()
    log.info("event=collector_full_pass unreachable=%d ms=%.0f", found, (time.perf_counter() - began) * 1000)
    gc.freeze()


async def keep_collector_paced(
    stop: asyncio.Event,
    *,
    freeze_every: float = FREEZE_EVERY,
    thaw_every: float = THAW_EVERY,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Until ``stop`` is set: freeze or thaw when ``CollectorPacing`` says so (checked every ``freeze_every / 4`` s)."""
    pacing = CollectorPacing(clock(), freeze_every, thaw_every)
    actions = {"freeze": freeze, "thaw": thaw_and_collect}
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), freeze_every / 4)
        action = pacing.step(clock())
        if action is not None and not stop.is_set():
            actions[action]()
