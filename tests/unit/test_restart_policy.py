"""The restart schedule of supervised children."""

from __future__ import annotations

import itertools
import random

from orbit.children.restart_policy import BreakerState, RestartPolicy, RestartTracker


def _tracker(**policy: float) -> RestartTracker:
    return RestartTracker(RestartPolicy(**policy), random_source=random.Random(7))  # type: ignore[arg-type]


def test_first_restart_within_a_second_then_doubling_to_the_cap() -> None:
    tracker = _tracker()
    delays = [tracker.record_exit(0.1) for _ in range(12)]
    assert delays[0] <= 1.0
    for earlier, later in itertools.pairwise(delays[:9]):
        assert later > earlier  # grows while below the cap (jitter is ±20 %, doubling beats it)
    assert all(d <= 300.0 for d in delays) and delays[-1] >= 240.0


def test_a_stable_run_resets_the_count_and_closes_the_breaker() -> None:
    tracker = _tracker()
    for _ in range(5):
        tracker.record_exit(1.0)
    assert tracker.breaker is BreakerState.OPEN
    assert tracker.record_exit(61.0) <= 1.0
    assert tracker.breaker is BreakerState.CLOSED and tracker.consecutive_failures == 1


def test_breaker_opens_at_the_threshold() -> None:
    tracker = _tracker(breaker_threshold=3)
    tracker.record_exit(0.0)
    tracker.record_exit(0.0)
    assert tracker.breaker is BreakerState.CLOSED
    tracker.record_exit(0.0)
    assert tracker.breaker is BreakerState.OPEN


def test_intentional_restarts_are_immediate_and_not_failures() -> None:
    tracker = _tracker()
    assert tracker.record_exit(0.5, intentional=True) == 0.0
    assert tracker.consecutive_failures == 0 and tracker.total_restarts == 1
