"""The running tray app: threads, the tray (or its notification fallback), the status file, signals.

Threads:

* **main** — pystray's ``icon.run()`` for the gtk/appindicator (and macOS/Windows) backends, which need the main
  thread; without a usable tray, it just waits for the stop event while notifications stand in for the icon;
* **fleet-desktop-tray** — only for the ``xorg`` backend: its X event loop, on a daemon thread (see
  ``_run_tray``), while the main thread waits for the stop event;
* **fleet-desktop-poller** — ``DesktopController.step()`` in a loop (token watch, checks, summary polls), sleeping
  on a wake-up event between due times; every state change is published from here to the status file, the
  icon (``icon.icon = …``, ``icon.update_menu()``) and, in fallback mode, the notifier;
* **fleet-desktop-tray-watch** — waits for the icon to become ready; if it does not within
  ``tray_ready_timeout`` (or no XEmbed tray owner exists for the xorg/gtk backends), notifications join in;
* **fleet-desktop-signals** — turns SIGTERM/SIGINT/SIGQUIT into ``request_stop()`` (see ``signal_bridge``);
* pystray's own setup thread, and a short-lived thread per browser launch.

Nothing here crashes on a missing tray: every failure to show one ends in the notification fallback, and the state
machine keeps running.
"""

from __future__ import annotations

import datetime
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import ModuleType

from desktop_tray import browser
from desktop_tray.config import DesktopConfig, Platform
from desktop_tray.controller import DesktopController, DeviceApi, Opener
from desktop_tray.icons import IconTheme
from desktop_tray.menu_state import ItemKey, MenuItemView, TrayState, icon_status, status_document
from desktop_tray.notifier import APP_NAME, Notifier, NotifySend, StateNotifier
from desktop_tray.signal_bridge import SignalBridge
from desktop_tray.status_file import write_json_atomically
from desktop_tray.token_file import TokenSource
from desktop_tray.tray_adapter import TrayAdapter
from desktop_tray.tray_backend import (
    GLIB_BACKENDS,
    XEMBED_BACKENDS,
    TrayUnavailableError,
    backend_name,
    enable_xorg_clicks,
    load_pystray,
    run_on_glib_main_loop,
    serialize_xorg_calls,
    tray_host_present,
)

log = logging.getLogger(__name__)

MAX_IDLE = 60.0
POLLER_ERROR_DELAY = 5.0
TRAY_STOP_GRACE = 2.0
POLLER_STOP_GRACE = 3.0
TRAY_HOST_RECHECK = 5.0
OWN_THREAD_BACKENDS = frozenset({"xorg"})  # backends whose loop need not own the main thread
FALLBACK_MESSAGE = "No system tray is available, so Fleet Desktop will report changes as notifications."

TrayLoader = Callable[[Mapping[str, str], Platform], ModuleType]


class DesktopApp:
    def __init__(
        self,
        config: DesktopConfig,
        client: DeviceApi,
        tokens: TokenSource,
        *,
        version: str,
        environ: Mapping[str, str],
        status_path: Path | None = None,
        stop_event: threading.Event | None = None,
        clock: Callable[[], float] = time.monotonic,
        opener: Opener = browser.open_in_background,
        notifier: Notifier | None = None,
        load_tray: TrayLoader = load_pystray,
        probe_tray_host: Callable[[], bool | None] | None = None,
    ) -> None:
        self._config = config
        self._environ = environ
        self._status_path = status_path
        self._load_tray = load_tray
        self._probe_tray_host = probe_tray_host or (lambda: tray_host_present(self._backend or ""))
        self._stop = stop_event or threading.Event()
        self._wake = threading.Event()
        self._finished = threading.Event()
        self._lock = threading.RLock()
        self._adapter: TrayAdapter | None = None
        self._tray_mode = "starting"
        self._backend: str | None = None
        self._tray_host: bool | None = None
        self._notifications = False  # notifications stand in for (or accompany) the icon
        self._announced = False  # the fallback notice went out: state notifications may follow
        self._status_write_failed = False
        self._signals: SignalBridge | None = None
        self._notifier = notifier or NotifySend()
        self._state_notifier = StateNotifier(self._notifier)
        self.controller = DesktopController(
            client,
            tokens,
            clock=clock,
            version=version,
            platform=config.platform,
            fleet_url=config.fleet_url,
            env_browser_host=config.alternative_browser_host,
            opener=opener,
            permanent_error=config.permanent_error,
            on_change=self._publish,
        )

    # --- control ---------------------------------------------------------------------------------------------

    def request_stop(self) -> None:
        self._stop.set()
        self._wake.set()
        adapter = self._adapter
        if adapter is not None:
            adapter.stop()

    def _quick_stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def click(self, key: ItemKey) -> None:
        if self.controller.click(key):
            self._wake.set()

    def run(self, *, install_signals: bool = True) -> int:
        bridge = (
            SignalBridge(lambda _signum: self.request_stop(), quick=self._quick_stop, finished=self._finished)
            if install_signals
            else None
        )
        self._signals = bridge
        log.info("event=start fleet_url=%s platform=%s", self._config.fleet_url or "-", self._config.platform)
        poller = threading.Thread(target=self._poll_loop, name="fleet-desktop-poller", daemon=True)
        try:
            self._write_status()
            poller.start()
            self._run_tray()
            if not self._stop.is_set():
                self._enable_notifications("the tray stopped")
            while not self._stop.wait(5.0):
                pass
        finally:
            self._quick_stop()
            poller.join(POLLER_STOP_GRACE)  # a request in flight (timeouts up to 20 s) is not waited for
            if poller.is_alive():
                log.info("event=poller_busy action=left_behind")
            log.info("event=stop")
            self._finished.set()
            if bridge is not None:
                bridge.close()
        return 0

    # --- the poller thread -----------------------------------------------------------------------------------

    def _poll_loop(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            try:
                delay = self.controller.step()
            except Exception:
                log.exception("event=poll_failed")
                delay = POLLER_ERROR_DELAY
            self._wake.wait(min(delay, MAX_IDLE) if not math.isinf(delay) else MAX_IDLE)

    # --- the tray (main thread) ------------------------------------------------------------------------------

    def _run_tray(self) -> None:
        try:
            module = self._load_tray(self._environ, self._config.platform)
        except TrayUnavailableError as exc:
            self._enable_notifications(str(exc))
            return
        backend = backend_name(module)
        try:
            adapter = TrayAdapter(
                module,
                on_click=self.click,
                items=self.controller.items,
                status=icon_status(self.controller.state),
                theme=IconTheme(self._config.icon_theme),
                hide_when_healthy=self._config.hide_when_healthy,
            )
        except Exception as exc:
            self._enable_notifications(f"cannot create the tray icon ({backend}): {exc.__class__.__name__}: {exc}")
            return
        adapter.on_ready = self._tray_ready
        if backend == "xorg":
            enable_xorg_clicks(adapter.icon)
            serialize_xorg_calls(adapter.icon)
        with self._lock:
            self._adapter = adapter
            self._backend = backend
        if self._stop.is_set():
            return
        log.info("event=tray_start backend=%s", backend)
        threading.Thread(target=self._watch_tray, args=(adapter,), name="fleet-desktop-tray-watch", daemon=True).start()
        if backend not in OWN_THREAD_BACKENDS:
            self._drive_tray(adapter, backend)
            return
        # xorg keeps its own X connection and loop: it runs on a daemon thread, so that a loop that misses its
        # own stop (python-xlib can lose the DestroyNotify when two threads share the display) cannot hold the
        # process; the main thread stays free for signals
        tray_thread = threading.Thread(
            target=self._drive_tray, args=(adapter, backend), name="fleet-desktop-tray", daemon=True
        )
        tray_thread.start()
        while tray_thread.is_alive() and not self._stop.wait(2.0):
            pass
        if self._stop.is_set():
            adapter.stop()
            tray_thread.join(TRAY_STOP_GRACE)
            if tray_thread.is_alive():
                log.warning("event=tray_loop_not_stopped backend=%s action=left_behind", backend)

    def _drive_tray(self, adapter: TrayAdapter, backend: str) -> None:
        try:
            adapter.run()
        except Exception as exc:
            log.warning("event=tray_failed backend=%s reason=%r", backend, f"{exc.__class__.__name__}: {exc}")
            with self._lock:
                self._adapter = None
                self._tray_mode = "notifications"
            self._enable_notifications(f"the tray backend {backend} failed: {exc.__class__.__name__}")
            return
        with self._lock:
            self._adapter = None
        if not self._stop.is_set():
            log.warning("event=tray_loop_ended backend=%s", backend)

    def _tray_ready(self) -> None:
        with self._lock:
            self._tray_mode = "icon"
            adapter = self._adapter
        if self._signals is not None and self._backend in GLIB_BACKENDS:
            run_on_glib_main_loop(self._signals.reinstall)  # pystray's gtk backends reset SIGINT to SIG_DFL
        if adapter is not None:
            adapter.show(self.controller.items, icon_status(self.controller.state))
        self._write_status()
        if self._stop.is_set() and adapter is not None:
            adapter.stop()

    def _watch_tray(self, adapter: TrayAdapter) -> None:
        timeout = self._config.tray_ready_timeout
        deadline = time.monotonic() + timeout
        while not self._stop.is_set() and time.monotonic() < deadline:
            if adapter.ready.wait(0.25):
                break
        if self._stop.is_set():
            return
        if not adapter.ready.is_set():
            self._enable_notifications(f"the tray icon did not become ready within {timeout:g} s")
            return
        if self._backend not in XEMBED_BACKENDS and self._backend != "appindicator":
            return
        present = self._probe_tray_host()
        with self._lock:
            self._tray_host = present
        if present is not False:
            self._write_status()
            return
        self._enable_notifications(f"no system tray owns the X display (backend {self._backend})")
        # a panel started after us (login races, a restarted panel): dock as soon as a tray appears
        while not self._stop.wait(TRAY_HOST_RECHECK):
            if self._probe_tray_host():
                log.info("event=tray_host_appeared backend=%s", self._backend)
                adapter.redock()
                with self._lock:
                    self._tray_host = True
                    self._notifications = False
                    self._announced = False
                self._write_status()
                return

    # --- publishing (poller thread, tray threads) ------------------------------------------------------------

    def _enable_notifications(self, reason: str) -> None:
        with self._lock:
            if self._notifications:
                return
            self._notifications = True
            if self._adapter is None:
                self._tray_mode = "notifications"
                self._tray_host = False
            elif self._tray_host is None:
                self._tray_host = False
        log.warning("event=tray_unavailable reason=%r fallback=notifications", reason)
        self._notifier.notify(APP_NAME, FALLBACK_MESSAGE)  # before any state notification
        self.controller.queue_error_report(f"tray unavailable: {reason}", {"platform": self._config.platform})
        with self._lock:
            self._announced = True
            self._state_notifier.show(self.controller.state)
        self._write_status()
        self._wake.set()

    def _publish(self, state: TrayState, items: tuple[MenuItemView, ...]) -> None:
        with self._lock:
            adapter = self._adapter
            notifications = self._notifications and self._announced
        if adapter is not None:
            adapter.show(items, icon_status(state))
        if notifications:
            with self._lock:
                self._state_notifier.show(state)
        self._write_status()

    def status_snapshot(self) -> dict[str, object]:
        state, items = self.controller.state, self.controller.items
        with self._lock:
            extra: dict[str, object] = {
                "pid": os.getpid(),
                "tray": self._tray_mode,
                "backend": self._backend,
                "tray_host": self._tray_host,
                "notifications": self._notifications,
            }
        document = status_document(state, items)
        document.update(extra)
        document["updated_at"] = datetime.datetime.now(datetime.UTC).isoformat()
        return document

    def _write_status(self) -> None:
        if self._status_path is None:
            return
        try:
            with self._lock:
                write_json_atomically(self._status_path, self.status_snapshot())
        except OSError as exc:
            if not self._status_write_failed:
                log.warning("event=status_file_failed path=%s reason=%r", self._status_path, exc.strerror)
            self._status_write_failed = True
