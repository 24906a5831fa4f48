"""fleet-desktop's environment and launch plans per OS (pure)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from orbit.children.desktop_launch import (
    DesktopLauncher,
    LaunchPlan,
    desktop_environment,
    linux_refusal,
    merge_environment_block,
    plan_linux,
    plan_macos,
    plan_windows,
)
from orbit.children.gui_session import GuiSession, StaticSessionFinder
from orbit.children.supervisor import ChildLaunch

CERT = "-----BEGIN CERTIFICATE-----\nMIIBcert\n-----END CERTIFICATE-----\n"
KEY = "-----BEGIN PRIVATE KEY-----\nMIIEsecretkey\n-----END PRIVATE KEY-----\n"
TOKEN = "6d8b1f0c-token-abc"
EXE = Path("/opt/orbit/bin/desktop/linux/stable/fleet-desktop/fleet-desktop")
ALICE = GuiSession(
    "alice",
    1000,
    1000,
    "/home/alice",
    {
        "DISPLAY": ":1",
        "XAUTHORITY": "/run/user/1000/gdm/Xauthority",
        "DBUS_SESSION_BUS_ADDRESS": "unix:path=/run/user/1000/bus",
        "XDG_RUNTIME_DIR": "/run/user/1000",
        "XDG_SESSION_TYPE": "x11",
    },
    "2",
)
ORBIT_ENVIRON = {
    "HTTPS_PROXY": "http://proxy.corp:3128",
    "no_proxy": "localhost,.corp",
    "ORBIT_ENROLL_SECRET": "enroll-secret-value",
    "LD_LIBRARY_PATH": "/opt/evil",
    "PATH": "/root/bin:/usr/bin",
}


def env(**overrides: object) -> dict[str, str]:
    arguments: dict[str, object] = {
        "fleet_url": "https://fleet.example.com/",
        "identifier_path": Path("/opt/orbit/identifier"),
        "root_dir": Path("/opt/orbit"),
        "fleet_root_ca": None,
        "insecure": False,
        "client_cert_pem": "",
        "client_key_pem": "",
        "alternative_browser_host": None,
        "token_at_launch": None,
        "orbit_environ": ORBIT_ENVIRON,
    }
    arguments.update(overrides)
    return desktop_environment(**arguments)  # type: ignore[arg-type]


def test_fleets_variables_and_the_proxy_only() -> None:
    assert env() == {
        "FLEET_DESKTOP_FLEET_URL": "https://fleet.example.com",
        "FLEET_DESKTOP_DEVICE_IDENTIFIER_PATH": "/opt/orbit/identifier",
        "FLEET_DESKTOP_FLEET_TLS_CLIENT_CERTIFICATE": "",
        "FLEET_DESKTOP_FLEET_TLS_CLIENT_KEY": "",
        "FLEET_DESKTOP_ALTERNATIVE_BROWSER_HOST": "",
        "FLEET_DESKTOP_TUF_UPDATE_ROOT": "/opt/orbit",
        "HTTPS_PROXY": "http://proxy.corp:3128",
        "no_proxy": "localhost,.corp",
    }


def test_optional_variables_when_configured() -> None:
    full = env(
        fleet_root_ca=Path("/opt/orbit/fleet.pem"),
        insecure=True,
        client_cert_pem=CERT,
        client_key_pem=KEY,
        alternative_browser_host="browser.example.com",
        token_at_launch=TOKEN,
        orbit_environ={},
    )
    assert full["FLEET_DESKTOP_DEVICE_URL"] == f"https://fleet.example.com/device/{TOKEN}"
    assert full["FLEET_DESKTOP_FLEET_TLS_CLIENT_CERTIFICATE"] == CERT  # contents, not a path
    assert full["FLEET_DESKTOP_FLEET_TLS_CLIENT_KEY"] == KEY
    assert full["FLEET_DESKTOP_ALTERNATIVE_BROWSER_HOST"] == "browser.example.com"
    assert full["FLEET_DESKTOP_FLEET_ROOT_CA"] == "/opt/orbit/fleet.pem"
    assert full["FLEET_DESKTOP_INSECURE"] == "1"
    # the token and the key appear in exactly the variables Fleet uses for them
    assert [k for k, v in full.items() if TOKEN in v] == ["FLEET_DESKTOP_DEVICE_URL"]
    assert [k for k, v in full.items() if "secretkey" in v] == ["FLEET_DESKTOP_FLEET_TLS_CLIENT_KEY"]


def test_root_drops_to_the_session_user_with_an_explicit_environment() -> None:
    desktop = env(token_at_launch=TOKEN, client_key_pem=KEY)
    plan = plan_linux(
        ALICE, EXE, desktop, running_as_root=True, current_uid=0, groups_of=lambda u, g: (g, 27), is_dir=lambda _: True
    )
    assert plan is not None
    assert plan.argv == (str(EXE),)  # no sudo, no token or key in argv
    assert (plan.user, plan.uid, plan.gid, plan.extra_groups) == ("alice", 1000, 1000, (1000, 27))
    assert plan.cwd == "/home/alice"
    assert dict(plan.env) == {
        "HOME": "/home/alice",
        "USER": "alice",
        "LOGNAME": "alice",
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "DISPLAY": ":1",
        "XAUTHORITY": "/run/user/1000/gdm/Xauthority",
        "DBUS_SESSION_BUS_ADDRESS": "unix:path=/run/user/1000/bus",
        "XDG_RUNTIME_DIR": "/run/user/1000",
        "XDG_SESSION_TYPE": "x11",
        "LD_LIBRARY_PATH": str(EXE.parent),
        **desktop,
    }
    assert "ORBIT_ENROLL_SECRET" not in plan.env
    assert "secretkey" not in repr(plan) and TOKEN not in repr(plan)
    assert plan.to_child_launch() == ChildLaunch(
        argv=[str(EXE)], env=dict(plan.env), cwd=Path("/home/alice"), user=1000, group=1000, extra_groups=(1000, 27)
    )


def test_root_in_a_root_gui_session_does_not_switch_and_a_missing_home_means_slash() -> None:
    root_session = GuiSession("root", 0, 0, "/nonexistent", {"DISPLAY": ":0"}, "1")
    plan = plan_linux(root_session, EXE, {}, running_as_root=True, current_uid=0, is_dir=lambda _: False)
    assert plan is not None and (plan.uid, plan.gid, plan.extra_groups, plan.cwd) == (None, None, None, "/")


def test_unprivileged_orbit_runs_desktop_only_for_its_own_user() -> None:
    same = plan_linux(ALICE, EXE, {"A": "1"}, running_as_root=False, current_uid=1000, is_dir=lambda _: True)
    assert same is not None and same.uid is None and same.env["A"] == "1" and same.env["DISPLAY"] == ":1"
    assert plan_linux(ALICE, EXE, {}, running_as_root=False, current_uid=1001) is None
    reason = linux_refusal(ALICE, running_as_root=False, current_uid=1001)
    assert reason is not None and "alice" in reason and "cannot switch users" in reason


APP = Path("/opt/orbit/bin/desktop/macos/stable/Fleet Desktop.app")
MAC_ALICE = GuiSession("alice", 501, 20, "/Users/alice", {}, None)


def test_macos_plan_opens_the_bundle_as_the_console_user_without_secrets_in_argv() -> None:
    desktop = env(
        client_cert_pem=CERT,
        client_key_pem=KEY,
        token_at_launch=TOKEN,
        orbit_environ={"HTTPS_PROXY": "http://user:pw@proxy:3128", "NO_PROXY": "localhost"},
    )
    plan = plan_macos(MAC_ALICE, APP, desktop, running_as_root=True, current_uid=0)
    assert plan is not None
    argv = list(plan.argv)
    assert argv[:8] == ["/bin/launchctl", "asuser", "501", "/usr/bin/sudo", "-u", "alice", "--", "/usr/bin/open"]
    assert argv[8] == "-W" and argv[-1] == str(APP)
    passed = {argv[i + 1] for i, arg in enumerate(argv) if arg == "--env"}
    assert "FLEET_DESKTOP_FLEET_URL=https://fleet.example.com" in passed
    assert "FLEET_DESKTOP_DEVICE_IDENTIFIER_PATH=/opt/orbit/identifier" in passed
    assert "NO_PROXY=localhost" in passed
    joined = "\0".join(argv)
    assert TOKEN not in joined and "secretkey" not in joined and "MIIBcert" not in joined and "pw@" not in joined
    mine = plan_macos(MAC_ALICE, APP, {"FLEET_DESKTOP_FLEET_URL": "u"}, running_as_root=False, current_uid=501)
    assert mine is not None and mine.argv == ("/usr/bin/open", "-W", "--env", "FLEET_DESKTOP_FLEET_URL=u", str(APP))
    assert plan_macos(MAC_ALICE, APP, {}, running_as_root=False, current_uid=502) is None


def test_windows_plan_targets_the_users_interactive_desktop() -> None:
    exe = Path("C:/Program Files/Orbit/bin/desktop/windows/stable/fleet-desktop.exe")
    session = GuiSession("alice", -1, -1, "", {"USERDOMAIN": "CORP"}, "2")
    desktop = env(token_at_launch=TOKEN)
    plan = plan_windows(session, exe, desktop)
    assert plan is not None
    assert (plan.argv, plan.session_id, plan.desktop, plan.cwd) == (
        (str(exe),),
        "2",
        "winsta0\\default",
        str(exe.parent),
    )
    assert dict(plan.env) == desktop and TOKEN not in "".join(plan.argv)
    assert plan_windows(GuiSession("alice", -1, -1, "", {}, None), exe, desktop) is None


def test_windows_environment_block_overlays_the_users_variables() -> None:
    block = merge_environment_block(["Path=C:\\Windows", "USERNAME=alice", "bogus"], {"PATH": "C:\\x", "A": "1"})
    assert block == "A=1\0PATH=C:\\x\0USERNAME=alice\0\0"


class Finder:
    def __init__(self, session: GuiSession | None) -> None:
        self.session = session
        self.calls = 0

    def find(self) -> GuiSession | None:
        self.calls += 1
        return self.session


def test_launcher_waits_for_binary_and_session_and_logs_each_reason_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    exe = tmp_path / "fleet-desktop"
    finder = Finder(None)
    stale_calls: list[tuple[Path | None, Path | None]] = []

    def stale_killer(pidfile: Path | None, path: Path | None) -> list[int]:
        stale_calls.append((pidfile, path))
        return []

    launcher = DesktopLauncher(
        finder,
        lambda: exe,
        lambda: {"FLEET_DESKTOP_FLEET_URL": "https://f"},
        "linux",
        running_as_root=True,
        current_uid=0,
        pidfile=tmp_path / "fleet-desktop.pid",
        groups_of=lambda u, g: (g,),
        stale_killer=stale_killer,
    )
    with caplog.at_level(logging.INFO, logger="orbit.children.desktop_launch"):
        assert launcher.launch() is None and launcher.last_reason == "fleet-desktop is not installed yet"
        exe.write_text("#!/bin/sh\n")
        assert launcher.launch() is None and launcher.launch() is None
        assert launcher.last_reason == "no user is logged in to a graphical session"
        finder.session = ALICE
        launch = launcher.launch()
    assert launch is not None and launch.argv == [str(exe)] and launch.user == 1000
    assert launch.env["FLEET_DESKTOP_FLEET_URL"] == "https://f" and launch.env["DISPLAY"] == ":1"
    assert stale_calls == [(tmp_path / "fleet-desktop.pid", exe)]  # once, before the first start
    waits = [r.getMessage() for r in caplog.records if "desktop_not_started" in r.getMessage()]
    assert len(waits) == 2


def test_unprivileged_launcher_refuses_another_users_session(tmp_path: Path) -> None:
    exe = tmp_path / "fleet-desktop"
    exe.write_text("")
    launcher = DesktopLauncher(
        StaticSessionFinder(ALICE),
        lambda: exe,
        dict,
        "linux",
        running_as_root=False,
        current_uid=4242,
        stale_killer=lambda p, e: [],
    )
    assert launcher.launch() is None and launcher.last_reason is not None and "alice" in launcher.last_reason


def test_a_failing_finder_means_wait_not_crash(tmp_path: Path) -> None:
    class Broken:
        def find(self) -> GuiSession | None:
            raise OSError("loginctl hung")

    exe = tmp_path / "fleet-desktop"
    exe.write_text("")
    launcher = DesktopLauncher(Broken(), lambda: exe, dict, "linux", stale_killer=lambda p, e: [])
    assert launcher.plan() is None and "loginctl hung" in (launcher.last_reason or "")


def test_launcher_platform_plans(tmp_path: Path) -> None:
    app = tmp_path / "Fleet Desktop.app"
    app.mkdir()
    mac = DesktopLauncher(
        StaticSessionFinder(MAC_ALICE), lambda: app, dict, "macos", running_as_root=True, current_uid=0
    )
    plan = mac.plan()
    assert plan is not None and plan.argv[0] == "/bin/launchctl" and plan.argv[-1] == str(app)
    win_session = GuiSession("alice", -1, -1, "", {}, "3")
    win = DesktopLauncher(StaticSessionFinder(win_session), lambda: app, dict, "windows", stale_killer=lambda p, e: [])
    win_plan = win.plan()
    assert isinstance(win_plan, LaunchPlan) and win_plan.session_id == "3"
    assert win.launch() is None  # the POSIX supervisor cannot start it; a WindowsProcessStarter does


def test_child_spec_uses_the_launcher_and_fleets_retry(tmp_path: Path) -> None:
    launcher = DesktopLauncher(Finder(None), lambda: None, dict, "linux", pidfile=tmp_path / "fleet-desktop.pid")
    spec = launcher.child_spec()
    assert spec.launch == launcher.launch and spec.not_ready_retry == 30.0
    assert spec.write_pidfile and spec.pidfile == tmp_path / "fleet-desktop.pid" and spec.record is None
