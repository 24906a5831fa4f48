"""An executable named like osqueryd that runs osqueryd-sim under this interpreter (for code that execs a path)."""

from __future__ import annotations

import stat
import sys
from pathlib import Path

import osquery_sim


def make_osqueryd(directory: Path, name: str = "osqueryd") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    package_root = Path(osquery_sim.__file__).resolve().parent.parent
    path.write_text(f'#!/bin/sh\nPYTHONPATH="{package_root}" exec "{sys.executable}" -m osquery_sim "$@"\n')
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path
