"""When to ask the server, and what a click does (docs/reference/orbit-behaviour.md §10.4) — driven by an injected
clock.

``step()`` does whatever is due and returns the seconds until something is due again; the app's poller thread
calls it in a loop, ``status --json`` calls it once. Schedule:

* the token file is watched every second; a change → Connecting and an immediate check;
* until the token is verified (and while Offline or Connecting) the server is asked every 5 s;
* once connected, the summary is refreshed every 5 minutes, and at once after a click;
* between summaries, an unauthenticated ``HEAD /api/fleet/device/ping`` every minute notices a lost connection
  (→ Offline, then checks every 5 s until the server answers) — Fleet only notices at the next summary.

Every state change is published to ``on_change(state, items)``. Clicks (from the UI thread) open the page through
the injected ``opener`` with the cached token and ask for a refresh; they never touch the network themselves.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from typing import Protocol

from desktop_tray import browser
from desktop_tray.config import Platform
from desktop_tray.device_client import ERROR_REPORTING
from desktop_tray.menu_state import (
    Connection,
    ItemKey,
    MenuItemView,
    TokenChanged,
    TrayEvent,
    TrayState,
    apply,
    badge_count,
    initial_state,
    render_menu,
)
from desktop_tray.server_answers import ServerAnswer, Unreachable, token_verified
from desktop_tray.token_file import TokenSource

log = logging.getLogger(__name__)

TOKEN_CHECK_INTERVAL = 5.0
SUMMARY_INTERVAL = 300.0
TOKEN_WATCH_INTERVAL = 1.0
REACHABILITY_INTERVAL = 60.0

StateListener = Callable[[TrayState, tuple[MenuItemView, ...]], None]
Opener = Callable[[str], object]


class DeviceApi(Protocol):
    def desktop_summary(self) -> ServerAnswer: ...

    def capabilities(self) -> frozenset[str] | None: ...

    def reachability(self) -> Unreachable | None: ...

    def report_error(self, message: str, *, version: str, info: dict[str, object] | None = None) -> bool: ...


class DesktopController:
    def __init__(
        self,
        client: DeviceApi,
        tokens: TokenSource,
        *,
        clock: Callable[[], float],
        version: str,
        platform: Platform,
        fleet_url: str,
        env_browser_host: str | None = None,
        opener: Opener = browser.open_in_background,
        permanent_error: str | None = None,
        on_change: StateListener | None = None,
    ) -> None:
        self._client = client
        self._tokens = tokens
        self._clock = clock
        self._version = version
        self._platform: Platform = platform
        self._fleet_url = fleet_url
        self._env_browser_host = env_browser_host
        self._opener = opener
        self._on_change = on_change
        self._state = initial_state(permanent_error)
        self._items = render_menu(self._state, version=version, platform=platform)
        now = clock()
        self._next_watch = now
        self._next_request = now
        self._next_probe = math.inf
        self._refresh_requested = threading.Event()
        self._capabilities: frozenset[str] | None = None
        self._pending_reports: list[tuple[str, dict[str, object]]] = []
        self._reports_lock = threading.Lock()
        self._last_answer: tuple[str, str | None] | None = None

    # --- read-only views (safe from any thread: immutable values swapped atomically) -------------------------

    @property
    def state(self) -> TrayState:
        return self._state

    @property
    def items(self) -> tuple[MenuItemView, ...]:
        return self._items

    @property
    def capabilities(self) -> frozenset[str] | None:
        return self._capabilities

    # --- the poller's side -----------------------------------------------------------------------------------

    def step(self) -> float:
        """Run what is due; seconds until the next due time (``inf`` when nothing will ever be due)."""
        if self._state.permanent_error:
            return math.inf
        now = self._clock()
        if now >= self._next_watch:
            self._next_watch = now + TOKEN_WATCH_INTERVAL
            if self._tokens.changed():
                log.info("event=token_file_changed action=recheck")
                self._apply(TokenChanged())
                self._next_request = now
        if self._refresh_requested.is_set():
            self._refresh_requested.clear()
            self._next_request = now
        if now >= self._next_request:
            answer = self._client.desktop_summary()
            self._log_answer(answer)
            self._apply(answer)
            if token_verified(answer):
                self._after_verified()
            self._schedule_after_answer()
        elif now >= self._next_probe:
            lost = self._client.reachability()
            if lost is None:
                self._next_probe = self._clock() + REACHABILITY_INTERVAL
            else:
                self._log_answer(lost)
                self._apply(lost)
                self._schedule_after_answer()
        return max(0.0, min(self._next_watch, self._next_request, self._next_probe) - self._clock())

    def _schedule_after_answer(self) -> None:
        now = self._clock()
        if self._state.connection is Connection.CONNECTED:
            self._next_request = now + SUMMARY_INTERVAL
            self._next_probe = now + REACHABILITY_INTERVAL
        else:
            self._next_request = now + TOKEN_CHECK_INTERVAL
            self._next_probe = math.inf

    def _log_answer(self, answer: ServerAnswer) -> None:
        """INFO when the kind of answer changes (a check every 5 s must not flood the log), else DEBUG."""
        reason = getattr(answer, "reason", None)
        key = (answer.__class__.__name__, reason)
        level = logging.INFO if key != self._last_answer else logging.DEBUG
        self._last_answer = key
        if reason is not None:
            log.log(level, "event=desktop_check answer=%s reason=%r", key[0], reason)
        else:
            log.log(level, "event=desktop_check answer=%s", key[0])

    def _after_verified(self) -> None:
        if self._capabilities is None:
            self._capabilities = self._client.capabilities()
        with self._reports_lock:
            pending, self._pending_reports = self._pending_reports, []
        if not pending:
            return
        if self._capabilities is None or ERROR_REPORTING not in self._capabilities:
            log.info("event=error_report_skipped reason=%r count=%d", "server lacks error_reporting", len(pending))
            return
        for message, info in pending:
            self._client.report_error(message, version=self._version, info=info)

    def _apply(self, event: TrayEvent) -> None:
        before = self._state
        self._state = apply(before, event)
        items = render_menu(self._state, version=self._version, platform=self._platform)
        if self._state == before and items == self._items:
            return
        self._items = items
        if (self._state.connection, badge_count(self._state)) != (before.connection, badge_count(before)):
            log.info(
                "event=state_changed state=%s failing_policies=%d",
                self._state.connection.value,
                badge_count(self._state),
            )
        self.publish()

    def publish(self) -> None:
        if self._on_change is not None:
            self._on_change(self._state, self._items)

    # --- the UI's side ---------------------------------------------------------------------------------------

    def request_refresh(self) -> None:
        self._refresh_requested.set()

    def queue_error_report(self, message: str, info: dict[str, object] | None = None) -> None:
        """Sent after the next successful check, and only if the server advertises ``error_reporting``."""
        with self._reports_lock:
            self._pending_reports.append((message, dict(info or {})))

    def page_url(self, key: ItemKey) -> str | None:
        token = self._tokens.cached
        if not token:
            return None
        host = browser.effective_browser_host(self._state.server_browser_host, self._env_browser_host)
        if key is ItemKey.MY_DEVICE:
            return browser.my_device_url(self._fleet_url, token, host)
        if key is ItemKey.SELF_SERVICE:
            return browser.self_service_url(self._fleet_url, token, host)
        if key is ItemKey.ABOUT:
            return browser.transparency_url(self._fleet_url, token, host)
        return None

    def click(self, key: ItemKey) -> bool:
        """A menu item was activated; True when a page was opened."""
        item = next((i for i in self._items if i.key is key), None)
        if item is None or not (item.enabled and item.visible):
            return False
        url = self.page_url(key)
        if url is None:
            return False
        log.info("event=open_page item=%s", key.value)
        try:
            self._opener(url)
        except Exception as exc:
            log.warning("event=browser_open_failed item=%s reason=%r", key.value, exc.__class__.__name__)
        self.request_refresh()
        return True
