"""osquery's flagfile as Fleet's flag receiver writes it (docs/reference/orbit-behaviour.md §3.3), as pure functions,
plus the
receiver that applies ``command_line_startup_flags`` and restarts only osqueryd.

Values: strings as they are, booleans ``true``/``false``, integral numbers without decimals, other numbers in
default formatting; nested structures are refused. The file is compared as a map (order and comments do not
matter) and rewritten — atomically, 0600 — only when the maps differ. An absent or empty ``command_line_flags``
leaves the local file alone (Fleet's ``{}`` restart loop, fixed in 1.x, must not come back).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path

from safe_fs.atomic_write import SECRET_MODE, write_atomic

log = logging.getLogger(__name__)

MAX_FLAGFILE_BYTES = 1024 * 1024
# orbit must control these (they follow the flagfile on osqueryd's command line anyway); refusing them here keeps
# the file honest about what takes effect
PROTECTED_FLAGS = frozenset({"host_identifier", "host-identifier", "database_path", "extensions_autoload"})


class FlagValueError(ValueError):
    pass


def format_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    raise FlagValueError(f"nested values are not supported in osquery flags: {type(value).__name__}")


def flags_from_config(startup_flags: Mapping[str, object]) -> dict[str, str]:
    """``{"verbose": true}`` → ``{"--verbose": "true"}``; keys may already carry their dashes."""
    flags: dict[str, str] = {}
    for key, value in startup_flags.items():
        name = key.lstrip("-")
        if not name or any(ch.isspace() or ch == "=" for ch in name):
            raise FlagValueError(f"invalid osquery flag name {key!r}")
        text = format_value(value)
        if "\n" in text or "\r" in text:
            raise FlagValueError(f"the value of osquery flag {name!r} spans lines")
        flags[f"--{name}"] = text
    return flags


def parse_flagfile(text: str) -> dict[str, str]:
    """One flag per line, ``--key=value`` or bare ``--key``; blank lines and ``#`` comments skipped."""
    flags: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split("=")
        if len(parts) == 1:
            flags[parts[0]] = ""
        elif len(parts) == 2:
            flags[parts[0]] = parts[1]
        # Fleet's parser ignores lines with more than one '='; so do we (they still reach osqueryd)
    return flags


def render_flagfile(flags: Mapping[str, str]) -> str:
    lines = [f"{key}={value}" if value != "" else key for key, value in sorted(flags.items())]
    return "".join(f"{line}\n" for line in lines)


def read_flagfile(path: Path) -> dict[str, str] | None:
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_FLAGFILE_BYTES + 1)
    except FileNotFoundError:
        return None
    return parse_flagfile(data[:MAX_FLAGFILE_BYTES].decode("utf-8", "replace"))


class FlagfileReceiver:
    """Applies ``command_line_startup_flags``; ``restart_osqueryd(reason)`` is called after a rewrite."""

    def __init__(self, path: Path, restart_osqueryd: Callable[[str], None]) -> None:
        self.path = path
        self._restart = restart_osqueryd
        self.last_error: str | None = None

    def apply(self, startup_flags: Mapping[str, object] | None) -> bool:
        """Returns True when the file was rewritten (and osqueryd restarted)."""
        if not startup_flags:
            return False
        try:
            wanted = flags_from_config(startup_flags)
        except FlagValueError as exc:
            self.last_error = str(exc)
            log.error("event=flags_rejected error=%s", exc)
            return False
        protected = sorted(key for key in wanted if key.lstrip("-") in PROTECTED_FLAGS)
        for key in protected:
            log.warning("event=flag_ignored flag=%s reason=%r", key, "orbit controls it")
            del wanted[key]
        if read_flagfile(self.path) == wanted:
            return False
        write_atomic(self.path, render_flagfile(wanted), SECRET_MODE)
        self.last_error = None
        log.info("event=osquery_flags_updated count=%d path=%s", len(wanted), self.path)
        self._restart("osquery flags updated")
        return True
