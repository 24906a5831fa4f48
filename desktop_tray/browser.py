"""The pages the menu opens (docs/reference/orbit-behaviour.md §5) and how they are opened.

URLs: My device ``<url>/device/<token>``, Self-service ``<url>/device/<token>/self-service``, About Fleet
``<url>/api/latest/fleet/device/<token>/transparency``. The host part is replaced by the server's
``alternative_browser_host`` when it sends one, else by ``FLEET_DESKTOP_ALTERNATIVE_BROWSER_HOST`` (agents may
reach Fleet through an mTLS-only name browsers cannot use). Opening happens on a short-lived thread so a slow
browser launcher never blocks the tray's event loop.
"""

from __future__ import annotations

import logging
import threading
import webbrowser
from urllib.parse import quote, urlsplit, urlunsplit

log = logging.getLogger(__name__)


def effective_browser_host(server_host: str | None, env_host: str | None) -> str | None:
    return server_host or env_host or None


def replace_host(url: str, host: str | None) -> str:
    if not host:
        return url
    if "://" in host:
        host = urlsplit(host).netloc
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=host))


def _base(fleet_url: str, host: str | None) -> str:
    return replace_host(fleet_url.rstrip("/"), host)


def my_device_url(fleet_url: str, token: str, host: str | None = None) -> str:
    return f"{_base(fleet_url, host)}/device/{quote(token, safe='')}"


def self_service_url(fleet_url: str, token: str, host: str | None = None) -> str:
    return f"{my_device_url(fleet_url, token, host)}/self-service"


def transparency_url(fleet_url: str, token: str, host: str | None = None) -> str:
    return f"{_base(fleet_url, host)}/api/latest/fleet/device/{quote(token, safe='')}/transparency"


def open_in_background(url: str) -> None:
    """The default opener: the user's default browser (``webbrowser``: xdg-open, ``open``, the Windows shell)."""

    def run() -> None:
        try:
            if not webbrowser.open(url):
                log.warning("event=browser_open_failed reason=%r", "no browser could be started")
        except Exception as exc:  # a broken launcher must not take the tray down
            log.warning("event=browser_open_failed reason=%r", exc.__class__.__name__)

    threading.Thread(target=run, name="fleet-desktop-browser", daemon=True).start()
