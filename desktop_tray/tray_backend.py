"""Finding a tray to live in, without dying when there is none (python-stack.md §2).

pystray chooses its backend when it is imported (``PYSTRAY_BACKEND`` ∈ appindicator, gtk, xorg, dummy …; unset on
Linux: appindicator → gtk → xorg) and, without a display, fails with ``Xlib.error.DisplayNameError`` rather than
``ImportError``. So pystray is imported here, lazily, behind a broad ``except``; every failure becomes
``TrayUnavailableError`` and the app falls back to notifications.

``xembed_tray_present`` asks the X server whether anything owns ``_NET_SYSTEM_TRAY_S<screen>`` (trayer, a panel's
notification area). It is meaningful for the ``xorg`` and ``gtk`` backends, which dock through XEmbed.
"""

from __future__ import annotations

import importlib
import logging
import sys
import threading
from collections.abc import Callable, Mapping
from types import ModuleType

from desktop_tray.config import Platform

log = logging.getLogger(__name__)

BACKEND_ENV = "PYSTRAY_BACKEND"
XEMBED_BACKENDS = frozenset({"xorg", "gtk"})
GLIB_BACKENDS = frozenset({"gtk", "appindicator"})


class TrayUnavailableError(Exception):
    """No tray can be shown: the reason is for the log and the notification."""


def has_graphical_session(environ: Mapping[str, str], platform: Platform) -> bool:
    if platform != "linux":
        return True
    return bool(environ.get("DISPLAY") or environ.get("WAYLAND_DISPLAY"))


def load_pystray(environ: Mapping[str, str], platform: Platform) -> ModuleType:
    """Import pystray (its backend chosen by ``PYSTRAY_BACKEND`` or its own order) or explain why not."""
    requested = environ.get(BACKEND_ENV, "")
    if requested != "dummy" and not has_graphical_session(environ, platform):
        raise TrayUnavailableError("no graphical session (neither DISPLAY nor WAYLAND_DISPLAY is set)")
    try:
        module = importlib.import_module("pystray")
    except Exception as exc:  # DisplayNameError, gi errors, ImportError: all mean "no tray here"
        for name in [m for m in sys.modules if m == "pystray" or m.startswith("pystray.")]:
            del sys.modules[name]  # a half-imported package must not be mistaken for a working one
        raise TrayUnavailableError(f"pystray cannot start: {exc.__class__.__name__}: {exc}") from None
    return module


def backend_name(module: ModuleType) -> str:
    """``xorg``, ``gtk``, ``appindicator``, ``dummy`` … from the Icon class pystray picked."""
    icon_module = str(getattr(module.Icon, "__module__", ""))
    tail = icon_module.rsplit(".", 1)[-1]
    return "dummy" if tail == "_base" else tail.lstrip("_")


def xembed_tray_present(display_name: str | None = None) -> bool | None:
    """True/False when the X server answers, None when that cannot be known (no Xlib, no X server)."""
    try:
        xdisplay = importlib.import_module("Xlib.display")
        xlib = importlib.import_module("Xlib.X")
    except Exception:
        return None
    try:
        display = xdisplay.Display(display_name)
    except Exception:
        return None
    try:
        screen = display.get_default_screen()
        atom = display.intern_atom(f"_NET_SYSTEM_TRAY_S{screen}")
        owner = display.get_selection_owner(atom)
        return bool(owner != xlib.NONE and getattr(owner, "id", owner) != xlib.NONE)
    except Exception:
        return None
    finally:
        try:
            display.close()
        except Exception:
            log.debug("event=x_display_close_failed")


SNI_WATCHER = "org.kde.StatusNotifierWatcher"


def sni_watcher_present() -> bool | None:
    """True/False when the session bus answers whether a StatusNotifier watcher (the host appindicator icons
    register with) is running; None when that cannot be known (no PyGObject, no session bus)."""
    try:
        gio = importlib.import_module("gi.repository.Gio")
        glib = importlib.import_module("gi.repository.GLib")
        bus = gio.bus_get_sync(gio.BusType.SESSION, None)
        reply = bus.call_sync(
            "org.freedesktop.DBus",
            "/org/freedesktop/DBus",
            "org.freedesktop.DBus",
            "NameHasOwner",
            glib.Variant("(s)", (SNI_WATCHER,)),
            glib.VariantType.new("(b)"),
            gio.DBusCallFlags.NONE,
            2000,
            None,
        )
        return bool(reply.unpack()[0])
    except Exception:
        return None


def tray_host_present(backend: str) -> bool | None:
    """Is there anything to show an icon of ``backend``? appindicator docks in a StatusNotifier host or, through
    Ayatana's fallback, in an XEmbed tray; gtk and xorg need the XEmbed tray."""
    xembed = xembed_tray_present()
    if backend != "appindicator" or xembed:
        return xembed
    sni = sni_watcher_present()
    if sni:
        return True
    if sni is None and xembed is None:
        return None
    return False


def run_on_glib_main_loop(action: Callable[[], None]) -> bool:
    """Schedule ``action`` once on the GLib main loop (the main thread under the gtk backends)."""

    def once() -> bool:
        try:
            action()
        except Exception:
            log.debug("event=glib_callback_failed", exc_info=True)
        return False  # do not repeat

    try:
        glib = importlib.import_module("gi.repository.GLib")
        glib.idle_add(once)
    except Exception:
        log.debug("event=glib_unavailable", exc_info=True)
        return False
    return True


def enable_xorg_clicks(icon: object) -> bool:
    """pystray's xorg backend (0.19.5) handles ButtonPress but never selects it on its window, so clicks on the
    docked icon are lost. Select it, so that a left click runs the default item (My device). Best effort."""
    window = getattr(icon, "_window", None)
    display = getattr(icon, "_display", None)
    if window is None or display is None:
        return False
    try:
        xlib = importlib.import_module("Xlib.X")
        window.change_attributes(event_mask=xlib.ExposureMask | xlib.StructureNotifyMask | xlib.ButtonPressMask)
        display.flush()
    except Exception:
        log.debug("event=xorg_click_setup_failed", exc_info=True)
        return False
    return True


_XORG_DISPATCHED = ("_show", "_hide", "_update_icon", "_update_title", "_stop")


def serialize_xorg_calls(icon: object) -> bool:
    """Two fixes for pystray's xorg backend (0.19.5); best effort, False when they cannot be applied.

    * Calls from other threads (show, hide, a new image, title, stop) are messages to the icon's own window that
      the X loop thread runs; pystray sends and flushes them over the icon's X connection from the calling thread.
      python-xlib (0.33) can lose a wake-up when two threads share a connection: the loop thread then waits for a
      reply nobody reads until another thread touches the connection (an icon never ready: setup stuck in
      ``visible = True``; or frozen until the next update). Send those messages over a second connection, so only
      the loop uses the icon's own.
    * Dock once: pystray re-sends SYSTEM_TRAY_REQUEST_DOCK on every image change. Trays built on the old egg tray
      manager (trayer) make a new socket per request, and two requests handled in one batch leave the icon window
      back at the root, undocked. Dock again only after an undock or when the tray manager went away.
    """
    window = getattr(icon, "_window", None)
    display = getattr(icon, "_display", None)
    replies = getattr(icon, "_queue", None)
    if window is None or display is None or replies is None:
        return False
    try:
        xdisplay = importlib.import_module("Xlib.display")
        xlib = importlib.import_module("Xlib.X")
        side = xdisplay.Display(display.get_display_name())
        target = side.create_resource_object("window", window.id)
        atoms = {name: display.intern_atom(f"_PYSTRAY_{name.upper()}") for name in _XORG_DISPATCHED}
    except Exception:
        log.debug("event=xorg_serialize_setup_failed", exc_info=True)
        return False
    send_lock = threading.Lock()
    implementation = type(icon)

    def dispatcher(name: str, atom: int) -> Callable[[], None]:
        run_here = getattr(implementation, name)

        def call() -> None:
            loop = getattr(icon, "_thread", None)
            if loop is not None and loop.ident == threading.get_ident():
                run_here(icon)
                return
            message = xdisplay.event.ClientMessage(
                window=target.id, client_type=atom, data=(32, (xlib.CurrentTime, 0, 0, 0, 0))
            )
            with send_lock:
                side.send_event(target, message, event_mask=xlib.NoEventMask)
                side.flush()
            result = replies.get()
            if result is not True:
                raise result[1].with_traceback(result[2])

        return call

    def assert_docked() -> None:
        if getattr(icon, "_systray_manager", None) is None:
            icon._dock_window()  # type: ignore[attr-defined]
        assert icon._systray_manager  # type: ignore[attr-defined]

    for name, atom in atoms.items():
        setattr(icon, name, dispatcher(name, atom))
    icon._assert_docked = assert_docked  # type: ignore[attr-defined]
    return True
