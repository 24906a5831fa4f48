"""fleet-desktop's version (``fleet-desktop --version`` and the ``Fleet Desktop v<version>`` menu item).

A launcher script for a published test/demo build sets ``FLEET_DESKTOP_BUILD_VERSION`` inline on its exec line (the
equivalent of a build stamp); otherwise the installed ``orbit-suite`` distribution's version is used.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from importlib import metadata

BUILD_VERSION_ENV = "FLEET_DESKTOP_BUILD_VERSION"
DISTRIBUTION = "orbit-suite"
UNKNOWN_VERSION = "0.0.0+unknown"


def desktop_version(environ: Mapping[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ
    stamped = env.get(BUILD_VERSION_ENV, "").strip()
    if stamped:
        return stamped
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return UNKNOWN_VERSION
