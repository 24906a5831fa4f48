"""Noticing that this machine is not the host our files belong to (docs/reference/orbit-behaviour.md §12.2).

A machine cloned, restored onto other hardware or migrated keeps orbit's files but not its hardware UUID; then the
node key, the device token and osquery's database belong to another host, and using them would overwrite that
host's record. Fleet checks this on macOS only and exits; we check everywhere and start over in place.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from orbit.root_layout import RootLayout
from safe_fs.atomic_write import PUBLIC_MODE, write_atomic

log = logging.getLogger(__name__)


def check_identity(layout: RootLayout, osquery_db: Path, hardware_uuid: str) -> dict[str, str] | None:
    """Record ``hardware_uuid``; when it differs from the recorded one, discard the old identity and say so."""
    path = layout.hardware_uuid
    try:
        recorded = path.read_text(encoding="utf-8").strip() or None
    except FileNotFoundError:
        recorded = None
    changed = None
    if recorded is not None and recorded != hardware_uuid:
        log.error(
            "event=host_identity_changed recorded=%s now=%s action=%r",
            recorded,
            hardware_uuid,
            "re-enrolling as a new host (node key, device token and osquery database discarded)",
        )
        for stale in (layout.node_key, layout.device_token):
            stale.unlink(missing_ok=True)
        if osquery_db.is_dir():
            shutil.rmtree(osquery_db, ignore_errors=True)
        else:
            osquery_db.unlink(missing_ok=True)
        changed = {"from": recorded, "to": hardware_uuid}
    if recorded != hardware_uuid:
        write_atomic(path, hardware_uuid, PUBLIC_MODE)
    return changed
