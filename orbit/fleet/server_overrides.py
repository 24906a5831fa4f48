"""``server-overrides.json``: update channels pinned by the server, with fallback executables
(docs/reference/orbit-behaviour.md §3.5, §1.3).

The file holds ``orbit-channel``, ``osqueryd-channel``, ``desktop-channel``, ``fallback-osqueryd-path`` and
``fallback-desktop-path`` (pretty JSON, 0600). Non-empty channels in it beat the command line and environment. A
damaged file is reported and ignored (the CLI channels apply) rather than stopping the agent.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path

from orbit.fleet.client import UpdateChannels
from safe_fs.atomic_write import SECRET_MODE, write_atomic

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServerOverrides:
    orbit_channel: str = ""
    osqueryd_channel: str = ""
    desktop_channel: str = ""
    fallback_osqueryd_path: str = ""
    fallback_desktop_path: str = ""

    def to_json(self) -> str:
        return (
            json.dumps(
                {
                    "orbit-channel": self.orbit_channel,
                    "osqueryd-channel": self.osqueryd_channel,
                    "desktop-channel": self.desktop_channel,
                    "fallback-osqueryd-path": self.fallback_osqueryd_path,
                    "fallback-desktop-path": self.fallback_desktop_path,
                },
                indent=2,
            )
            + "\n"
        )


def _valid_channel(value: object) -> str:
    if not isinstance(value, str) or "/" in value or value in (".", ".."):
        return ""
    return value


def load_overrides(path: Path) -> ServerOverrides:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return ServerOverrides()
    except (OSError, ValueError) as exc:
        log.error("event=server_overrides_unreadable path=%s error=%s", path, exc)
        return ServerOverrides()
    if not isinstance(data, dict):
        log.error("event=server_overrides_unreadable path=%s error=%r", path, "not a JSON object")
        return ServerOverrides()

    def text(key: str) -> str:
        value = data.get(key, "")
        return value if isinstance(value, str) else ""

    return ServerOverrides(
        orbit_channel=_valid_channel(data.get("orbit-channel", "")),
        osqueryd_channel=_valid_channel(data.get("osqueryd-channel", "")),
        desktop_channel=_valid_channel(data.get("desktop-channel", "")),
        fallback_osqueryd_path=text("fallback-osqueryd-path"),
        fallback_desktop_path=text("fallback-desktop-path"),
    )


def save_overrides(path: Path, overrides: ServerOverrides) -> None:
    write_atomic(path, overrides.to_json(), SECRET_MODE)


@dataclass(frozen=True)
class Channels:
    orbit: str
    osqueryd: str
    desktop: str


def effective_channels(cli: Channels, overrides: ServerOverrides) -> Channels:
    return Channels(
        overrides.orbit_channel or cli.orbit,
        overrides.osqueryd_channel or cli.osqueryd,
        overrides.desktop_channel or cli.desktop,
    )


def _norm(channel: str) -> str:
    return channel or "stable"


def channels_differ(current: Channels, remote: UpdateChannels, *, desktop_enabled: bool) -> bool:
    if _norm(current.orbit) != _norm(remote.orbit) or _norm(current.osqueryd) != _norm(remote.osqueryd):
        return True
    return desktop_enabled and _norm(current.desktop) != _norm(remote.desktop)


def pinned(
    overrides: ServerOverrides, remote: UpdateChannels, osqueryd_path: str, desktop_path: str
) -> ServerOverrides:
    return replace(
        overrides,
        orbit_channel=remote.orbit,
        osqueryd_channel=remote.osqueryd,
        desktop_channel=remote.desktop,
        fallback_osqueryd_path=osqueryd_path,
        fallback_desktop_path=desktop_path,
    )
