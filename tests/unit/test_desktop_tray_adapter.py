"""The pystray adapter on a headless dummy-backend icon (python-stack.md §2 recipe).

pystray fixes its backend at import time, so ``PYSTRAY_BACKEND=dummy`` is set before the first import; the icon
class stubs the platform methods so that ``icon.run()`` works without any display.
"""

from __future__ import annotations

import functools
import importlib
import os
import sys
import threading
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from desktop_tray.controller import DesktopController
from desktop_tray.desktop_summary import DesktopSummary
from desktop_tray.icons import STATUS_COLOURS, IconTheme, draw_icon, status_dot_centre
from desktop_tray.menu_state import OFFLINE_TITLE, IconStatus, ItemKey, icon_status
from desktop_tray.server_answers import FleetFree, ServerAnswer, SummaryReceived, Unreachable
from desktop_tray.tray_adapter import ICON_NAME, TrayAdapter

TOKEN = "5b2c3a1e-aaaa-4bbb-8ccc-0123456789ab"
URL = "https://fleet.internal.test:8080"


def _import_pystray_headless() -> Any:
    if "pystray" not in sys.modules:
        previous = os.environ.get("PYSTRAY_BACKEND")
        os.environ["PYSTRAY_BACKEND"] = "dummy"
        try:
            importlib.import_module("pystray")
        finally:
            if previous is None:
                del os.environ["PYSTRAY_BACKEND"]
            else:
                os.environ["PYSTRAY_BACKEND"] = previous
    return sys.modules["pystray"]


@functools.cache
def headless_pystray() -> Any:
    """pystray's Menu/MenuItem plus an Icon whose platform methods are stubs: ``run()`` works without a display.
    ``HeadlessIcon.ready_on_run = False`` simulates a tray that never becomes ready."""
    pystray = _import_pystray_headless()
    _base = importlib.import_module("pystray._base")

    class HeadlessIcon(_base.Icon):  # type: ignore[misc]
        ready_on_run = True

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.stopped = threading.Event()
            self.menu_updates = 0
            self.icon_updates = 0
            self.shown = False

        def _show(self) -> None:
            self.shown = True

        def _hide(self) -> None:
            self.shown = False

        def _update_icon(self) -> None:
            self.icon_updates += 1
            self._icon_valid = True

        def _update_title(self) -> None:
            pass

        def _update_menu(self) -> None:
            self.menu_updates += 1

        def _run(self) -> None:
            if self.ready_on_run:
                self._mark_ready()
            self.stopped.wait(30)

        def _stop(self) -> None:
            self.stopped.set()

    return SimpleNamespace(Icon=HeadlessIcon, Menu=pystray.Menu, MenuItem=pystray.MenuItem)


@pytest.fixture(scope="module")
def pystray_dummy() -> Any:
    return headless_pystray()


class FakeClient:
    def __init__(self, answer: ServerAnswer) -> None:
        self.answer = answer

    def desktop_summary(self) -> ServerAnswer:
        return self.answer

    def capabilities(self) -> frozenset[str] | None:
        return frozenset()

    def reachability(self) -> Unreachable | None:
        return None

    def report_error(self, message: str, *, version: str, info: dict[str, object] | None = None) -> bool:
        return False


class FixedToken:
    cached: str | None = TOKEN

    def read(self) -> str:
        return TOKEN

    def changed(self) -> bool:
        return False


class Harness:
    def __init__(self, pystray: Any, answer: ServerAnswer, env_host: str | None = None, **adapter: Any) -> None:
        self.opened: list[str] = []
        self.client = FakeClient(answer)
        self.adapter: TrayAdapter | None = None
        self.controller = DesktopController(
            self.client,
            FixedToken(),
            clock=lambda: 0.0,
            version="4.5.6",
            platform="linux",
            fleet_url=URL,
            env_browser_host=env_host,
            opener=self.opened.append,
            on_change=self._on_change,
        )
        self.adapter = TrayAdapter(
            pystray,
            on_click=self.controller.click,
            items=self.controller.items,
            status=icon_status(self.controller.state),
            **adapter,
        )
        self.thread = threading.Thread(target=self.adapter.run, daemon=True)

    def _on_change(self, state: Any, items: Any) -> None:
        if self.adapter is not None:
            self.adapter.show(items, icon_status(state))

    @property
    def icon(self) -> Any:
        return self.adapter.icon if self.adapter else None

    def menu(self) -> list[tuple[str, bool]]:
        """What the native menu would show: (text, enabled) of the visible items, separators as '-'."""
        return [("-" if i is self.icon.menu.SEPARATOR else i.text, i.enabled) for i in self.icon.menu]

    def item(self, text: str) -> Any:
        return next(i for i in self.icon.menu if i.text == text)


@pytest.fixture
def running(pystray_dummy: Any) -> Iterator[Any]:
    started: list[Harness] = []

    def start(answer: ServerAnswer, **kwargs: Any) -> Harness:
        harness = Harness(pystray_dummy, answer, **kwargs)
        harness.thread.start()
        assert harness.adapter is not None and harness.adapter.ready.wait(10)
        started.append(harness)
        return harness

    yield start
    for harness in started:
        assert harness.adapter is not None
        harness.adapter.stop()
        harness.thread.join(10)
        assert not harness.thread.is_alive()


def test_icon_identity_and_tooltip(running: Any) -> None:
    harness = running(FleetFree())
    assert harness.icon.name == ICON_NAME == "fleet-desktop"
    assert harness.icon.title == "Fleet Desktop"
    assert harness.icon.visible and harness.icon.shown


def test_connecting_menu(running: Any) -> None:
    harness = running(FleetFree())
    assert harness.menu() == [
        ("Fleet Desktop v4.5.6", False),
        ("-", True),
        ("Connecting...", False),
        ("-", True),
        ("About Fleet", False),
    ]


def test_connected_menu_with_badge_and_self_service(running: Any) -> None:
    harness = running(SummaryReceived(DesktopSummary(failing_policies_count=2)))
    updates_before = harness.icon.menu_updates
    harness.controller.step()
    assert harness.icon.menu_updates > updates_before
    assert harness.menu() == [
        ("Fleet Desktop v4.5.6", False),
        ("-", True),
        ("🔴 My device (2)", True),
        ("Self-service", True),
        ("-", True),
        ("About Fleet", True),
    ]
    # hidden items stay in the menu definition, only invisible
    texts = {i.text: i.visible for i in harness.icon.menu.items}
    assert texts[OFFLINE_TITLE] is False


def test_offline_menu_shows_only_the_warning(running: Any) -> None:
    harness = running(Unreachable("refused"))
    harness.controller.step()
    assert harness.menu() == [("Fleet Desktop v4.5.6", False), ("-", True), (OFFLINE_TITLE, False)]


def test_clicking_my_device_opens_the_alternative_host(running: Any) -> None:
    harness = running(SummaryReceived(DesktopSummary(failing_policies_count=0)), env_host="browser.example.test")
    harness.controller.step()
    harness.item("🟢 My device")(harness.icon)
    harness.item("About Fleet")(harness.icon)
    harness.item("Self-service")(harness.icon)
    assert harness.opened == [
        f"https://browser.example.test/device/{TOKEN}",
        f"https://browser.example.test/api/latest/fleet/device/{TOKEN}/transparency",
        f"https://browser.example.test/device/{TOKEN}/self-service",
    ]


def test_server_browser_host_beats_the_environment(running: Any) -> None:
    summary = DesktopSummary(failing_policies_count=1, alternative_browser_host="from-server.test:9443")
    harness = running(SummaryReceived(summary), env_host="from-env.test")
    harness.controller.step()
    harness.item("🔴 My device (1)")(harness.icon)
    assert harness.opened == [f"https://from-server.test:9443/device/{TOKEN}"]


def test_without_alternative_host_the_fleet_url_is_used(running: Any) -> None:
    harness = running(SummaryReceived(DesktopSummary()))
    harness.controller.step()
    harness.icon.menu(harness.icon)  # the default action (xorg: a click on the icon) is My device
    assert harness.opened == [f"{URL}/device/{TOKEN}"]


def test_disabled_item_click_does_nothing(running: Any) -> None:
    harness = running(FleetFree())
    next(i for i in harness.icon.menu.items if i.text == "Connecting...")(harness.icon)
    assert harness.opened == []


def test_icon_image_follows_the_status(running: Any) -> None:
    harness = running(SummaryReceived(DesktopSummary(failing_policies_count=3)))
    before = harness.icon.icon
    assert before is draw_icon(IconStatus.CONNECTING, IconTheme.DARK)
    harness.controller.step()
    image = harness.icon.icon
    assert image is draw_icon(IconStatus.FAILING, IconTheme.DARK)
    assert image.getpixel(status_dot_centre())[:3] == STATUS_COLOURS[IconStatus.FAILING]
    assert harness.icon.icon_updates >= 1


def test_hide_when_healthy(running: Any) -> None:
    harness = running(SummaryReceived(DesktopSummary(failing_policies_count=0)), hide_when_healthy=True)
    assert harness.icon.visible  # connecting is not healthy: shown
    harness.controller.step()
    assert not harness.icon.visible
    harness.client.answer = SummaryReceived(DesktopSummary(failing_policies_count=1))
    harness.controller.request_refresh()
    harness.controller.step()
    assert harness.icon.visible


def test_a_failing_click_handler_does_not_break_the_menu(pystray_dummy: Any) -> None:
    def explode(key: ItemKey) -> None:
        raise RuntimeError("boom")

    adapter = TrayAdapter(
        pystray_dummy,
        on_click=explode,
        items=Harness(pystray_dummy, FleetFree()).controller.items,
        status=IconStatus.CONNECTING,
    )
    for item in adapter.icon.menu.items:
        item(adapter.icon)  # logged, not raised
