"""Where the per-user tray app keeps its log, lock and status files (docs/reference/orbit-behaviour.md §10.1).

``<log dir>/Fleet`` with ``<log dir>`` = ``$XDG_STATE_HOME`` or ``~/.local/state`` on Linux, ``~/Library/Logs`` on
macOS, ``%LocalAppData%`` on Windows — platformdirs answers for the user (fine for a per-user process,
python-stack.md §5), read when called so that the environment decides.
"""

from __future__ import annotations

from pathlib import Path

import platformdirs

from desktop_tray.config import Platform

FOLDER = "Fleet"
LOG_FILE_NAME = "fleet-desktop.log"
ERR_FILE_NAME = "fleet-desktop.err"
STATUS_FILE_NAME = "fleet-desktop.status.json"


def user_log_root(platform: Platform) -> Path:
    if platform == "macos":
        return Path.home() / "Library" / "Logs"
    if platform == "windows":
        return Path(platformdirs.user_data_dir(appname=None, appauthor=False, roaming=False))
    return Path(platformdirs.user_state_dir(appname=None))


def desktop_dir(platform: Platform) -> Path:
    return user_log_root(platform) / FOLDER
