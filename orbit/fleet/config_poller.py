"""The config loop (docs/reference/orbit-behaviour.md §3.2): ``POST /api/fleet/orbit/config`` every 30 s, receivers fed.

Better than Fleet's: the interval is jittered (±10 %), receivers that only react to changes are called only when
the answer's digest changed (Fleet re-dispatches everything every 30 s), and failures back off exponentially from
the interval to 5 min, returning to the interval after the first success. Receivers run concurrently; one that
raises is logged and does not stop the others or the loop. Network errors are logged at most once per 5 min.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from orbit.fleet.client import FleetError, FleetUnavailable, OrbitConfig

log = logging.getLogger(__name__)

NETWORK_LOG_INTERVAL = 300.0


@dataclass(frozen=True)
class Receiver:
    name: str
    handle: Callable[[OrbitConfig], Awaitable[object] | object]
    on_change_only: bool = True


def next_delay(interval: float, max_backoff: float, failures: int, rng: random.Random) -> float:
    """The wait before the next poll: jittered interval, or exponential backoff after ``failures`` failures."""
    if failures <= 0:
        return interval * rng.uniform(0.9, 1.1)
    return min(max_backoff, interval * float(2 ** min(failures, 16)))


class ConfigPoller:
    def __init__(
        self,
        fetch: Callable[[], Awaitable[OrbitConfig]],
        receivers: Sequence[Receiver],
        *,
        interval: float = 30.0,
        max_backoff: float = 300.0,
        rng: random.Random | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetch = fetch
        self._receivers = tuple(receivers)
        self._interval = interval
        self._max_backoff = max_backoff
        self._rng = rng or random.Random()  # noqa: S311 - jitter
        self._monotonic = monotonic
        self._last_digest: str | None = None
        self._last_network_log: float | None = None
        self.failures = 0
        self.polls = 0
        self.last_success: float | None = None
        self.last_error: str | None = None
        self.first_poll_done = asyncio.Event()
        self._wake = asyncio.Event()

    def poll_soon(self) -> None:
        """Cut the current wait short (SIGHUP): the loop polls at once."""
        self._wake.set()

    def next_delay(self) -> float:
        return next_delay(self._interval, self._max_backoff, self.failures, self._rng)

    async def poll_once(self) -> bool:
        self.polls += 1
        try:
            config = await self._fetch()
        except FleetError as exc:
            self.failures += 1
            self.last_error = str(exc)
            self._log_failure(exc)
            return False
        finally:
            self.first_poll_done.set()
        self.failures = 0
        self.last_error = None
        self.last_success = self._monotonic()
        changed = config.digest != self._last_digest
        self._last_digest = config.digest
        due = [receiver for receiver in self._receivers if changed or not receiver.on_change_only]
        if due:
            outcomes = await asyncio.gather(*(self._dispatch(receiver, config) for receiver in due))
            if not all(outcomes):
                self._last_digest = None  # a receiver failed (a full disk, say): give it the config again next time
        return True

    def _log_failure(self, exc: FleetError) -> None:
        if isinstance(exc, FleetUnavailable):
            now = self._monotonic()
            if self._last_network_log is not None and now - self._last_network_log < NETWORK_LOG_INTERVAL:
                log.debug("event=config_failed error=%s", exc)
                return
            self._last_network_log = now
        log.warning("event=config_failed failures=%d error=%s", self.failures, exc)

    async def _dispatch(self, receiver: Receiver, config: OrbitConfig) -> bool:
        try:
            result = receiver.handle(config)
            if inspect.isawaitable(result):
                await result
        except Exception:
            log.exception("event=receiver_failed receiver=%s", receiver.name)
            return False
        return True

    async def run(self, stop: asyncio.Event, *, first_delay: float | None = 0.0) -> None:
        """Poll until ``stop``; ``first_delay=None`` waits one regular delay first (the agent polled at start-up)."""
        delay = self.next_delay() if first_delay is None else first_delay
        while not stop.is_set():
            if delay > 0 and await self._wait(stop, delay):
                return
            await self.poll_once()
            delay = self.next_delay()

    async def _wait(self, stop: asyncio.Event, delay: float) -> bool:
        """Wait ``delay`` unless woken by ``poll_soon``; True when ``stop`` is set."""
        self._wake.clear()
        waiters = (asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._wake.wait()))
        try:
            await asyncio.wait(waiters, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
        return stop.is_set()
