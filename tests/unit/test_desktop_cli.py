"""``fleet-desktop`` command line, single-instance lock and per-user paths (docs/reference/orbit-behaviour.md §10.1)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from desktop_tray.cli import main
from desktop_tray.instance_lock import AlreadyRunningError, InstanceLock
from desktop_tray.user_paths import desktop_dir
from desktop_tray.version import desktop_version


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"], {}) == 0
    out = capsys.readouterr().out
    assert out == f"fleet-desktop {desktop_version({})}\n"
    # orbit parses: first token, optionally "version", then the version token
    name, version = out.split()
    assert name == "fleet-desktop" and version[0].isdigit()


def test_version_stamp_for_launcher_builds(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"], {"FLEET_DESKTOP_BUILD_VERSION": "1.42.0"}) == 0
    assert capsys.readouterr().out == "fleet-desktop 1.42.0\n"


def test_help_is_a_one_line_description(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"], {}) == 0
    first, *rest = capsys.readouterr().out.splitlines()
    assert first.startswith("Fleet Desktop application executable")
    assert rest == ["usage: fleet-desktop [--version | --help | status [--json]]"]


@pytest.mark.parametrize("argv", [["--bogus"], ["status", "--xml"], ["run", "now"]])
def test_bad_usage_exits_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv, {}) == 2
    assert "usage:" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [[], ["status", "--json"]])
def test_missing_configuration_exits_2_with_the_variable_named(
    argv: list[str], capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert main(argv, {"FLEET_DESKTOP_FLEET_URL": "https://fleet.example.test"}) == 2
    err = capsys.readouterr().err
    assert "FLEET_DESKTOP_DEVICE_IDENTIFIER_PATH" in err
    assert not (tmp_path / "Fleet" / "fleet-desktop.lock").exists()  # nothing started


def test_status_in_permanent_error_mode(capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    assert main(["status", "--json"], {"FLEET_DESKTOP_PERMANENT_ERROR": "Identity certificate missing"}) == 0
    document = json.loads(capsysbinary.readouterr().out.decode("utf-8"))
    assert document["state"] == "offline"
    assert document["failing_policies"] == 0
    assert document["items"][1] == {"title": "Identity certificate missing", "enabled": False, "visible": True}


def test_status_text_form(capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    assert main(["status"], {"FLEET_DESKTOP_PERMANENT_ERROR": "Broken"}) == 0
    text = capsysbinary.readouterr().out.decode("utf-8")
    assert text.startswith("state: offline\nfailing policies: 0\nmenu:\n")
    assert "  Broken  (disabled)" in text


def test_module_entry_point_runs() -> None:
    env = {**os.environ, "FLEET_DESKTOP_BUILD_VERSION": "7.7.7"}
    done = subprocess.run(
        [sys.executable, "-m", "desktop_tray", "--version"],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert (done.returncode, done.stdout) == (0, "fleet-desktop 7.7.7\n")
    helped = subprocess.run(
        [sys.executable, "-m", "desktop_tray", "--help"], check=False, capture_output=True, timeout=60
    )
    assert helped.returncode == 0 and helped.stdout


def test_instance_lock_refuses_a_second_holder(tmp_path: Path) -> None:
    path = tmp_path / "Fleet" / "fleet-desktop.lock"
    with InstanceLock(path):
        assert path.read_text().strip() == str(os.getpid())
        with pytest.raises(AlreadyRunningError) as refused:
            InstanceLock(path).acquire()
        assert f"pid {os.getpid()}" in str(refused.value)
        assert "already running" in str(refused.value)
    with InstanceLock(path):  # released: the next one gets it
        pass


def test_per_user_dirs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    assert desktop_dir("linux") == tmp_path / "state" / "Fleet"
    monkeypatch.delenv("XDG_STATE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert desktop_dir("linux") == tmp_path / "home" / ".local" / "state" / "Fleet"
    assert desktop_dir("macos") == tmp_path / "home" / "Library" / "Logs" / "Fleet"
