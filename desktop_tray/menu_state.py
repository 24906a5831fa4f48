"""The tray menu as a pure state machine (docs/reference/orbit-behaviour.md §10.3).

``apply(state, event)`` folds a server answer (or a token-file change) into a new ``TrayState``; ``render_menu``
turns a state into the list of items Fleet's menu shows, in Fleet's order, each ``{title, enabled, visible}``.
The same rendering feeds the pystray adapter, the notification fallback and ``fleet-desktop status --json``.
No clocks, sockets or files here.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace

from desktop_tray.config import Platform
from desktop_tray.server_answers import (
    FleetFree,
    ServerAnswer,
    ServerFailure,
    SummaryReceived,
    TokenUnavailable,
    Unauthorized,
    Unreachable,
)

VERSION_TITLE = "Fleet Desktop v{version}"
CONNECTING_TITLE = "Connecting..."
MY_DEVICE_TITLE = "My device"
OFFLINE_TITLE = "🛜🚫 Your computer is not connected to Fleet."
SELF_SERVICE_TITLE = "Self-service"
ABOUT_TITLE = "About Fleet"
TOOLTIP = "Fleet Desktop"


class Connection(enum.Enum):
    CONNECTING = "connecting"
    CONNECTED = "connected"
    OFFLINE = "offline"


class ItemKey(enum.Enum):
    VERSION = "version"
    PERMANENT_ERROR = "permanent_error"
    MY_DEVICE = "my_device"
    OFFLINE_WARNING = "offline_warning"
    SELF_SERVICE = "self_service"
    ABOUT = "about"


class IconStatus(enum.Enum):
    CONNECTING = "connecting"
    CONNECTED = "connected"
    FAILING = "failing"
    OFFLINE = "offline"


@dataclass(frozen=True)
class TokenChanged:
    """The token file changed on disk: nothing is trusted until the new token validates."""


TrayEvent = ServerAnswer | TokenChanged


@dataclass(frozen=True)
class TrayState:
    connection: Connection = Connection.CONNECTING
    failing_policies: int | None = None  # None: unknown (Fleet Free, never asked)
    fleet_free: bool = False
    self_service: bool | None = None  # the server's flag; None means "show"
    server_browser_host: str | None = None  # DesktopSummary.alternative_browser_host
    permanent_error: str | None = None


@dataclass(frozen=True)
class MenuItemView:
    key: ItemKey
    title: str
    enabled: bool
    visible: bool

    def as_json(self) -> dict[str, object]:
        return {"title": self.title, "enabled": self.enabled, "visible": self.visible}


def initial_state(permanent_error: str | None = None) -> TrayState:
    if permanent_error:
        return TrayState(connection=Connection.OFFLINE, permanent_error=permanent_error)
    return TrayState()


def apply(state: TrayState, event: TrayEvent) -> TrayState:
    if state.permanent_error:
        return state  # the fixed error stays until the process ends
    match event:
        case SummaryReceived(summary=summary):
            return replace(
                state,
                connection=Connection.CONNECTED,
                failing_policies=summary.failing_policies_count or 0,
                fleet_free=False,
                self_service=summary.self_service,
                server_browser_host=summary.alternative_browser_host,
            )
        case FleetFree():
            return replace(
                state, connection=Connection.CONNECTED, failing_policies=None, fleet_free=True, self_service=False
            )
        case TokenChanged() | Unauthorized() | TokenUnavailable():
            return replace(state, connection=Connection.CONNECTING)
        case Unreachable():
            return replace(state, connection=Connection.OFFLINE)
        case ServerFailure():
            # the server answered, so we are not offline; a connected menu keeps its last known content
            if state.connection is Connection.OFFLINE:
                return replace(state, connection=Connection.CONNECTING)
            return state
    raise AssertionError(f"unhandled event {event!r}")  # pragma: no cover


def my_device_title(failing: int | None, platform: Platform) -> str:
    """The badge: ``🔴 My device (N)`` / ``🟢 My device``; on Windows (no colour emoji) plain words."""
    if failing is None:
        return MY_DEVICE_TITLE
    if platform == "windows":
        if failing == 1:
            return "My device (1 issue)"
        if failing > 1:
            return f"My device ({failing} issues)"
        return MY_DEVICE_TITLE
    if failing > 0:
        return f"🔴 My device ({failing})"
    return f"🟢 {MY_DEVICE_TITLE}"


def shows_self_service(state: TrayState) -> bool:
    return state.connection is Connection.CONNECTED and not state.fleet_free and state.self_service is not False


def render_menu(state: TrayState, *, version: str, platform: Platform) -> tuple[MenuItemView, ...]:
    version_item = MenuItemView(ItemKey.VERSION, VERSION_TITLE.format(version=version), enabled=False, visible=True)
    if state.permanent_error:
        return (version_item, MenuItemView(ItemKey.PERMANENT_ERROR, state.permanent_error, False, True))
    connected = state.connection is Connection.CONNECTED
    offline = state.connection is Connection.OFFLINE
    if connected:
        device_title = my_device_title(state.failing_policies, platform)
    elif offline:
        device_title = MY_DEVICE_TITLE
    else:
        device_title = CONNECTING_TITLE
    self_service = shows_self_service(state)
    return (
        version_item,
        MenuItemView(ItemKey.MY_DEVICE, device_title, enabled=connected, visible=not offline),
        MenuItemView(ItemKey.OFFLINE_WARNING, OFFLINE_TITLE, enabled=False, visible=offline),
        MenuItemView(ItemKey.SELF_SERVICE, SELF_SERVICE_TITLE, enabled=self_service, visible=self_service),
        MenuItemView(ItemKey.ABOUT, ABOUT_TITLE, enabled=connected, visible=not offline),
    )


def badge_count(state: TrayState) -> int:
    """The number the My device badge shows (0 when it shows none)."""
    if state.connection is Connection.CONNECTED and state.failing_policies:
        return state.failing_policies
    return 0


def icon_status(state: TrayState) -> IconStatus:
    if state.permanent_error or state.connection is Connection.OFFLINE:
        return IconStatus.OFFLINE
    if state.connection is Connection.CONNECTING:
        return IconStatus.CONNECTING
    return IconStatus.FAILING if badge_count(state) else IconStatus.CONNECTED


def status_document(state: TrayState, items: tuple[MenuItemView, ...]) -> dict[str, object]:
    """Exactly what ``fleet-desktop status --json`` prints (docs/contracts.md)."""
    return {
        "state": state.connection.value,
        "items": [item.as_json() for item in items],
        "failing_policies": badge_count(state),
    }


def describe(state: TrayState) -> str:
    """One line for logs and notifications (never a token or URL)."""
    if state.permanent_error:
        return state.permanent_error
    if state.connection is Connection.OFFLINE:
        return "Your computer is not connected to Fleet."
    if state.connection is Connection.CONNECTING:
        return "Connecting to Fleet..."
    if state.fleet_free or state.failing_policies is None:
        return "Connected to Fleet."
    count = state.failing_policies
    if count == 0:
        return "Connected to Fleet. Your device has no failing policies."
    noun = "policy" if count == 1 else "policies"
    return f"Connected to Fleet. Your device has {count} failing {noun}: open My device to fix them."
