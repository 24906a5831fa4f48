"""fleet-desktop's logs: ``fleet-desktop.log`` rotated at 25 MB × 3, key=value lines; warnings also on stderr.

``fleet-desktop.err`` is truncated at every start with a timestamp header and receives fatal-error tracebacks
(``faulthandler``), the counterpart of Fleet's panic log.
"""

from __future__ import annotations

import datetime
import faulthandler
import logging
import logging.handlers
import os
import sys
from pathlib import Path
from typing import TextIO

from desktop_tray.user_paths import ERR_FILE_NAME, LOG_FILE_NAME

MAX_BYTES = 25 * 1024 * 1024
BACKUPS = 3
FORMAT = "time=%(asctime)s level=%(levelname)s logger=%(name)s %(message)s"

_err_handle: list[TextIO] = []


def configure_stderr_logging(level: int = logging.WARNING) -> None:
    """For one-shot commands (``status``): nothing written to the user's log directory."""
    logging.basicConfig(level=level, format=FORMAT, stream=sys.stderr, force=True)


def configure_file_logging(directory: Path, *, debug: bool = False) -> Path:
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    log_path = directory / LOG_FILE_NAME
    file_handler = logging.handlers.RotatingFileHandler(
        log_path, maxBytes=MAX_BYTES, backupCount=BACKUPS, encoding="utf-8"
    )
    file_handler.setFormatter(logging.Formatter(FORMAT))
    stderr_handler = logging.StreamHandler(sys.stderr)
    stderr_handler.setLevel(logging.WARNING)
    stderr_handler.setFormatter(logging.Formatter(FORMAT))
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.addHandler(file_handler)
    root.addHandler(stderr_handler)
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # its INFO lines carry request URLs, i.e. the token
    logging.getLogger("httpcore").setLevel(logging.WARNING)
    logging.getLogger("PIL").setLevel(logging.WARNING)
    _start_err_file(directory / ERR_FILE_NAME)
    return log_path


def _start_err_file(path: Path) -> None:
    try:
        handle = open(path, "w", encoding="utf-8")  # noqa: SIM115 - kept open for the life of the process
    except OSError:
        return
    handle.write(f"fleet-desktop started at {datetime.datetime.now(datetime.UTC).isoformat()} pid {os.getpid()}\n")
    handle.flush()
    faulthandler.enable(file=handle)
    _err_handle.append(handle)
