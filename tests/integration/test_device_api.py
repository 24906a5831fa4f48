"""Device endpoints for Fleet Desktop and the "My device" pages (docs/reference/fleet-api.md §1.4–1.6, §1.8, §5).

A host is set up the way orbit does it: orbit enrolls, osqueryd enrolls with the same hardware UUID, orbit
registers the Desktop token. Policies are defined with the admin API and answered through distributed read/write
as osqueryd would.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass

import httpx
import pytest

from tests.support.agents import assert_shape_b, host_id_for_uuid, orbit_enroll, osquery_enroll
from tests.support.stub_server import GLOBAL_SECRET, TEAM_NAME, TEAM_SECRET, RunningStub

VERSIONS = ("v1", "2022-04", "latest")
HEADER = "X-Fleet-Capabilities"
HOSTNAME = "laptop-42"


@dataclass(frozen=True)
class Device:
    hardware_uuid: str
    host_id: int
    node_key: str
    orbit_key: str
    token: str


def _device(
    client: httpx.Client, admin: httpx.Client, *, secret: str = GLOBAL_SECRET, hostname: str = HOSTNAME
) -> Device:
    hardware_uuid = str(uuid.uuid4()).upper()
    orbit_key = orbit_enroll(client, hardware_uuid, secret=secret)
    node_key = osquery_enroll(client, hardware_uuid, secret=secret, hostname=hostname)
    token = str(uuid.uuid4())
    response = client.post(
        "/api/fleet/orbit/device_token", json={"orbit_node_key": orbit_key, "device_auth_token": token}
    )
    assert response.status_code == 200, response.text
    return Device(hardware_uuid, host_id_for_uuid(admin, hardware_uuid), node_key, orbit_key, token)


def _policy(
    admin: httpx.Client,
    name: str,
    *,
    resolution: str = "",
    platform: str = "",
    description: str = "",
    team_id: int | None = None,
) -> int:
    path = "/api/latest/fleet/global/policies" if team_id is None else f"/api/latest/fleet/teams/{team_id}/policies"
    response = admin.post(
        path,
        json={
            "name": name,
            "query": f"SELECT 1 FROM osquery_info WHERE '{uuid.uuid4().hex}' != '';",
            "description": description,
            "resolution": resolution,
            "platform": platform,
        },
    )
    assert response.status_code == 200, response.text
    policy_id: int = response.json()["policy"]["id"]
    return policy_id


def _policy_queries(client: httpx.Client, device: Device) -> set[str]:
    response = client.post("/api/v1/osquery/distributed/read", json={"node_key": device.node_key})
    assert response.status_code == 200
    return {name for name in response.json()["queries"] if name.startswith("fleet_policy_query_")}


def _answer(client: httpx.Client, device: Device, answers: dict[int, str]) -> None:
    """Write policy answers as osqueryd does: "pass" = a row, "fail" = no rows, "error" = nonzero status."""
    names = {policy_id: f"fleet_policy_query_{policy_id}" for policy_id in answers}
    queries = {names[p]: ([{"1": "1"}] if a == "pass" else []) for p, a in answers.items()}
    statuses = {names[p]: (1 if a == "error" else 0) for p, a in answers.items()}
    messages = {names[p]: ("no such table: nope" if a == "error" else "") for p, a in answers.items()}
    response = client.post(
        "/api/v1/osquery/distributed/write",
        json={"node_key": device.node_key, "queries": queries, "statuses": statuses, "messages": messages},
    )
    assert response.status_code == 200 and response.json() == {}


def _team_id(admin: httpx.Client, name: str) -> int:
    response = admin.get("/api/latest/fleet/teams")
    found: int = next(t["id"] for t in response.json()["teams"] if t["name"] == name)
    return found


def _policy_item(html: str, name: str) -> str:
    """The list item of the page that mentions the (already escaped) policy name."""
    items = [item for item in re.split(r"<li[ >]", html) if name in item]
    assert len(items) == 1, (name, html)
    return items[0].split("</li>")[0]


# --- pings ----------------------------------------------------------------------------------------------------


def test_public_ping_has_capabilities_header(stub: RunningStub) -> None:
    with stub.client() as client:
        response = client.head("/api/fleet/device/ping")
    assert response.status_code == 200
    assert response.headers.get_list(HEADER) == [""]
    assert response.content == b""


@pytest.mark.parametrize("version", VERSIONS)
def test_token_ping_for_each_version(stub: RunningStub, version: str) -> None:
    with stub.client() as client, stub.admin() as admin:
        device = _device(client, admin)
        good = client.head(f"/api/{version}/fleet/device/{device.token}/ping")
        assert good.status_code == 200
        assert good.content == b""
        assert good.headers.get_list(HEADER) == [""]
        for token in (str(uuid.uuid4()), "nope", device.orbit_key.replace("/", "_"), device.hardware_uuid):
            bad = client.head(f"/api/{version}/fleet/device/{token}/ping")
            assert bad.status_code == 401, token
            assert HEADER not in bad.headers


def test_unknown_api_version_is_404(stub: RunningStub) -> None:
    with stub.client() as client, stub.admin() as admin:
        device = _device(client, admin)
        for version in ("v2", "2022-05", "LATEST", "v1beta", "2022-04x"):
            assert client.head(f"/api/{version}/fleet/device/{device.token}/ping").status_code == 404, version
            assert_shape_b(client.get(f"/api/{version}/fleet/device/{device.token}/desktop"), 404)
            assert_shape_b(client.get(f"/api/{version}/fleet/device/{device.token}/policies"), 404)


# --- desktop summary and policies -----------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_desktop_summary_counts_failing_policies(stub: RunningStub, version: str) -> None:
    with stub.client() as client, stub.admin() as admin:
        passing = _policy(admin, "Disk encrypted", platform="linux")
        failing = _policy(admin, "Firewall on", resolution="Turn the firewall on.")
        failing_too = _policy(admin, "Screen lock", platform="linux,darwin")
        erroring = _policy(admin, "Agent healthy")
        unanswered = _policy(admin, "Not yet run")
        device = _device(client, admin)
        empty = client.get(f"/api/{version}/fleet/device/{device.token}/desktop").json()
        assert empty["failing_policies_count"] == 0
        sent = _policy_queries(client, device)
        assert sent == {f"fleet_policy_query_{p}" for p in (passing, failing, failing_too, erroring, unanswered)}
        _answer(client, device, {passing: "pass", failing: "fail", failing_too: "fail", erroring: "error"})
        response = client.get(f"/api/{version}/fleet/device/{device.token}/desktop")
    assert response.status_code == 200
    assert response.headers.get_list(HEADER) == [""]
    body = response.json()
    assert "error" not in body
    assert body["failing_policies_count"] == 2
    assert body["self_service"] is False
    org_info = body["config"]["org_info"]
    for key in ("org_name", "org_logo_url", "org_logo_url_light_background", "contact_url"):
        assert isinstance(org_info[key], str)


def test_policies_list_responses(stub: RunningStub) -> None:
    with stub.client() as client, stub.admin() as admin:
        passing = _policy(admin, "Disk encrypted", resolution="Encrypt it.", description="LUKS on")
        failing = _policy(admin, "Firewall on", resolution="Turn the firewall on.")
        erroring = _policy(admin, "Agent healthy")
        unanswered = _policy(admin, "Not yet run")
        device = _device(client, admin)
        _policy_queries(client, device)
        _answer(client, device, {passing: "pass", failing: "fail", erroring: "error"})
        response = client.get(f"/api/latest/fleet/device/{device.token}/policies")
    assert response.status_code == 200
    assert response.headers.get_list(HEADER) == [""]
    listed = {p["id"]: p for p in response.json()["policies"]}
    assert {pid: p["response"] for pid, p in listed.items()} == {
        passing: "pass",
        failing: "fail",
        erroring: "",
        unanswered: "",
    }
    for policy in listed.values():
        for key in ("id", "name", "query", "description", "resolution", "platform", "response"):
            assert key in policy
    assert listed[passing]["name"] == "Disk encrypted"
    assert listed[passing]["description"] == "LUKS on"
    assert listed[failing]["resolution"] == "Turn the firewall on."
    # Fleet Desktop counts the entries that are not "pass"; with errors and unanswered ones that is 3
    assert sum(1 for p in listed.values() if p["response"] != "pass") == 3


def test_a_new_answer_replaces_the_previous_one(stub: RunningStub) -> None:
    assert stub.clock is not None
    with stub.client() as client, stub.admin() as admin:
        policy = _policy(admin, "Firewall on")
        device = _device(client, admin)
        _policy_queries(client, device)
        _answer(client, device, {policy: "fail"})
        assert client.get(f"/api/latest/fleet/device/{device.token}/desktop").json()["failing_policies_count"] == 1
        stub.clock.advance(3601)  # the next policy round (an hour later; orbit has rotated the token meanwhile)
        token = str(uuid.uuid4())
        rotated = client.post(
            "/api/fleet/orbit/device_token", json={"orbit_node_key": device.orbit_key, "device_auth_token": token}
        )
        assert rotated.status_code == 200
        assert _policy_queries(client, device) == {f"fleet_policy_query_{policy}"}
        _answer(client, device, {policy: "pass"})
        assert client.get(f"/api/latest/fleet/device/{token}/desktop").json()["failing_policies_count"] == 0


def test_desktop_count_excludes_other_platforms_and_other_teams(stub: RunningStub) -> None:
    with stub.client() as client, stub.admin() as admin:
        laptops = _team_id(admin, TEAM_NAME)
        servers = admin.post("/api/latest/fleet/teams", json={"name": "Servers"}).json()["team"]["id"]
        global_linux = _policy(admin, "Global linux", platform="linux")
        global_any = _policy(admin, "Global any")
        global_darwin = _policy(admin, "Global darwin", platform="darwin")
        global_windows = _policy(admin, "Global windows", platform="windows")
        own_team = _policy(admin, "Laptops policy", team_id=laptops)
        other_team = _policy(admin, "Servers policy", team_id=servers)
        device = _device(client, admin, secret=TEAM_SECRET)
        applicable = {global_linux, global_any, own_team}
        assert _policy_queries(client, device) == {f"fleet_policy_query_{p}" for p in applicable}
        # even if answers for the others arrive (say from before a team change), they do not count
        everything = (global_linux, global_any, global_darwin, global_windows, own_team, other_team)
        _answer(client, device, dict.fromkeys(everything, "fail"))
        desktop = client.get(f"/api/latest/fleet/device/{device.token}/desktop").json()
        listed = client.get(f"/api/latest/fleet/device/{device.token}/policies").json()["policies"]
    assert desktop["failing_policies_count"] == 3
    assert {p["id"] for p in listed} == applicable


def test_moving_the_host_out_of_the_team_drops_team_policies(stub: RunningStub) -> None:
    with stub.client() as client, stub.admin() as admin:
        team_policy = _policy(admin, "Laptops policy", team_id=_team_id(admin, TEAM_NAME))
        global_policy = _policy(admin, "Global policy")
        device = _device(client, admin, secret=TEAM_SECRET)
        _policy_queries(client, device)
        _answer(client, device, {team_policy: "fail", global_policy: "fail"})
        assert client.get(f"/api/latest/fleet/device/{device.token}/desktop").json()["failing_policies_count"] == 2
        orbit_enroll(client, device.hardware_uuid, secret=GLOBAL_SECRET)  # re-enroll with the global secret
        assert client.get(f"/api/latest/fleet/device/{device.token}/desktop").json()["failing_policies_count"] == 1


# --- other device endpoints -----------------------------------------------------------------------------------


def test_transparency_redirects_to_fleet(stub: RunningStub) -> None:
    with stub.client() as client, stub.admin() as admin:
        device = _device(client, admin)
        for version in VERSIONS:
            response = client.get(f"/api/{version}/fleet/device/{device.token}/transparency", follow_redirects=False)
            assert response.status_code == 307
            assert response.headers["location"] == "https://fleetdm.com/transparency"


def test_debug_errors_are_accepted(stub: RunningStub) -> None:
    report = {
        "error_source": "fleet-desktop",
        "error_source_version": "1.40.0",
        "error_timestamp": "2026-08-01T12:00:00Z",
        "error_message": "tray icon failed",
        "error_additional_info": {"os": "ubuntu", "attempt": 3},
        "vital": True,
    }
    with stub.client() as client, stub.admin() as admin:
        device = _device(client, admin)
        response = client.post(f"/api/latest/fleet/device/{device.token}/debug/errors", json=report)
        assert 200 <= response.status_code < 300
        assert response.headers.get_list(HEADER) == [""]
        if response.content:
            assert "error" not in response.json()
        big = client.post(
            f"/api/latest/fleet/device/{device.token}/debug/errors",
            json={**report, "error_additional_info": {"trace": "x" * (2 * 1024 * 1024)}},
        )
        assert big.status_code == 200  # device error reports may be up to 5 MiB
        too_big = client.post(
            f"/api/latest/fleet/device/{device.token}/debug/errors",
            json={**report, "error_additional_info": {"trace": "x" * (6 * 1024 * 1024)}},
        )
        assert_shape_b(too_big, 413)
        stranger = client.post(f"/api/latest/fleet/device/{uuid.uuid4()}/debug/errors", json=report)
        assert_shape_b(stranger, 401)


def test_device_info_for_the_web_page(stub: RunningStub) -> None:
    with stub.client() as client, stub.admin() as admin:
        device = _device(client, admin)
        response = client.get(f"/api/latest/fleet/device/{device.token}")
    assert response.status_code == 200
    body = response.json()
    assert body["host"]["id"] == device.host_id
    assert body["host"]["hostname"] == HOSTNAME
    assert isinstance(body["self_service"], bool)
    assert isinstance(body["global_config"]["mdm"]["enabled_and_configured"], bool)


def test_expired_token_is_401_everywhere(stub: RunningStub) -> None:
    assert stub.clock is not None
    with stub.client() as client, stub.admin() as admin:
        device = _device(client, admin)
        base = f"/api/latest/fleet/device/{device.token}"
        assert client.get(base + "/desktop").status_code == 200
        stub.clock.advance(3601)
        assert client.head(base + "/ping").status_code == 401
        responses = [
            client.get(base + "/ping"),
            client.get(base),
            client.get(base + "/desktop"),
            client.get(base + "/policies"),
            client.get(base + "/transparency", follow_redirects=False),
            client.post(base + "/debug/errors", json={"error_message": "x"}),
            client.post(base + "/refetch", json={}),
        ]
        for version in ("v1", "2022-04"):
            responses.append(client.get(f"/api/{version}/fleet/device/{device.token}/desktop"))
    for response in responses:
        body = assert_shape_b(response, 401)
        assert body["message"] == "Authentication required", response.request.url
        assert HEADER not in response.headers


def test_unknown_token_is_401_everywhere(stub: RunningStub) -> None:
    token = str(uuid.uuid4())
    with stub.client() as client:
        base = f"/api/latest/fleet/device/{token}"
        for response in (
            client.get(base + "/desktop"),
            client.get(base + "/policies"),
            client.get(base + "/transparency", follow_redirects=False),
            client.get(base),
        ):
            assert_shape_b(response, 401)


# --- the "My device" HTML pages -------------------------------------------------------------------------------


def test_my_device_page_shows_host_and_policies(stub: RunningStub) -> None:
    with stub.client() as client, stub.admin() as admin:
        passing = _policy(admin, "Disk encrypted", resolution="Enable full-disk encryption.")
        failing = _policy(admin, "Firewall on", resolution="Run ufw enable as root.")
        device = _device(client, admin)
        _policy_queries(client, device)
        _answer(client, device, {passing: "pass", failing: "fail"})
        page = client.get(f"/device/{device.token}")
        policies_page = client.get(f"/device/{device.token}/policies")
        self_service = client.get(f"/device/{device.token}/self-service")
    for response in (page, policies_page, self_service):
        assert response.status_code == 200, response.request.url
        assert response.headers["content-type"].startswith("text/html")
        # the URL carries the device token: not cached, not framed, not leaked as a referrer, no foreign script
        assert response.headers["cache-control"] == "no-store"
        assert response.headers["referrer-policy"] == "no-referrer"
        assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
        assert "default-src 'none'" in response.headers["content-security-policy"]
    html = page.text
    assert HOSTNAME in html
    assert "Ubuntu 22.04.4 LTS" in html
    assert "5.14.1" in html
    for html in (page.text, policies_page.text):
        passing_item = _policy_item(html, "Disk encrypted")
        failing_item = _policy_item(html, "Firewall on")
        assert "Pass" in passing_item and "Fail" not in passing_item
        assert "Fail" in failing_item and "Pass" not in failing_item
        assert "Run ufw enable as root." in failing_item
    assert "self-service" in self_service.text.lower()


def test_my_device_page_escapes_html(stub: RunningStub) -> None:
    with stub.client() as client, stub.admin() as admin:
        policy = _policy(
            admin,
            "<script>alert(1)</script>",
            resolution="<img src=x onerror=alert(2)>",
            description="<b>bold</b> & more",
        )
        device = _device(client, admin, hostname="<i>evil</i>")
        _policy_queries(client, device)
        _answer(client, device, {policy: "fail"})
        pages = [client.get(f"/device/{device.token}"), client.get(f"/device/{device.token}/policies")]
    for response in pages:
        assert response.status_code == 200
        html = response.text
        assert "<script>alert(1)</script>" not in html
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
        assert "<img src=x onerror=alert(2)>" not in html
        assert "&lt;img src=x onerror=alert(2)&gt;" in html
        assert "<b>bold</b>" not in html
        assert "<i>evil</i>" not in html
    assert "&lt;i&gt;evil&lt;/i&gt;" in pages[0].text


@pytest.mark.parametrize("suffix", ["", "/policies", "/self-service"])
def test_invalid_or_expired_link_page(stub: RunningStub, suffix: str) -> None:
    assert stub.clock is not None
    with stub.client() as client, stub.admin() as admin:
        device = _device(client, admin)
        unknown = client.get(f"/device/{uuid.uuid4()}{suffix}")
        valid = client.get(f"/device/{device.token}{suffix}")
        stub.clock.advance(3601)
        expired = client.get(f"/device/{device.token}{suffix}")
    assert valid.status_code == 200
    for response in (unknown, expired):
        assert response.status_code == 401
        assert response.headers["content-type"].startswith("text/html")
        text = response.text.lower()
        assert "invalid" in text and "expired" in text
        assert HOSTNAME not in response.text


def test_a_trailing_slash_is_a_404_not_a_redirect_to_the_clients_host(stub: RunningStub) -> None:
    """Starlette would redirect "/path/" to https://<Host header>/path: an open redirect a client steers."""
    with stub.admin() as admin:
        answer = admin.get("/api/latest/fleet/hosts/", headers={"Host": "evil.example"}, follow_redirects=False)
    assert answer.status_code == 404 and "location" not in answer.headers


def test_guessing_device_tokens_is_throttled_per_client(stub: RunningStub) -> None:
    with stub.client() as client:
        answers = [client.get(f"/api/latest/fleet/device/guess-{n}/desktop").status_code for n in range(100)]
        assert set(answers) == {401}
        throttled = client.get("/api/latest/fleet/device/guess-100/desktop")
        page = client.get("/device/guess-101")
    assert throttled.status_code == 429 and int(throttled.headers["retry-after"]) >= 1
    assert page.status_code == 429 and "Too many attempts" in page.text
