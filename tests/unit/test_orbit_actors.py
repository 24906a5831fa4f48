"""Actors: kept alive with backoff, cut short on stop, finite ones end quietly; start-up retries wake on stop."""

from __future__ import annotations

import asyncio
import logging

import pytest

from orbit.actors import Stopped, keep_running, retry_until_done, until_stopped
from orbit.reactions import doubling_delays


def test_a_finite_actor_that_finished_its_job_ends_without_warnings(caplog: pytest.LogCaptureFixture) -> None:
    calls = 0

    async def monitor() -> None:  # the trial-boot monitor: returns once the trial is judged
        nonlocal calls
        calls += 1

    async def main() -> None:
        await asyncio.wait_for(keep_running("trial boot", monitor, asyncio.Event(), finite=True), timeout=30)

    with caplog.at_level(logging.INFO, logger="orbit.actors"):
        asyncio.run(main())
    assert calls == 1
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert "actor_done" in caplog.text


def test_a_long_running_actor_that_returns_is_restarted_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    calls = 0
    stop = asyncio.Event()

    async def poller() -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            stop.set()

    async def main() -> None:
        await asyncio.wait_for(keep_running("config", poller, stop), timeout=30)

    with caplog.at_level(logging.WARNING, logger="orbit.actors"):
        asyncio.run(main())
    assert calls == 2 and "actor_returned actor=config" in caplog.text


def test_a_stop_cuts_an_actor_short_after_the_grace() -> None:
    async def main() -> float:
        stop = asyncio.Event()
        cancelled = asyncio.Event()

        async def stuck() -> None:
            try:
                await asyncio.sleep(3600)  # an enrollment backoff, say
            except asyncio.CancelledError:
                cancelled.set()
                raise

        task = asyncio.create_task(keep_running("enroller", stuck, stop))
        await asyncio.sleep(0)
        began = asyncio.get_running_loop().time()
        stop.set()
        await asyncio.wait_for(task, timeout=30)
        assert cancelled.is_set()
        return asyncio.get_running_loop().time() - began

    assert asyncio.run(main()) < 30


def test_until_stopped_returns_the_result_or_raises_stopped() -> None:
    async def main() -> None:
        stop = asyncio.Event()
        assert await until_stopped(asyncio.sleep(0, result=7), stop) == 7
        stop.set()
        with pytest.raises(Stopped):
            await until_stopped(asyncio.sleep(3600), stop)

    asyncio.run(main())


def test_start_up_retries_end_on_stop() -> None:
    async def main() -> object:
        stop = asyncio.Event()
        attempts = 0

        async def attempt() -> int | None:
            nonlocal attempts
            attempts += 1
            return None

        async def sleep(seconds: float) -> bool:
            if attempts >= 3:
                stop.set()
            return stop.is_set()

        result = await retry_until_done(attempt, sleep, doubling_delays(5.0, 300.0), lambda _delay: None)
        assert attempts == 3
        return result

    assert asyncio.run(main()) is None
