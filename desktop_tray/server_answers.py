"""What one round of "ask the server for the desktop summary" can end in, as plain values.

The device client produces them; the menu state machine consumes them. Reasons are for logs and never contain the
device token.
"""

from __future__ import annotations

from dataclasses import dataclass

from desktop_tray.desktop_summary import DesktopSummary


@dataclass(frozen=True)
class SummaryReceived:
    """200: the token is valid; the summary (possibly from the ``/policies`` fallback) is current."""

    summary: DesktopSummary


@dataclass(frozen=True)
class FleetFree:
    """402: the server runs Fleet Free — the token is valid, there is no self-service and no policy count."""


@dataclass(frozen=True)
class Unauthorized:
    """401 after every retry: the token is unknown or expired (orbit has not registered the new one yet)."""


@dataclass(frozen=True)
class Unreachable:
    """No HTTP answer at all: DNS, refused connection, TLS failure, timeout, proxy error."""

    reason: str


@dataclass(frozen=True)
class ServerFailure:
    """An HTTP answer that is none of the above: 5xx, an unexpected status, malformed JSON."""

    reason: str
    status: int | None = None


@dataclass(frozen=True)
class TokenUnavailable:
    """The token file could not be read, so nothing was asked."""

    reason: str


ServerAnswer = SummaryReceived | FleetFree | Unauthorized | Unreachable | ServerFailure | TokenUnavailable


def token_verified(answer: ServerAnswer) -> bool:
    return isinstance(answer, SummaryReceived | FleetFree)
