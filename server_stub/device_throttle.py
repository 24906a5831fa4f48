"""A cap on guessing device tokens: the device API and the My device pages are unauthenticated but for the token in
the URL, so failed lookups are rate-limited per client address, like Fleet's error rate limit on its device
endpoints (successful requests cost nothing: an agent's tray polling its own token is never slowed).

Each client address has a bucket of ``burst`` failures that refills at ``per_hour`` an hour; an empty bucket
answers 429 with ``Retry-After`` before the token is even looked up. Pure apart from the injected clock; the table is
bounded (the least recently seen addresses are forgotten first).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

DEFAULT_BURST = 100
DEFAULT_PER_HOUR = 720.0
MAX_CLIENTS = 10_000


@dataclass
class _Bucket:
    tokens: float
    at: float


class DeviceGuessLimiter:
    def __init__(
        self,
        *,
        burst: int = DEFAULT_BURST,
        per_hour: float = DEFAULT_PER_HOUR,
        clock: Callable[[], float] = time.monotonic,
        max_clients: int = MAX_CLIENTS,
    ) -> None:
        self._burst = float(burst)
        self._rate = per_hour / 3600.0
        self._clock = clock
        self._max = max_clients
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def _bucket(self, client: str) -> _Bucket:
        now = self._clock()
        bucket = self._buckets.get(client)
        if bucket is None:
            bucket = _Bucket(self._burst, now)
            self._buckets[client] = bucket
            while len(self._buckets) > self._max:
                self._buckets.popitem(last=False)
        else:
            bucket.tokens = min(self._burst, bucket.tokens + max(0.0, now - bucket.at) * self._rate)
            bucket.at = now
            self._buckets.move_to_end(client)
        return bucket

    def retry_after(self, client: str) -> float | None:
        """Seconds until ``client`` may fail again, or None when it may try now."""
        bucket = self._bucket(client)
        if bucket.tokens >= 1.0:
            return None
        return (1.0 - bucket.tokens) / self._rate if self._rate > 0 else 3600.0

    def failed(self, client: str) -> None:
        bucket = self._bucket(client)
        bucket.tokens = max(0.0, bucket.tokens - 1.0)
