"""orbitctl: the admin tool.

Owns the installer builders (deb, rpm, pkg, msi), the staged filesystem layout shared by all formats, the
service/launchd/MSI templates, and the TUF repository tooling (``packager/updates/``). It uses ``tuf_updates``
(client side) to fetch binaries and never imports ``server_stub``.
"""

__version__ = "0.1.0"

import sys

# httpx imports its command-line tool (click, pygments and more) whenever those happen to be installed; orbitctl
# never uses it, and a failed import of that one module is what httpx itself expects when they are not. Blocking
# it shortens every orbitctl start by ≈ 35 ms (benchmarks/packager_speed.py times the whole command).
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
