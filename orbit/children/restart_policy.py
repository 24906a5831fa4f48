"""When to restart a supervised child (pure): exponential backoff with jitter, a reset after a stable run, and a
crash-loop breaker.

- The first restart after a crash comes within 1 s; each further consecutive crash doubles the delay, up to 5 min.
- A child that ran at least ``stable_after`` seconds before exiting resets the count: its next restart is fast again.
- ``breaker_threshold`` consecutive short-lived runs open the crash-loop breaker: restarts continue at the cap and
  the state is reported (logs, ``orbit doctor``) until a run is stable again.
- Intentional restarts (new flags, a new binary) are not failures and start at once.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from enum import Enum


class BreakerState(Enum):
    CLOSED = "closed"
    OPEN = "open"


@dataclass(frozen=True)
class RestartPolicy:
    first_delay: float = 0.5
    max_delay: float = 300.0
    jitter: float = 0.2  # ± fraction of the delay
    stable_after: float = 60.0
    breaker_threshold: int = 5


@dataclass
class RestartTracker:
    policy: RestartPolicy = field(default_factory=RestartPolicy)
    consecutive_failures: int = 0
    total_restarts: int = 0
    breaker: BreakerState = BreakerState.CLOSED
    random_source: random.Random = field(default_factory=random.Random)

    def record_exit(self, ran_for: float, *, intentional: bool = False) -> float:
        """Account for an exit after ``ran_for`` seconds; returns the delay before the next start."""
        self.total_restarts += 1
        if intentional:
            return 0.0
        if ran_for >= self.policy.stable_after:
            self.consecutive_failures = 0
            self.breaker = BreakerState.CLOSED
        self.consecutive_failures += 1
        if self.consecutive_failures >= self.policy.breaker_threshold:
            self.breaker = BreakerState.OPEN
        return self.delay_for(self.consecutive_failures)

    def delay_for(self, failures: int) -> float:
        if failures <= 0:
            return 0.0
        base = min(self.policy.max_delay, self.policy.first_delay * (2 ** (failures - 1)))
        spread = base * self.policy.jitter
        delay = base + self.random_source.uniform(-spread, spread)
        if failures == 1:
            delay = min(delay, 1.0)
        return float(max(0.0, min(delay, self.policy.max_delay)))
