"""The demo's look at the tray: the environment orbit gives fleet-desktop, and ``status --json`` parsed.

``fleet-desktop status --json`` does one round of the tray's checks (token file → the server's ``/desktop``
endpoint) without a GUI and prints ``{"state", "items": [{"title", "enabled", "visible"}], "failing_policies"}``
(docs/contracts.md). The environment is built by orbit's own ``desktop_environment``, so the demo's one-shot child sees
exactly the ``FLEET_DESKTOP_*`` variables orbit would launch the tray with.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from orbit.children.desktop_launch import desktop_environment
from orbit.root_layout import RootLayout

STATES = ("connecting", "connected", "offline")


class TrayStatusError(ValueError):
    pass


@dataclass(frozen=True)
class TrayItem:
    title: str
    enabled: bool
    visible: bool


@dataclass(frozen=True)
class TrayStatus:
    state: str
    items: tuple[TrayItem, ...]
    failing_policies: int

    def summary(self) -> str:
        """``connected · My device (0) · …``: the state and the menu entries a user would see."""
        shown = [item.title + ("" if item.enabled else " (disabled)") for item in self.items if item.visible]
        return " · ".join([self.state, *shown, f"failing policies {self.failing_policies}"])


def tray_environment(
    *, fleet_url: str, root_dir: Path, ca_cert: Path, orbit_environ: Mapping[str, str]
) -> dict[str, str]:
    """What orbit (``--fleet-desktop``, no client certificate, no browser host, run with ``orbit_environ``) passes
    to fleet-desktop: among others ``FLEET_DESKTOP_DEVICE_IDENTIFIER_PATH`` = ``<root>/identifier``."""
    return desktop_environment(
        fleet_url=fleet_url,
        identifier_path=RootLayout(root_dir).device_token,
        root_dir=root_dir,
        fleet_root_ca=ca_cert,
        insecure=False,
        client_cert_pem="",
        client_key_pem="",
        alternative_browser_host=None,
        token_at_launch=None,
        orbit_environ=orbit_environ,
    )


def parse_status(text: str) -> TrayStatus:
    """The contract's document, or TrayStatusError saying what is off."""
    try:
        data = json.loads(text)
    except ValueError:
        raise TrayStatusError("not JSON") from None
    if not isinstance(data, dict):
        raise TrayStatusError("not a JSON object")
    state, raw_items, failing = data.get("state"), data.get("items"), data.get("failing_policies")
    if state not in STATES:
        raise TrayStatusError(f"state {state!r} is not one of {', '.join(STATES)}")
    if not isinstance(raw_items, list):
        raise TrayStatusError("items is not a list")
    if not isinstance(failing, int) or isinstance(failing, bool):
        raise TrayStatusError(f"failing_policies {failing!r} is not a number")
    items: list[TrayItem] = []
    for raw in raw_items:
        if not isinstance(raw, dict):
            raise TrayStatusError(f"menu item {raw!r} is not an object")
        title, enabled, visible = raw.get("title"), raw.get("enabled"), raw.get("visible")
        if not isinstance(title, str) or not isinstance(enabled, bool) or not isinstance(visible, bool):
            raise TrayStatusError(f"menu item {raw!r} lacks a title, enabled or visible")
        items.append(TrayItem(title, enabled, visible))
    return TrayStatus(str(state), tuple(items), failing)
