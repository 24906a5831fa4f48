"""The pystray side of the tray: the icon, its tooltip, and a menu regenerated from ``render_menu``'s items.

The pystray module is passed in (imported lazily by ``tray_backend``), so tests can hand over a dummy-backend
namespace. The icon's name is ``fleet-desktop`` (the xorg backend's window: WM_NAME ``Fleet Desktop``, WM_CLASS
``fleet-desktopSystemTrayIcon`` / ``fleet-desktop``). Separators follow Fleet's layout (after the version line and
before About Fleet); My device is the default item, which backends without a menu (xorg) run on a click.

``show()`` may be called from any thread; ``run()`` only on the main thread.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from types import ModuleType
from typing import Any

from desktop_tray.icons import IconTheme, draw_icon
from desktop_tray.menu_state import TOOLTIP, IconStatus, ItemKey, MenuItemView

log = logging.getLogger(__name__)

ICON_NAME = "fleet-desktop"
_SEPARATOR_AFTER = frozenset({ItemKey.VERSION})
_SEPARATOR_BEFORE = frozenset({ItemKey.ABOUT})


class TrayAdapter:
    def __init__(
        self,
        pystray: ModuleType | Any,
        *,
        on_click: Callable[[ItemKey], object],
        items: tuple[MenuItemView, ...],
        status: IconStatus,
        theme: IconTheme = IconTheme.DARK,
        hide_when_healthy: bool = False,
    ) -> None:
        self._pystray = pystray
        self._on_click = on_click
        self._items = items
        self._status = status
        self._theme = theme
        self._hide_when_healthy = hide_when_healthy
        self.ready = threading.Event()
        self.on_ready: Callable[[], object] | None = None  # called on pystray's setup thread
        self._abandoned = False
        self._stop_lock = threading.Lock()
        self._stopping = False
        menu = pystray.Menu(self._menu_items)
        self.icon = pystray.Icon(ICON_NAME, draw_icon(status, theme), TOOLTIP, menu)

    # --- menu ------------------------------------------------------------------------------------------------

    @property
    def items(self) -> tuple[MenuItemView, ...]:
        return self._items

    def _action(self, key: ItemKey) -> Callable[[Any, Any], None]:
        def activate(_icon: Any, _item: Any) -> None:
            try:
                self._on_click(key)
            except Exception:
                log.exception("event=menu_action_failed item=%s", key.value)

        return activate

    def _menu_items(self) -> tuple[Any, ...]:
        """pystray calls this whenever it (re)builds the native menu: the items of the latest rendering."""
        item_class = self._pystray.MenuItem
        separator = self._pystray.Menu.SEPARATOR
        built: list[Any] = []
        for view in self._items:
            if view.key in _SEPARATOR_BEFORE:
                built.append(separator)
            built.append(
                item_class(
                    view.title,
                    self._action(view.key),
                    enabled=view.enabled,
                    visible=view.visible,
                    default=view.key is ItemKey.MY_DEVICE,
                )
            )
            if view.key in _SEPARATOR_AFTER:
                built.append(separator)
        return tuple(built)

    def wanted_visible(self) -> bool:
        return not (self._hide_when_healthy and self._status is IconStatus.CONNECTED)

    # --- updates (any thread) -------------------------------------------------------------------------------

    def show(self, items: tuple[MenuItemView, ...], status: IconStatus) -> None:
        self._items = items
        try:
            if status is not self._status:
                self._status = status
                self.icon.icon = draw_icon(status, self._theme)
            if self.ready.is_set():
                self.icon.update_menu()
                self._apply_visibility()
        except Exception:
            log.exception("event=tray_update_failed")

    def _apply_visibility(self) -> None:
        wanted = self.wanted_visible()
        if bool(self.icon.visible) != wanted:
            self.icon.visible = wanted

    def redock(self) -> None:
        """Show the icon again (the xorg backend docks when its image is set while a tray owner exists)."""
        try:
            self.icon.icon = draw_icon(self._status, self._theme)
            if self.wanted_visible() and not self.icon.visible:
                self.icon.visible = True
        except Exception:
            log.exception("event=tray_redock_failed")

    # --- lifecycle -------------------------------------------------------------------------------------------

    def _setup(self, icon: Any) -> None:
        if self._abandoned:
            return
        try:
            icon.visible = self.wanted_visible()
        except Exception:
            log.exception("event=tray_show_failed")
        self.ready.set()
        log.info("event=tray_ready")
        if self.on_ready is not None:
            try:
                self.on_ready()
            except Exception:
                log.exception("event=tray_ready_hook_failed")

    def run(self) -> None:
        """Blocks on the main thread until ``stop()``; exceptions propagate to the caller."""
        try:
            self.icon.run(self._setup)
        finally:
            if not self.ready.is_set():
                self.abandon()

    def stop(self) -> None:
        """Idempotent: a second stop would be dispatched to a loop that is gone and wait for it forever."""
        with self._stop_lock:
            if self._stopping:
                return
            self._stopping = True
        try:
            if self.ready.is_set():
                self.icon.stop()
            else:  # pystray's stop() ignores an icon that never became ready; ask the backend's loop directly
                self.icon._stop()
        except Exception:
            log.debug("event=tray_stop_failed", exc_info=True)

    def abandon(self) -> None:
        """After ``run()`` ended before the icon became ready: release pystray's waiting setup thread, which
        would otherwise block the interpreter's exit."""
        self._abandoned = True
        queue = getattr(self.icon, "_Icon__queue", None)
        if queue is not None and not self.ready.is_set():
            try:
                queue.put(False)
            except Exception:
                log.debug("event=tray_abandon_failed", exc_info=True)
