"""The admin console over real TLS, as an HTTP client sees it (issue 20): login, session cookie, CSRF, expiry, the
security headers, hostile data escaped on every page, bad parameters answered 400 (never 5xx), and the console
showing what the admin REST API answers for the same parameters.

The browser's view of the same pages is in ``test_console_browser.py``.
"""

from __future__ import annotations

import re
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from html.parser import HTMLParser

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server_stub.admin_sessions import IDLE_SECONDS, MAX_AGE_SECONDS
from server_stub.console.routes import COOKIE
from server_stub.state import LOGIN_BURST
from tests.support.agents import host_details, host_id_for_uuid, orbit_enroll, osquery_enroll
from tests.support.stub_server import GLOBAL_SECRET, FakeClock, RunningStub

pytestmark = pytest.mark.timeout(180)

HOSTILE = "<img src=x onerror=alert(1)>"
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)


def _csrf(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found, page[:2000]
    return found.group(1)


@contextmanager
def _login(stub: RunningStub) -> Iterator[httpx.Client]:
    with stub.client(follow_redirects=False) as client:
        answer = client.post("/console/login", data={"token": stub.admin_token})
        assert answer.status_code == 303 and answer.headers["location"] == "/console/hosts", answer.text
        yield client


@pytest.fixture
def console(stub: RunningStub) -> Iterator[httpx.Client]:
    with _login(stub) as client:
        yield client


def _enroll(
    stub: RunningStub, hostname: str, *, platform: str = "ubuntu", hardware_model: str = "Sim 9000"
) -> tuple[int, str]:
    """A host as osqueryd enrolls it; returns (host id, node key)."""
    hardware_uuid = str(uuid.uuid4()).upper()
    details = host_details(hardware_uuid, hostname, platform)
    details["system_info"]["hardware_model"] = hardware_model  # type: ignore[index]
    with stub.client() as client:
        answer = client.post(
            "/api/v1/osquery/enroll",
            json={"enroll_secret": GLOBAL_SECRET, "host_identifier": hardware_uuid, "host_details": details},
        )
        node_key = str(answer.json()["node_key"])
    with stub.admin() as admin:
        return host_id_for_uuid(admin, hardware_uuid), node_key


class _Audit(HTMLParser):
    """Everything on a page that could run script or style outside our own files."""

    def __init__(self) -> None:
        super().__init__()
        self.problems: list[str] = []
        self.tags: list[str] = []
        self.texts: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        names = {name for name, _ in attrs}
        if tag == "script" and "src" not in names:
            self.problems.append("inline <script>")
        if tag == "style":
            self.problems.append("<style>")
        for name, value in attrs:
            if name.startswith("on") or name == "style":
                self.problems.append(f"{tag} {name}=")
            if name in ("href", "src", "action") and value and not value.startswith(("/", "#", "http://www.w3")):
                self.problems.append(f"{tag} {name}={value}")

    def handle_data(self, data: str) -> None:
        self.texts.append(data)


def _audit(page: str) -> _Audit:
    audit = _Audit()
    audit.feed(page)
    audit.close()
    return audit


# --- login, cookie, logout --------------------------------------------------------------------------------------------


def test_login_sets_a_strict_secure_cookie_and_logout_ends_the_session(stub: RunningStub) -> None:
    with stub.client(follow_redirects=False) as client:
        for root in ("/", "/console", "/console/"):
            assert client.get(root).headers["location"] == "/console/hosts"
        assert client.get("/console/hosts").headers["location"] == "/console/login"
        login_page = client.get("/console/login")
        assert login_page.status_code == 200 and 'type="password"' in login_page.text

        answer = client.post("/console/login", data={"token": stub.admin_token})
        cookie = answer.headers["set-cookie"]
        attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")[1:]}
        assert cookie.startswith(f"{COOKIE}=")
        assert {"secure", "httponly", "path", "max-age", "samesite"} <= attributes and "domain" not in attributes
        assert "samesite=strict" in cookie.lower() and "path=/;" in cookie.lower()
        assert stub.admin_token not in cookie

        hosts = client.get("/console/hosts")
        assert hosts.status_code == 200 and "<h1>Hosts</h1>" in hosts.text
        assert client.get("/console/login").headers["location"] == "/console/hosts"  # already in

        out = client.post("/console/logout", data={"csrf": _csrf(hosts.text)})
        assert out.status_code == 303 and out.headers["location"] == "/console/login?logged_out=1"
        assert "max-age=0" in out.headers["set-cookie"].lower()
        assert "You are logged out." in client.get("/console/login?logged_out=1").text
        assert client.get("/console/hosts").headers["location"] == "/console/login"


def test_a_logged_out_cookie_stays_dead(stub: RunningStub) -> None:
    with _login(stub) as client:
        stolen = client.cookies[COOKIE]
        client.post("/console/logout", data={"csrf": _csrf(client.get("/console/hosts").text)})
    with stub.client(follow_redirects=False, cookies={COOKIE: stolen}) as replay:
        assert replay.get("/console/hosts").headers["location"] == "/console/login"


def test_wrong_tokens_are_refused_and_paced(stub: RunningStub) -> None:
    with stub.client(follow_redirects=False) as client:
        for wrong in ("", "wrong", stub.admin_token + "x", stub.admin_token[:-1], "é" * 40):
            answer = client.post("/console/login", data={"token": wrong})
            assert answer.status_code == 401, wrong
            assert "That is not the admin token." in answer.text and "set-cookie" not in answer.headers
        assert client.get("/console/hosts").headers["location"] == "/console/login"
        for _ in range(LOGIN_BURST):
            client.post("/console/login", data={"token": "guess"})
        paced = client.post("/console/login", data={"token": stub.admin_token})  # even the right one, for now
        assert paced.status_code == 429 and int(paced.headers["retry-after"]) >= 1


def test_sessions_expire_when_idle_and_at_their_max_age(stub: RunningStub, clock: FakeClock) -> None:
    with _login(stub) as client:
        clock.advance(IDLE_SECONDS - 5)
        assert client.get("/console/versions").status_code == 200  # used: idle time starts again
        clock.advance(IDLE_SECONDS + 1)
        expired = client.get("/console/hosts")
        assert expired.headers["location"] == "/console/login?expired=1"
        assert "Your session has expired" in client.get(expired.headers["location"]).text
        assert client.get("/console/hosts").headers["location"] == "/console/login"

    with _login(stub) as client:
        for _ in range(int(MAX_AGE_SECONDS // (IDLE_SECONDS - 60))):
            clock.advance(IDLE_SECONDS - 60)
            assert client.get("/console/hosts").status_code == 200
        clock.advance(IDLE_SECONDS - 60)
        assert client.get("/console/hosts").headers["location"] == "/console/login?expired=1"


# --- CSRF -----------------------------------------------------------------------------------------------------------


def test_forms_need_the_sessions_csrf_token(stub: RunningStub, console: httpx.Client) -> None:
    host_id, _ = _enroll(stub, "csrf-target")
    for form in ({}, {"csrf": ""}, {"csrf": "forged"}):
        refused = console.post("/console/logout", data=form)
        assert refused.status_code == 403 and "security token" in refused.text
        query = console.post(f"/console/hosts/{host_id}/query", data={**form, "query": "SELECT 1"})
        assert query.status_code == 403
    with stub.admin() as admin:
        assert admin.get(f"/api/latest/fleet/hosts/{host_id}/queries").json()["queries"] == []
    assert console.get("/console/hosts").status_code == 200  # still logged in


def test_cross_site_posts_are_refused_even_with_the_token(stub: RunningStub, console: httpx.Client) -> None:
    csrf = _csrf(console.get("/console/hosts").text)
    for headers in ({"Origin": "https://evil.example"}, {"Sec-Fetch-Site": "cross-site"}, {"Origin": "null"}):
        refused = console.post("/console/logout", data={"csrf": csrf}, headers=headers)
        assert refused.status_code == 403 and "another site" in refused.text
        login = console.post("/console/login", data={"token": stub.admin_token}, headers=headers)
        assert login.status_code == 403
    assert console.get("/console/hosts").status_code == 200
    same = console.post("/console/logout", data={"csrf": csrf}, headers={"Origin": stub.url})
    assert same.status_code == 303


def test_posts_without_a_session_or_with_odd_bodies(stub: RunningStub, console: httpx.Client) -> None:
    with stub.client(follow_redirects=False) as anonymous:
        for answer in (
            anonymous.post("/console/logout", data={"csrf": "x"}),
            anonymous.post("/console/hosts/1/query", data={"csrf": "x", "query": "SELECT 1"}),
        ):
            assert answer.status_code == 403
            # no cookie came, so none is cleared: a cross-site request must not log the admin out
            assert "set-cookie" not in answer.headers
        assert "set-cookie" not in anonymous.get("/console/hosts").headers
    csrf = _csrf(console.get("/console/hosts").text)
    as_json = console.post("/console/logout", json={"csrf": csrf})
    assert as_json.status_code == 415
    many = console.post(
        "/console/logout",
        content="&".join(f"f{i}=1" for i in range(100)) + f"&csrf={csrf}",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert many.status_code == 400
    big = console.post("/console/hosts/1/query", data={"csrf": csrf, "query": "x" * 200_000})
    assert big.status_code == 413


# --- headers, assets ------------------------------------------------------------------------------------------------


def test_pages_carry_the_csp_and_hold_no_inline_script_or_style(stub: RunningStub, console: httpx.Client) -> None:
    host_id, _ = _enroll(stub, "headers")
    with stub.client() as anonymous:
        login = anonymous.get("/console/login")
    for path, answer in [("login", login)] + [
        (path, console.get(path)) for path in ("/console/hosts", f"/console/hosts/{host_id}", "/console/versions")
    ]:
        assert answer.status_code == 200, path
        assert answer.headers["content-security-policy"] == CSP
        assert answer.headers["x-frame-options"] == "DENY" and answer.headers["cache-control"] == "no-store"
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert answer.headers["content-type"] == "text/html; charset=utf-8"
        assert _audit(answer.text).problems == [], path
    for name, kind in (("console.css", "text/css"), ("console.js", "text/javascript"), ("favicon.svg", "image/svg")):
        asset = console.get(f"/console/static/{name}")
        assert asset.status_code == 200 and asset.headers["content-type"].startswith(kind)
        assert asset.headers["x-content-type-options"] == "nosniff"
    for missing in ("nope.js", "..%2Fstate.py", "console.css.map"):
        assert console.get(f"/console/static/{missing}").status_code == 404


# --- hostile data ---------------------------------------------------------------------------------------------------


def test_hostile_host_data_is_escaped_on_every_page(stub: RunningStub, console: httpx.Client) -> None:
    host_id, node_key = _enroll(stub, HOSTILE, hardware_model="<script>alert(2)</script>")
    with stub.client() as agent:
        answer = agent.post(
            "/api/osquery/distributed/write",
            json={
                "node_key": node_key,
                "queries": {"fleet_detail_query_osquery_info": [{"version": '"><svg onload=alert(3)>'}]},
                "statuses": {"fleet_detail_query_osquery_info": 0},
            },
        )
        assert answer.status_code == 200
    with stub.admin() as admin:
        team = admin.post("/api/latest/fleet/teams", json={"name": "<b onmouseover=alert(4)>team"}).json()["team"]
        admin.post("/api/latest/fleet/global/policies", json={"name": "<i>policy</i>", "query": "SELECT 1"})
        assert team["name"].startswith("<b")
        admin.post("/api/latest/fleet/scripts/run", json={"host_id": host_id, "script_contents": "echo '<u>x</u>'"})
    pages = {
        "hosts": console.get("/console/hosts").text,
        "search": console.get("/console/hosts", params={"query": HOSTILE}).text,
        "host": console.get(f"/console/hosts/{host_id}").text,
        "versions": console.get("/console/versions").text,
    }
    for name, page in pages.items():
        audit = _audit(page)
        assert audit.problems == [], name
        assert not {"img", "svg", "u", "i"} & set(audit.tags) or name == "versions", (name, set(audit.tags))
        assert "<img src=x" not in page and "<script>alert" not in page, name
    assert HOSTILE in " ".join(_audit(pages["hosts"]).texts)  # shown as text
    assert HOSTILE in " ".join(_audit(pages["search"]).texts)
    assert '"><svg onload=alert(3)>' in " ".join(_audit(pages["versions"]).texts)
    host_text = " ".join(_audit(pages["host"]).texts)
    assert "<script>alert(2)</script>" in host_text and "echo '<u>x</u>'" in host_text


def test_live_query_rows_from_a_host_are_escaped(stub: RunningStub, console: httpx.Client) -> None:
    host_id, node_key = _enroll(stub, "answers-with-html")
    csrf = _csrf(console.get(f"/console/hosts/{host_id}").text)
    with stub.client() as agent:

        def answer_when_asked() -> None:
            for _ in range(200):
                plan = agent.post("/api/osquery/distributed/read", json={"node_key": node_key}).json()
                names = [n for n in plan["queries"] if n.startswith("fleet_distributed_query_")]
                if names:
                    agent.post(
                        "/api/osquery/distributed/write",
                        json={
                            "node_key": node_key,
                            "queries": {names[0]: [{"<th>col": "<script>alert(5)</script>"}]},
                            "statuses": {names[0]: 0},
                        },
                    )
                    return

        helper = threading.Thread(target=answer_when_asked)
        helper.start()
        posted = console.post(f"/console/hosts/{host_id}/query", data={"csrf": csrf, "query": "SELECT '<x>'"})
        helper.join(30)
    assert posted.status_code == 303
    location = posted.headers["location"]
    assert re.fullmatch(rf"/console/hosts/{host_id}\?query_id=\d+#live-query", location)
    page = console.get(location.split("#")[0]).text
    audit = _audit(page)
    assert audit.problems == [] and audit.tags.count("script") == 1  # ours, with src
    assert "<script>alert(5)</script>" in " ".join(audit.texts) and "<th>col" in " ".join(audit.texts)
    assert "1 row" in " ".join(audit.texts)


# --- bad input ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "params",
    [
        "order_key=node_key",
        "order_key=hostname%3B%20DROP%20TABLE%20hosts",
        "order_direction=up",
        "page=-1",
        "page=99999999999999999999999999",
        "per_page=0",
        "per_page=501",
        "status=%3Cscript%3E",
        "team_id=1e3",
        "query=" + "x" * 300,
        "query=%00",
    ],
)
def test_bad_list_parameters_get_a_400_page(console: httpx.Client, params: str) -> None:
    answer = console.get("/console/hosts?" + params)
    assert answer.status_code == 400, answer.text[:500]
    assert answer.headers["content-security-policy"] == CSP
    assert "<script>" not in answer.text.replace('<script src="/console/static/console.js" defer></script>', "")


def test_odd_paths_and_ids(console: httpx.Client) -> None:
    for path in (
        "/console/hosts/abc",
        "/console/hosts/999999",
        "/console/hosts/99999999999999999999999",
        "/console/hosts/٣",
    ):
        assert console.get(path).status_code == 404, path
    assert console.get("/console/hosts/1?query_id=x").status_code == 400
    assert console.get("/console/hosts/").status_code == 404  # no redirect built from the Host header
    assert console.get("/console/nope").status_code == 404


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    params=st.dictionaries(
        st.sampled_from(
            [
                "order_key",
                "order_direction",
                "page",
                "per_page",
                "query",
                "status",
                "team_id",
                "platform",
                "osquery_version",
                "x",
            ]
        ),
        st.text(max_size=40),
        max_size=4,
    )
)
def test_no_list_parameters_make_a_5xx(stub: RunningStub, console: httpx.Client, params: dict[str, str]) -> None:
    with stub.admin() as admin:
        api = admin.get("/api/latest/fleet/hosts", params=params)
        page = console.get("/console/hosts", params=params)
    assert api.status_code in (200, 400), api.text
    assert page.status_code in (200, 400), page.text[:500]


# --- one source of truth ----------------------------------------------------------------------------------------------


def test_the_console_lists_what_the_rest_api_lists(stub: RunningStub, console: httpx.Client) -> None:
    for index in range(30):
        _enroll(stub, f"parity-{index:02d}", platform="darwin" if index % 2 else "ubuntu")
    with stub.admin() as admin:
        for params in (
            {"per_page": "7", "page": "1"},
            {"per_page": "10", "order_key": "hostname", "order_direction": "desc"},
            {"per_page": "25", "platform": "darwin", "query": "parity-1"},
            {"per_page": "25", "status": "online", "order_key": "seen_time"},
        ):
            api = [h["id"] for h in admin.get("/api/latest/fleet/hosts", params=params).json()["hosts"]]
            page = console.get("/console/hosts", params=params).text
            shown = [int(i) for i in re.findall(r'<tr><td><a href="/console/hosts/(\d+)">', page)]
            assert shown == api and api, params
            count = admin.get("/api/latest/fleet/hosts/count", params=params).json()["count"]
            assert f"· {count} shown by the filters" in page, params


def test_version_changes_show_on_the_console_and_in_the_api(stub: RunningStub, console: httpx.Client) -> None:
    host_id, node_key = _enroll(stub, "updated-host")
    with stub.client() as agent:
        agent.post(
            "/api/osquery/distributed/write",
            json={
                "node_key": node_key,
                "queries": {"fleet_detail_query_osquery_info": [{"version": "5.15.0"}]},
                "statuses": {"fleet_detail_query_osquery_info": 0},
            },
        )
    with stub.admin() as admin:
        versions = admin.get(f"/api/latest/fleet/hosts/{host_id}/versions").json()
        summary = admin.get("/api/latest/fleet/versions").json()["versions"]
    assert versions["installed"]["osqueryd"] == "5.15.0"
    assert versions["changes"][0]["previous_version"] is not None and versions["changes"][0]["version"] == "5.15.0"
    assert {"version": "5.15.0", "hosts": 1} in summary["osqueryd"]
    hosts_page = console.get("/console/hosts").text
    assert "→ 5.15.0" in hosts_page
    host_page = console.get(f"/console/hosts/{host_id}").text
    assert "</code> → <code>5.15.0</code>" in host_page
    assert 'href="/console/hosts?osquery_version=5.15.0"' in console.get("/console/versions").text


def test_device_token_state_never_shows_the_token(stub: RunningStub, console: httpx.Client, clock: FakeClock) -> None:
    hardware_uuid = str(uuid.uuid4()).upper()
    token = str(uuid.uuid4())
    with stub.client() as client:
        orbit_key = orbit_enroll(client, hardware_uuid, secret=GLOBAL_SECRET)
        osquery_enroll(client, hardware_uuid, hostname="with-token")
        client.post("/api/fleet/orbit/device_token", json={"orbit_node_key": orbit_key, "device_auth_token": token})
    with stub.admin() as admin:
        host_id = host_id_for_uuid(admin, hardware_uuid)
        state = admin.get(f"/api/latest/fleet/hosts/{host_id}/device_token").json()["device_token"]
        assert state["state"] == "valid" and token not in str(state)
        page = console.get(f"/console/hosts/{host_id}").text
        assert "valid</span> until" in page and token not in page
        clock.advance(3601)
        assert admin.get(f"/api/latest/fleet/hosts/{host_id}/device_token").json()["device_token"]["state"] == "expired"
    with _login(stub) as again:  # the console session idled out meanwhile too
        assert "expired</span>" in again.get(f"/console/hosts/{host_id}").text
