"""fleet-desktop as a supervised child of the agent: which binary, which session, which environment."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path

from orbit.children.desktop_launch import DesktopLauncher, desktop_environment
from orbit.children.gui_session import CurrentUserSessionFinder, GuiSessionFinder
from orbit.children.gui_session_linux import LinuxSessionFinder
from orbit.children.gui_session_macos import MacSessionFinder
from orbit.children.gui_session_windows import WindowsSessionFinder
from orbit.children.restart_policy import RestartPolicy
from orbit.children.supervisor import ChildSpec
from orbit.root_layout import RootLayout

# tests and the demo run orbit as root without a logind session: use orbit's own user and display instead
CURRENT_SESSION_ENV = "ORBIT_DEV_DESKTOP_CURRENT_SESSION"


def session_finder(platform: str, environ: Mapping[str, str]) -> GuiSessionFinder:
    as_root = hasattr(os, "geteuid") and os.geteuid() == 0
    if not as_root or environ.get(CURRENT_SESSION_ENV) == "1":
        return CurrentUserSessionFinder(dict(environ))
    return default_finder(platform)


def default_finder(platform: str) -> GuiSessionFinder:
    """The finder for ``platform`` (``linux``, ``macos`` or ``windows``)."""
    if platform == "windows":
        return WindowsSessionFinder()
    if platform == "macos":
        return MacSessionFinder()
    return LinuxSessionFinder()


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError:
        return ""


def desktop_child(
    layout: RootLayout,
    executable: Callable[[], Path | None],
    *,
    platform: str,
    environ: Mapping[str, str],
    fleet_url: str,
    fleet_certificate: Path | None,
    insecure: bool,
    alternative_browser_host: str | None,
    retry_interval: float,
    policy: RestartPolicy,
) -> tuple[DesktopLauncher, ChildSpec]:
    def env() -> dict[str, str]:
        has_client = layout.fleet_client_cert.is_file() and layout.fleet_client_key.is_file()
        return desktop_environment(
            fleet_url=fleet_url,
            identifier_path=layout.device_token,
            root_dir=layout.root,
            fleet_root_ca=fleet_certificate,
            insecure=insecure,
            client_cert_pem=_read(layout.fleet_client_cert) if has_client else "",
            client_key_pem=_read(layout.fleet_client_key) if has_client else "",
            alternative_browser_host=alternative_browser_host,
            token_at_launch=None,  # the token travels by file only (never argv or a long-lived variable)
            orbit_environ=environ,
        )

    launcher = DesktopLauncher(
        session_finder(platform, environ),
        executable,
        env,
        platform,  # type: ignore[arg-type]
        pidfile=layout.desktop_pidfile,
    )
    spec = launcher.child_spec(retry_interval=retry_interval, policy=policy)
    return launcher, spec
