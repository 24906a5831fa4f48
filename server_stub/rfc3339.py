"""Times on the wire: RFC 3339 UTC text (``2026-12-05T10:00:00Z``) to and from epoch seconds."""

from __future__ import annotations

from datetime import UTC, datetime

MAX_TIME_TEXT = 64


def iso_time(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def parse_rfc3339(text: str) -> datetime | None:
    """An RFC 3339 date-time with an offset (``Z`` or ``±hh:mm``) as an aware datetime; None when it is not one."""
    if len(text) > MAX_TIME_TEXT or "T" not in text.upper():
        return None
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return None
    return parsed.astimezone(UTC)
