"""orbit's version, commit and build date (``orbit version``).

A frozen build stamps them at build time; a launcher script for a published test/demo build sets
``ORBIT_BUILD_VERSION`` inline on its exec line (the equivalent of the stamp), so two published launchers are two
versions. Otherwise the installed distribution's version is used.
"""

from __future__ import annotations

import os
from importlib import metadata

BUILD_VERSION_ENV = "ORBIT_BUILD_VERSION"
COMMIT = os.environ.get("ORBIT_BUILD_COMMIT", "none")
DATE = os.environ.get("ORBIT_BUILD_DATE", "unknown")


def orbit_version() -> str:
    stamped = os.environ.get(BUILD_VERSION_ENV, "").strip()
    if stamped:
        return stamped
    try:
        return metadata.version("orbit-suite")
    except metadata.PackageNotFoundError:
        return "0.0.0+unknown"


def version_text() -> str:
    return f"orbit {orbit_version()}\ncommit - {COMMIT}\ndate - {DATE}\n"
