"""Long-running agent tasks ("actors") kept alive: one that returns or raises is logged and started again with
backoff; only the agent's stop event ends them (unlike Fleet's run group, where the first actor to finish ends all).

``retry_until_done`` is the one retry loop of start-up steps that must succeed before the actors start.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

from orbit.children.restart_policy import RestartPolicy, RestartTracker

log = logging.getLogger(__name__)

T = TypeVar("T")


async def keep_running(
    name: str,
    factory: Callable[[], Awaitable[object]],
    stop: asyncio.Event,
    *,
    policy: RestartPolicy | None = None,
) -> None:
    tracker = RestartTracker(policy or RestartPolicy(first_delay=1.0, max_delay=300.0))
    while not stop.is_set():
        began = time.monotonic()
        try:
            await factory()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("event=actor_failed actor=%s", name)
        else:
            if stop.is_set():
                return
            log.warning("event=actor_returned actor=%s", name)
        delay = tracker.record_exit(time.monotonic() - began)
        try:
            await asyncio.wait_for(stop.wait(), timeout=delay)
        except TimeoutError:
            continue


async def retry_until_done(
    attempt: Callable[[], Awaitable[T | None]],
    sleep: Callable[[float], Awaitable[bool]],
    delays: Iterator[float],
    on_failure: Callable[[float], None],
) -> T | None:
    """Call ``attempt`` until it returns a value, waiting the next of ``delays`` between tries; ``None`` as soon as
    ``sleep`` reports the stop signal (``sleep`` returns True when stopping, so no wait outlives a stop)."""
    for delay in delays:
        result = await attempt()
        if result is not None:
            return result
        on_failure(delay)
        if await sleep(delay):
            return None
    return None
