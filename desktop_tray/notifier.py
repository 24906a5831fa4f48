"""Desktop notifications: how state changes reach the user when there is no tray to show them.

``notify-send`` (libnotify) when it is installed, else the message is only logged. ``StateNotifier`` decides which
state changes are worth a notification: the first definite state after start-up, then every change of connection
or failing-policy count (not the transient Connecting between two token rotations).
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from collections.abc import Callable
from typing import Protocol

from desktop_tray.menu_state import Connection, TrayState, badge_count, describe

log = logging.getLogger(__name__)

APP_NAME = "Fleet Desktop"
NOTIFY_TIMEOUT = 5.0


class Notifier(Protocol):
    def notify(self, title: str, body: str) -> bool: ...


Runner = Callable[[list[str]], int]


def _run(argv: list[str]) -> int:
    completed = subprocess.run(
        argv,
        check=False,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=NOTIFY_TIMEOUT,
    )
    return completed.returncode


class NotifySend:
    def __init__(self, *, which: Callable[[str], str | None] = shutil.which, runner: Runner = _run) -> None:
        self._which = which
        self._runner = runner

    def notify(self, title: str, body: str) -> bool:
        log.info("event=notification title=%r body=%r", title, body)
        program = self._which("notify-send")
        if program is None:
            log.info("event=notification_not_shown reason=%r", "notify-send is not installed")
            return False
        argv = [program, f"--app-name={APP_NAME}", "--icon=dialog-information", title, body]
        try:
            code = self._runner(argv)
        except (OSError, subprocess.SubprocessError) as exc:
            log.info("event=notification_not_shown reason=%r", exc.__class__.__name__)
            return False
        if code != 0:
            log.info("event=notification_not_shown reason=%r", f"notify-send exited {code}")
        return code == 0


class StateNotifier:
    def __init__(self, notifier: Notifier) -> None:
        self._notifier = notifier
        self._last: tuple[Connection, int] | None = None

    def show(self, state: TrayState) -> bool:
        """Notify if this state differs from the last one notified; True when a notification was attempted."""
        key = (Connection.OFFLINE, -1) if state.permanent_error else (state.connection, badge_count(state))
        if key == self._last:
            return False
        if state.connection is Connection.CONNECTING and not state.permanent_error:
            return False  # transient: wait for the outcome
        self._last = key
        self._notifier.notify(APP_NAME, describe(state))
        return True
