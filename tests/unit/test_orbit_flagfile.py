"""osquery's flagfile: value formatting, Fleet's parse rules, and the receiver that rewrites it only on change."""

from __future__ import annotations

import logging
import stat
from pathlib import Path

import pytest

from osquery_bin_manager.flagfile import (
    FlagfileReceiver,
    FlagValueError,
    flags_from_config,
    format_value,
    parse_flagfile,
    read_flagfile,
    render_flagfile,
)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (True, "true"),
        (False, "false"),
        (0, "0"),
        (60, "60"),
        (-3, "-3"),
        (2.0, "2"),
        (1.5, "1.5"),
        (0.25, "0.25"),
        ("filesystem", "filesystem"),
        ("", ""),
        ("with spaces and = sign", "with spaces and = sign"),
    ],
)
def test_values_are_formatted_as_fleet_does(value: object, text: str) -> None:
    assert format_value(value) == text


@pytest.mark.parametrize("value", [{"a": 1}, [1, 2], ("x",)])
def test_nested_values_are_refused(value: object) -> None:
    with pytest.raises(FlagValueError, match="nested"):
        format_value(value)


def test_flags_from_config_adds_dashes_and_checks_names() -> None:
    assert flags_from_config({"verbose": True, "--logger_plugin": "tls", "-x": 1}) == {
        "--verbose": "true",
        "--logger_plugin": "tls",
        "--x": "1",
    }
    for bad in ("", "--", "has space", "a=b", "tab\tname"):
        with pytest.raises(FlagValueError, match="invalid osquery flag name"):
            flags_from_config({bad: "1"})


def test_parse_rules() -> None:
    text = "\n".join(
        [
            "# a comment",
            "",
            "   --verbose   ",
            "--logger_plugin=tls",
            "  # indented comment",
            "--tls_server_certs=/a=b",  # two '=': ignored, as Fleet's parser does
            "--empty=",
            "--host_identifier=uuid",
        ]
    )
    assert parse_flagfile(text) == {
        "--verbose": "",
        "--logger_plugin": "tls",
        "--empty": "",
        "--host_identifier": "uuid",
    }
    assert parse_flagfile("") == {}


def test_render_is_sorted_and_parses_back() -> None:
    flags = {"--b": "2", "--a": "1", "--bare": ""}
    text = render_flagfile(flags)
    assert text == "--a=1\n--b=2\n--bare\n"
    assert parse_flagfile(text) == flags


class Restarts:
    def __init__(self) -> None:
        self.reasons: list[str] = []

    def __call__(self, reason: str) -> None:
        self.reasons.append(reason)


@pytest.fixture
def restarts() -> Restarts:
    return Restarts()


@pytest.fixture
def receiver(tmp_path: Path, restarts: Restarts) -> FlagfileReceiver:
    return FlagfileReceiver(tmp_path / "osquery.flags", restarts)


@pytest.mark.parametrize("flags", [None, {}])
def test_no_flags_from_the_server_leave_everything_alone(
    receiver: FlagfileReceiver, restarts: Restarts, flags: dict[str, object] | None
) -> None:
    assert receiver.apply(flags) is False
    assert not receiver.path.exists()
    receiver.path.write_text("--verbose=true\n")
    assert receiver.apply(flags) is False
    assert receiver.path.read_text() == "--verbose=true\n" and restarts.reasons == []


def test_the_first_flags_write_the_file_and_restart_osqueryd_once(
    receiver: FlagfileReceiver, restarts: Restarts
) -> None:
    assert receiver.apply({"verbose": True, "distributed_interval": 10, "logger_plugin": "filesystem"}) is True
    assert receiver.path.read_text() == "--distributed_interval=10\n--logger_plugin=filesystem\n--verbose=true\n"
    assert stat.S_IMODE(receiver.path.stat().st_mode) == 0o600
    assert restarts.reasons == ["osquery flags updated"]
    assert read_flagfile(receiver.path) == {
        "--distributed_interval": "10",
        "--logger_plugin": "filesystem",
        "--verbose": "true",
    }


def test_the_same_flags_in_another_order_with_comments_change_nothing(
    receiver: FlagfileReceiver, restarts: Restarts
) -> None:
    existing = "# written by hand\n--verbose=true\n\n--distributed_interval=10\n"
    receiver.path.write_text(existing)
    assert receiver.apply({"distributed_interval": 10.0, "verbose": True}) is False
    assert receiver.apply({"distributed_interval": 10, "--verbose": "true"}) is False
    assert receiver.path.read_text() == existing and restarts.reasons == []


def test_changed_flags_rewrite_the_file_and_restart(receiver: FlagfileReceiver, restarts: Restarts) -> None:
    receiver.apply({"verbose": True})
    assert receiver.apply({"verbose": False}) is True
    assert receiver.path.read_text() == "--verbose=false\n"
    assert receiver.apply({"verbose": False, "disable_events": True}) is True
    assert receiver.apply({"disable_events": True}) is True  # a removed flag is a change too
    assert receiver.path.read_text() == "--disable_events=true\n"
    assert len(restarts.reasons) == 4
    assert receiver.apply({"disable_events": True}) is False and len(restarts.reasons) == 4


def test_flags_orbit_controls_are_dropped(
    receiver: FlagfileReceiver, restarts: Restarts, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="osquery_bin_manager.flagfile"):
        receiver.apply(
            {
                "host_identifier": "instance",
                "--host-identifier": "hostname",
                "database_path": "/tmp/db",
                "extensions_autoload": "/tmp/evil.load",
                "verbose": True,
            }
        )
    assert receiver.path.read_text() == "--verbose=true\n"
    assert len([r for r in caplog.records if "event=flag_ignored" in r.getMessage()]) == 4


@pytest.mark.parametrize(
    "bad",
    [
        {"logger_path": "/var/log\n--extensions_autoload=/tmp/evil.load"},
        {"logger_path": "a\rb"},
        {"pack": {"nested": 1}},
        {"bad name": "1"},
    ],
)
def test_refused_flags_keep_the_old_file(
    receiver: FlagfileReceiver, restarts: Restarts, bad: dict[str, object]
) -> None:
    receiver.apply({"verbose": True})
    before = receiver.path.read_bytes()
    assert receiver.apply({"verbose": False, **bad}) is False
    assert receiver.path.read_bytes() == before and restarts.reasons == ["osquery flags updated"]
    assert receiver.last_error
    assert receiver.apply({"verbose": False}) is True and receiver.last_error is None


def test_a_huge_flagfile_is_read_only_up_to_the_limit(receiver: FlagfileReceiver) -> None:
    receiver.path.write_bytes(b"--a=1\n" + b"#" * (2 * 1024 * 1024) + b"\n--b=2\n")
    assert read_flagfile(receiver.path) == {"--a": "1"}
    assert read_flagfile(receiver.path.with_name("absent")) is None
