"""The last N log records in memory, shaped as ``fleetd_logs`` rows (what Fleet's orbit exposes to osquery).

Each record becomes ``time`` (UTC ``YYYY-MM-DD HH:MM:SS.fffffffff``), ``level`` (zerolog's names: debug, info,
warn, error, fatal), ``message``, ``error`` (an ``error=`` extra or the logged exception) and ``payload`` (the
record's other ``extra=`` attributes as a JSON object, ``{}`` when it has none).
"""

from __future__ import annotations

import collections
import json
import logging
import math
import time

FLEETD_LOG_COLUMNS: tuple[str, ...] = ("time", "level", "message", "error", "payload")
DEFAULT_CAPACITY = 10_000

# Every attribute a plain LogRecord has; anything else on a record came from ``extra=``.
_STANDARD_ATTRIBUTES = frozenset(
    {*logging.LogRecord("", logging.INFO, "", 0, "", (), None).__dict__, "message", "asctime", "taskName"}
)
_LEVEL_NAMES = {
    logging.DEBUG: "debug",
    logging.INFO: "info",
    logging.WARNING: "warn",
    logging.ERROR: "error",
    logging.CRITICAL: "fatal",
}


def utc_timestamp(epoch_seconds: float) -> str:
    """``2026-01-02 03:04:05.123456789`` (nanosecond digits, as Go's time formatting prints them)."""
    seconds = math.floor(epoch_seconds)
    fraction = round((epoch_seconds - seconds) * 1_000_000_000)  # the subtraction is exact; only the fraction rounds
    if fraction >= 1_000_000_000:
        seconds, fraction = seconds + 1, fraction - 1_000_000_000
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(seconds)) + f".{fraction:09d}"


def level_name(levelno: int) -> str:
    if levelno in _LEVEL_NAMES:
        return _LEVEL_NAMES[levelno]
    below = [level for level in _LEVEL_NAMES if level <= levelno]
    return _LEVEL_NAMES[max(below)] if below else "debug"


def record_row(record: logging.LogRecord) -> dict[str, str]:
    extras = {key: value for key, value in record.__dict__.items() if key not in _STANDARD_ATTRIBUTES}
    error = extras.pop("error", None)
    if error is None and record.exc_info and record.exc_info[1] is not None:
        error = record.exc_info[1]
    try:
        message = record.getMessage()
    except (TypeError, ValueError):  # a bad %-format must not lose the record
        message = str(record.msg)
    return {
        "time": utc_timestamp(record.created),
        "level": level_name(record.levelno),
        "message": message,
        "error": "" if error is None else str(error),
        "payload": json.dumps(extras, default=str, sort_keys=True) if extras else "{}",
    }


class RingBufferLogHandler(logging.Handler):
    """Keeps the newest ``capacity`` records as ``fleetd_logs`` rows; older ones fall off."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY, level: int = logging.NOTSET) -> None:
        super().__init__(level)
        self._rows: collections.deque[dict[str, str]] = collections.deque(maxlen=capacity)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._rows.append(record_row(record))
        except Exception:
            self.handleError(record)

    def rows(self) -> list[dict[str, str]]:
        self.acquire()
        try:
            return [dict(row) for row in self._rows]
        finally:
            self.release()
