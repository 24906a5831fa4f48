"""Times as people read them on a console page: "4 min ago", with the exact UTC time in a tooltip."""

from __future__ import annotations

from datetime import UTC, datetime

from server_stub.console.markup import Markup, html
from server_stub.rfc3339 import parse_rfc3339


def utc_text(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def relative(epoch: float, now: float) -> str:
    seconds = now - epoch
    future = seconds < 0
    seconds = abs(seconds)
    if seconds < 60:
        text = f"{seconds:.0f} s"
    elif seconds < 3600:
        text = f"{seconds / 60:.0f} min"
    elif seconds < 86400 * 2:
        text = f"{seconds / 3600:.0f} h"
    else:
        text = f"{seconds / 86400:.0f} days"
    return f"in {text}" if future else f"{text} ago"


def ago(epoch: float | None, now: float, *, never: str = "never") -> Markup:
    if epoch is None:
        return html('<span class="muted">{never}</span>', never=never)
    return html(
        '<time datetime="{iso}" title="{utc}">{text}</time>',
        iso=_iso(epoch),
        utc=utc_text(epoch),
        text=relative(epoch, now),
    )


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def reported(text: str, now: float) -> Markup:
    """A time a host reported in RFC 3339 (its own clock): relative when it parses, else the text as sent."""
    parsed = parse_rfc3339(text)
    if parsed is None:
        return html("<span>{text}</span>", text=text)
    return ago(parsed.timestamp(), now)
