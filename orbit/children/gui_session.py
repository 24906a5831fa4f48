"""Finding the active graphical user session, per OS, so fleet-desktop can be started in it.

Linux asks systemd-logind (``loginctl``) for the active, local, ``Class=user`` X11 or Wayland session and takes the
display variables from a process of that session (its leader or another of the user's processes); without logind
it falls back to ``who`` and a ``(:N)`` display. ``:0`` is used only when nothing better is known (Fleet hard-coded
it: #12334). macOS asks for the console user, Windows for the active WTS session. Every OS boundary (commands,
``/proc``, the user database, ctypes) is injected, so the cores are tested with recorded outputs.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

log = logging.getLogger(__name__)

# The variables a GUI program needs to reach the user's display, session bus and runtime directory.
SESSION_ENV_KEYS = (
    "DISPLAY",
    "WAYLAND_DISPLAY",
    "XAUTHORITY",
    "DBUS_SESSION_BUS_ADDRESS",
    "XDG_RUNTIME_DIR",
    "XDG_SESSION_TYPE",
    "XDG_CURRENT_DESKTOP",
)
_GRAPHICAL_TYPES = ("x11", "wayland")
_MAC_NO_USER = {"", "root", "loginwindow", "_mbsetupuser"}
_COMMAND_TIMEOUT = 10.0


@dataclass(frozen=True)
class GuiSession:
    user: str
    uid: int  # -1 on Windows
    gid: int  # -1 on Windows
    home: str
    env: Mapping[str, str] = field(default_factory=dict, hash=False)
    session_id: str | None = None


class GuiSessionFinder(Protocol):
    def find(self) -> GuiSession | None: ...


@dataclass(frozen=True)
class CommandResult:
    returncode: int
    stdout: str


@dataclass(frozen=True)
class UserRecord:
    name: str
    uid: int
    gid: int
    home: str


CommandRunner = Callable[[Sequence[str]], CommandResult]  # raises FileNotFoundError when the program is missing
EnvironReader = Callable[[int], Mapping[str, str] | None]  # a process's environment, None when unreadable
UserLookup = Callable[[str], UserRecord | None]  # by name, or by a numeric uid given as text


def run_command(argv: Sequence[str]) -> CommandResult:
    """The real runner: C locale, a timeout, output captured; a missing program raises ``FileNotFoundError``."""
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}
    try:
        completed = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=_COMMAND_TIMEOUT, env=env, check=False
        )
    except subprocess.TimeoutExpired:
        return CommandResult(124, "")
    return CommandResult(completed.returncode, completed.stdout)


def read_process_environ(pid: int) -> Mapping[str, str] | None:
    import psutil  # noqa: PLC0415 (only the Linux/macOS shells need it)

    try:
        return dict(psutil.Process(pid).environ())
    except (psutil.Error, OSError):
        return None


def list_user_processes(uid: int) -> list[int]:
    """Pids of the processes whose real uid is ``uid``, oldest first (session daemons before later programs)."""
    import psutil  # noqa: PLC0415

    found: list[tuple[float, int]] = []
    for process in psutil.process_iter(["pid", "uids", "create_time"]):
        info = process.info
        uids = info.get("uids")
        if uids is not None and uids.real == uid:
            found.append((float(info.get("create_time") or 0.0), int(info["pid"])))
    return [pid for _, pid in sorted(found)]


if sys.platform != "win32":

    def lookup_user(name_or_uid: str) -> UserRecord | None:
        """The user database entry, by name or by a numeric uid given as text."""
        import pwd  # noqa: PLC0415 (Unix only)

        try:
            entry = pwd.getpwuid(int(name_or_uid)) if name_or_uid.isdigit() else pwd.getpwnam(name_or_uid)
        except (KeyError, ValueError, OverflowError):
            return None
        return UserRecord(entry.pw_name, entry.pw_uid, entry.pw_gid, entry.pw_dir)

else:

    def lookup_user(name_or_uid: str) -> UserRecord | None:
        """No Unix user database on Windows."""
        return None


def _list_dir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []


def parse_properties(text: str) -> dict[str, str]:
    """``Key=Value`` lines (``loginctl show-session``) as a dict; lines without ``=`` are ignored."""
    properties: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip():
            properties[key.strip()] = value.strip()
    return properties


def parse_session_ids(text: str) -> list[str]:
    """The first column of ``loginctl list-sessions --no-legend`` (any systemd version's column layout)."""
    ids = []
    for line in text.splitlines():
        fields = line.split()
        if fields and re.fullmatch(r"[A-Za-z0-9_-]+", fields[0]):
            ids.append(fields[0])
    return ids


_WHO_DISPLAY = re.compile(r"\((:\d+(?:\.\d+)?)\)\s*$")


def parse_who(text: str) -> list[tuple[str, str]]:
    """``(user, display)`` for the ``who`` lines of local X displays: ``alice tty7 … (:1)`` or ``alice :0 …``."""
    found = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 2:
            continue
        match = _WHO_DISPLAY.search(line)
        if match is not None:
            found.append((fields[0], match.group(1)))
        elif re.fullmatch(r":\d+(?:\.\d+)?", fields[1]):
            found.append((fields[0], fields[1]))
    return found


def _session_rank(properties: Mapping[str, str]) -> int | None:
    """None when the session is not an eligible local graphical user session; lower is better."""
    if properties.get("Class") != "user" or properties.get("Type") not in _GRAPHICAL_TYPES:
        return None
    if properties.get("Remote", "no") == "yes" or properties.get("State") == "closing":
        return None
    if properties.get("Active") == "yes" and properties.get("State", "active") == "active":
        return 0
    if properties.get("Active") == "yes" or properties.get("State") == "active":
        return 1
    return 2  # online but not in the foreground (another session has the seat)


class LinuxSessionFinder:
    """The active graphical session from systemd-logind, else from ``who``."""

    def __init__(
        self,
        *,
        run: CommandRunner = run_command,
        environ_reader: EnvironReader = read_process_environ,
        user_lookup: UserLookup = lookup_user,
        user_processes: Callable[[int], Iterable[int]] = list_user_processes,
        list_dir: Callable[[str], list[str]] = _list_dir,
        path_exists: Callable[[str], bool] = os.path.exists,
    ) -> None:
        self._run = run
        self._environ = environ_reader
        self._user = user_lookup
        self._processes = user_processes
        self._list_dir = list_dir
        self._exists = path_exists

    def find(self) -> GuiSession | None:
        try:
            listing = self._run(["loginctl", "list-sessions", "--no-legend"])
        except FileNotFoundError:
            return self._from_who()
        if listing.returncode != 0:  # installed but logind not running (containers, non-systemd init)
            return self._from_who()
        return self._from_logind(parse_session_ids(listing.stdout))

    def _from_logind(self, session_ids: list[str]) -> GuiSession | None:
        best: tuple[int, int, str, dict[str, str]] | None = None
        for order, session_id in enumerate(session_ids):
            shown = self._run(
                [
                    "loginctl",
                    "show-session",
                    session_id,
                    *("-p", "Name", "-p", "User", "-p", "Type", "-p", "State", "-p", "Active"),
                    *("-p", "Display", "-p", "Remote", "-p", "Class", "-p", "Leader"),
                ]
            )
            if shown.returncode != 0:
                continue
            properties = parse_properties(shown.stdout)
            rank = _session_rank(properties)
            if rank is not None and (best is None or (rank, order) < best[:2]):
                best = (rank, order, session_id, properties)
        if best is None:
            return None
        _, _, session_id, properties = best
        record = self._user(properties.get("Name", "")) or self._user(properties.get("User", ""))
        if record is None:
            log.warning("event=gui_session_user_unknown session=%s user=%s", session_id, properties.get("Name"))
            return None
        leader = properties.get("Leader", "")
        env = self._session_env(
            record,
            session_type=properties.get("Type", ""),
            display=properties.get("Display", ""),
            session_id=session_id,
            leader=int(leader) if leader.isdigit() and int(leader) > 0 else None,
        )
        return GuiSession(record.name, record.uid, record.gid, record.home, env, session_id)

    def _from_who(self) -> GuiSession | None:
        try:
            result = self._run(["who"])
        except FileNotFoundError:
            return None
        if result.returncode != 0:
            return None
        for user, display in parse_who(result.stdout):
            record = self._user(user)
            if record is not None:
                env = self._session_env(record, session_type="x11", display=display, session_id=None, leader=None)
                return GuiSession(record.name, record.uid, record.gid, record.home, env, None)
        return None

    def _candidate_environs(self, uid: int, leader: int | None) -> Iterable[Mapping[str, str]]:
        if leader is not None:
            leader_env = self._environ(leader)
            if leader_env is not None:
                yield leader_env
        for pid in self._processes(uid):
            if pid != leader:
                environ = self._environ(pid)
                if environ is not None:
                    yield environ

    def _pick_environ(
        self, uid: int, leader: int | None, session_id: str | None, display: str
    ) -> Mapping[str, str] | None:
        """The first environment of this session that names a display: same session id, else same X display."""
        fallback: Mapping[str, str] | None = None
        for environ in self._candidate_environs(uid, leader):
            if not (environ.get("DISPLAY") or environ.get("WAYLAND_DISPLAY")):
                continue
            other_session = environ.get("XDG_SESSION_ID")
            if session_id is not None and other_session and other_session != session_id:
                continue  # e.g. the same user's ssh session with a forwarded X display
            if session_id is not None and environ.get("XDG_SESSION_ID") == session_id:
                return environ
            if session_id is None and display and environ.get("DISPLAY") == display:
                return environ
            if fallback is None and (not display or environ.get("DISPLAY") in (None, display)):
                fallback = environ
        return fallback

    def _session_env(
        self, record: UserRecord, *, session_type: str, display: str, session_id: str | None, leader: int | None
    ) -> dict[str, str]:
        found = self._pick_environ(record.uid, leader, session_id, display) or {}
        env: dict[str, str] = {}
        runtime_dir = f"/run/user/{record.uid}"
        runtime_entries = self._list_dir(runtime_dir)
        if display:
            env["DISPLAY"] = display
        elif found.get("DISPLAY"):
            env["DISPLAY"] = found["DISPLAY"]
        if found.get("WAYLAND_DISPLAY"):
            env["WAYLAND_DISPLAY"] = found["WAYLAND_DISPLAY"]
        elif session_type == "wayland":
            sockets = sorted(name for name in runtime_entries if re.fullmatch(r"wayland-\d+", name))
            if sockets:
                env["WAYLAND_DISPLAY"] = sockets[0]
        if "DISPLAY" not in env and "WAYLAND_DISPLAY" not in env:
            env["DISPLAY"] = ":0"  # nothing better known
        if found.get("XAUTHORITY"):
            env["XAUTHORITY"] = found["XAUTHORITY"]
        elif "DISPLAY" in env and self._exists(f"{record.home}/.Xauthority"):
            env["XAUTHORITY"] = f"{record.home}/.Xauthority"
        if runtime_entries or self._exists(runtime_dir):
            env["XDG_RUNTIME_DIR"] = runtime_dir
        if "bus" in runtime_entries:
            env["DBUS_SESSION_BUS_ADDRESS"] = f"unix:path={runtime_dir}/bus"
        elif found.get("DBUS_SESSION_BUS_ADDRESS"):
            env["DBUS_SESSION_BUS_ADDRESS"] = found["DBUS_SESSION_BUS_ADDRESS"]
        if session_type in _GRAPHICAL_TYPES:
            env["XDG_SESSION_TYPE"] = session_type
        if found.get("XDG_CURRENT_DESKTOP"):
            env["XDG_CURRENT_DESKTOP"] = found["XDG_CURRENT_DESKTOP"]
        return env


class StaticSessionFinder:
    """Always the same session (tests, demos)."""

    def __init__(self, session: GuiSession | None) -> None:
        self._session = session

    def find(self) -> GuiSession | None:
        return self._session


def current_user_session(
    environ: Mapping[str, str],
    *,
    uid: int | None = None,
    user_lookup: UserLookup = lookup_user,
) -> GuiSession | None:
    """orbit's own user and environment as the GUI session, when that environment names a display.

    For unprivileged (demo/test) runs, where orbit cannot switch users: Desktop then starts as orbit's user.
    """
    if not (environ.get("DISPLAY") or environ.get("WAYLAND_DISPLAY")):
        return None
    if uid is None:
        getuid = getattr(os, "getuid", None)
        if getuid is None:
            return None
        uid = int(getuid())
    record = user_lookup(str(uid))
    if record is None:
        return None
    env = {key: environ[key] for key in SESSION_ENV_KEYS if environ.get(key)}
    return GuiSession(record.name, record.uid, record.gid, environ.get("HOME") or record.home, env, None)


class CurrentUserSessionFinder:
    """``current_user_session`` over an environment read at each call."""

    def __init__(self, environ: Mapping[str, str] | None = None, *, user_lookup: UserLookup = lookup_user) -> None:
        self._environ = environ
        self._lookup = user_lookup

    def find(self) -> GuiSession | None:
        return current_user_session(os.environ if self._environ is None else self._environ, user_lookup=self._lookup)


_SCUTIL_INPUT = "show State:/Users/ConsoleUser\n"


def parse_scutil_console_user(text: str) -> tuple[str, int | None, int | None]:
    """``Name``, ``UID``, ``GID`` from ``scutil`` showing ``State:/Users/ConsoleUser``."""
    name, uid, gid = "", None, None
    for line in text.splitlines():
        key, sep, value = line.strip().partition(" : ")
        if not sep:
            continue
        if key == "Name":
            name = value.strip()
        elif key == "UID" and value.strip().isdigit():
            uid = int(value.strip())
        elif key == "GID" and value.strip().isdigit():
            gid = int(value.strip())
    return name, uid, gid


class MacSessionFinder:
    """The console user (the one at the login window's desktop), from ``scutil`` or ``stat -f%Su /dev/console``."""

    def __init__(
        self,
        *,
        run: CommandRunner = run_command,
        run_with_input: Callable[[Sequence[str], str], CommandResult] | None = None,
        user_lookup: UserLookup = lookup_user,
    ) -> None:
        self._run = run
        self._run_with_input = run_with_input or _run_with_input
        self._user = user_lookup

    def find(self) -> GuiSession | None:
        name = ""
        with contextlib.suppress(FileNotFoundError):
            result = self._run_with_input(["/usr/sbin/scutil"], _SCUTIL_INPUT)
            if result.returncode == 0:
                name, _, _ = parse_scutil_console_user(result.stdout)
        if not name:
            with contextlib.suppress(FileNotFoundError):
                result = self._run(["/usr/bin/stat", "-f%Su", "/dev/console"])
                if result.returncode == 0:
                    name = result.stdout.strip()
        if name in _MAC_NO_USER:
            return None
        record = self._user(name)
        if record is None:
            return None
        return GuiSession(record.name, record.uid, record.gid, record.home, {}, None)


def _run_with_input(argv: Sequence[str], text: str) -> CommandResult:
    try:
        completed = subprocess.run(
            list(argv), input=text, capture_output=True, text=True, timeout=_COMMAND_TIMEOUT, check=False
        )
    except subprocess.TimeoutExpired:
        return CommandResult(124, "")
    return CommandResult(completed.returncode, completed.stdout)


WTS_ACTIVE = 0  # WTS_CONNECTSTATE_CLASS.WTSActive
NO_CONSOLE_SESSION = 0xFFFFFFFF


@dataclass(frozen=True)
class WtsSession:
    session_id: int
    station: str
    state: int


@dataclass(frozen=True)
class WindowsSessionApi:
    """The WTS calls ``WindowsSessionFinder`` needs (ctypes on Windows, fakes in tests)."""

    enumerate_sessions: Callable[[], list[WtsSession]]
    active_console_session: Callable[[], int]  # WTSGetActiveConsoleSessionId (0xFFFFFFFF: none)
    session_user: Callable[[int], tuple[str, str] | None]  # (domain, user); None or empty user: nobody logged on


class WindowsSessionFinder:
    """The active WTS session with a user (the console or an RDP session), else the active console session."""

    def __init__(self, api: WindowsSessionApi | None = None) -> None:
        self._api = api

    def find(self) -> GuiSession | None:
        api = self._api or ctypes_wts_api()
        if api is None:
            return None
        candidates = [s.session_id for s in api.enumerate_sessions() if s.state == WTS_ACTIVE and s.session_id != 0]
        console = api.active_console_session()
        if console not in (NO_CONSOLE_SESSION, 0):
            candidates.append(console)
        for session_id in candidates:
            owner = api.session_user(session_id)
            if owner is not None and owner[1]:
                domain, user = owner
                return GuiSession(user, -1, -1, "", {"USERDOMAIN": domain} if domain else {}, str(session_id))
        return None


if sys.platform == "win32":  # pragma: no cover - exercised by the Windows CI runner only
    import ctypes
    from ctypes import wintypes

    class _WtsSessionInfo(ctypes.Structure):
        _fields_ = (
            ("SessionId", wintypes.DWORD),
            ("pWinStationName", wintypes.LPWSTR),
            ("State", ctypes.c_int),
        )

    _WTS_USER_NAME = 5
    _WTS_DOMAIN_NAME = 7

    def _windows_wts_api() -> WindowsSessionApi:
        wtsapi32 = ctypes.WinDLL("wtsapi32", use_last_error=True)
        kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
        kernel32.WTSGetActiveConsoleSessionId.restype = wintypes.DWORD

        def enumerate_sessions() -> list[WtsSession]:
            info = ctypes.POINTER(_WtsSessionInfo)()
            count = wintypes.DWORD()
            if not wtsapi32.WTSEnumerateSessionsW(None, 0, 1, ctypes.byref(info), ctypes.byref(count)):
                return []
            try:
                return [
                    WtsSession(int(info[i].SessionId), info[i].pWinStationName or "", int(info[i].State))
                    for i in range(count.value)
                ]
            finally:
                wtsapi32.WTSFreeMemory(info)

        def query(session_id: int, info_class: int) -> str:
            buffer = wintypes.LPWSTR()
            size = wintypes.DWORD()
            if not wtsapi32.WTSQuerySessionInformationW(
                None, session_id, info_class, ctypes.byref(buffer), ctypes.byref(size)
            ):
                return ""
            try:
                return buffer.value or ""
            finally:
                wtsapi32.WTSFreeMemory(buffer)

        def session_user(session_id: int) -> tuple[str, str] | None:
            user = query(session_id, _WTS_USER_NAME)
            return (query(session_id, _WTS_DOMAIN_NAME), user) if user else None

        return WindowsSessionApi(
            enumerate_sessions=enumerate_sessions,
            active_console_session=lambda: int(kernel32.WTSGetActiveConsoleSessionId()),
            session_user=session_user,
        )

    def ctypes_wts_api() -> WindowsSessionApi | None:
        """The real WTS calls."""
        return _windows_wts_api()

else:

    def ctypes_wts_api() -> WindowsSessionApi | None:
        """The real WTS calls; None outside Windows."""
        return None


def default_finder(platform: str) -> GuiSessionFinder:
    """The finder for ``platform`` (``linux``, ``macos`` or ``windows``)."""
    if platform == "windows":
        return WindowsSessionFinder()
    if platform == "macos":
        return MacSessionFinder()
    return LinuxSessionFinder()
