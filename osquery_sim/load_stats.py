"""Counting what load mode did: requests, errors and latency per endpoint, and log-line accounting (pure)."""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field

LATENCY_SAMPLES = "latency_samples"  # the summary key of ``LoadStats.samples`` (``load --latency_samples``)


def percentile(sorted_values: list[float], fraction: float) -> float:
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, max(0, math.ceil(fraction * len(sorted_values)) - 1))
    return sorted_values[index]


@dataclass
class EndpointStats:
    requests: int = 0
    errors: int = 0
    latencies: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, float | int]:
        ordered = sorted(self.latencies)
        return {
            "requests": self.requests,
            "errors": self.errors,
            "p50_ms": round(percentile(ordered, 0.50) * 1000, 2),
            "p95_ms": round(percentile(ordered, 0.95) * 1000, 2),
            "p99_ms": round(percentile(ordered, 0.99) * 1000, 2),
        }


class LoadStats:
    """Totals over the whole run, and per-endpoint figures since the last ``reset_window`` (SIGUSR1 in load mode,
    so a benchmark can leave the enrollment burst out of its percentiles)."""

    MAX_SAMPLES = 200_000

    def __init__(self) -> None:
        self.endpoints: dict[str, EndpointStats] = defaultdict(EndpointStats)
        self.total_requests = 0
        self.total_errors = 0

    def reset_window(self) -> None:
        self.endpoints = defaultdict(EndpointStats)

    def observe(self, endpoint: str, seconds: float, ok: bool) -> None:
        self.total_requests += 1
        if not ok:
            self.total_errors += 1
        stats = self.endpoints[endpoint]
        stats.requests += 1
        if not ok:
            stats.errors += 1
        if len(stats.latencies) < self.MAX_SAMPLES:
            stats.latencies.append(seconds)
        else:  # keep a uniform-ish sample without unbounded memory
            stats.latencies[stats.requests % self.MAX_SAMPLES] = seconds

    def summary(self) -> dict[str, dict[str, float | int]]:
        return {name: stats.summary() for name, stats in sorted(self.endpoints.items())}

    def samples(self) -> dict[str, dict[str, object]]:
        """Per endpoint: requests, errors and every latency kept (seconds, µs resolution), for merging summaries."""
        return {
            name: {
                "requests": stats.requests,
                "errors": stats.errors,
                "latencies": [round(seconds, 6) for seconds in stats.latencies],
            }
            for name, stats in sorted(self.endpoints.items())
        }


@dataclass(frozen=True)
class LineAccounting:
    """Per host: lines produced, acknowledged by the server, still buffered; and what the server says it stored."""

    produced: int
    acknowledged: int
    buffered: int
    server_stored: int | None = None

    @property
    def lost(self) -> int:
        """Produced but neither acknowledged nor still buffered (purged), or acknowledged but not stored."""
        missing_locally = max(0, self.produced - self.acknowledged - self.buffered)
        if self.server_stored is None:
            return missing_locally
        return missing_locally + max(0, self.acknowledged - self.server_stored)

    @property
    def duplicated(self) -> int:
        if self.server_stored is None:
            return 0
        return max(0, self.server_stored - self.acknowledged)
