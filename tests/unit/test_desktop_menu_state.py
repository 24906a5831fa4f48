"""The tray menu as Fleet Desktop shows it, for each kind of server answer (docs/reference/orbit-behaviour.md
§10.3–10.4).

The answers come from an ``httpx.MockTransport`` "server" through the real device client and controller, with an
injected clock; the expected menus are written out as the user would see them.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from desktop_tray.config import Platform
from desktop_tray.controller import (
    REACHABILITY_INTERVAL,
    SUMMARY_INTERVAL,
    TOKEN_CHECK_INTERVAL,
    DesktopController,
)
from desktop_tray.desktop_summary import DesktopSummary
from desktop_tray.device_client import DeviceClient
from desktop_tray.menu_state import (
    OFFLINE_TITLE,
    Connection,
    IconStatus,
    TokenChanged,
    TrayState,
    apply,
    icon_status,
    initial_state,
    my_device_title,
    render_menu,
    status_document,
)
from desktop_tray.server_answers import (
    FleetFree,
    ServerFailure,
    SummaryReceived,
    TokenUnavailable,
    Unauthorized,
    Unreachable,
)
from desktop_tray.token_file import TokenFile

VERSION = "1.2.3"
TOKEN = "6c0f3d4e-0000-4000-8000-00000000000a"
NEW_TOKEN = "0b6f8a53-1111-4111-8111-00000000000b"
URL = "https://fleet.example.test"

Handler = Callable[[httpx.Request], httpx.Response]
Row = tuple[str, bool, bool]  # (title, enabled, visible)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def rows(items: object) -> list[Row]:
    return [(i.title, i.enabled, i.visible) for i in items]  # type: ignore[attr-defined]


def connecting() -> list[Row]:
    return [
        (f"Fleet Desktop v{VERSION}", False, True),
        ("Connecting...", False, True),
        (OFFLINE_TITLE, False, False),
        ("Self-service", False, False),
        ("About Fleet", False, True),
    ]


def connected(my_device: str, *, self_service: bool) -> list[Row]:
    return [
        (f"Fleet Desktop v{VERSION}", False, True),
        (my_device, True, True),
        (OFFLINE_TITLE, False, False),
        ("Self-service", self_service, self_service),
        ("About Fleet", True, True),
    ]


def offline() -> list[Row]:
    return [
        (f"Fleet Desktop v{VERSION}", False, True),
        ("My device", False, False),
        (OFFLINE_TITLE, False, True),
        ("Self-service", False, False),
        ("About Fleet", False, False),
    ]


def summary(failing: int | None = 0, self_service: bool | None = True) -> httpx.Response:
    body: dict[str, object] = {"notifications": {"needs_mdm_migration": False, "renew_enrollment_profile": False}}
    if failing is not None:
        body["failing_policies_count"] = failing
    body["self_service"] = self_service
    return httpx.Response(200, json=body)


def status(code: int) -> Handler:
    return lambda request: httpx.Response(code, json={"message": "nope", "errors": [{"name": "base", "reason": "x"}]})


def refused(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("[Errno 111] Connection refused", request=request)


def desktop_only(response: Callable[[], httpx.Response]) -> Handler:
    def handle(request: httpx.Request) -> httpx.Response:
        if request.method == "HEAD":
            return httpx.Response(200, headers={"X-Fleet-Capabilities": ""})
        if request.url.path == f"/api/latest/fleet/device/{TOKEN}/desktop":
            return response()
        return httpx.Response(401, json={"message": "Authentication required"})

    return handle


def policies_only(request: httpx.Request) -> httpx.Response:
    if request.method == "HEAD":
        return httpx.Response(404)
    if request.url.path.endswith("/desktop"):
        return httpx.Response(404, json={"message": "not found"})
    if request.url.path == f"/api/latest/fleet/device/{TOKEN}/policies":
        listed = [{"id": 1, "response": "pass"}, {"id": 2, "response": "fail"}, {"id": 3, "response": ""}]
        return httpx.Response(200, json={"policies": listed})
    return httpx.Response(401)


class Rig:
    """A controller wired to a mock server, a real token file and a fake clock; sleeps are recorded."""

    def __init__(self, tmp_path: Path, handler: Handler, platform: Platform = "linux") -> None:
        self.handler = handler
        self.token_path = tmp_path / "identifier"
        self.token_path.write_text(TOKEN)
        self.clock = Clock()
        self.sleeps: list[float] = []
        self.opened: list[str] = []
        self.published: list[TrayState] = []
        self.tokens = TokenFile(self.token_path)
        http = httpx.Client(base_url=URL, transport=httpx.MockTransport(self._dispatch))
        self.client = DeviceClient(http, self.tokens, sleep=self.sleeps.append)
        self.controller = DesktopController(
            self.client,
            self.tokens,
            clock=self.clock,
            version=VERSION,
            platform=platform,
            fleet_url=URL,
            opener=self.opened.append,
            on_change=lambda state, items: self.published.append(state),
        )

    def _dispatch(self, request: httpx.Request) -> httpx.Response:
        return self.handler(request)  # looked up per request: tests swap the "server" mid-way

    def step(self) -> float:
        return self.controller.step()

    def rows(self) -> list[Row]:
        return rows(self.controller.items)

    def rotate(self, token: str) -> None:
        self.token_path.write_text(token)
        stamp = os.stat(self.token_path).st_mtime_ns + 1_000_000_000
        os.utime(self.token_path, ns=(stamp, stamp))


# --- answers → menus ------------------------------------------------------------------------------------------


NOT_JSON = desktop_only(lambda: httpx.Response(200, text="<html>"))
WRONG_TYPES = desktop_only(lambda: httpx.Response(200, json={"failing_policies_count": "3"}))
NO_SELF_SERVICE = desktop_only(lambda: summary(2, False))
OLD_SERVER = desktop_only(lambda: summary(0, None))


@pytest.mark.parametrize(
    ("name", "handler", "expected", "badge"),
    [
        ("200, 3 failing", desktop_only(lambda: summary(3)), connected("🔴 My device (3)", self_service=True), 3),
        ("200, 1 failing", desktop_only(lambda: summary(1)), connected("🔴 My device (1)", self_service=True), 1),
        ("200, none failing", desktop_only(lambda: summary(0)), connected("🟢 My device", self_service=True), 0),
        ("200, count absent", desktop_only(lambda: summary(None)), connected("🟢 My device", self_service=True), 0),
        ("200, self_service false", NO_SELF_SERVICE, connected("🔴 My device (2)", self_service=False), 2),
        ("200, self_service null", OLD_SERVER, connected("🟢 My device", self_service=True), 0),
        ("402 Fleet Free", status(402), connected("My device", self_service=False), 0),
        ("404 → policies", policies_only, connected("🔴 My device (2)", self_service=False), 2),
        ("401", status(401), connecting(), 0),
        ("500", status(500), connecting(), 0),
        ("503", status(503), connecting(), 0),
        ("200, not JSON", NOT_JSON, connecting(), 0),
        ("200, wrong types", WRONG_TYPES, connecting(), 0),
        ("connection refused", refused, offline(), 0),
    ],
)
def test_first_answer_decides_the_menu(
    tmp_path: Path, name: str, handler: Handler, expected: list[Row], badge: int
) -> None:
    rig = Rig(tmp_path, handler)
    assert rig.rows() == connecting()  # before anything was asked
    rig.step()
    assert rig.rows() == expected, name
    document = status_document(rig.controller.state, rig.controller.items)
    assert document["failing_policies"] == badge
    assert document["state"] in ("connecting", "connected", "offline")


def test_401_then_valid_token_connects_after_the_retry(tmp_path: Path) -> None:
    answers = iter([401, 401, 200])

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "HEAD":
            return httpx.Response(200)
        code = next(answers, 200)
        return summary(4) if code == 200 else httpx.Response(code)

    rig = Rig(tmp_path, handler)
    rig.step()
    assert rig.sleeps == [1.0, 2.0]  # two 401s, retried 1 s and 2 s later with the token file re-read
    assert rig.rows() == connected("🔴 My device (4)", self_service=True)


def test_401_on_every_attempt_stays_connecting_and_checks_again_in_5s(tmp_path: Path) -> None:
    rig = Rig(tmp_path, status(401))
    delay = rig.step()
    assert rig.sleeps == [1.0, 2.0, 3.0]
    assert rig.rows() == connecting()
    assert delay == pytest.approx(1.0)  # the token watcher is due first
    rig.clock.now += TOKEN_CHECK_INTERVAL
    rig.handler = desktop_only(lambda: summary(0))
    rig.step()
    assert rig.rows() == connected("🟢 My device", self_service=True)


def test_connected_polls_every_5_minutes_and_goes_offline_and_back(tmp_path: Path) -> None:
    seen: list[str] = []
    current: list[Handler] = [desktop_only(lambda: summary(1))]

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        return current[0](request)

    rig = Rig(tmp_path, handler)
    rig.step()
    assert rig.controller.state.connection is Connection.CONNECTED
    assert seen.count(f"/api/latest/fleet/device/{TOKEN}/desktop") == 1
    for _ in range(int(SUMMARY_INTERVAL) - 1):  # the token watcher runs every second, no new summary request
        rig.clock.now += 1
        rig.step()
    assert seen.count(f"/api/latest/fleet/device/{TOKEN}/desktop") == 1
    current[0] = refused
    rig.clock.now += 1
    rig.step()
    assert seen.count(f"/api/latest/fleet/device/{TOKEN}/desktop") == 2  # due after exactly 5 minutes
    assert rig.rows() == offline()
    assert icon_status(rig.controller.state) is IconStatus.OFFLINE
    rig.clock.now += TOKEN_CHECK_INTERVAL - 1
    rig.step()
    assert rig.rows() == offline()  # not yet due
    current[0] = desktop_only(lambda: summary(0))
    rig.clock.now += 1
    rig.step()
    assert rig.rows() == connected("🟢 My device", self_service=True)


def test_lost_connection_shows_offline_within_a_minute(tmp_path: Path) -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.method)
        return desktop_only(lambda: summary(1))(request)

    rig = Rig(tmp_path, handler)
    rig.step()
    assert seen == ["GET", "HEAD"]  # the summary, then the capabilities ping
    rig.clock.now += REACHABILITY_INTERVAL - 1
    rig.step()
    assert seen == ["GET", "HEAD"]
    rig.clock.now += 1
    rig.step()
    assert seen == ["GET", "HEAD", "HEAD"]  # still there: nothing changes
    assert rig.rows() == connected("🔴 My device (1)", self_service=True)
    rig.handler = refused
    rig.clock.now += REACHABILITY_INTERVAL
    rig.step()
    assert rig.rows() == offline()
    rig.handler = handler
    rig.clock.now += TOKEN_CHECK_INTERVAL
    rig.step()
    assert rig.rows() == connected("🔴 My device (1)", self_service=True)


def test_server_error_while_connected_keeps_the_last_menu(tmp_path: Path) -> None:
    rig = Rig(tmp_path, desktop_only(lambda: summary(2)))
    rig.step()
    rig.handler = status(500)
    rig.clock.now += SUMMARY_INTERVAL
    rig.step()
    assert rig.rows() == connected("🔴 My device (2)", self_service=True)


def test_server_error_after_offline_means_connecting(tmp_path: Path) -> None:
    rig = Rig(tmp_path, refused)
    rig.step()
    assert rig.rows() == offline()
    rig.handler = status(502)
    rig.clock.now += TOKEN_CHECK_INTERVAL
    rig.step()
    assert rig.rows() == connecting()


def test_token_rotation_shows_connecting_until_the_new_token_validates(tmp_path: Path) -> None:
    registered = {TOKEN}

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "HEAD":
            return httpx.Response(200)
        token = request.url.path.split("/")[5]
        return summary(1) if token in registered else httpx.Response(401)

    rig = Rig(tmp_path, handler)
    rig.step()
    assert rig.rows() == connected("🔴 My device (1)", self_service=True)
    rig.rotate(NEW_TOKEN)  # orbit wrote a token the server does not know yet
    rig.clock.now += 1
    rig.step()
    assert rig.rows() == connecting()
    assert rig.published[-1].connection is Connection.CONNECTING
    assert rig.sleeps == [1.0, 2.0, 3.0]
    rig.clock.now += 1
    rig.step()
    assert rig.rows() == connecting()  # the next check is 5 s after the failed one
    registered.add(NEW_TOKEN)
    rig.clock.now += TOKEN_CHECK_INTERVAL
    rig.step()
    assert rig.rows() == connected("🔴 My device (1)", self_service=True)
    rig.controller.click(rig.controller.items[1].key)
    assert rig.opened == [f"{URL}/device/{NEW_TOKEN}"]


def test_token_rewrite_to_the_same_valid_token_reconnects_at_once(tmp_path: Path) -> None:
    rig = Rig(tmp_path, desktop_only(lambda: summary(0)))
    rig.step()
    states: list[Connection] = []
    rig.controller._on_change = lambda state, items: states.append(state.connection)
    rig.rotate(TOKEN)
    rig.clock.now += 1
    rig.step()
    assert states == [Connection.CONNECTING, Connection.CONNECTED]


def test_missing_token_file_is_connecting_not_a_crash(tmp_path: Path) -> None:
    rig = Rig(tmp_path, desktop_only(lambda: summary(0)))
    rig.token_path.unlink()
    rig.step()
    assert rig.rows() == connecting()
    rig.token_path.write_text(TOKEN)
    rig.clock.now += 1
    rig.step()  # the watcher notices the new file and checks at once
    assert rig.rows() == connected("🟢 My device", self_service=True)


def test_click_refreshes_the_summary(tmp_path: Path) -> None:
    counts = iter([3, 0])
    rig = Rig(tmp_path, desktop_only(lambda: summary(next(counts, 0))))
    rig.step()
    assert rig.rows()[1][0] == "🔴 My device (3)"
    rig.clock.now += 2
    my_device = rig.controller.items[1].key
    assert rig.controller.click(my_device)
    rig.step()
    assert rig.rows()[1][0] == "🟢 My device"


def test_error_reports_go_out_only_when_the_server_takes_them(tmp_path: Path) -> None:
    posted: list[str] = []
    capabilities = {"X-Fleet-Capabilities": "error_reporting"}

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "HEAD":
            return httpx.Response(200, headers=capabilities)
        if request.method == "POST":
            posted.append(request.url.path)
            return httpx.Response(200, json={})
        return summary(0)

    rig = Rig(tmp_path, handler)
    rig.controller.queue_error_report("tray unavailable: no display")
    rig.step()
    assert posted == [f"/api/latest/fleet/device/{TOKEN}/debug/errors"]
    assert rig.controller.capabilities == frozenset({"error_reporting"})

    capabilities = {}  # a server without error_reporting
    (tmp_path / "quiet").mkdir()
    quiet = Rig(tmp_path / "quiet", handler)
    quiet.controller.queue_error_report("tray unavailable: no display")
    quiet.step()
    assert len(posted) == 1  # nothing sent


def test_disabled_items_do_not_open_anything(tmp_path: Path) -> None:
    rig = Rig(tmp_path, status(401))
    rig.step()
    for item in rig.controller.items:
        assert not rig.controller.click(item.key)
    assert rig.opened == []


# --- pure state machine ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("failing", "expected"),
    [(0, "My device"), (1, "My device (1 issue)"), (2, "My device (2 issues)"), (17, "My device (17 issues)")],
)
def test_windows_wording_has_no_emoji(failing: int, expected: str) -> None:
    assert my_device_title(failing, "windows") == expected
    state = apply(initial_state(), SummaryReceived(DesktopSummary(failing_policies_count=failing)))
    items = render_menu(state, version=VERSION, platform="windows")
    assert items[1].title == expected
    assert not any(ord(ch) > 0xFFFF for item in items if item.visible for ch in item.title)


@pytest.mark.parametrize("platform", ["linux", "macos"])
def test_emoji_badge_elsewhere(platform: Platform) -> None:
    assert my_device_title(5, platform) == "🔴 My device (5)"
    assert my_device_title(0, platform) == "🟢 My device"
    assert my_device_title(None, platform) == "My device"


def test_windows_fleet_free_title(tmp_path: Path) -> None:
    rig = Rig(tmp_path, status(402), platform="windows")
    rig.step()
    assert rig.rows()[1] == ("My device", True, True)


@pytest.mark.parametrize(
    ("event", "connection"),
    [
        (TokenChanged(), Connection.CONNECTING),
        (Unauthorized(), Connection.CONNECTING),
        (TokenUnavailable("gone"), Connection.CONNECTING),
        (Unreachable("refused"), Connection.OFFLINE),
        (ServerFailure("500", 500), Connection.CONNECTED),
        (FleetFree(), Connection.CONNECTED),
    ],
)
def test_transitions_from_connected(event: object, connection: Connection) -> None:
    start = apply(initial_state(), SummaryReceived(DesktopSummary(failing_policies_count=2)))
    assert apply(start, event).connection is connection  # type: ignore[arg-type]


def test_permanent_error_shows_only_the_error() -> None:
    state = initial_state("Your device identity could not be created. Contact your IT admin.")
    for event in (SummaryReceived(DesktopSummary()), Unreachable("x"), TokenChanged()):
        assert apply(state, event) == state
    items = render_menu(state, version=VERSION, platform="linux")
    assert rows(items) == [
        (f"Fleet Desktop v{VERSION}", False, True),
        ("Your device identity could not be created. Contact your IT admin.", False, True),
    ]
    assert status_document(state, items) == {
        "state": "offline",
        "items": [
            {"title": f"Fleet Desktop v{VERSION}", "enabled": False, "visible": True},
            {
                "title": "Your device identity could not be created. Contact your IT admin.",
                "enabled": False,
                "visible": True,
            },
        ],
        "failing_policies": 0,
    }


def test_icon_status_follows_the_state() -> None:
    base = initial_state()
    assert icon_status(base) is IconStatus.CONNECTING
    assert icon_status(apply(base, Unreachable("x"))) is IconStatus.OFFLINE
    failing = apply(base, SummaryReceived(DesktopSummary(failing_policies_count=1)))
    assert icon_status(failing) is IconStatus.FAILING
    assert icon_status(apply(base, SummaryReceived(DesktopSummary(failing_policies_count=0)))) is IconStatus.CONNECTED
    assert icon_status(apply(base, FleetFree())) is IconStatus.CONNECTED
