"""Request counters and latency histograms, rendered in the Prometheus text format (``/metrics``).

Endpoints are labelled by route name (never by raw path: device tokens live in paths).
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

BUCKETS: tuple[float, ...] = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)


@dataclass
class _Histogram:
    counts: list[int] = field(default_factory=lambda: [0] * len(BUCKETS))
    total: int = 0
    sum: float = 0.0

    def observe(self, seconds: float) -> None:
        index = bisect.bisect_left(BUCKETS, seconds)
        if index < len(BUCKETS):
            self.counts[index] += 1
        self.total += 1
        self.sum += seconds


@dataclass(frozen=True)
class Gauge:
    name: str
    help: str
    value: float


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Metrics:
    def __init__(self) -> None:
        self._requests: dict[tuple[str, int], int] = defaultdict(int)
        self._latency: dict[str, _Histogram] = defaultdict(_Histogram)
        self._counters: dict[str, int] = defaultdict(int)

    def observe(self, endpoint: str, status: int, seconds: float) -> None:
        self._requests[(endpoint, status)] += 1
        self._latency[endpoint].observe(seconds)

    def count(self, name: str, amount: int = 1) -> None:
        self._counters[name] += amount

    def counter_value(self, name: str) -> int:
        return self._counters.get(name, 0)

    def requests_for(self, endpoint: str) -> int:
        return sum(n for (name, _), n in self._requests.items() if name == endpoint)

    def render(self, gauges: Iterable[Gauge]) -> str:
        lines = [
            "# HELP fleet_stub_http_requests_total HTTP requests served, by endpoint and status.",
            "# TYPE fleet_stub_http_requests_total counter",
        ]
        for (endpoint, status), n in sorted(self._requests.items()):
            lines.append(f'fleet_stub_http_requests_total{{endpoint="{_escape(endpoint)}",status="{status}"}} {n}')
        lines += [
            "# HELP fleet_stub_http_request_duration_seconds Time to answer a request, by endpoint.",
            "# TYPE fleet_stub_http_request_duration_seconds histogram",
        ]
        for endpoint, hist in sorted(self._latency.items()):
            label = _escape(endpoint)
            cumulative = 0
            for bound, n in zip(BUCKETS, hist.counts, strict=True):
                cumulative += n
                lines.append(
                    f'fleet_stub_http_request_duration_seconds_bucket{{endpoint="{label}",le="{bound}"}} {cumulative}'
                )
            lines.append(
                f'fleet_stub_http_request_duration_seconds_bucket{{endpoint="{label}",le="+Inf"}} {hist.total}'
            )
            lines.append(f'fleet_stub_http_request_duration_seconds_sum{{endpoint="{label}"}} {hist.sum:.6f}')
            lines.append(f'fleet_stub_http_request_duration_seconds_count{{endpoint="{label}"}} {hist.total}')
        for name, value in sorted(self._counters.items()):
            lines += [f"# TYPE fleet_stub_{name}_total counter", f"fleet_stub_{name}_total {value}"]
        for gauge in gauges:
            lines += [
                f"# HELP fleet_stub_{gauge.name} {gauge.help}",
                f"# TYPE fleet_stub_{gauge.name} gauge",
                f"fleet_stub_{gauge.name} {gauge.value:g}",
            ]
        return "\n".join(lines) + "\n"
