"""One summary from the summaries of ``load --processes N``'s processes (pure).

Counts add up; durations take the longest; latency percentiles are computed again from every process's samples
(``LoadStats.samples``), never averaged from the processes' percentiles.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from osquery_sim.load_stats import LATENCY_SAMPLES, EndpointStats

LINE_FIELDS = ("produced", "acknowledged", "buffered", "lost", "duplicated")


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _number(value: object) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def _part(summary: Mapping[str, object], name: str) -> Mapping[str, object]:
    value = summary.get(name)
    return value if isinstance(value, dict) else {}


def merge_endpoints(summaries: Sequence[Mapping[str, object]]) -> dict[str, dict[str, float | int]]:
    merged: dict[str, EndpointStats] = {}
    for summary in summaries:
        for name, found in _part(summary, LATENCY_SAMPLES).items():
            if not isinstance(found, dict):
                continue
            stats = merged.setdefault(name, EndpointStats())
            stats.requests += _int(found.get("requests"))
            stats.errors += _int(found.get("errors"))
            latencies = found.get("latencies")
            if isinstance(latencies, list):
                stats.latencies += [float(x) for x in latencies if isinstance(x, int | float)]
    return {name: stats.summary() for name, stats in sorted(merged.items())}


def merge_agent_updates(summaries: Sequence[Mapping[str, object]]) -> dict[str, object]:
    """``agent_updates`` of ``--with-orbit``: per target and version the host counts added, outcome counts added."""
    versions: dict[str, dict[str, dict[str, int]]] = {}
    totals: dict[str, int] = {}
    for summary in summaries:
        part = _part(summary, "agent_updates")
        for target, found in _part(part, "versions").items():
            if not isinstance(found, dict):
                continue
            merged = versions.setdefault(target, {})
            for version, counts in found.items():
                if isinstance(counts, dict):
                    into = merged.setdefault(str(version), {})
                    for name, count in counts.items():
                        into[name] = into.get(name, 0) + _int(count)
        for name, count in part.items():
            if name != "versions":
                totals[name] = totals.get(name, 0) + _int(count)
    return {"versions": versions, **totals}


def merge_summaries(summaries: Sequence[Mapping[str, object]]) -> dict[str, object]:
    seconds = max((_number(s.get("seconds")) for s in summaries), default=0.0)
    requests = sum(_int(s.get("requests")) for s in summaries)
    lines: dict[str, object] = {
        field: sum(_int(_part(s, "log_lines").get(field)) for s in summaries) for field in LINE_FIELDS
    }
    lines["checked_against_server"] = bool(summaries) and all(
        _part(s, "log_lines").get("checked_against_server") is True for s in summaries
    )
    return {
        "hosts": sum(_int(s.get("hosts")) for s in summaries),
        "enrolled": sum(_int(s.get("enrolled")) for s in summaries),
        "seconds": round(seconds, 1),
        "requests": requests,
        "errors": sum(_int(s.get("errors")) for s in summaries),
        "requests_per_second": round(requests / max(seconds, 1e-6), 1),
        "endpoints": merge_endpoints(summaries),
        "endpoints_seconds": round(max((_number(s.get("endpoints_seconds")) for s in summaries), default=0.0), 1),
        "log_lines": lines,
        "distributed": {
            field: sum(_int(_part(s, "distributed").get(field)) for s in summaries)
            for field in ("reads", "writes_acknowledged")
        },
        "processes": len(summaries),
        **({"agent_updates": merge_agent_updates(summaries)} if any("agent_updates" in s for s in summaries) else {}),
    }
