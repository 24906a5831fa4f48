"""server-overrides.json: Fleet's file format, damaged files, channel precedence and the change test."""

from __future__ import annotations

import json
import logging
import stat
from pathlib import Path

import pytest

from orbit.fleet.client import UpdateChannels
from orbit.fleet.server_overrides import (
    Channels,
    ServerOverrides,
    channels_differ,
    effective_channels,
    load_overrides,
    pinned,
    save_overrides,
)

FULL = ServerOverrides(
    orbit_channel="edge",
    osqueryd_channel="5.12.0",
    desktop_channel="beta",
    fallback_osqueryd_path="/opt/orbit/bin/osqueryd/linux/stable/osqueryd",
    fallback_desktop_path="/opt/orbit/bin/desktop/linux/stable/fleet-desktop/fleet-desktop",
)


def test_round_trip_with_fleets_key_names(tmp_path: Path) -> None:
    path = tmp_path / "server-overrides.json"
    save_overrides(path, FULL)
    assert json.loads(path.read_text()) == {
        "orbit-channel": "edge",
        "osqueryd-channel": "5.12.0",
        "desktop-channel": "beta",
        "fallback-osqueryd-path": FULL.fallback_osqueryd_path,
        "fallback-desktop-path": FULL.fallback_desktop_path,
    }
    assert "\n  " in path.read_text()  # pretty, as Fleet writes it
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_overrides(path) == FULL


def test_a_file_written_by_fleet_is_read(tmp_path: Path) -> None:
    path = tmp_path / "server-overrides.json"
    path.write_text('{"orbit-channel":"edge","osqueryd-channel":"","desktop-channel":"","unknown":1}')
    assert load_overrides(path) == ServerOverrides(orbit_channel="edge")


@pytest.mark.parametrize(
    "content",
    [b"", b"{not json", b"[]", b'"edge"', b"\xff\xfe\x00", b"null"],
)
def test_a_damaged_file_means_defaults(tmp_path: Path, content: bytes, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "server-overrides.json"
    path.write_bytes(content)
    with caplog.at_level(logging.ERROR, logger="orbit.fleet.server_overrides"):
        assert load_overrides(path) == ServerOverrides()
    assert any("event=server_overrides_unreadable" in record.getMessage() for record in caplog.records)


def test_an_absent_file_means_defaults_silently(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="orbit.fleet.server_overrides"):
        assert load_overrides(tmp_path / "missing.json") == ServerOverrides()
    assert caplog.records == []


def test_bad_values_inside_a_valid_file_are_dropped(tmp_path: Path) -> None:
    path = tmp_path / "server-overrides.json"
    path.write_text(
        json.dumps(
            {
                "orbit-channel": "../../etc",
                "osqueryd-channel": 5,
                "desktop-channel": "..",
                "fallback-osqueryd-path": ["x"],
                "fallback-desktop-path": "/ok/path",
            }
        )
    )
    assert load_overrides(path) == ServerOverrides(fallback_desktop_path="/ok/path")


def test_non_empty_overrides_beat_the_command_line() -> None:
    cli = Channels("stable", "stable", "stable")
    assert effective_channels(cli, ServerOverrides()) == cli
    assert effective_channels(cli, ServerOverrides(osqueryd_channel="edge")) == Channels("stable", "edge", "stable")
    assert effective_channels(Channels("a", "b", "c"), FULL) == Channels("edge", "5.12.0", "beta")


@pytest.mark.parametrize(
    ("current", "remote", "desktop_enabled", "differ"),
    [
        (Channels("stable", "stable", "stable"), UpdateChannels("stable", "stable", "stable"), True, False),
        (Channels("", "", ""), UpdateChannels("stable", "stable", "stable"), True, False),  # empty == stable
        (Channels("stable", "stable", "stable"), UpdateChannels("", "", ""), True, False),
        (Channels("stable", "stable", "stable"), UpdateChannels("edge", "stable", "stable"), False, True),
        (Channels("stable", "stable", "stable"), UpdateChannels("stable", "edge", "stable"), False, True),
        (Channels("stable", "stable", "stable"), UpdateChannels("stable", "stable", "edge"), False, False),
        (Channels("stable", "stable", "stable"), UpdateChannels("stable", "stable", "edge"), True, True),
        (Channels("stable", "stable", ""), UpdateChannels("stable", "stable", "edge"), True, True),
    ],
)
def test_channels_differ(current: Channels, remote: UpdateChannels, desktop_enabled: bool, differ: bool) -> None:
    assert channels_differ(current, remote, desktop_enabled=desktop_enabled) is differ


def test_pinning_records_the_remote_channels_and_the_working_paths(tmp_path: Path) -> None:
    result = pinned(ServerOverrides(), UpdateChannels("edge", "stable", "beta"), "/bin/osqueryd", "/bin/desktop")
    assert result == ServerOverrides("edge", "stable", "beta", "/bin/osqueryd", "/bin/desktop")
    path = tmp_path / "server-overrides.json"
    save_overrides(path, result)
    assert effective_channels(Channels("stable", "stable", "stable"), load_overrides(path)) == Channels(
        "edge", "stable", "beta"
    )
