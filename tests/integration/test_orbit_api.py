"""Fleet's orbit endpoints as orbit speaks them (docs/reference/fleet-api.md §1.4–1.8, §4): shape B errors, one host per
machine, agent options reaching orbit, device tokens and scripts, and the capabilities header orbit watches."""

from __future__ import annotations

import gzip
import json
import uuid

import httpx
import pytest

from tests.support.agents import assert_shape_b, host_id_for_uuid, orbit_enroll, osquery_enroll
from tests.support.stub_server import GLOBAL_SECRET, TEAM_NAME, TEAM_SECRET, RunningStub

CAPABILITIES = "orbit_endpoints,token_rotation,update_outcomes"
HEADER = "X-Fleet-Capabilities"


def _new_uuid() -> str:
    return str(uuid.uuid4()).upper()


def _config(client: httpx.Client, key: str) -> dict[str, object]:
    response = client.post("/api/fleet/orbit/config", json={"orbit_node_key": key})
    assert response.status_code == 200, response.text
    assert response.headers.get(HEADER) == CAPABILITIES
    body: dict[str, object] = response.json()
    assert "error" not in body
    return body


def _notifications(client: httpx.Client, key: str) -> dict[str, object]:
    notifications = _config(client, key)["notifications"]
    assert isinstance(notifications, dict)
    return notifications


def _set_token(client: httpx.Client, key: str, token: str) -> httpx.Response:
    return client.post("/api/fleet/orbit/device_token", json={"orbit_node_key": key, "device_auth_token": token})


def _device_ping(client: httpx.Client, token: str) -> int:
    return client.head(f"/api/latest/fleet/device/{token}/ping").status_code


def _team_id(admin: httpx.Client, name: str) -> int:
    teams = admin.get("/api/latest/fleet/teams").json()["teams"]
    found: int = next(t["id"] for t in teams if t["name"] == name)
    return found


def _run_script(admin: httpx.Client, host_id: int, contents: str, timeout: int | None = 30) -> str:
    response = admin.post(
        "/api/latest/fleet/scripts/run", json={"host_id": host_id, "script_contents": contents, "timeout": timeout}
    )
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["host_id"] == host_id
    execution_id: str = body["execution_id"]
    assert isinstance(execution_id, str) and execution_id
    return execution_id


# --- ping and enroll --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["HEAD", "GET"])
def test_ping_advertises_capabilities(stub: RunningStub, method: str) -> None:
    with stub.client() as client:
        response = client.request(method, "/api/fleet/orbit/ping")
    assert response.status_code == 200
    assert response.headers[HEADER] == CAPABILITIES


def test_enroll_with_good_secret_returns_orbit_node_key(stub: RunningStub) -> None:
    with stub.client() as client:
        response = client.post(
            "/api/fleet/orbit/enroll",
            json={"enroll_secret": GLOBAL_SECRET, "hardware_uuid": _new_uuid(), "hostname": "h", "platform": "ubuntu"},
        )
    assert response.status_code == 200
    assert response.headers[HEADER] == CAPABILITIES
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert isinstance(body["orbit_node_key"], str) and body["orbit_node_key"]
    assert "error" not in body


def test_enroll_with_bad_or_empty_secret_is_401(stub: RunningStub) -> None:
    with stub.client() as client, stub.admin() as admin:
        answers = [
            client.post("/api/fleet/orbit/enroll", json={"enroll_secret": secret, "hardware_uuid": _new_uuid()})
            for secret in ("wrong-secret", GLOBAL_SECRET + "x", "", "   ", None)
        ]
        answers.append(client.post("/api/fleet/orbit/enroll", json={"hardware_uuid": _new_uuid()}))
        assert admin.get("/api/latest/fleet/hosts").json()["hosts"] == []
    for answer in answers:
        body = assert_shape_b(answer, 401)
        assert body["message"] == "Authentication failed"
        assert HEADER not in answer.headers
        assert "orbit_node_key" not in body


def test_enroll_without_hardware_uuid_is_400(stub: RunningStub) -> None:
    bodies: list[dict[str, object]] = [{}, {"hardware_uuid": ""}, {"hardware_uuid": "  "}, {"hardware_uuid": None}]
    with stub.client() as client, stub.admin() as admin:
        for body in bodies:
            response = client.post("/api/fleet/orbit/enroll", json={"enroll_secret": GLOBAL_SECRET, **body})
            assert_shape_b(response, 400)
            assert HEADER not in response.headers
        assert admin.get("/api/latest/fleet/hosts").json()["hosts"] == []


@pytest.mark.parametrize("orbit_first", [True, False])
def test_orbit_and_osquery_enrollment_share_one_host(stub: RunningStub, orbit_first: bool) -> None:
    hardware_uuid = _new_uuid()
    with stub.client() as client, stub.admin() as admin:
        if orbit_first:
            orbit_key = orbit_enroll(client, hardware_uuid)
            node_key = osquery_enroll(client, hardware_uuid)
        else:
            node_key = osquery_enroll(client, hardware_uuid)
            orbit_key = orbit_enroll(client, hardware_uuid)
        orbit_enroll(client, _new_uuid())  # an unrelated machine
        hosts = admin.get("/api/latest/fleet/hosts").json()["hosts"]
        assert len(hosts) == 2
        assert [h["uuid"] for h in hosts].count(hardware_uuid) == 1
        # both keys belong to the one record and keep working
        assert client.post("/api/v1/osquery/config", json={"node_key": node_key}).status_code == 200
        _config(client, orbit_key)
        host = admin.get(f"/api/latest/fleet/hosts/{host_id_for_uuid(admin, hardware_uuid)}").json()["host"]
    assert host["osquery_version"] == "5.14.1"  # from the osquery enrollment
    assert host["platform"] == "ubuntu"


def test_osquery_identifier_keys_the_shared_host(stub: RunningStub) -> None:
    """orbit with --host-identifier=instance sends osquery_identifier; osqueryd then enrolls with that identifier."""
    hardware_uuid, instance_id = _new_uuid(), str(uuid.uuid4())
    with stub.client() as client, stub.admin() as admin:
        enroll = client.post(
            "/api/fleet/orbit/enroll",
            json={"enroll_secret": GLOBAL_SECRET, "hardware_uuid": hardware_uuid, "osquery_identifier": instance_id},
        )
        assert enroll.status_code == 200
        osquery = client.post(
            "/api/v1/osquery/enroll", json={"enroll_secret": GLOBAL_SECRET, "host_identifier": instance_id}
        )
        assert osquery.json()["node_key"]
        hosts = admin.get("/api/latest/fleet/hosts").json()["hosts"]
    assert len(hosts) == 1
    assert hosts[0]["uuid"] == hardware_uuid


def test_orbit_and_osquery_keys_are_not_interchangeable(stub: RunningStub) -> None:
    hardware_uuid = _new_uuid()
    with stub.client() as client:
        orbit_key = orbit_enroll(client, hardware_uuid)
        node_key = osquery_enroll(client, hardware_uuid)
        assert_shape_b(client.post("/api/fleet/orbit/config", json={"orbit_node_key": node_key}), 401)
        wrong = client.post("/api/v1/osquery/config", json={"node_key": orbit_key}).json()
        assert wrong.get("node_invalid") is True


def test_reenroll_reissues_orbit_key_and_old_key_is_rejected(stub: RunningStub) -> None:
    hardware_uuid = _new_uuid()
    with stub.client() as client, stub.admin() as admin:
        first = orbit_enroll(client, hardware_uuid)
        second = orbit_enroll(client, hardware_uuid)
        assert first != second
        old = client.post("/api/fleet/orbit/config", json={"orbit_node_key": first})
        assert_shape_b(old, 401)
        assert HEADER not in old.headers
        _config(client, second)
        assert [h["uuid"] for h in admin.get("/api/latest/fleet/hosts").json()["hosts"]] == [hardware_uuid]


def test_bad_or_missing_orbit_node_key_is_401(stub: RunningStub) -> None:
    with stub.client() as client:
        for body in ({}, {"orbit_node_key": ""}, {"orbit_node_key": "not-a-key"}):
            for path in ("config", "device_token", "scripts/request", "scripts/result"):
                assert_shape_b(client.post(f"/api/fleet/orbit/{path}", json=body), 401)


# --- config and agent options -------------------------------------------------------------------------------


def test_config_has_notifications_and_no_unmanaged_settings(stub: RunningStub) -> None:
    with stub.client() as client:
        key = orbit_enroll(client, _new_uuid())
        config = _config(client, key)
    assert config["notifications"] == {}
    # without agent options for them the server must not manage flags or channels (orbit would restart)
    assert "command_line_startup_flags" not in config
    assert "update_channels" not in config
    assert "script_execution_timeout" not in config


def test_global_agent_options_reach_orbit(stub: RunningStub) -> None:
    options = {
        "config": {"options": {"distributed_interval": 12}},
        "command_line_flags": {"verbose": True, "distributed_interval": 30},
        "update_channels": {"orbit": "edge", "osqueryd": "5.14.1", "desktop": "stable"},
        "script_execution_timeout": 600,
    }
    with stub.client() as client, stub.admin() as admin:
        key = orbit_enroll(client, _new_uuid())
        patched = admin.patch("/api/latest/fleet/config", json={"agent_options": options})
        assert patched.status_code == 200, patched.text
        config = _config(client, key)
        node_key = osquery_enroll(client)
        osquery_config = client.post("/api/v1/osquery/config", json={"node_key": node_key}).json()
    assert config["command_line_startup_flags"] == {"verbose": True, "distributed_interval": 30}
    assert config["update_channels"] == {"orbit": "edge", "osqueryd": "5.14.1", "desktop": "stable"}
    assert config["script_execution_timeout"] == 600
    assert "notifications" in config
    assert osquery_config["options"]["distributed_interval"] == 12


def test_team_agent_options_apply_to_team_hosts_only(stub: RunningStub) -> None:
    team_uuid, global_uuid = _new_uuid(), _new_uuid()
    team_options = {
        "config": {"options": {"distributed_interval": 20}},
        "command_line_flags": {"verbose": True},
        "update_channels": {"orbit": "beta"},
        "script_execution_timeout": 120,
    }
    with stub.client() as client, stub.admin() as admin:
        team_key = orbit_enroll(client, team_uuid, secret=TEAM_SECRET)
        global_key = orbit_enroll(client, global_uuid)
        team_id = _team_id(admin, TEAM_NAME)
        response = admin.post(f"/api/latest/fleet/teams/{team_id}/agent_options", json=team_options)
        assert response.status_code == 200, response.text
        team_config = _config(client, team_key)
        global_config = _config(client, global_key)
        hosts = {h["uuid"]: h for h in admin.get("/api/latest/fleet/hosts").json()["hosts"]}
    assert hosts[team_uuid]["team_id"] == team_id
    assert hosts[global_uuid]["team_id"] is None
    assert team_config["command_line_startup_flags"] == {"verbose": True}
    assert team_config["update_channels"] == {"orbit": "beta"}
    assert team_config["script_execution_timeout"] == 120
    for key in ("command_line_startup_flags", "update_channels", "script_execution_timeout"):
        assert key not in global_config
    assert "notifications" in global_config


def test_reenroll_with_another_secret_moves_host_between_teams(stub: RunningStub) -> None:
    hardware_uuid = _new_uuid()
    with stub.client() as client, stub.admin() as admin:
        admin.post(
            f"/api/latest/fleet/teams/{_team_id(admin, TEAM_NAME)}/agent_options",
            json={"command_line_flags": {"verbose": True}},
        )
        team_key = orbit_enroll(client, hardware_uuid, secret=TEAM_SECRET)
        assert "command_line_startup_flags" in _config(client, team_key)
        global_key = orbit_enroll(client, hardware_uuid, secret=GLOBAL_SECRET)
        assert "command_line_startup_flags" not in _config(client, global_key)
        host = admin.get(f"/api/latest/fleet/hosts/{host_id_for_uuid(admin, hardware_uuid)}").json()["host"]
    assert host["team_id"] is None


# --- capabilities header ------------------------------------------------------------------------------------


def test_capabilities_header_is_identical_on_every_2xx_and_absent_on_errors(stub: RunningStub) -> None:
    hardware_uuid = _new_uuid()
    with stub.client() as client, stub.admin() as admin:
        enroll = client.post(
            "/api/fleet/orbit/enroll", json={"enroll_secret": GLOBAL_SECRET, "hardware_uuid": hardware_uuid}
        )
        key = enroll.json()["orbit_node_key"]
        execution_id = _run_script(admin, host_id_for_uuid(admin, hardware_uuid), "echo hi")
        other_key = orbit_enroll(client, _new_uuid())
        assert _set_token(client, other_key, "taken-token").status_code == 200
        authed = {"orbit_node_key": key}
        successes = [
            client.head("/api/fleet/orbit/ping"),
            client.get("/api/fleet/orbit/ping"),
            enroll,
            client.post("/api/fleet/orbit/config", json=authed),
            client.post("/api/fleet/orbit/device_token", json={**authed, "device_auth_token": str(uuid.uuid4())}),
            client.post("/api/fleet/orbit/scripts/request", json={**authed, "execution_id": execution_id}),
            client.post(
                "/api/fleet/orbit/scripts/result",
                json={**authed, "execution_id": execution_id, "output": "hi\n", "runtime": 0, "exit_code": 0},
            ),
        ]
        failures = [
            client.post("/api/fleet/orbit/enroll", json={"enroll_secret": "nope", "hardware_uuid": hardware_uuid}),
            client.post("/api/fleet/orbit/enroll", json={"enroll_secret": GLOBAL_SECRET}),
            client.post("/api/fleet/orbit/config", json={"orbit_node_key": "nope"}),
            client.post("/api/fleet/orbit/config", content=b"{"),
            client.post("/api/fleet/orbit/device_token", json={**authed, "device_auth_token": ""}),
            client.post("/api/fleet/orbit/device_token", json={**authed, "device_auth_token": "taken-token"}),
            client.post("/api/fleet/orbit/scripts/request", json={**authed, "execution_id": "no-such-id"}),
            client.post("/api/fleet/orbit/no-such-endpoint", json=authed),
        ]
    for response in successes:
        assert 200 <= response.status_code < 300, (response.request.url, response.status_code, response.text)
        assert response.headers.get_list(HEADER) == [CAPABILITIES], response.request.url
    for response in failures:
        assert response.status_code >= 400, (response.request.url, response.status_code)
        assert HEADER not in response.headers, (response.request.url, response.status_code)


# --- device tokens ------------------------------------------------------------------------------------------


def test_device_token_registration_makes_the_token_valid(stub: RunningStub) -> None:
    token = str(uuid.uuid4())
    with stub.client() as client:
        key = orbit_enroll(client, _new_uuid())
        assert _device_ping(client, token) == 401
        response = _set_token(client, key, token)
        assert response.status_code == 200
        assert response.json() == {}
        assert _device_ping(client, token) == 200
        desktop = client.get(f"/api/latest/fleet/device/{token}/desktop")
    assert desktop.status_code == 200


@pytest.mark.parametrize("token", ["", None])
def test_empty_device_token_is_400(stub: RunningStub, token: str | None) -> None:
    with stub.client() as client:
        key = orbit_enroll(client, _new_uuid())
        body: dict[str, object] = {"orbit_node_key": key}
        if token is not None:
            body["device_auth_token"] = token
        assert_shape_b(client.post("/api/fleet/orbit/device_token", json=body), 400)


def test_non_url_safe_device_token_is_400(stub: RunningStub) -> None:
    with stub.client() as client:
        key = orbit_enroll(client, _new_uuid())
        for token in ("a/b", "a b", "é", "a?b", "a#b", "a%2Fb", "a&b=c", "tok+en", "tab\tx"):
            response = _set_token(client, key, token)
            assert response.status_code == 400, token
            assert_shape_b(response, 400)


def test_url_safe_token_characters_are_accepted(stub: RunningStub) -> None:
    with stub.client() as client:
        key = orbit_enroll(client, _new_uuid())
        token = "Az09-_.~" + uuid.uuid4().hex
        assert _set_token(client, key, token).status_code == 200
        assert _device_ping(client, token) == 200


def test_device_token_of_another_host_is_409(stub: RunningStub) -> None:
    token = str(uuid.uuid4())
    with stub.client() as client:
        first = orbit_enroll(client, _new_uuid())
        second = orbit_enroll(client, _new_uuid())
        assert _set_token(client, first, token).status_code == 200
        body = assert_shape_b(_set_token(client, second, token), 409)
        assert "conflicts with another host" in json.dumps(body)
        assert _device_ping(client, token) == 200  # still the first host's
        assert _set_token(client, first, token).status_code == 200  # the owner may register it again


def test_new_device_token_replaces_the_old_one(stub: RunningStub) -> None:
    old, new = str(uuid.uuid4()), str(uuid.uuid4())
    with stub.client() as client:
        key = orbit_enroll(client, _new_uuid())
        other = orbit_enroll(client, _new_uuid())
        assert _set_token(client, key, old).status_code == 200
        assert _set_token(client, key, new).status_code == 200
        assert _device_ping(client, new) == 200
        assert _device_ping(client, old) == 401
        # the replaced token is free again: another host may take it
        assert _set_token(client, other, old).status_code == 200


def test_device_token_expires_an_hour_after_it_was_set(stub: RunningStub) -> None:
    assert stub.clock is not None
    token = str(uuid.uuid4())
    with stub.client() as client:
        key = orbit_enroll(client, _new_uuid())
        assert _set_token(client, key, token).status_code == 200
        stub.clock.advance(3599)
        assert _device_ping(client, token) == 200
        stub.clock.advance(2)
        assert _device_ping(client, token) == 401
        # orbit rotates: a fresh token works again
        fresh = str(uuid.uuid4())
        assert _set_token(client, key, fresh).status_code == 200
        assert _device_ping(client, fresh) == 200


def test_registering_the_same_token_again_does_not_extend_it(stub: RunningStub) -> None:
    assert stub.clock is not None
    token = str(uuid.uuid4())
    with stub.client() as client:
        key = orbit_enroll(client, _new_uuid())
        assert _set_token(client, key, token).status_code == 200
        stub.clock.advance(3000)
        assert _set_token(client, key, token).status_code == 200
        stub.clock.advance(601)
        assert _device_ping(client, token) == 401


# --- scripts ------------------------------------------------------------------------------------------------


def test_script_round_trip(stub: RunningStub) -> None:
    hardware_uuid = _new_uuid()
    with stub.client() as client, stub.admin() as admin:
        key = orbit_enroll(client, hardware_uuid)
        host_id = host_id_for_uuid(admin, hardware_uuid)
        assert "pending_script_execution_ids" not in _notifications(client, key)
        execution_id = _run_script(admin, host_id, "#!/bin/sh\necho hello", timeout=45)
        assert _notifications(client, key)["pending_script_execution_ids"] == [execution_id]

        request = client.post(
            "/api/fleet/orbit/scripts/request", json={"orbit_node_key": key, "execution_id": execution_id}
        )
        assert request.status_code == 200
        pending = request.json()
        assert pending["host_id"] == host_id
        assert pending["execution_id"] == execution_id
        assert pending["script_contents"] == "#!/bin/sh\necho hello"
        assert pending["exit_code"] is None
        assert pending["timeout"] == 45
        for field in ("output", "runtime", "script_id", "policy_id", "team_id", "message"):
            assert field in pending
        assert "error" not in pending

        result = {
            "orbit_node_key": key,
            "host_id": host_id,
            "execution_id": execution_id,
            "output": "hello\n",
            "runtime": 2,
            "exit_code": 0,
            "timeout": 45,
        }
        posted = client.post("/api/fleet/orbit/scripts/result", json=result)
        assert posted.status_code == 200
        assert posted.json() == {}
        assert "pending_script_execution_ids" not in _notifications(client, key)
        assert client.post("/api/fleet/orbit/scripts/result", json=result).status_code == 200  # orbit retried

        stored = admin.get(f"/api/latest/fleet/scripts/results/{execution_id}")
        assert stored.status_code == 200
        shown = stored.json()
    assert shown["exit_code"] == 0
    assert shown["output"] == "hello\n"
    assert shown["runtime"] == 2
    assert shown["host_id"] == host_id
    assert shown["script_contents"] == "#!/bin/sh\necho hello"


def test_failed_script_keeps_its_exit_code(stub: RunningStub) -> None:
    hardware_uuid = _new_uuid()
    with stub.client() as client, stub.admin() as admin:
        key = orbit_enroll(client, hardware_uuid)
        first = _run_script(admin, host_id_for_uuid(admin, hardware_uuid), "exit 3")
        second = _run_script(admin, host_id_for_uuid(admin, hardware_uuid), "echo second")
        assert _notifications(client, key)["pending_script_execution_ids"] == [first, second]
        posted = client.post(
            "/api/fleet/orbit/scripts/result",
            json={"orbit_node_key": key, "execution_id": first, "output": "boom", "runtime": 1, "exit_code": 3},
        )
        assert posted.status_code == 200
        assert _notifications(client, key)["pending_script_execution_ids"] == [second]
        shown = admin.get(f"/api/latest/fleet/scripts/results/{first}").json()
    assert shown["exit_code"] == 3
    assert shown["output"] == "boom"


def test_scripts_of_another_host_are_not_found(stub: RunningStub) -> None:
    owner_uuid = _new_uuid()
    with stub.client() as client, stub.admin() as admin:
        owner = orbit_enroll(client, owner_uuid)
        intruder = orbit_enroll(client, _new_uuid())
        execution_id = _run_script(admin, host_id_for_uuid(admin, owner_uuid), "whoami")
        assert "pending_script_execution_ids" not in _notifications(client, intruder)
        request = client.post(
            "/api/fleet/orbit/scripts/request", json={"orbit_node_key": intruder, "execution_id": execution_id}
        )
        assert_shape_b(request, 404)
        assert "whoami" not in request.text
        result = client.post(
            "/api/fleet/orbit/scripts/result",
            json={"orbit_node_key": intruder, "execution_id": execution_id, "output": "x", "exit_code": 0},
        )
        assert_shape_b(result, 404)
        unknown = client.post(
            "/api/fleet/orbit/scripts/request", json={"orbit_node_key": owner, "execution_id": str(uuid.uuid4())}
        )
        assert_shape_b(unknown, 404)
        assert _notifications(client, owner)["pending_script_execution_ids"] == [execution_id]
        assert admin.get(f"/api/latest/fleet/scripts/results/{execution_id}").json()["exit_code"] is None


# --- request bodies -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["enroll", "config", "device_token", "scripts/request", "scripts/result"])
def test_malformed_or_empty_bodies_are_400(stub: RunningStub, path: str) -> None:
    cases = [
        (b'{"orbit_node_key": ', "json decoder error"),
        (b"not json", "json decoder error"),
        (b'["a"]', "json decoder error"),
        (b"", "Expected JSON Body"),
        (b"  \n", "Expected JSON Body"),
    ]
    with stub.client() as client:
        for content, reason in cases:
            response = client.post(
                f"/api/fleet/orbit/{path}", content=content, headers={"Content-Type": "application/json"}
            )
            body = assert_shape_b(response, 400)
            assert reason in json.dumps(body), (content, body)
            assert HEADER not in response.headers


def test_wrong_field_types_are_400(stub: RunningStub) -> None:
    with stub.client() as client, stub.admin() as admin:
        hardware_uuid = _new_uuid()
        key = orbit_enroll(client, hardware_uuid)
        execution_id = _run_script(admin, host_id_for_uuid(admin, hardware_uuid), "true")
        cases = [
            ("enroll", {"enroll_secret": 5, "hardware_uuid": _new_uuid()}),
            ("enroll", {"enroll_secret": GLOBAL_SECRET, "hardware_uuid": ["x"]}),
            ("config", {"orbit_node_key": 5}),
            ("device_token", {"orbit_node_key": key, "device_auth_token": 123}),
            ("scripts/request", {"orbit_node_key": key, "execution_id": 7}),
            ("scripts/result", {"orbit_node_key": key, "execution_id": execution_id, "exit_code": "0"}),
            ("scripts/result", {"orbit_node_key": key, "execution_id": execution_id, "exit_code": 0, "output": 1}),
        ]
        for path, body in cases:
            response = client.post(f"/api/fleet/orbit/{path}", json=body)
            assert_shape_b(response, 400)
        # nothing was stored by the rejected result posts
        assert _notifications(client, key)["pending_script_execution_ids"] == [execution_id]


def test_unknown_fields_are_ignored(stub: RunningStub) -> None:
    with stub.client() as client:
        key = orbit_enroll(client, _new_uuid())
        response = client.post("/api/fleet/orbit/config", json={"orbit_node_key": key, "future": {"x": [1]}})
    assert response.status_code == 200


def test_gzip_encoded_bodies_are_accepted(stub: RunningStub) -> None:
    hardware_uuid = _new_uuid()
    with stub.client() as client, stub.admin() as admin:
        enroll = client.post(
            "/api/fleet/orbit/enroll",
            content=gzip.compress(
                json.dumps({"enroll_secret": GLOBAL_SECRET, "hardware_uuid": hardware_uuid}).encode()
            ),
            headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
        )
        assert enroll.status_code == 200, enroll.text
        key = enroll.json()["orbit_node_key"]
        config = client.post(
            "/api/fleet/orbit/config",
            content=gzip.compress(json.dumps({"orbit_node_key": key}).encode()),
            headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
        )
        assert config.status_code == 200
        assert "notifications" in config.json()
        assert host_id_for_uuid(admin, hardware_uuid) > 0


def test_bodies_over_one_mib_are_413(stub: RunningStub) -> None:
    with stub.client() as client:
        key = orbit_enroll(client, _new_uuid())
        pad = "x" * (1024 * 1024 + 1)
        for path, body in [
            ("enroll", {"enroll_secret": GLOBAL_SECRET, "hardware_uuid": _new_uuid(), "pad": pad}),
            ("config", {"orbit_node_key": key, "pad": pad}),
            ("device_token", {"orbit_node_key": key, "device_auth_token": "t", "pad": pad}),
        ]:
            response = client.post(f"/api/fleet/orbit/{path}", json=body)
            assert_shape_b(response, 413)
            assert HEADER not in response.headers
        inflated = gzip.compress(json.dumps({"orbit_node_key": key, "pad": pad}).encode())
        assert len(inflated) < 1024 * 1024
        gz = client.post("/api/fleet/orbit/config", content=inflated, headers={"Content-Encoding": "gzip"})
        assert_shape_b(gz, 413)
        # just under the limit is fine
        small = client.post("/api/fleet/orbit/config", json={"orbit_node_key": key, "pad": "x" * 1_000_000})
        assert small.status_code == 200
