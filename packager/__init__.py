"""orbitctl: the admin tool.

Owns the installer builders (deb, rpm, pkg, msi), the staged filesystem layout shared by all formats, the
service/launchd/MSI templates, and the TUF repository tooling (``packager/updates/``). It uses ``tuf_updates``
(client side) to fetch binaries and never imports ``server_stub``.
"""

__version__ = "0.1.0"
