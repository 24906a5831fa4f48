"""Guessing device tokens is rate-limited per client; an agent using its own valid token is never slowed."""

from __future__ import annotations

from server_stub.device_throttle import DeviceGuessLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_of_failures_then_one_every_five_seconds() -> None:
    clock = Clock()
    limiter = DeviceGuessLimiter(burst=100, per_hour=720, clock=clock)
    for _ in range(100):
        assert limiter.retry_after("10.0.0.9") is None
        limiter.failed("10.0.0.9")
    wait = limiter.retry_after("10.0.0.9")
    assert wait is not None and 4.9 <= wait <= 5.1  # 720 an hour = one every 5 s
    assert limiter.retry_after("10.0.0.10") is None  # another client is not affected
    clock.now += 5.0
    assert limiter.retry_after("10.0.0.9") is None
    limiter.failed("10.0.0.9")
    assert limiter.retry_after("10.0.0.9") is not None


def test_the_table_of_clients_is_bounded() -> None:
    limiter = DeviceGuessLimiter(burst=1, per_hour=1, clock=Clock(), max_clients=3)
    for client in ("a", "b", "c", "d"):
        limiter.failed(client)
    assert limiter.retry_after("a") is None  # forgotten: the oldest goes first
    assert limiter.retry_after("d") is not None
