"""Finding the active graphical user session, so fleet-desktop can be started in it: the shared types and runners.

One module per OS does the finding (``gui_session_linux``, ``gui_session_macos``, ``gui_session_windows``);
``desktop_child.session_finder`` picks one.

Linux asks systemd-logind (``loginctl``) for the active, local, ``Class=user`` X11 or Wayland session and takes the
display variables from a process of that session (its leader or another of the user's processes); without logind
it falls back to ``who`` and a ``(:N)`` display. ``:0`` is used only when nothing better is known (Fleet hard-coded
it: #12334). macOS asks for the console user, Windows for the active WTS session. Every OS boundary (commands,
``/proc``, the user database, ctypes) is injected, so the cores are tested with recorded outputs.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
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
COMMAND_TIMEOUT = 10.0


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
            list(argv), capture_output=True, text=True, timeout=COMMAND_TIMEOUT, env=env, check=False
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
