"""The cyclic garbage collector kept off the agents' latency: long-lived objects are frozen out of its passes.

A worker serving 10 000 hosts holds ~12 000 keep-alive connections, hundreds of thousands of live objects, and every
full pass of CPython's collector walks all of them with the event loop held. Measured at 10 000 hosts
(``benchmarks/stub_capacity.py`` with each pass timed): 23 full passes in three minutes, growing to 1 s each as the
hosts enrolled, and freeing nothing at all — closed connections are freed by their reference count (ADR 0014,
amended) and the objects a request creates die with it (10 objects found by all passes of the run together).

So every ``freeze_every`` seconds (0.1) the youngest generation is collected — what 0.1 s allocated and still
lives, a few thousand objects at 10 000 hosts — and everything alive is then frozen (``gc.freeze``): no pass ever
walks more than that. Frozen objects are still freed by their reference count — a connection that closes goes away
as before — but one that becomes part of an unreachable cycle after it was frozen would stay; so every
``thaw_every`` seconds everything is thawed and one full pass runs before the next freeze: one long pause an hour.

Why so often (session 9, measured at 10 000 hosts with each pass timed and its objects counted): with a freeze
every 10 s the automatic passes still held the event loop 50–190 ms, freeing nothing — generation-0 passes over
70 000–85 000 objects, generation-1 over 30 000–40 000 (a request's objects that live until the connection's next
request, ≈ 30 000 a second), and full passes over what 10 s had promoted. CPython (3.11, 3.12) starts a young pass
when its allocation count passes 700, but every object freed, of any generation, takes one off that count, so
under load generation 0 grows far past 700 between passes. The probe's slowest requests were exactly those passes.

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

FREEZE_EVERY = 0.1
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
    """Everything alive out of the collector's sight. ``keep_collector_paced`` runs ``collect_young`` just before,
    over what the last ``FREEZE_EVERY`` seconds allocated: short, unlike a young pass before a freeze every 10 s,
    which walked up to 85 000 objects at 10 000 hosts."""
    gc.freeze()


def collect_young() -> None:
    """One pass over generation 0: what was allocated since the last freeze (``FREEZE_EVERY``)."""
    gc.collect(0)


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
    """Until ``stop`` is set: every ``freeze_every`` seconds collect the youngest generation, then freeze or thaw
    as ``CollectorPacing`` says."""
    pacing = CollectorPacing(clock(), freeze_every, thaw_every)
    actions = {"freeze": freeze, "thaw": thaw_and_collect}
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), freeze_every)
        if stop.is_set():
            break
        collect_young()
        action = pacing.step(clock())
        if action is not None:
            actions[action]()
