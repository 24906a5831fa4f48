"""The config loop: change-only dispatch, isolation of failing receivers, jitter and backoff, stop, log limits."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable

import pytest

from orbit.fleet.client import ConfigFormatError, FleetError, FleetUnavailable, OrbitConfig, parse_orbit_config
from orbit.fleet.config_poller import NETWORK_LOG_INTERVAL, ConfigPoller, Receiver, next_delay


def config(timeout: int) -> OrbitConfig:
    return parse_orbit_config({"script_execution_timeout": timeout})


class Answers:
    """``fetch``: returns (or raises) the scripted answers in order; the last one repeats."""

    def __init__(self, *answers: OrbitConfig | FleetError) -> None:
        self.answers = list(answers)
        self.calls = 0

    async def __call__(self) -> OrbitConfig:
        self.calls += 1
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, FleetError):
            raise answer
        return answer


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def poll(poller: ConfigPoller, times: int) -> list[bool]:
    async def main() -> list[bool]:
        return [await poller.poll_once() for _ in range(times)]

    return asyncio.run(main())


def test_change_only_receivers_run_when_the_digest_changes_others_every_poll() -> None:
    changes: list[int | None] = []
    every: list[int | None] = []

    async def on_change(cfg: OrbitConfig) -> None:
        changes.append(cfg.script_execution_timeout)

    receivers = [
        Receiver("changes", on_change),
        Receiver("every", lambda cfg: every.append(cfg.script_execution_timeout), on_change_only=False),
    ]
    fetch = Answers(config(1), config(1), config(2), FleetUnavailable("down"), config(2), config(1))
    results = poll(ConfigPoller(fetch, receivers, monotonic=Clock()), 6)
    assert results == [True, True, True, False, True, True]
    assert changes == [1, 2, 1]  # a failed poll in between does not make the same answer "new"
    assert every == [1, 1, 2, 2, 1]


def test_a_raising_receiver_does_not_stop_the_others(caplog: pytest.LogCaptureFixture) -> None:
    seen: list[str] = []

    def broken(cfg: OrbitConfig) -> None:
        raise RuntimeError("receiver bug")

    async def broken_async(cfg: OrbitConfig) -> None:
        raise OSError("disk full")

    receivers = [
        Receiver("broken", broken),
        Receiver("broken-async", broken_async),
        Receiver("fine", lambda cfg: seen.append("fine")),
        Receiver("fine-every", lambda cfg: seen.append("every"), on_change_only=False),
    ]
    poller = ConfigPoller(Answers(config(1), config(2)), receivers, monotonic=Clock())
    with caplog.at_level(logging.ERROR, logger="orbit.fleet.config_poller"):
        assert poll(poller, 2) == [True, True]
    assert sorted(seen) == ["every", "every", "fine", "fine"]
    failed = sorted(record.getMessage() for record in caplog.records)
    assert failed == [
        "event=receiver_failed receiver=broken",
        "event=receiver_failed receiver=broken",
        "event=receiver_failed receiver=broken-async",
        "event=receiver_failed receiver=broken-async",
    ]
    assert poller.failures == 0 and poller.last_error is None


def test_receivers_of_one_tick_run_concurrently() -> None:
    started: list[str] = []
    both = asyncio.Event()

    def waiting(name: str) -> Callable[[OrbitConfig], Awaitable[None]]:
        async def handle(cfg: OrbitConfig) -> None:
            started.append(name)
            if len(started) == 2:
                both.set()
            await asyncio.wait_for(both.wait(), 5)  # would time out if run one after the other

        return handle

    poller = ConfigPoller(Answers(config(1)), [Receiver("a", waiting("a")), Receiver("b", waiting("b"))])
    assert poll(poller, 1) == [True]
    assert sorted(started) == ["a", "b"]


def test_jitter_stays_within_ten_percent() -> None:
    rng = random.Random(42)
    delays = [next_delay(30.0, 300.0, 0, rng) for _ in range(2000)]
    assert all(27.0 <= delay <= 33.0 for delay in delays)
    assert min(delays) < 27.5 and max(delays) > 32.5  # actually spread, not a constant
    assert len({round(delay, 6) for delay in delays}) > 100


def test_failures_back_off_to_five_minutes() -> None:
    rng = random.Random(1)
    assert [next_delay(30.0, 300.0, failures, rng) for failures in range(1, 7)] == [60, 120, 240, 300, 300, 300]
    assert next_delay(30.0, 300.0, 10_000, rng) == 300.0  # no overflow however long the outage


def test_the_poller_returns_to_the_interval_after_a_success() -> None:
    down = FleetUnavailable("config: cannot reach fleet")
    poller = ConfigPoller(Answers(down, down, down, config(1)), [], monotonic=Clock())
    rng = random.Random(3)
    delays = []
    for _ in range(4):
        poll(poller, 1)
        delays.append(next_delay(30.0, 300.0, poller.failures, rng))
    assert delays[:3] == [60, 120, 240]
    assert 27.0 <= delays[3] <= 33.0
    assert poller.last_error is None and poller.last_success is not None


def test_run_polls_at_once_then_exits_promptly_when_stopped() -> None:
    async def main() -> tuple[int, bool]:
        stop = asyncio.Event()
        fetch = Answers(config(1))

        def stop_after_first(cfg: OrbitConfig) -> None:
            stop.set()

        poller = ConfigPoller(fetch, [Receiver("stopper", stop_after_first)], interval=3600.0)
        await asyncio.wait_for(poller.run(stop), 5)  # the next poll is an hour away: only the stop ends it
        return fetch.calls, poller.first_poll_done.is_set()

    assert asyncio.run(main()) == (1, True)


def test_run_stopped_during_the_first_delay_never_polls() -> None:
    async def main() -> int:
        stop = asyncio.Event()
        fetch = Answers(config(1))
        poller = ConfigPoller(fetch, [])
        task = asyncio.create_task(poller.run(stop, first_delay=3600.0))
        await asyncio.sleep(0)
        stop.set()
        await asyncio.wait_for(task, 5)
        return fetch.calls

    assert asyncio.run(main()) == 0


def test_run_with_stop_already_set_does_nothing() -> None:
    async def main() -> int:
        stop = asyncio.Event()
        stop.set()
        fetch = Answers(config(1))
        await asyncio.wait_for(ConfigPoller(fetch, []).run(stop), 5)
        return fetch.calls

    assert asyncio.run(main()) == 0


def test_network_errors_are_logged_at_most_every_five_minutes(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    poller = ConfigPoller(Answers(FleetUnavailable("config: cannot reach fleet")), [], monotonic=clock)
    warned_at = []
    with caplog.at_level(logging.DEBUG, logger="orbit.fleet.config_poller"):
        for now in (0.0, 60.0, 299.0, NETWORK_LOG_INTERVAL, 400.0, 600.0):
            clock.now = now
            caplog.clear()
            poll(poller, 1)
            levels = [record.levelno for record in caplog.records]
            assert len(levels) == 1  # quieter, never silent: the rest go to debug
            if levels == [logging.WARNING]:
                warned_at.append(now)
    assert warned_at == [0.0, 300.0, 600.0]
    assert poller.failures == 6 and poller.last_error == "config: cannot reach fleet"


def test_other_errors_are_logged_every_time(caplog: pytest.LogCaptureFixture) -> None:
    poller = ConfigPoller(Answers(ConfigFormatError("update_channels is not an object")), [], monotonic=Clock())
    with caplog.at_level(logging.WARNING, logger="orbit.fleet.config_poller"):
        poll(poller, 3)
    assert [record.getMessage() for record in caplog.records] == [
        f"event=config_failed failures={n} error=update_channels is not an object" for n in (1, 2, 3)
    ]


def test_a_change_only_receiver_that_failed_gets_the_same_config_again() -> None:
    config = parse_orbit_config({"command_line_startup_flags": {"verbose": True}})
    calls: list[str] = []

    def flaky(_config: object) -> None:
        calls.append("called")
        if len(calls) == 1:
            raise OSError("No space left on device")

    async def fetch() -> object:
        return config

    async def scenario() -> None:
        poller = ConfigPoller(fetch, [Receiver("flags", flaky)])  # type: ignore[arg-type]
        await poller.poll_once()
        await poller.poll_once()
        await poller.poll_once()

    asyncio.run(scenario())
    assert calls == ["called", "called"]  # retried once after the failure, then only on change


def test_poll_soon_cuts_a_long_wait_short_and_the_loop_carries_on() -> None:
    answers = Answers(config(1))
    polled = asyncio.Event()

    async def fetch() -> OrbitConfig:
        result = await answers()
        polled.set()
        return result

    poller = ConfigPoller(fetch, [], interval=3600.0)

    async def main() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(poller.run(stop, first_delay=None))  # waits ~an hour first
        await asyncio.sleep(0)
        assert answers.calls == 0
        poller.poll_soon()  # SIGHUP
        await asyncio.wait_for(polled.wait(), timeout=60)
        assert answers.calls == 1
        stop.set()
        await asyncio.wait_for(task, timeout=60)  # the next hour-long wait ends on stop at once

    asyncio.run(main())
