"""The running app in-process: tray or notification fallback, status file, clean stop (no sockets: mock server)."""

from __future__ import annotations

import importlib
import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import httpx
import pytest

from desktop_tray import app as app_module
from desktop_tray.app import FALLBACK_MESSAGE, DesktopApp
from desktop_tray.config import Platform, load_config
from desktop_tray.device_client import DeviceClient
from desktop_tray.menu_state import Connection, TrayState
from desktop_tray.notifier import NotifySend, StateNotifier
from desktop_tray.signal_bridge import SignalBridge
from desktop_tray.token_file import TokenFile
from desktop_tray.tray_backend import TrayUnavailableError, backend_name, enable_xorg_clicks, load_pystray
from tests.unit.test_desktop_tray_adapter import headless_pystray

pytestmark = pytest.mark.timeout(60)

TOKEN = "9d1d0c6a-3333-4333-8333-333333333333"
URL = "https://fleet.example.test"


class RecordingNotifier:
    def __init__(self) -> None:
        self.messages: list[tuple[str, str]] = []
        self.changed = threading.Condition()

    def notify(self, title: str, body: str) -> bool:
        with self.changed:
            self.messages.append((title, body))
            self.changed.notify_all()
        return True


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


class AppRig:
    def __init__(self, tmp_path: Path, load_tray: Callable[..., Any], **kwargs: Any) -> None:
        token_path = tmp_path / "identifier"
        token_path.write_text(TOKEN)
        self.status_path = tmp_path / "status.json"
        environ = {
            "FLEET_DESKTOP_FLEET_URL": URL,
            "FLEET_DESKTOP_DEVICE_IDENTIFIER_PATH": str(token_path),
            "FLEET_DESKTOP_TRAY_READY_TIMEOUT": str(kwargs.pop("ready_timeout", 10)),
        }
        self.config = load_config(environ, platform="linux")
        self.failing = 2
        self.notifier = RecordingNotifier()
        self.opened: list[str] = []
        tokens = TokenFile(token_path)
        http = httpx.Client(base_url=URL, transport=httpx.MockTransport(self._serve))
        self.app = DesktopApp(
            self.config,
            DeviceClient(http, tokens, sleep=lambda s: None),
            tokens,
            version="9.9.9",
            environ=environ,
            status_path=self.status_path,
            notifier=self.notifier,
            load_tray=load_tray,
            opener=self.opened.append,
            **kwargs,
        )
        self.result: list[int] = []
        self.thread = threading.Thread(target=lambda: self.result.append(self.app.run(install_signals=False)))

    def _serve(self, request: httpx.Request) -> httpx.Response:
        if request.method == "HEAD":
            return httpx.Response(200)
        return httpx.Response(200, json={"failing_policies_count": self.failing, "self_service": True})

    def status(self) -> dict[str, Any]:
        try:
            loaded: dict[str, Any] = json.loads(self.status_path.read_text())
        except (OSError, ValueError):
            return {}
        return loaded

    def stop(self) -> None:
        self.app.request_stop()
        self.thread.join(20)
        assert not self.thread.is_alive(), "the app did not stop"
        assert self.result == [0]


@pytest.fixture
def rigs() -> Iterator[list[AppRig]]:
    """Started apps are stopped at the end, and must leave no non-daemon thread (it would hang the exit)."""
    before = {t.ident for t in threading.enumerate()}
    started: list[AppRig] = []
    yield started
    for rig in started:
        if rig.thread.is_alive():
            rig.stop()
    wait_for(lambda: not [t for t in threading.enumerate() if t.ident not in before and not t.daemon and t.is_alive()])


def no_tray(environ: Any, platform: Platform) -> ModuleType:
    raise TrayUnavailableError("no graphical session (neither DISPLAY nor WAYLAND_DISPLAY is set)")


def test_without_a_tray_notifications_report_state_changes(tmp_path: Path, rigs: list[AppRig]) -> None:
    rig = AppRig(tmp_path, no_tray)
    rigs.append(rig)
    rig.thread.start()
    wait_for(lambda: rig.status().get("state") == "connected" and rig.status().get("tray") != "starting")
    status = rig.status()
    assert status["tray"] == "notifications" and status["notifications"] is True and status["tray_host"] is False
    assert status["failing_policies"] == 2
    assert status["items"][1] == {"title": "🔴 My device (2)", "enabled": True, "visible": True}
    wait_for(lambda: len(rig.notifier.messages) >= 2)
    assert rig.notifier.messages[0] == ("Fleet Desktop", FALLBACK_MESSAGE)
    assert "2 failing policies" in rig.notifier.messages[1][1]
    assert TOKEN not in rig.status_path.read_text()
    rig.stop()
    assert rig.status()["pid"] > 0


def test_with_a_tray_the_icon_carries_the_menu(tmp_path: Path, rigs: list[AppRig]) -> None:
    pystray = headless_pystray()
    rig = AppRig(tmp_path, lambda environ, platform: pystray)
    rigs.append(rig)
    rig.thread.start()
    wait_for(lambda: rig.status().get("tray") == "icon" and rig.status().get("state") == "connected")
    assert rig.status()["notifications"] is False
    assert rig.notifier.messages == []
    adapter = rig.app._adapter
    assert adapter is not None
    my_device = next(i for i in adapter.icon.menu if i.text == "🔴 My device (2)")
    rig.failing = 0
    my_device(adapter.icon)
    assert rig.opened == [f"{URL}/device/{TOKEN}"]
    wait_for(lambda: rig.status().get("failing_policies") == 0)  # the click refreshed the summary at once
    assert any(i.text == "🟢 My device" for i in adapter.icon.menu)
    rig.stop()


def test_a_tray_that_never_becomes_ready_gets_notifications_alongside(tmp_path: Path, rigs: list[AppRig]) -> None:
    pystray = headless_pystray()

    class NeverReady(pystray.Icon):  # type: ignore[misc, name-defined]
        ready_on_run = False

    module = SimpleNamespace(Icon=NeverReady, Menu=pystray.Menu, MenuItem=pystray.MenuItem)
    rig = AppRig(tmp_path, lambda environ, platform: module, ready_timeout=0.3)
    rigs.append(rig)
    rig.thread.start()
    wait_for(lambda: rig.status().get("notifications") is True)
    assert rig.status()["tray"] == "starting"
    wait_for(lambda: any("failing" in body for _, body in rig.notifier.messages))
    rig.stop()


def test_a_crashing_tray_backend_falls_back(tmp_path: Path, rigs: list[AppRig]) -> None:
    pystray = headless_pystray()

    class Broken(pystray.Icon):  # type: ignore[misc, name-defined]
        def _run(self) -> None:
            raise RuntimeError("GLib.GError: org.freedesktop.Notifications ServiceUnknown")

    module = SimpleNamespace(Icon=Broken, Menu=pystray.Menu, MenuItem=pystray.MenuItem)
    rig = AppRig(tmp_path, lambda environ, platform: module)
    rigs.append(rig)
    rig.thread.start()
    wait_for(lambda: rig.status().get("tray") == "notifications")
    wait_for(lambda: rig.status().get("state") == "connected")
    rig.stop()  # the fixture then checks that pystray's setup thread was released


def test_no_xembed_tray_owner_means_notifications_too(tmp_path: Path, rigs: list[AppRig]) -> None:
    pystray = headless_pystray()

    class XorgLike(pystray.Icon):  # type: ignore[misc, name-defined]
        __module__ = "pystray._xorg"

    module = SimpleNamespace(Icon=XorgLike, Menu=pystray.Menu, MenuItem=pystray.MenuItem)
    rig = AppRig(tmp_path, lambda environ, platform: module, probe_tray_host=lambda: False)
    rigs.append(rig)
    rig.thread.start()
    # two threads publish: the tray watcher (no tray owner → notifications) and pystray's setup thread (the icon is
    # ready → tray "icon"), in either order; wait for both, then check the rest
    wait_for(lambda: (status := rig.status()).get("notifications") is True and status.get("tray") == "icon")
    status = rig.status()
    assert (status["tray"], status["backend"], status["tray_host"]) == ("icon", "xorg", False)
    rig.stop()


def test_stop_before_the_tray_starts(tmp_path: Path) -> None:
    rig = AppRig(tmp_path, no_tray)
    rig.app.request_stop()
    assert rig.app.run(install_signals=False) == 0


# --- pieces -----------------------------------------------------------------------------------------------------


def test_load_pystray_without_a_display_is_a_clean_refusal() -> None:
    with pytest.raises(TrayUnavailableError, match="DISPLAY"):
        load_pystray({}, "linux")


def test_backend_names() -> None:
    for module_name, expected in (("pystray._xorg", "xorg"), ("pystray._appindicator", "appindicator")):
        icon = type("Icon", (), {"__module__": module_name})
        assert backend_name(SimpleNamespace(Icon=icon)) == expected  # type: ignore[arg-type]


def test_notify_send_is_used_when_installed() -> None:
    calls: list[list[str]] = []
    sender = NotifySend(which=lambda name: f"/usr/bin/{name}", runner=lambda argv: calls.append(argv) or 0)
    assert sender.notify("Fleet Desktop", "hello")
    assert calls == [
        ["/usr/bin/notify-send", "--app-name=Fleet Desktop", "--icon=dialog-information", "Fleet Desktop", "hello"]
    ]
    assert not NotifySend(which=lambda name: None).notify("Fleet Desktop", "only logged")
    assert not NotifySend(which=lambda name: "/x", runner=lambda argv: 1).notify("t", "b")


def test_state_notifier_skips_repeats_and_transient_connecting() -> None:
    recorder = RecordingNotifier()
    notifier = StateNotifier(recorder)
    connected = TrayState(connection=Connection.CONNECTED, failing_policies=1)
    assert not notifier.show(TrayState())  # connecting: wait for the outcome
    assert notifier.show(connected)
    assert not notifier.show(connected)
    assert not notifier.show(TrayState(connection=Connection.CONNECTING, failing_policies=1))
    assert not notifier.show(connected)  # a token rotation in between is not news
    assert notifier.show(TrayState(connection=Connection.OFFLINE, failing_policies=1))
    assert notifier.show(TrayState(connection=Connection.CONNECTED, failing_policies=0))
    assert [body for _, body in recorder.messages] == [
        "Connected to Fleet. Your device has 1 failing policy: open My device to fix them.",
        "Your computer is not connected to Fleet.",
        "Connected to Fleet. Your device has no failing policies.",
    ]


def test_signal_bridge_turns_sigterm_into_one_stop() -> None:
    previous = signal.getsignal(signal.SIGTERM)
    stops: list[int] = []
    quick = threading.Event()
    finished = threading.Event()
    bridge = SignalBridge(stops.append, quick=quick.set, finished=finished, grace=30)
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGTERM)  # a second signal does not start a second stop
        wait_for(lambda: bool(stops))
        assert quick.is_set()
        time.sleep(0.2)
        assert stops == [signal.SIGTERM]
    finally:
        finished.set()
        bridge.close()
    assert signal.getsignal(signal.SIGTERM) == previous


def test_a_tray_appearing_later_takes_over_from_notifications(
    tmp_path: Path, rigs: list[AppRig], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(app_module, "TRAY_HOST_RECHECK", 0.05)
    pystray = headless_pystray()

    class XorgLike(pystray.Icon):  # type: ignore[misc, name-defined]
        __module__ = "pystray._xorg"

    answers = iter([False, False, True])
    module = SimpleNamespace(Icon=XorgLike, Menu=pystray.Menu, MenuItem=pystray.MenuItem)
    rig = AppRig(tmp_path, lambda environ, platform: module, probe_tray_host=lambda: next(answers, True))
    rigs.append(rig)
    rig.thread.start()
    wait_for(lambda: rig.status().get("tray_host") is True)
    status = rig.status()
    assert (status["tray"], status["notifications"]) == ("icon", False)
    assert rig.notifier.messages[0] == ("Fleet Desktop", FALLBACK_MESSAGE)
    adapter = rig.app._adapter
    assert adapter is not None and adapter.icon.icon_updates >= 1  # the icon was set again to dock
    rig.stop()


def test_xorg_clicks_are_selected_on_the_icon_window() -> None:
    calls: list[int] = []

    def change_attributes(*, event_mask: int) -> None:
        calls.append(event_mask)

    window = SimpleNamespace(change_attributes=change_attributes)
    display = SimpleNamespace(flush=lambda: calls.append(-1))
    xlib = importlib.import_module("Xlib.X")
    assert enable_xorg_clicks(SimpleNamespace(_window=window, _display=display))
    assert calls[0] & xlib.ButtonPressMask and calls[0] & xlib.StructureNotifyMask and calls[1] == -1
    assert not enable_xorg_clicks(SimpleNamespace())
