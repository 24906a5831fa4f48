"""Go duration strings (``15m``, ``1h30m``, ``90s``, ``500ms``) as orbit's flags and variables take them (pure)."""

from __future__ import annotations

import re

_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")


class DurationError(ValueError):
    pass


def parse_duration(text: str) -> float:
    """Seconds in a Go duration; a bare ``0`` is allowed, other bare numbers are not (as in Go)."""
    value = text.strip()
    if value in ("0", "+0", "-0"):
        return 0.0
    sign = -1.0 if value.startswith("-") else 1.0
    value = value.lstrip("+-")
    position, total = 0, 0.0
    while position < len(value):
        match = _PART.match(value, position)
        if match is None:
            raise DurationError(f"invalid duration {text!r} (expected e.g. 15m, 1h30m, 90s)")
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        position = match.end()
    if position == 0:
        raise DurationError(f"invalid duration {text!r} (expected e.g. 15m, 1h30m, 90s)")
    return sign * total
