"""Retry limiter: 3 consecutive failures per target hash → 24 h cooldown; a new hash resets (pure)."""

from __future__ import annotations

from tuf_updates.retry_limiter import RetryDecision, RetryLimiter, RetryPolicy

DAY = 24 * 3600.0
PATH = "osqueryd/linux/stable/osqueryd"


def test_three_failures_start_a_day_long_cooldown() -> None:
    limiter = RetryLimiter()
    for attempt in range(1, 4):
        assert limiter.decide(PATH, "aaa", now=100.0 + attempt) is RetryDecision.TRY
        assert limiter.record_failure(PATH, "aaa", now=100.0 + attempt) == attempt
    assert limiter.decide(PATH, "aaa", now=104.0) is RetryDecision.COOLING_DOWN
    assert limiter.cooldown_remaining(PATH, "aaa", now=104.0) == DAY - 1.0
    assert limiter.decide(PATH, "aaa", now=103.0 + DAY - 0.5) is RetryDecision.COOLING_DOWN
    # after the cooldown: a fresh set of three attempts
    assert limiter.decide(PATH, "aaa", now=103.0 + DAY) is RetryDecision.TRY
    assert limiter.failures(PATH, "aaa") == 0


def test_a_new_hash_is_tried_at_once() -> None:
    limiter = RetryLimiter()
    for _ in range(3):
        limiter.record_failure(PATH, "old", now=0.0)
    assert limiter.decide(PATH, "old", now=1.0) is RetryDecision.COOLING_DOWN
    assert limiter.decide(PATH, "new", now=1.0) is RetryDecision.TRY
    assert limiter.failures(PATH, "new") == 0


def test_success_clears_and_targets_are_independent() -> None:
    limiter = RetryLimiter(RetryPolicy(max_failures=2, cooldown=60.0))
    limiter.record_failure(PATH, "h", now=0.0)
    limiter.record_success(PATH)
    limiter.record_failure(PATH, "h", now=1.0)
    assert limiter.decide(PATH, "h", now=1.0) is RetryDecision.TRY
    limiter.record_failure(PATH, "h", now=2.0)
    assert limiter.decide(PATH, "h", now=3.0) is RetryDecision.COOLING_DOWN
    assert limiter.decide("orbit/linux/stable/orbit", "h", now=3.0) is RetryDecision.TRY
    assert limiter.decide(PATH, "h", now=62.0) is RetryDecision.TRY
