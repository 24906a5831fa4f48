"""The active GUI session on Linux: systemd-logind's active, local, ``Class=user`` X11/Wayland session, its
display variables read from a process of that session; without logind, ``who`` and a ``(:N)`` display; ``:0`` only
when nothing better is known (Fleet hard-coded it: #12334). Commands, ``/proc`` and the user database are injected.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Iterable, Mapping

from orbit.children.gui_session import (
    CommandRunner,
    EnvironReader,
    GuiSession,
    UserLookup,
    UserRecord,
    list_user_processes,
    lookup_user,
    read_process_environ,
    run_command,
)

log = logging.getLogger(__name__)

_GRAPHICAL_TYPES = ("x11", "wayland")


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
