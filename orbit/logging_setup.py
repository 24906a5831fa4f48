"""orbit's logs: ``<RFC3339 UTC> LEVEL logger message key=value`` on stderr (journald / launchd files), plus a
size-capped rotating file with ``--log-file`` (Fleet's 25 MB × 3 backups), plus any extra handler (the in-memory
ring buffer behind the ``fleetd_logs`` table).
"""

from __future__ import annotations

import logging
import logging.handlers
import sys
import time
from collections.abc import Sequence
from pathlib import Path

LOG_FILE_MAX_BYTES = 25 * 1024 * 1024
LOG_FILE_BACKUPS = 3


class UtcFormatter(logging.Formatter):
    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802 - stdlib name
        base = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        return f"{base}.{int(record.msecs):03d}Z"


FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


def configure_logging(
    *, debug: bool, log_file: Path | None, extra_handlers: Sequence[logging.Handler] = (), stderr: bool = True
) -> None:
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    formatter = UtcFormatter(FORMAT)
    handlers: list[logging.Handler] = []
    if stderr:
        handlers.append(logging.StreamHandler(sys.stderr))
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(
            logging.handlers.RotatingFileHandler(
                log_file, maxBytes=LOG_FILE_MAX_BYTES, backupCount=LOG_FILE_BACKUPS, encoding="utf-8"
            )
        )
    for handler in (*handlers, *extra_handlers):
        handler.setFormatter(formatter)
        root.addHandler(handler)
    for noisy in ("httpx", "httpcore", "tuf", "securesystemslib", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if debug else logging.WARNING)
