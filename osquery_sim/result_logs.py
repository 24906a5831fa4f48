"""Result and status log lines in osquery's formats, and differential results (pure).

Event format (osquery's default ``--logger_event_type``): one line per added/removed row with ``columns`` and
``action``. Snapshot queries log one line with the whole ``snapshot`` and ``action: "snapshot"``. A differential
query's first run logs every row as added with ``counter`` 0; later runs log only the difference and count up.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

Row = dict[str, str]


def calendar_time(epoch_seconds: float) -> str:
    """osquery's ``calendarTime``: ``Fri Nov 27 01:02:03 2026 UTC`` (day of month space-padded)."""
    return time.strftime("%a %b %e %H:%M:%S %Y UTC", time.gmtime(epoch_seconds))


def _key(row: Mapping[str, str]) -> str:
    return json.dumps(row, sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True)
class Diff:
    added: list[Row]
    removed: list[Row]

    @property
    def empty(self) -> bool:
        return not self.added and not self.removed


def diff_rows(previous: Sequence[Row] | None, current: Sequence[Row]) -> Diff:
    """Rows added and removed since ``previous`` (multiset semantics; None = first run, everything added)."""
    if previous is None:
        return Diff(list(current), [])
    before = Counter(_key(r) for r in previous)
    after = Counter(_key(r) for r in current)
    added_keys = after - before
    removed_keys = before - after
    added: list[Row] = []
    for row in current:
        key = _key(row)
        if added_keys[key] > 0:
            added.append(dict(row))
            added_keys[key] -= 1
    removed: list[Row] = []
    for row in previous:
        key = _key(row)
        if removed_keys[key] > 0:
            removed.append(dict(row))
            removed_keys[key] -= 1
    return Diff(added, removed)


@dataclass(frozen=True)
class LogContext:
    host_identifier: str
    decorations: Mapping[str, str]
    epoch: int = 0
    numerics: bool = False
    decorations_top_level: bool = False


def _header(name: str, context: LogContext, now: float, counter: int) -> dict[str, object]:
    line: dict[str, object] = {
        "name": name,
        "hostIdentifier": context.host_identifier,
        "calendarTime": calendar_time(now),
        "unixTime": int(now),
        "epoch": context.epoch,
        "counter": counter,
        "numerics": context.numerics,
    }
    if context.decorations_top_level:
        line.update(context.decorations)
    else:
        line["decorations"] = dict(context.decorations)
    return line


def differential_lines(
    name: str, diff: Diff, context: LogContext, now: float, counter: int, *, log_removed: bool = True
) -> list[dict[str, object]]:
    lines = []
    for action, rows in (("removed", diff.removed if log_removed else []), ("added", diff.added)):
        for row in rows:
            line = _header(name, context, now, counter)
            line["columns"] = dict(row)
            line["action"] = action
            lines.append(line)
    return lines


def snapshot_line(name: str, rows: Sequence[Row], context: LogContext, now: float, counter: int) -> dict[str, object]:
    line = _header(name, context, now, counter)
    line["snapshot"] = [dict(r) for r in rows]
    line["action"] = "snapshot"
    return line


SEVERITY = {"INFO": 0, "WARNING": 1, "ERROR": 2, "FATAL": 3}


def status_line(
    message: str,
    context: LogContext,
    now: float,
    *,
    severity: str = "INFO",
    filename: str = "osqueryd_sim.py",
    line: int = 0,
    version: str,
) -> dict[str, object]:
    entry: dict[str, object] = {
        "hostIdentifier": context.host_identifier,
        "calendarTime": calendar_time(now),
        "unixTime": int(now),
        "severity": SEVERITY.get(severity, 0),
        "filename": filename,
        "line": line,
        "message": message,
        "version": version,
    }
    if context.decorations_top_level:
        entry.update(context.decorations)
    else:
        entry["decorations"] = dict(context.decorations)
    return entry
