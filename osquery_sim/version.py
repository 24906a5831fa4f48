"""The simulator's version: the version of the build it runs as, with build metadata that says "simulator".

A frozen build stamps ``ORBIT_BUILD_VERSION`` (build_scripts/freeze.py's runtime hook) and a launcher build sets it
on its exec line, so an osqueryd-sim published as 5.15.0 reports ``5.15.0+sim`` in ``--version``, in
``osquery_info.version`` and in its User-Agent — and a server sees the osqueryd update happen. Without a stamp it is
osquery's version it imitates, ``5.14.1+sim``.
"""

from __future__ import annotations

import os

OSQUERY_VERSION = "5.14.1"
BUILD_VERSION_ENV = "ORBIT_BUILD_VERSION"


def sim_version(environ: dict[str, str] | None = None) -> str:
    stamped = (os.environ if environ is None else environ).get(BUILD_VERSION_ENV, "").strip()
    if not stamped:
        return f"{OSQUERY_VERSION}+sim"
    if "sim" in stamped:
        return stamped
    return f"{stamped}.sim" if "+" in stamped else f"{stamped}+sim"


SIM_VERSION = sim_version()  # this process's version (the environment does not change under a running program)
