"""orbit's options: CLI over ORBIT_* over defaults, and conflicting or bad values rejected clearly."""

from __future__ import annotations

from pathlib import PurePosixPath, PureWindowsPath

import pytest

from orbit.options import OptionsError, parse_options
from tuf_updates.durations import DurationError, parse_duration


def test_defaults() -> None:
    options = parse_options([], {})
    assert options.command == "run"
    assert options.root_dir == PurePosixPath("/opt/orbit")
    assert options.osquery_db == PurePosixPath("/opt/orbit/osquery.db")
    assert options.update_url == "https://updates.fleetdm.com"
    assert (options.orbit_channel, options.osqueryd_channel, options.desktop_channel) == ("stable",) * 3
    assert options.update_interval == 900.0 and options.host_identifier == "uuid"
    assert not options.insecure and not options.fleet_desktop and options.fleet_url is None


def test_cli_wins_over_environment_which_wins_over_defaults() -> None:
    env = {
        "ORBIT_FLEET_URL": "fleet.env:8080",
        "ORBIT_OSQUERYD_CHANNEL": "edge",
        "ORBIT_DEBUG": "1",
        "ORBIT_UPDATE_INTERVAL": "1h30m",
        "ORBIT_FLEET_DESKTOP": "true",
    }
    options = parse_options(["--fleet-url", "https://fleet.cli", "--debug=false"], env)
    assert options.fleet_url == "https://fleet.cli"
    assert options.osqueryd_channel == "edge"
    assert options.debug is False and options.fleet_desktop is True
    assert options.update_interval == 5400.0
    assert parse_options([], env).fleet_url == "https://fleet.env:8080"


def test_subcommands_and_osquery_passthrough() -> None:
    assert parse_options(["version"], {}).command == "version"
    assert parse_options(["--version"], {}).command == "version"
    doctor = parse_options(["doctor", "--json"], {})
    assert doctor.command == "doctor" and doctor.json
    run = parse_options(["--debug", "--", "--verbose", "--logger_min_status=1"], {})
    assert run.osquery_args == ("--verbose", "--logger_min_status=1") and run.debug


def test_windows_root_default() -> None:
    options = parse_options([], {"ProgramFiles": r"D:\Apps"}, platform="windows")
    assert options.root_dir == PureWindowsPath(r"D:\Apps\Orbit")


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (["--enroll-secret", "a", "--enroll-secret-path", "/s"], {}, "mutually exclusive"),
        (["--insecure", "--fleet-certificate", "/ca.pem"], {}, "mutually exclusive"),
        (["--host-identifier", "hostname"], {}, "uuid or instance"),
        (["--update-interval", "15"], {}, "invalid duration"),
        (["--update-interval", "10s"], {}, "at least 60s"),
        ([], {"ORBIT_INSECURE": "maybe"}, "not a boolean"),
        (["--root-dir", "relative/dir"], {}, "absolute"),
        (["--osquery-db", "osquery.db"], {}, "absolute"),
        (["--orbit-channel", "a/b"], {}, "invalid channel"),
        (["--fleet-url", "https://"], {}, "not a URL"),
        (["--fleet-url", "notaurl"], {}, "not a URL"),
        (["--fleet-url", "https://fleet.example.com:99999"], {}, "invalid port"),
        (["--fleet-url", "ftp://fleet.example.com"], {}, "not a URL"),
        (["--fleet-url", "https://fleet .example.com"], {}, "not a URL"),
        (["--fleet-url", "https://admin:pw@fleet.example.com"], {}, "user name or password"),
        (["--no-such-flag"], {}, "invalid command line"),
    ],
)
def test_bad_values(argv: list[str], env: dict[str, str], message: str) -> None:
    with pytest.raises(OptionsError, match=message):
        parse_options(argv, env)


@pytest.mark.parametrize(
    ("given", "used"),
    [
        ("fleet.example.com", "https://fleet.example.com"),
        ("https://fleet/", "https://fleet"),  # a single-label name is fine when the scheme says it is a URL
        ("localhost:8412", "https://localhost:8412"),
        ("10.0.0.5", "https://10.0.0.5"),
        ("https://[::1]:8412/prefix", "https://[::1]:8412/prefix"),
    ],
)
def test_fleet_urls_that_are_accepted(given: str, used: str) -> None:
    assert parse_options(["--fleet-url", given], {}).fleet_url == used


def test_the_secret_never_appears_in_repr() -> None:
    assert "s3cret" not in repr(parse_options(["--enroll-secret", "s3cret"], {}))


def test_go_durations() -> None:
    assert parse_duration("15m") == 900 and parse_duration("1h30m") == 5400 and parse_duration("1.5h") == 5400
    assert parse_duration("500ms") == 0.5 and parse_duration("0") == 0
    for bad in ("", "15", "m", "1x", "h1"):
        with pytest.raises(DurationError):
            parse_duration(bad)
