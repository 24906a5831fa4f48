"""The GUI session on macOS: the console user as ``scutil`` reports it (``loginwindow`` and setup users mean nobody)."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Callable, Sequence

from orbit.children.gui_session import (
    COMMAND_TIMEOUT,
    CommandResult,
    CommandRunner,
    GuiSession,
    UserLookup,
    lookup_user,
    run_command,
)

_MAC_NO_USER = {"", "root", "loginwindow", "_mbsetupuser"}


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
            list(argv), input=text, capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False
        )
    except subprocess.TimeoutExpired:
        return CommandResult(124, "")
    return CommandResult(completed.returncode, completed.stdout)
