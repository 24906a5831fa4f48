"""Pure decisions of the worker model (ADR 0019): what each worker gets of a limit, when a worker is restarted.

A limit given for the whole server is split evenly: the kernel spreads connections evenly over the workers
(``SO_REUSEPORT`` hashes addresses), so each worker enforcing its share enforces the whole. Limits that exist per
process anyway (the open-files limit, hence the descriptor budget) are not split: each worker has its own.
"""

from __future__ import annotations

import math

STABLE_AFTER = 30.0  # a worker that ran this long before it exited is restarted at once, its backoff forgotten
FIRST_RESTART_DELAY = 0.1
MAX_RESTART_DELAY = 10.0


def share_of(total: int, workers: int) -> int:
    """One worker's share of a count given for the whole server (at least 1)."""
    return max(1, math.ceil(total / max(1, workers)))


def share_of_rate(total: float, workers: int) -> float:
    return total / max(1, workers)


def restart_delay(quick_exits: int) -> float:
    """Seconds before a worker that exited is started again, after ``quick_exits`` exits in a row that each came
    less than ``STABLE_AFTER`` after its start: 0.1 s, doubling to 10 s for a worker that keeps failing."""
    if quick_exits <= 0:
        return FIRST_RESTART_DELAY
    return min(MAX_RESTART_DELAY, FIRST_RESTART_DELAY * 2.0**quick_exits)
