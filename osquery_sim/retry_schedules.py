"""osquery's retry and backoff schedules as pure functions (docs/reference/fleet-api.md §7.1)."""

from __future__ import annotations

ACCELERATED_DISTRIBUTED_INTERVAL = 5


def enroll_sleep(attempt: int, max_interval: int) -> int:
    """Seconds to sleep after failed enroll attempt ``attempt`` (1-based): min(k², tls_enroll_max_interval)."""
    return min(attempt * attempt, max_interval)


def request_retry_sleep(attempt: int) -> int:
    """Config, distributed and carver requests: i² seconds after failed attempt i (1, 4, 9, …)."""
    return attempt * attempt


def logger_backoff(period: int, failures: int, cap: int) -> int:
    """The TLS logger waits period × n² after n consecutive failures of a stream, capped."""
    if failures <= 0:
        return period
    return min(period * failures * failures, cap)


def distributed_wait(interval: int, now: float, accelerate_until: float) -> int:
    """Seconds until the next distributed read: 5 s while accelerated, else the interval."""
    return ACCELERATED_DISTRIBUTED_INTERVAL if now < accelerate_until else max(interval, 1)
