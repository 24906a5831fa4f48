"""fleet-desktop in a real tray: Xvfb + trayer (+ a session bus and dunst), real pystray backends, real clicks.

The app runs as orbit runs it (the ``fleet-desktop`` console script, the ``FLEET_DESKTOP_*`` environment, the
token in a file) against a fleet-stub on loopback where the host has one failing policy. Pages open through
Python's ``webbrowser``, which honours ``$BROWSER``: a script that records the URL instead of starting a browser.

* With a tray: the icon docks (a window embedded in trayer's panel); for the backends with a menu (gtk,
  appindicator) a right click opens it, Down selects the first enabled item (My device; the screenshot must show
  its 🔴 badge in the highlighted row), and a left click on that row opens ``<fleet url>/device/<token>``; the
  xorg backend has no menu, a click runs the default action (My device). With a tray, no fallback notification
  is sent. SIGTERM (how orbit stops Desktop) ends the app with exit 0 within 5 s.
* Without a tray host (no trayer), or without ``DISPLAY``: the app stays up, falls back to desktop
  notifications (dunst records them) and ``fleet-desktop status --json`` reports the same state.

Screenshots go to ``<tmp_path>/artifacts/`` (paths printed; see them with ``pytest -s`` or on failure).
"""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from tests.support.fleet_desktop import (
    DesktopFiles,
    Device,
    desktop_env,
    desktop_files,
    enroll_device,
    fleet_desktop_command,
    opened_urls,
    read_status,
)
from tests.support.stub_server import RunningStub
from tests.support.x_session import ManagedProcess, Window, XSession, changed_box, wait_until, x_session

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

FALLBACK_MESSAGE = "No system tray is available, so Fleet Desktop will report changes as notifications."
FAILING_MESSAGE = "Connected to Fleet. Your device has 1 failing policy: open My device to fix them."
MY_DEVICE_TITLE = "🔴 My device (1)"
START_TIMEOUT = 60.0


@pytest.fixture
def device(stub: RunningStub) -> Device:
    return enroll_device(stub)


@pytest.fixture
def files(tmp_path: Path, device: Device) -> DesktopFiles:
    return desktop_files(tmp_path / "desktop", device.token)


@pytest.fixture
def artifacts(tmp_path: Path) -> Path:
    path = tmp_path / "artifacts"
    path.mkdir()
    return path


@pytest.fixture
def session(tmp_path: Path) -> Iterator[XSession]:
    with x_session(tmp_path / "x") as running:
        yield running


def _shot(session: XSession, path: Path, window: int | None = None) -> Path:
    session.screenshot(path, window)
    print(f"screenshot: {path}")
    return path


def _start(
    session: XSession,
    stub: RunningStub,
    files: DesktopFiles,
    backend: str | None,
    *,
    unset: tuple[str, ...] = (),
    tray_ready_timeout: float | None = None,
) -> ManagedProcess:
    env = desktop_env(stub, files, backend=backend)
    if tray_ready_timeout is not None:
        env["FLEET_DESKTOP_TRAY_READY_TIMEOUT"] = str(tray_ready_timeout)
    return session.spawn("fleet-desktop", fleet_desktop_command(), env=env, unset=unset)


def _wait_status(
    app: ManagedProcess, files: DesktopFiles, timeout: float = START_TIMEOUT, **expected: object
) -> dict[str, object]:
    """The app's status mirror once it has all the ``expected`` values (fails early if the app exits)."""

    def matches() -> dict[str, object] | None:
        if not app.alive():
            raise AssertionError(f"fleet-desktop exited ({app.proc.returncode}):\n{app.output()[-4000:]}")
        status = read_status(files.status_file)
        return status if all(status.get(k) == v for k, v in expected.items()) else None

    try:
        return wait_until(matches, timeout, f"fleet-desktop status {expected}", interval=0.1)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nlast status: {read_status(files.status_file)}\n{app.output()[-4000:]}") from None


def _visible_titles(status: dict[str, object]) -> list[str]:
    items = status["items"]
    assert isinstance(items, list)
    return [item["title"] for item in items if item["visible"]]


def _enabled_index(status: dict[str, object], title: str) -> int:
    """Position of ``title`` among the items a keyboard can select (visible and enabled), from 0."""
    items = status["items"]
    assert isinstance(items, list)
    selectable = [item["title"] for item in items if item["visible"] and item["enabled"]]
    return selectable.index(title)


def _wait_url(app: ManagedProcess, files: DesktopFiles, timeout: float = 30.0) -> list[str]:
    def urls() -> list[str]:
        assert app.alive(), app.output()[-4000:]
        return opened_urls(files)

    return wait_until(urls, timeout, "fleet-desktop to open a page in the browser", interval=0.1)


def _open_menu(session: XSession, icon: Window) -> Window:
    before = {w.id for w in session.windows()}
    session.click(*icon.center, button=3)
    return session.new_popup(before)


def _select_menu_item(
    session: XSession, menu: Window, position: int, artifacts: Path
) -> tuple[Path, tuple[int, int, int, int]]:
    """Select the ``position``-th selectable item with the keyboard; the screenshot and the highlighted row's box."""
    plain = _shot(session, artifacts / "menu-open.png")
    session.key(*(["Down"] * (position + 1)))
    highlighted = artifacts / "menu-item-highlighted.png"
    seen: list[tuple[int, int, int, int] | None] = [None]

    def settled_row() -> tuple[int, int, int, int] | None:
        """The changed box once two screenshots in a row agree on it (the highlight is fully drawn)."""
        box = changed_box(plain, session.screenshot(highlighted), within=menu.box)
        previous, seen[0] = seen[0], box
        return box if box is not None and box == previous else None

    row = wait_until(settled_row, 10.0, "a menu row to be highlighted", interval=0.15)
    print(f"screenshot: {highlighted} (highlighted row {row})")
    assert row[3] - row[1] < menu.height, f"the whole menu changed, not one row: {row} in {menu}"
    return highlighted, row


def _has_red_badge(png: Path, box: tuple[int, int, int, int]) -> bool:
    """Whether the 🔴 of "🔴 My device (N)" is inside ``box`` (Noto Color Emoji draws it red)."""
    with Image.open(png) as image:
        data = image.convert("RGB").crop(box).tobytes()
    return (
        sum(1 for r, g, b in zip(data[0::3], data[1::3], data[2::3], strict=True) if r > 180 and g < 90 and b < 100)
        >= 20
    )


# --- with a tray ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["gtk", "appindicator"])
def test_menu_my_device_opens_the_device_page(
    session: XSession, stub: RunningStub, device: Device, files: DesktopFiles, artifacts: Path, backend: str
) -> None:
    app = _start(session, stub, files, backend)
    status = _wait_status(app, files, tray="icon", state="connected", failing_policies=1)
    assert status["backend"] == backend
    assert _visible_titles(status)[1:] == [MY_DEVICE_TITLE, "About Fleet"], status

    icon = session.wait_for_tray_icon()
    _shot(session, artifacts / "docked.png")
    menu = _open_menu(session, icon)
    assert menu.y >= icon.y + icon.height or menu.y + menu.height <= icon.y, (icon, menu)  # beside the icon
    shot, row = _select_menu_item(session, menu, _enabled_index(status, MY_DEVICE_TITLE), artifacts)
    assert _has_red_badge(shot, row), f"the highlighted row {row} shows no 🔴 badge: see {shot}"
    session.click((row[0] + row[2]) // 2, (row[1] + row[3]) // 2, button=1)

    assert _wait_url(app, files) == [f"{stub.url}/device/{device.token}"]
    _shot(session, artifacts / "after-click.png")
    assert app.alive()
    assert session.notifications() == []  # the icon is there: no fallback notification
    assert read_status(files.status_file)["notifications"] is False


def test_xorg_icon_docks(session: XSession, stub: RunningStub, files: DesktopFiles, artifacts: Path) -> None:
    app = _start(session, stub, files, "xorg")
    status = _wait_status(app, files, tray="icon", state="connected", failing_policies=1, tray_host=True)
    assert status["backend"] == "xorg"

    icon = session.wait_for_tray_icon()
    assert icon.name == "Fleet Desktop", icon  # the tooltip is the window title
    _shot(session, artifacts / "docked-xorg.png")
    assert app.alive()
    assert session.notifications() == []


def test_xorg_click_opens_my_device(
    session: XSession, stub: RunningStub, device: Device, files: DesktopFiles, artifacts: Path
) -> None:
    app = _start(session, stub, files, "xorg")
    _wait_status(app, files, tray="icon", state="connected", failing_policies=1)
    icon = session.wait_for_tray_icon()

    session.click(*icon.center, button=1)  # no menu in this backend: the default item, My device

    assert _wait_url(app, files, timeout=10.0) == [f"{stub.url}/device/{device.token}"]


@pytest.mark.parametrize("backend", ["xorg", "gtk", "appindicator"])
def test_sigterm_ends_the_app_promptly(session: XSession, stub: RunningStub, files: DesktopFiles, backend: str) -> None:
    """orbit stops fleet-desktop with SIGTERM (docs/reference/orbit-behaviour.md §10.1): a clean exit 0, not a kill."""
    app = _start(session, stub, files, backend)
    _wait_status(app, files, tray="icon", state="connected")
    session.wait_for_tray_icon()

    app.signal(signal.SIGTERM)

    try:
        code = app.wait(timeout=5.0)
    except subprocess.TimeoutExpired:
        pytest.fail(f"fleet-desktop ({backend}) still runs 5 s after SIGTERM")
    assert code == 0
    log = (session.workdir / "state" / "Fleet" / "fleet-desktop.log").read_text()
    assert "event=stop" in log and "shutdown_stuck" not in log, log[-3000:]
    wait_until(lambda: session.tray_icons() == [], 10.0, "the icon to leave the tray")  # X drops it on disconnect


# --- without a tray -------------------------------------------------------------------------------------------


def _status_json(stub: RunningStub, files: DesktopFiles, session: XSession) -> dict[str, object]:
    env = dict(session.env)
    env.update(desktop_env(stub, files))
    env.pop("DISPLAY", None)  # a report needs no display
    result = subprocess.run(
        [*fleet_desktop_command(), "status", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr
    document: dict[str, object] = json.loads(result.stdout)
    return document


def _assert_fallback(
    session: XSession, stub: RunningStub, files: DesktopFiles, app: ManagedProcess, artifacts: Path, name: str
) -> dict[str, object]:
    status = _wait_status(
        app, files, timeout=30.0, state="connected", failing_policies=1, notifications=True, tray_host=False
    )
    session.wait_for_notification(lambda n: n["body"] == FALLBACK_MESSAGE)
    state_note = session.wait_for_notification(lambda n: n["body"] == FAILING_MESSAGE)
    assert state_note["appname"] == "Fleet Desktop"
    _shot(session, artifacts / f"{name}.png")

    report = _status_json(stub, files, session)
    assert set(report) == {"state", "items", "failing_policies"}, report
    assert report["state"] == "connected" and report["failing_policies"] == 1, report
    assert report["items"] == status["items"], (report, status)  # the report and the running app agree
    assert _visible_titles(report)[1:] == [MY_DEVICE_TITLE, "About Fleet"], report

    assert app.alive(), app.output()[-4000:]  # still up: the state stays available
    assert session.tray_panel() is None and session.tray_icons() == []
    return status


@pytest.mark.parametrize("backend", ["gtk", "xorg", "appindicator"])
def test_without_a_tray_host_notifications_take_over(
    tmp_path: Path, stub: RunningStub, files: DesktopFiles, artifacts: Path, backend: str
) -> None:
    with x_session(tmp_path / "x-no-tray", tray=False) as session:
        app = _start(session, stub, files, backend, tray_ready_timeout=5)
        status = _assert_fallback(session, stub, files, app, artifacts, f"no-tray-{backend}")
        assert status["backend"] == backend


def test_without_a_display_notifications_take_over(
    tmp_path: Path, stub: RunningStub, files: DesktopFiles, artifacts: Path
) -> None:
    with x_session(tmp_path / "x-no-display", tray=False) as session:  # X only for dunst to draw on
        app = _start(session, stub, files, None, unset=("DISPLAY",), tray_ready_timeout=5)
        status = _assert_fallback(session, stub, files, app, artifacts, "no-display")
        assert status["tray"] == "notifications" and status["backend"] is None, status
