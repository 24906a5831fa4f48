"""Folders left in the temporary directory by our one-file builds that were killed.

A one-file PyInstaller build (orbit, osqueryd-sim) is a bootloader that unpacks the program into
``$TMPDIR/_MEI<pid><random>`` (``<pid>``: the bootloader's pid, 8 hex digits), runs it, and removes the folder when
the program ends. A bootloader killed by SIGKILL — by orbit after a hang, by systemd after its stop timeout, by the
OOM killer, or a power cut — removes nothing: 20–45 MB stay behind each time, and an osqueryd in a crash loop on a
host that runs for years fills its disk.

orbit removes such a folder when all of this holds (else it leaves it alone):

* its name is the bootloader's pattern and it is a real folder (not a symlink), owned by orbit's own user;
* it holds ``orbit-suite-bundle``, the marker ``build_scripts/freeze.py`` puts into every one-file build of ours, so
  another program's folder is never touched, even a dead one's;
* the process whose pid is in its name is gone.

It runs before each start of a supervised child (so also when orbit starts), in the temporary directory the child
and orbit share.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path

import psutil

log = logging.getLogger(__name__)

BUNDLE_MARKER = "orbit-suite-bundle"
_BUNDLE_NAME = re.compile(r"^_MEI([0-9a-f]{8})[A-Za-z0-9_]{6}$")


def stale_bundles(directory: Path, alive: Callable[[int], bool] = psutil.pid_exists) -> list[Path]:
    """Our bundle folders in ``directory`` whose bootloader is gone."""
    found: list[Path] = []
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return found
    for entry in entries:
        match = _BUNDLE_NAME.match(entry.name)
        if match is None:
            continue
        try:
            info = entry.stat(follow_symlinks=False)
            marker = os.lstat(os.path.join(entry.path, BUNDLE_MARKER))
        except OSError:
            continue
        if not stat.S_ISDIR(info.st_mode) or not stat.S_ISREG(marker.st_mode):
            continue
        if hasattr(os, "geteuid") and info.st_uid != os.geteuid():
            continue
        pid = int(match.group(1), 16)
        if pid in (os.getpid(), os.getppid()) or alive(pid):
            continue
        found.append(Path(entry.path))
    return found


def sweep_stale_bundles(directory: Path | None = None, alive: Callable[[int], bool] = psutil.pid_exists) -> int:
    """Remove :func:`stale_bundles` of ``directory`` (default: the temporary directory); returns how many went."""
    where = directory if directory is not None else Path(tempfile.gettempdir())
    removed = 0
    for folder in stale_bundles(where, alive):
        try:
            shutil.rmtree(folder)
        except OSError as exc:
            log.warning("event=stale_bundle_not_removed path=%s error=%s", folder, exc)
            continue
        removed += 1
        log.info("event=stale_bundle_removed path=%s", folder)
    return removed
