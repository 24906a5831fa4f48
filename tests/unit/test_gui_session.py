"""Finding the GUI session from recorded loginctl / who / scutil / WTS answers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pytest

from orbit.children.gui_session import (
    CommandResult,
    CurrentUserSessionFinder,
    GuiSession,
    StaticSessionFinder,
    UserRecord,
    current_user_session,
)
from orbit.children.gui_session_linux import LinuxSessionFinder, parse_session_ids, parse_who
from orbit.children.gui_session_macos import MacSessionFinder
from orbit.children.gui_session_windows import WindowsSessionApi, WindowsSessionFinder, WtsSession

USERS = {
    "alice": UserRecord("alice", 1000, 1000, "/home/alice"),
    "bob": UserRecord("bob", 1001, 1001, "/home/bob"),
    "carol": UserRecord("carol", 1002, 100, "/home/carol"),
    "gdm": UserRecord("gdm", 120, 125, "/var/lib/gdm3"),
}


def lookup(name_or_uid: str) -> UserRecord | None:
    if name_or_uid.isdigit():
        return next((u for u in USERS.values() if u.uid == int(name_or_uid)), None)
    return USERS.get(name_or_uid)


def session_props(**props: str) -> str:
    base = {"Remote": "no", "Class": "user", "State": "active", "Active": "yes", "Display": "", "Leader": "0"}
    base.update(props)
    return "".join(f"{key}={value}\n" for key, value in base.items())


class Host:
    """A recorded machine: loginctl answers per session, who output, process environments, /run/user listings."""

    def __init__(
        self,
        *,
        listing: str | None = "",
        listing_rc: int = 0,
        sessions: Mapping[str, str] | None = None,
        who: str | None = None,
        environs: Mapping[int, Mapping[str, str]] | None = None,
        processes: Mapping[int, list[int]] | None = None,
        runtime: Mapping[str, list[str]] | None = None,
        existing: Sequence[str] = (),
    ) -> None:
        self.listing, self.listing_rc = listing, listing_rc
        self.sessions = dict(sessions or {})
        self.who = who
        self.environs = dict(environs or {})
        self.processes = dict(processes or {})
        self.runtime = dict(runtime or {})
        self.existing = set(existing)
        self.commands: list[list[str]] = []

    def run(self, argv: Sequence[str]) -> CommandResult:
        self.commands.append(list(argv))
        if argv[0] == "loginctl":
            if self.listing is None:
                raise FileNotFoundError("loginctl")
            if argv[1] == "list-sessions":
                return CommandResult(self.listing_rc, self.listing)
            if argv[1] == "show-session" and argv[2] in self.sessions:
                return CommandResult(0, self.sessions[argv[2]])
            return CommandResult(1, "")
        if argv[0] == "who":
            if self.who is None:
                raise FileNotFoundError("who")
            return CommandResult(0, self.who)
        raise AssertionError(f"unexpected command {argv}")

    def finder(self) -> LinuxSessionFinder:
        return LinuxSessionFinder(
            run=self.run,
            environ_reader=self.environs.get,
            user_lookup=lookup,
            user_processes=lambda uid: self.processes.get(uid, []),
            list_dir=lambda path: self.runtime.get(path, []),
            path_exists=lambda path: path in self.existing or path in self.runtime,
        )


def test_x11_session_on_display_1_with_its_xauthority() -> None:
    host = Host(
        listing="      2 1000 alice seat0 tty2\n",
        sessions={"2": session_props(Name="alice", User="1000", Type="x11", Display=":1", Leader="1500")},
        environs={1500: {"DISPLAY": ":1", "XAUTHORITY": "/run/user/1000/gdm/Xauthority", "XDG_SESSION_ID": "2"}},
        runtime={"/run/user/1000": ["bus", "gdm", "systemd"]},
    )
    session = host.finder().find()
    assert session == GuiSession(
        "alice",
        1000,
        1000,
        "/home/alice",
        {
            "DISPLAY": ":1",
            "XAUTHORITY": "/run/user/1000/gdm/Xauthority",
            "XDG_RUNTIME_DIR": "/run/user/1000",
            "DBUS_SESSION_BUS_ADDRESS": "unix:path=/run/user/1000/bus",
            "XDG_SESSION_TYPE": "x11",
        },
        "2",
    )


def test_wayland_display_comes_from_a_process_of_the_session_not_from_the_root_leader() -> None:
    host = Host(
        listing="3 1000 alice seat0 tty2\n",
        sessions={"3": session_props(Name="alice", User="1000", Type="wayland", Leader="900")},
        environs={
            900: {"PATH": "/usr/bin"},  # gdm-session-worker: no display
            2100: {"DISPLAY": "localhost:10.0", "XDG_SESSION_ID": "7", "SSH_CONNECTION": "10.0.0.5 2 10.0.0.1 22"},
            2200: {
                "WAYLAND_DISPLAY": "wayland-0",
                "DISPLAY": ":0",
                "XDG_CURRENT_DESKTOP": "GNOME",  # gnome-shell under systemd --user: no XDG_SESSION_ID
            },
        },
        processes={1000: [2100, 2200]},
        runtime={"/run/user/1000": ["bus", "wayland-0"]},
    )
    session = host.finder().find()
    assert session is not None and session.session_id == "3"
    assert session.env["WAYLAND_DISPLAY"] == "wayland-0"
    assert session.env["DISPLAY"] == ":0"  # Xwayland's, read from the session, not assumed
    assert session.env["XDG_SESSION_TYPE"] == "wayland" and session.env["XDG_CURRENT_DESKTOP"] == "GNOME"


def test_wayland_socket_found_in_the_runtime_dir_when_no_environment_is_readable() -> None:
    host = Host(
        listing="3 1000 alice seat0 tty2\n",
        sessions={"3": session_props(Name="alice", User="1000", Type="wayland")},
        runtime={"/run/user/1000": ["wayland-1", "bus"]},
    )
    session = host.finder().find()
    assert session is not None
    assert session.env["WAYLAND_DISPLAY"] == "wayland-1" and "DISPLAY" not in session.env


def test_remote_and_tty_sessions_are_ignored() -> None:
    host = Host(
        listing="14 1001 bob pts/0\n15 1000 alice\n",
        sessions={
            "14": session_props(Name="bob", User="1001", Type="tty", Remote="yes"),
            "15": session_props(Name="alice", User="1000", Type="x11", Display=":10", Remote="yes"),  # xrdp
        },
    )
    assert host.finder().find() is None


def test_the_greeter_session_is_ignored() -> None:
    greeter = session_props(Name="gdm", User="120", Type="wayland", Class="greeter")
    host = Host(listing="c1 120 gdm seat0 tty1\n", sessions={"c1": greeter})
    assert host.finder().find() is None
    host = Host(
        listing="c1 120 gdm seat0 tty1\n2 1000 alice seat0 tty2\n",
        sessions={
            "c1": greeter,
            "2": session_props(Name="alice", User="1000", Type="x11", Display=":1", State="online", Active="no"),
        },
    )
    found = host.finder().find()
    assert found is not None and found.user == "alice"


def test_of_two_graphical_sessions_the_active_one_wins() -> None:
    host = Host(
        listing="2 1000 alice seat0 tty2\n5 1002 carol seat0 tty3\n",
        sessions={
            "2": session_props(Name="alice", User="1000", Type="x11", Display=":1", State="online", Active="no"),
            "5": session_props(Name="carol", User="1002", Type="x11", Display=":2"),
        },
    )
    session = host.finder().find()
    assert session is not None
    assert (session.user, session.uid, session.gid, session.env["DISPLAY"]) == ("carol", 1002, 100, ":2")


def test_display_zero_only_when_nothing_better_is_known() -> None:
    host = Host(
        listing="2 1000 alice seat0 tty2\n",
        sessions={"2": session_props(Name="alice", User="1000", Type="x11")},
        existing=["/home/alice/.Xauthority"],
    )
    session = host.finder().find()
    assert session is not None
    assert session.env == {"DISPLAY": ":0", "XAUTHORITY": "/home/alice/.Xauthority", "XDG_SESSION_TYPE": "x11"}


def test_no_session_at_all() -> None:
    assert Host(listing="").finder().find() is None


def test_loginctl_missing_falls_back_to_who() -> None:
    who = (
        "bob      pts/0        2024-03-01 10:00 (10.0.0.5)\n"
        "alice    tty7         2024-03-01 09:12 (:1)\n"
        "alice    pts/1        2024-03-01 09:20 (:1)\n"
    )
    host = Host(
        listing=None,
        who=who,
        environs={3000: {"DISPLAY": ":1", "XAUTHORITY": "/home/alice/.Xauthority"}},
        processes={1000: [3000]},
        runtime={"/run/user/1000": ["bus"]},
    )
    session = host.finder().find()
    assert session == GuiSession(
        "alice",
        1000,
        1000,
        "/home/alice",
        {
            "DISPLAY": ":1",
            "XAUTHORITY": "/home/alice/.Xauthority",
            "XDG_RUNTIME_DIR": "/run/user/1000",
            "DBUS_SESSION_BUS_ADDRESS": "unix:path=/run/user/1000/bus",
            "XDG_SESSION_TYPE": "x11",
        },
        None,
    )


def test_logind_not_running_falls_back_to_who_and_ssh_logins_do_not_count() -> None:
    host = Host(listing="", listing_rc=1, who="bob pts/0 2024-03-01 10:00 (10.0.0.5)\n")
    assert host.finder().find() is None
    assert [c[0] for c in host.commands] == ["loginctl", "who"]
    host = Host(listing="", listing_rc=1, who="carol    :0           2024-03-01 08:00\n")
    found = host.finder().find()
    assert found is not None and found.user == "carol" and found.env["DISPLAY"] == ":0"


def test_neither_loginctl_nor_who() -> None:
    assert Host(listing=None, who=None).finder().find() is None


def test_unknown_user_is_not_a_session() -> None:
    host = Host(listing="2 4242 ghost\n", sessions={"2": session_props(Name="ghost", User="4242", Type="x11")})
    assert host.finder().find() is None


def test_parsers_accept_every_systemd_layout_and_who_variant() -> None:
    newer = "      2 1000 alice seat0 1234 user tty2 no -\n     c1  120 gdm   seat0 800  greeter tty1 no -\n"
    assert parse_session_ids(newer) == ["2", "c1"]
    assert parse_who("alice :0 2024-03-01 08:00\nbob tty7 2024 (:2.0)\nx\n") == [("alice", ":0"), ("bob", ":2.0")]


def test_current_user_session_needs_a_display_in_orbits_environment() -> None:
    assert current_user_session({"HOME": "/home/alice"}, uid=1000, user_lookup=lookup) is None
    environ = {"WAYLAND_DISPLAY": "wayland-0", "XDG_RUNTIME_DIR": "/run/user/1000", "SECRET": "x", "HOME": "/h"}
    session = current_user_session(environ, uid=1000, user_lookup=lookup)
    assert session == GuiSession(
        "alice", 1000, 1000, "/h", {"WAYLAND_DISPLAY": "wayland-0", "XDG_RUNTIME_DIR": "/run/user/1000"}, None
    )
    finder = CurrentUserSessionFinder({"DISPLAY": ":3"}, user_lookup=lambda _: USERS["bob"])
    found = finder.find()
    assert found is not None and found.user == "bob" and found.env == {"DISPLAY": ":3"}


def test_static_finder() -> None:
    session = GuiSession("alice", 1000, 1000, "/home/alice", {"DISPLAY": ":1"}, "2")
    assert StaticSessionFinder(session).find() is session
    assert StaticSessionFinder(None).find() is None


SCUTIL = """<dictionary> {
  GID : 20
  Name : alice
  SessionInfo : <array> {
    0 : <dictionary> {
      kCGSSessionUserNameKey : alice
    }
  }
  UID : 501
}
"""


@pytest.mark.parametrize(
    ("scutil", "stat", "expected"),
    [
        (CommandResult(0, SCUTIL), None, "alice"),
        (CommandResult(0, SCUTIL.replace("Name : alice", "Name : loginwindow")), None, None),
        (None, CommandResult(0, "alice\n"), "alice"),
        (None, CommandResult(0, "root\n"), None),
        (CommandResult(1, ""), CommandResult(0, "_mbsetupuser\n"), None),
    ],
)
def test_mac_console_user(scutil: CommandResult | None, stat: CommandResult | None, expected: str | None) -> None:
    mac_users = {"alice": UserRecord("alice", 501, 20, "/Users/alice")}

    def run(argv: Sequence[str]) -> CommandResult:
        assert list(argv) == ["/usr/bin/stat", "-f%Su", "/dev/console"]
        if stat is None:
            raise AssertionError("stat not expected")
        return stat

    def run_with_input(argv: Sequence[str], text: str) -> CommandResult:
        assert list(argv) == ["/usr/sbin/scutil"] and "State:/Users/ConsoleUser" in text
        if scutil is None:
            raise FileNotFoundError("scutil")
        return scutil

    session = MacSessionFinder(run=run, run_with_input=run_with_input, user_lookup=mac_users.get).find()
    if expected is None:
        assert session is None
    else:
        assert session == GuiSession("alice", 501, 20, "/Users/alice", {}, None)


def _wts(sessions: list[WtsSession], console: int, users: dict[int, tuple[str, str]]) -> WindowsSessionApi:
    return WindowsSessionApi(
        enumerate_sessions=lambda: sessions, active_console_session=lambda: console, session_user=users.get
    )


def test_windows_active_wts_session_with_a_user() -> None:
    api = _wts(
        [WtsSession(0, "Services", 4), WtsSession(1, "Console", 4), WtsSession(2, "RDP-Tcp#3", 0)],
        1,
        {1: ("CORP", "bob"), 2: ("CORP", "alice")},
    )
    assert WindowsSessionFinder(api).find() == GuiSession("alice", -1, -1, "", {"USERDOMAIN": "CORP"}, "2")


def test_windows_falls_back_to_the_console_session_and_needs_a_user() -> None:
    api = _wts([WtsSession(0, "Services", 4)], 1, {1: ("", "alice")})
    assert WindowsSessionFinder(api).find() == GuiSession("alice", -1, -1, "", {}, "1")
    assert WindowsSessionFinder(_wts([WtsSession(1, "Console", 0)], 1, {})).find() is None
    assert WindowsSessionFinder(_wts([], 0xFFFFFFFF, {})).find() is None


def test_windows_finder_without_windows_finds_nothing() -> None:
    assert WindowsSessionFinder().find() is None
