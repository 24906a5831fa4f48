"""osquery_sim.wakeable: sleeping until a deadline or an event, the cheap way and the generic way."""

from __future__ import annotations

import asyncio
import time

import pytest

from osquery_sim.wakeable import WakeableEvent, sleep_unless_set


@pytest.mark.parametrize("kind", [WakeableEvent, asyncio.Event])
def test_set_wakes_a_sleeper_at_once(kind: type[asyncio.Event]) -> None:
    async def scenario() -> float:
        event = kind()
        asyncio.get_running_loop().call_later(0.05, event.set)
        started = time.monotonic()
        await sleep_unless_set(30, event)
        return time.monotonic() - started

    assert asyncio.run(scenario()) < 1


@pytest.mark.parametrize("kind", [WakeableEvent, asyncio.Event])
def test_the_deadline_ends_the_sleep_and_nothing_is_left_behind(kind: type[asyncio.Event]) -> None:
    async def scenario() -> None:
        event = kind()
        started = time.monotonic()
        await sleep_unless_set(0.05, event)
        assert 0.04 < time.monotonic() - started < 1
        assert not event.is_set()
        if isinstance(event, WakeableEvent):
            assert not event._sleepers

    asyncio.run(scenario())


def test_any_of_several_events_and_an_already_set_one() -> None:
    async def scenario() -> None:
        stop, wake = WakeableEvent(), WakeableEvent()
        asyncio.get_running_loop().call_later(0.05, wake.set)
        started = time.monotonic()
        await sleep_unless_set(30, stop, wake)
        assert time.monotonic() - started < 1
        await sleep_unless_set(30, stop, wake)  # wake is set: returns at once
        mixed = asyncio.Event()
        asyncio.get_running_loop().call_later(0.05, mixed.set)
        await asyncio.wait_for(sleep_unless_set(30, stop, mixed), 5)  # a plain event among them: generic path

    asyncio.run(scenario())


def test_a_cancelled_sleeper_is_forgotten() -> None:
    async def scenario() -> None:
        event = WakeableEvent()
        task = asyncio.create_task(sleep_unless_set(30, event))
        await asyncio.sleep(0.01)
        assert len(event._sleepers) == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not event._sleepers
        event.set()  # nothing left to wake; still an Event for plain waiters
        await asyncio.wait_for(event.wait(), 1)

    asyncio.run(scenario())
