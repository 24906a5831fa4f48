"""Request counters and latency histograms, rendered in the Prometheus text format (``/metrics``).

Endpoints are labelled by route name (never by raw path: device tokens live in paths). With several worker processes
(ADR 0019) each keeps its own ``Metrics``; ``snapshot`` turns them into plain JSON for the control channel and
``absorb`` adds one into another, so the worker answering ``/metrics`` renders the sum of all of them.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TypeGuard

Snapshot = dict[str, object]  # JSON-able: what ``Metrics.snapshot`` gives and ``Metrics.absorb`` takes

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


@dataclass(frozen=True)
class Series:
    """A metric family with one sample per label value (e.g. per worker): ``fleet_stub_<name>{<label>="…"}``."""

    name: str
    help: str
    kind: str  # "counter" | "gauge"
    label: str
    samples: tuple[tuple[str, float], ...]


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

    def set_counter(self, name: str, value: int) -> None:
        """A counter kept elsewhere in this process (e.g. ``transactions.WRITE_LOCK_WAITS``), copied in."""
        self._counters[name] = value

    def counter_value(self, name: str) -> int:
        return self._counters.get(name, 0)

    def requests_for(self, endpoint: str) -> int:
        return sum(n for (name, _), n in self._requests.items() if name == endpoint)

    @property
    def total_requests(self) -> int:
        return sum(self._requests.values())

    def snapshot(self) -> Snapshot:
        """Everything counted so far, as plain JSON values."""
        return {
            "requests": [[endpoint, status, n] for (endpoint, status), n in self._requests.items()],
            "latency": {
                endpoint: {"counts": list(hist.counts), "total": hist.total, "sum": hist.sum}
                for endpoint, hist in self._latency.items()
            },
            "counters": dict(self._counters),
        }

    def absorb(self, snapshot: Mapping[str, object]) -> None:
        """Add another process's ``snapshot`` into these figures; parts that are not in its shape are skipped."""
        requests = snapshot.get("requests")
        for item in requests if isinstance(requests, list) else ():
            if isinstance(item, list) and len(item) == 3:
                endpoint, status, n = item
                if isinstance(endpoint, str) and _is_int(status) and _is_int(n):
                    self._requests[(endpoint, status)] += n
        latency = snapshot.get("latency")
        for endpoint, found in latency.items() if isinstance(latency, dict) else ():
            if not isinstance(endpoint, str) or not isinstance(found, dict):
                continue
            counts, total, seconds = _bucket_counts(found.get("counts")), found.get("total"), found.get("sum")
            if counts is not None and _is_int(total) and isinstance(seconds, int | float):
                hist = self._latency[endpoint]
                hist.counts = [mine + theirs for mine, theirs in zip(hist.counts, counts, strict=True)]
                hist.total += total
                hist.sum += float(seconds)
        counters = snapshot.get("counters")
        for name, n in counters.items() if isinstance(counters, dict) else ():
            if isinstance(name, str) and _is_int(n):
                self._counters[name] += n

    def render(self, gauges: Iterable[Gauge], series: Iterable[Series] = ()) -> str:
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
        for family in series:
            lines += [
                f"# HELP fleet_stub_{family.name} {family.help}",
                f"# TYPE fleet_stub_{family.name} {family.kind}",
            ]
            lines += [
                f'fleet_stub_{family.name}{{{family.label}="{_escape(value)}"}} {n:g}' for value, n in family.samples
            ]
        return "\n".join(lines) + "\n"


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _bucket_counts(value: object) -> list[int] | None:
    if not isinstance(value, list) or len(value) != len(BUCKETS):
        return None
    counts = [n for n in value if _is_int(n)]
    return counts if len(counts) == len(BUCKETS) else None
