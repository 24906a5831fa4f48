"""The connection and HTTP-layer limits of fleet-stub (ADR 0014): values, defaults, and the connection cap.

Every limit is enforced before any authentication or body parsing, by ``connection_guard`` (connections, TLS,
time) and ``limited_http`` (request line and headers). The defaults suit thousands of agents that send small
headers in one write and reuse keep-alive connections (docs/architecture.md, "Connection limits"):

* request line and each header line ≤ 8 KiB, all headers ≤ 64 KiB, ≤ 100 header fields (414 / 431);
* headers complete within 10 s of the request's start — for a new connection, of its TLS handshake (408);
* the body complete within 60 s of the headers (408);
* the TLS handshake within 10 s (closed);
* an idle keep-alive connection closed after 75 s;
* at most ``max_connections`` open connections, never more than the open-files limit leaves room for.

Pure: no sockets, no clocks (docs/design.md §3).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

KIB = 1024

# Descriptors kept free beside connections: the listening socket, stdio, SQLite (database, WAL, shared memory),
# the log file, and per-request files (an appended log batch, a carve block, a TUF file being sent).
RESERVED_DESCRIPTORS = 64
RESERVED_FRACTION = 16  # plus 1/16 of the limit, for files open during requests


class SettingsValueError(ValueError):
    pass


class WhenFull(enum.Enum):
    """What a new connection does to the others once ``max_connections`` are open (ADR 0014 measured both)."""

    SHED_IDLE = "shed-idle"  # close the connection idle longest (unproven before proven); refuse only if none is idle
    REFUSE_NEW = "refuse-new"  # close the new connection


@dataclass(frozen=True)
class ConnectionLimits:
    max_header_line: int = 8 * KIB
    max_header_bytes: int = 64 * KIB
    max_headers: int = 100
    header_timeout: float = 10.0
    body_timeout: float = 60.0
    tls_handshake_timeout: float = 10.0
    idle_timeout: float = 75.0
    max_connections: int | None = None  # None: as many as the open-files limit leaves room for
    when_full: WhenFull = WhenFull.SHED_IDLE

    def describe(self) -> str:
        """One log line's worth of key=value pairs."""
        return (
            f"max_header_line={self.max_header_line} max_header_bytes={self.max_header_bytes} "
            f"max_headers={self.max_headers} header_timeout={self.header_timeout:g} "
            f"body_timeout={self.body_timeout:g} tls_handshake_timeout={self.tls_handshake_timeout:g} "
            f"idle_timeout={self.idle_timeout:g} when_full={self.when_full.value}"
        )


def descriptor_budget(open_files: int | None) -> int | None:
    """How many connections the open-files limit has room for (None: no such limit)."""
    if open_files is None:
        return None
    return max(1, open_files - RESERVED_DESCRIPTORS - open_files // RESERVED_FRACTION)


def connection_cap(limits: ConnectionLimits, open_files: int | None) -> int | None:
    """The cap in force: the configured maximum, but never past what the open-files limit leaves room for.

    The open-files limit must never be what decides who gets in: once descriptors run out, accept() fails and the
    kernel's queue decides, blind to who is who. Below the cap, the guard decides (``WhenFull``).
    """
    budget = descriptor_budget(open_files)
    if limits.max_connections is None:
        return budget
    if budget is None:
        return limits.max_connections
    return min(limits.max_connections, budget)


# --- from FLEET_STUB_* variables and flags ------------------------------------------------------------------------

ENV_NAMES: dict[str, str] = {
    "max_header_line": "FLEET_STUB_MAX_HEADER_LINE",
    "max_header_bytes": "FLEET_STUB_MAX_HEADER_BYTES",
    "max_headers": "FLEET_STUB_MAX_HEADERS",
    "header_timeout": "FLEET_STUB_HEADER_TIMEOUT",
    "body_timeout": "FLEET_STUB_BODY_TIMEOUT",
    "tls_handshake_timeout": "FLEET_STUB_TLS_HANDSHAKE_TIMEOUT",
    "idle_timeout": "FLEET_STUB_IDLE_TIMEOUT",
    "max_connections": "FLEET_STUB_MAX_CONNECTIONS",
    "when_full": "FLEET_STUB_WHEN_FULL",
}


def _positive_int(text: str, name: str) -> int:
    try:
        value = int(text.strip().replace("_", ""))
    except ValueError:
        raise SettingsValueError(f"{name} must be a whole number, not {text!r}") from None
    if value <= 0:
        raise SettingsValueError(f"{name} must be positive")
    return value


def _positive_seconds(text: str, name: str) -> float:
    try:
        value = float(text.strip())
    except ValueError:
        raise SettingsValueError(f"{name} must be a number of seconds, not {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise SettingsValueError(f"{name} must be a positive number of seconds")
    return value


def limits_from(env: Mapping[str, str], *, max_connections: str | None = None) -> ConnectionLimits:
    """``FLEET_STUB_*`` variables (and the ``--max-connections`` flag, which wins) over the defaults."""

    def given(field: str) -> str | None:
        value = env.get(ENV_NAMES[field], "")
        return value if value.strip() else None

    defaults = ConnectionLimits()
    sizes: dict[str, int] = {}
    for field in ("max_header_line", "max_header_bytes", "max_headers"):
        text = given(field)
        sizes[field] = _positive_int(text, ENV_NAMES[field]) if text else getattr(defaults, field)
    times: dict[str, float] = {}
    for field in ("header_timeout", "body_timeout", "tls_handshake_timeout", "idle_timeout"):
        text = given(field)
        times[field] = _positive_seconds(text, ENV_NAMES[field]) if text else getattr(defaults, field)
    if sizes["max_header_line"] > sizes["max_header_bytes"]:
        raise SettingsValueError(
            f"{ENV_NAMES['max_header_line']} ({sizes['max_header_line']}) must not exceed "
            f"{ENV_NAMES['max_header_bytes']} ({sizes['max_header_bytes']})"
        )
    cap_text = max_connections if max_connections not in (None, "") else given("max_connections")
    cap: int | None = None
    if cap_text is not None and cap_text.strip().lower() != "auto":
        cap = _positive_int(cap_text, "--max-connections" if max_connections else ENV_NAMES["max_connections"])
    policy_text = (given("when_full") or WhenFull.SHED_IDLE.value).strip().lower()
    try:
        policy = WhenFull(policy_text)
    except ValueError:
        choices = ", ".join(p.value for p in WhenFull)
        raise SettingsValueError(f"{ENV_NAMES['when_full']} must be one of {choices}, not {policy_text!r}") from None
    return ConnectionLimits(
        max_header_line=sizes["max_header_line"],
        max_header_bytes=sizes["max_header_bytes"],
        max_headers=sizes["max_headers"],
        header_timeout=times["header_timeout"],
        body_timeout=times["body_timeout"],
        tls_handshake_timeout=times["tls_handshake_timeout"],
        idle_timeout=times["idle_timeout"],
        max_connections=cap,
        when_full=policy,
    )
