"""The running app mirrors its state into a JSON file, so tests, ``orbit doctor`` and people can observe it.

Default ``<log dir>/Fleet/fleet-desktop.status.json`` (override: ``FLEET_DESKTOP_STATUS_FILE``). Content: the
``status --json`` document plus ``pid``, ``tray`` (``starting`` | ``icon`` | ``notifications``), ``backend``
(pystray's backend name or null), ``tray_host`` (false when notifications stand in for a missing tray) and
``updated_at``. Written atomically (temp file + fsync + rename), mode 0600; never holds the token.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path


def write_json_atomically(path: Path, document: dict[str, object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # mode 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(document, handle, ensure_ascii=False, indent=1)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise
