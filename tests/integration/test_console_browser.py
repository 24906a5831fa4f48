"""The admin console in headless Chromium (issue 20): log in, the hosts table with a real osqueryd-sim host, its
page, a live query it answers, the versions chart, logout; a hostile hostname, reading with JavaScript off, the
page refreshing itself with it on, an expired session, a wrong token and a cross-site form.

Chromium trusts the stub's CA through an NSS database, as in ``test_my_device_browser.py``, and is driven over the
DevTools protocol (``tests/support/cdp_browser.py``). Screenshots go to ``<tmp_path>/artifacts/`` (paths printed).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
from PIL import Image

from server_stub.admin_sessions import IDLE_SECONDS
from server_stub.console.routes import COOKIE
from tests.support.agents import osquery_enroll
from tests.support.cdp_browser import CdpBrowser, Page, trusting_home
from tests.support.rollout_hosts import create_rollout, enroll_orbits, in_wave, outcome, publish_repository, rollout
from tests.support.sim_process import SimProcess, orbit_style_args
from tests.support.stub_server import GLOBAL_SECRET, FakeClock, RunningStub, running_stub

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]

FAST_OPTIONS = {"config": {"options": {"distributed_interval": 1, "logger_tls_period": 1}}}
HOSTILE = "<img src=x onerror=alert(1)>"
T = TypeVar("T")


def wait_until(predicate: Callable[[], T | None], timeout: float, what: str) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.2)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def stub(tmp_path: Path, clock: FakeClock) -> Iterator[RunningStub]:
    with running_stub(tmp_path / "stub", clock=clock, live_query_timeout=30.0) as running:
        with running.admin() as admin:
            assert admin.patch("/api/latest/fleet/config", json={"agent_options": FAST_OPTIONS}).status_code == 200
        yield running


@pytest.fixture
def artifacts(tmp_path: Path) -> Path:
    path = tmp_path / "artifacts"
    path.mkdir()
    print(f"console screenshots in {path}")
    return path


@pytest.fixture
def browser(tmp_path: Path, stub: RunningStub) -> Iterator[CdpBrowser]:
    home = trusting_home(tmp_path / "browser-home", stub.ca_path)
    with CdpBrowser(home, tmp_path / "chromium.log") as running:
        yield running


def _sim(tmp_path: Path, stub: RunningStub, hostname: str) -> tuple[SimProcess, int]:
    root = tmp_path / f"sim-{uuid.uuid4().hex[:6]}"
    root.mkdir()
    args = orbit_style_args(root, stub.url, stub.ca_path, f"--sim_uuid={uuid.uuid4()}", f"--sim_hostname={hostname}")
    sim = SimProcess(args, secret=GLOBAL_SECRET, log_path=root / "sim.log")

    def enrolled() -> int | None:
        with stub.admin() as admin:
            hosts = admin.get("/api/latest/fleet/hosts", params={"query": hostname}).json()["hosts"]
        return next((int(h["id"]) for h in hosts if h["hostname"] == hostname and h["osquery_version"]), None)

    try:
        return sim, wait_until(enrolled, 60, f"osqueryd-sim {hostname!r} on the server")
    except BaseException:
        sim.kill()
        raise


def _login(page: Page, stub: RunningStub) -> None:
    page.goto(stub.url + "/")
    assert page.url == stub.url + "/console/login"
    page.submit("form[action='/console/login']", {"token": stub.admin_token})
    assert page.url == stub.url + "/console/hosts", page.text()[:500]


def _cells(page: Page, selector: str) -> list[str]:
    cells: list[str] = page.evaluate(f"[...document.querySelectorAll({selector!r})].map(e => e.textContent.trim())")
    return cells


def _security_complaints(browser: CdpBrowser) -> list[str]:
    texts = [
        str(e["params"]["entry"].get("text", ""))
        for e in browser.events_since(0)
        if e.get("method") == "Log.entryAdded" and e["params"]["entry"].get("level") == "error"
    ]
    return [t for t in texts if "Content Security Policy" in t or "Refused" in t or "Mixed Content" in t]


def _assert_picture(path: Path) -> None:
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size == (1280, 900)
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 50, "the screenshot is (nearly) blank"


def test_admin_logs_in_sees_hosts_queries_one_and_logs_out(
    tmp_path: Path, stub: RunningStub, browser: CdpBrowser, artifacts: Path
) -> None:
    sim, host_id = _sim(tmp_path, stub, "console-sim-1")
    try:
        page = browser.new_page()
        page.goto(stub.url + "/")
        assert page.url == stub.url + "/console/login" and "Admin token" in page.text()
        _assert_picture(page.screenshot(artifacts / "console-login.png"))

        page.submit("form[action='/console/login']", {"token": stub.admin_token})
        assert page.url == stub.url + "/console/hosts"
        cookie = next(c for c in page.cookies() if c["name"] == COOKIE)
        assert cookie["httpOnly"] and cookie["secure"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/"
        assert page.evaluate("document.cookie") == ""  # HttpOnly: no script of the page can read it
        names = _cells(page, "#hosts-table tbody td:first-child")
        assert names == ["console-sim-1"]
        row = page.text("#hosts-table tbody tr")
        assert "online" in row and "+sim" in row
        _assert_picture(page.screenshot(artifacts / "console-hosts.png"))

        page.click(f"#hosts-table a[href='/console/hosts/{host_id}']")
        assert page.url == f"{stub.url}/console/hosts/{host_id}"
        assert page.text("#host-name") == "console-sim-1"
        assert "first seen" in page.text("#version-history")
        _assert_picture(page.screenshot(artifacts / "console-host.png"))

        page.submit("form.live-query", {"query": "SELECT hostname, version FROM system_info, osquery_info"}, 60)
        assert "query_id=" in page.url and page.url.endswith("#live-query")
        assert _cells(page, "#query-rows th") == ["hostname", "version"]
        hostname, version = _cells(page, "#query-rows td")
        assert hostname == "console-sim-1" and version.endswith("+sim")
        _assert_picture(page.screenshot(artifacts / "console-live-query.png"))

        page.goto(stub.url + "/console/versions")
        assert page.count("svg#chart-osqueryd a") == 1 and version in page.text("#main")
        _assert_picture(page.screenshot(artifacts / "console-versions.png"))

        assert _security_complaints(browser) == []
        page.submit("form.logout", {})
        assert page.url == stub.url + "/console/login?logged_out=1" and "You are logged out." in page.text()
        assert not [c for c in page.cookies() if c["name"] == COOKIE]
        page.goto(stub.url + "/console/hosts")
        assert page.url == stub.url + "/console/login"
    finally:
        assert sim.stop() == 0


def test_hostile_hostname_is_text_in_the_browser(tmp_path: Path, stub: RunningStub, browser: CdpBrowser) -> None:
    sim, host_id = _sim(tmp_path, stub, HOSTILE)
    try:
        page = browser.new_page()
        _login(page, stub)
        dialogs = browser.event_count()
        assert _cells(page, "#hosts-table tbody td:first-child") == [HOSTILE]
        assert page.count("img") == 0
        page.goto(f"{stub.url}/console/hosts/{host_id}")
        assert page.text("#host-name") == HOSTILE and page.evaluate("document.title").startswith(HOSTILE)
        page.submit("form.live-query", {"query": "SELECT hostname FROM system_info"}, 60)
        assert _cells(page, "#query-rows td") == [HOSTILE]
        assert page.count("img") == 0
        opened = [e for e in browser.events_since(dialogs) if e.get("method") == "Page.javascriptDialogOpening"]
        assert opened == []  # alert(1) never ran
        assert _security_complaints(browser) == []
    finally:
        assert sim.stop() == 0


def test_pages_read_without_javascript_and_refresh_with_it(stub: RunningStub, browser: CdpBrowser) -> None:
    with stub.client() as agent:
        osquery_enroll(agent, hostname="first-host")
    page = browser.new_page()
    _login(page, stub)
    assert _cells(page, "#hosts-table tbody td:first-child") == ["first-host"]
    with stub.client() as agent:
        osquery_enroll(agent, hostname="new-host")
    wait_until(lambda: "new-host" in page.text("#hosts-table"), 45, "the hosts page to show a new host by itself")
    assert page.evaluate("document.body.dataset.refreshed")  # console.js swapped <main>
    assert page.url == stub.url + "/console/hosts"  # no navigation

    quiet = browser.new_page()
    quiet.disable_javascript()
    quiet.goto(stub.url + "/console/hosts")  # the cookie is the browser's, JavaScript plays no part in it
    assert sorted(_cells(quiet, "#hosts-table tbody td:first-child")) == ["first-host", "new-host"]
    quiet.goto(stub.url + "/console/hosts?order_key=hostname&order_direction=desc")
    assert _cells(quiet, "#hosts-table tbody td:first-child") == ["new-host", "first-host"]
    quiet.goto(stub.url + "/console/versions")
    assert quiet.count("svg rect.bar") == 3


def test_expired_session_wrong_token_and_cross_site_form(
    stub: RunningStub, browser: CdpBrowser, clock: FakeClock
) -> None:
    page = browser.new_page()
    page.goto(stub.url + "/console/login")
    page.submit("form[action='/console/login']", {"token": "not-the-token"})
    assert "That is not the admin token." in page.text() and not page.cookies()

    _login(page, stub)
    # a page of another site that posts to the console: Chromium sends no Strict cookie and says cross-site
    attacker = browser.new_page()
    form = f"<form method=post action='{stub.url}/console/logout'><input name=csrf value=x></form>"
    attacker.goto("data:text/html," + form)
    attacker.submit("form", {})
    assert "Refused" in attacker.text() or "Not logged in" in attacker.text()
    page.goto(stub.url + "/console/hosts")
    assert page.url == stub.url + "/console/hosts"  # still logged in

    clock.advance(IDLE_SECONDS + 1)
    page.goto(stub.url + "/console/hosts")
    assert page.url == stub.url + "/console/login?expired=1"
    assert "Your session has expired" in page.text()


@pytest.fixture
def rollout_stub(tmp_path: Path, clock: FakeClock) -> Iterator[RunningStub]:
    repo = publish_repository(tmp_path / "tuf")
    with running_stub(tmp_path / "rollout-stub", clock=clock, tuf_repo=repo, rollout_tick=0.05) as running:
        yield running


def test_rollouts_page_pauses_and_resumes_a_rollout_with_its_buttons(
    tmp_path: Path, rollout_stub: RunningStub, artifacts: Path
) -> None:
    stub = rollout_stub
    with stub.client() as client, stub.admin() as admin:
        orbits = enroll_orbits(client, 12)
        created = create_rollout(
            admin,
            name="orbit 1.4.0",
            target="orbit",
            version="1.4.0",
            from_version="1.3.0",
            waves=[50, 100],
            halt_rules={"max_failed_percent": 50, "min_healthy_percent": 50},
        )
        rollout_id = int(str(created["id"]))
        first = in_wave(orbits, rollout_id, [50, 100], 0)
        assert len(first) >= 2
        for orbit in first[:-1]:
            orbit.report(client, outcome("confirmed"))
        first[-1].report(client, outcome("rolled_back"))  # one rollback, under the 50 % limit: still running
        home = trusting_home(tmp_path / "rollout-browser", stub.ca_path)
        with CdpBrowser(home, tmp_path / "chromium-rollouts.log") as browser:
            page = browser.new_page()
            _login(page, stub)
            page.goto(stub.url + "/console/rollouts")
            assert "orbit 1.4.0" in page.text("#main") and rollout(admin, rollout_id)["state"] == "running"
            _assert_picture(page.screenshot(artifacts / "console-rollouts.png"))

            page.click(f"form[action='/console/rollouts/{rollout_id}/pause'] button")
            assert page.url == f"{stub.url}/console/rollouts/{rollout_id}"
            assert page.text(f"#rollout-{rollout_id} .status") == "paused"
            assert rollout(admin, rollout_id)["state"] == "paused"

            page.click(f"form[action='/console/rollouts/{rollout_id}/resume'] button")
            assert page.text(f"#rollout-{rollout_id} .status") == "running"
            assert rollout(admin, rollout_id)["state"] == "running"
            assert "resumed" in page.text("ul.events") and "paused" in page.text("ul.events")
            assert _security_complaints(browser) == []
