"""The admin REST API (docs/contracts.md "fleet-stub"): bearer auth, hosts, live queries, teams, agent options,
policies,
enroll secrets, carves and ``/metrics``."""

from __future__ import annotations

import re
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import httpx

from tests.support.agents import assert_shape_a, assert_shape_b, host_id_for_uuid, orbit_enroll, osquery_enroll
from tests.support.stub_server import GLOBAL_SECRET, TEAM_NAME, TEAM_SECRET, RunningStub

HOST_FIELDS = (
    "id",
    "uuid",
    "hostname",
    "computer_name",
    "platform",
    "osquery_version",
    "orbit_version",
    "status",
    "seen_time",
    "team_id",
)
ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|\+00:00)$")


@dataclass(frozen=True)
class Agent:
    hardware_uuid: str
    host_id: int
    node_key: str


def _agent(client: httpx.Client, admin: httpx.Client, *, secret: str = GLOBAL_SECRET, hostname: str = "h") -> Agent:
    hardware_uuid = str(uuid.uuid4()).upper()
    node_key = osquery_enroll(client, hardware_uuid, secret=secret, hostname=hostname)
    return Agent(hardware_uuid, host_id_for_uuid(admin, hardware_uuid), node_key)


def _team_id(admin: httpx.Client, name: str) -> int:
    found: int = next(t["id"] for t in admin.get("/api/latest/fleet/teams").json()["teams"] if t["name"] == name)
    return found


def _read(client: httpx.Client, agent: Agent) -> dict[str, str]:
    response = client.post("/api/v1/osquery/distributed/read", json={"node_key": agent.node_key})
    assert response.status_code == 200
    queries: dict[str, str] = response.json()["queries"]
    return queries


def _wait_for_live_query(client: httpx.Client, agent: Agent, sql: str, deadline_s: float = 5.0) -> str:
    """Poll distributed/read as osqueryd would (accelerated) until the live query shows up; returns its name."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        for name, text in _read(client, agent).items():
            if name.startswith("fleet_distributed_query_") and text == sql:
                return name
        time.sleep(0.02)
    raise AssertionError(f"live query {sql!r} never reached the host")


def _write(
    client: httpx.Client,
    agent: Agent,
    name: str,
    rows: list[dict[str, str]],
    status: int = 0,
    message: str = "",
) -> httpx.Response:
    response = client.post(
        "/api/v1/osquery/distributed/write",
        json={
            "node_key": agent.node_key,
            "queries": {name: rows},
            "statuses": {name: status},
            "messages": {name: message},
            "stats": {name: {"wall_time_ms": 1, "user_time": 0, "system_time": 0, "memory": 0}},
        },
    )
    assert response.status_code == 200 and response.json() == {}
    return response


def _start_live_query(pool: ThreadPoolExecutor, stub: RunningStub, host_id: int, sql: str) -> Future[httpx.Response]:
    def run() -> httpx.Response:
        with stub.admin() as admin:
            return admin.post(f"/api/latest/fleet/hosts/{host_id}/query", json={"query": sql})

    return pool.submit(run)


def _policy(admin: httpx.Client, name: str, query: str = "SELECT 1;", **extra: str) -> dict[str, object]:
    response = admin.post("/api/latest/fleet/global/policies", json={"name": name, "query": query, **extra})
    assert response.status_code == 200, response.text
    policy: dict[str, object] = response.json()["policy"]
    return policy


def _host_policy_responses(admin: httpx.Client, host_id: int) -> dict[int, str]:
    host = admin.get(f"/api/latest/fleet/hosts/{host_id}").json()["host"]
    return {p["id"]: p["response"] for p in host["policies"]}


# --- authentication -------------------------------------------------------------------------------------------


BAD_AUTH_HEADERS: list[dict[str, str]] = [
    {},
    {"Authorization": "Bearer wrong-token"},
    {"Authorization": "Bearer"},
    {"Authorization": "Basic YWRtaW46YWRtaW4="},
    {"Authorization": "NodeKey x"},
]


def test_missing_or_wrong_bearer_is_401(stub: RunningStub) -> None:
    for headers in BAD_AUTH_HEADERS:
        _assert_admin_refused(stub, headers)
    with stub.client() as client:
        token_without_scheme = client.get("/api/latest/fleet/hosts", headers={"Authorization": stub.admin_token})
        assert_shape_b(token_without_scheme, 401)
        wrong_case = {"Authorization": f"Bearer {stub.admin_token.swapcase()}"}
        if stub.admin_token.swapcase() != stub.admin_token:
            assert_shape_b(client.get("/api/latest/fleet/hosts", headers=wrong_case), 401)


def _assert_admin_refused(stub: RunningStub, headers: dict[str, str]) -> None:
    with stub.client(headers=headers) as client:
        responses = [
            client.get("/api/latest/fleet/hosts"),
            client.get("/api/v1/fleet/hosts/1"),
            client.delete("/api/latest/fleet/hosts/1"),
            client.post("/api/latest/fleet/hosts/1/query", json={"query": "SELECT 1"}),
            client.get("/api/latest/fleet/teams"),
            client.patch("/api/latest/fleet/config", json={"agent_options": {}}),
            client.post("/api/latest/fleet/global/policies", json={"name": "n", "query": "SELECT 1"}),
            client.get("/api/latest/fleet/spec/enroll_secret"),
            client.post("/api/latest/fleet/scripts/run", json={"host_id": 1, "script_contents": "x"}),
            client.get("/api/latest/fleet/carves"),
            client.get("/metrics"),
        ]
    for response in responses:
        assert_shape_b(response, 401)
        assert GLOBAL_SECRET not in response.text, (headers, response.request.url)


def test_bearer_token_from_the_other_families_is_not_admin(stub: RunningStub) -> None:
    with stub.client() as client, stub.admin() as admin:
        agent = _agent(client, admin)
        orbit_key = orbit_enroll(client, agent.hardware_uuid)
        for credential in (agent.node_key, orbit_key, GLOBAL_SECRET):
            response = client.get("/api/latest/fleet/hosts", headers={"Authorization": f"Bearer {credential}"})
            assert_shape_b(response, 401)


# --- hosts ----------------------------------------------------------------------------------------------------


def test_hosts_list_and_get_shapes(stub: RunningStub) -> None:
    with stub.client() as client, stub.admin() as admin:
        assert admin.get("/api/latest/fleet/hosts").json() == {"hosts": []}
        agent = _agent(client, admin, hostname="laptop-1")
        team_agent = _agent(client, admin, secret=TEAM_SECRET, hostname="laptop-2")
        orbit_enroll(client, agent.hardware_uuid)
        listed = admin.get("/api/latest/fleet/hosts")
        one = admin.get(f"/api/latest/fleet/hosts/{agent.host_id}")
        also_v1 = admin.get(f"/api/v1/fleet/hosts/{agent.host_id}")
        team_id = _team_id(admin, TEAM_NAME)
    assert listed.status_code == 200
    hosts = listed.json()["hosts"]
    assert len(hosts) == 2
    for host in hosts:
        for field in HOST_FIELDS:
            assert field in host, field
        assert isinstance(host["id"], int)
        assert host["status"] == "online"
        assert isinstance(host["seen_time"], str) and ISO_UTC.match(host["seen_time"]), host["seen_time"]
    by_uuid = {h["uuid"]: h for h in hosts}
    assert by_uuid[team_agent.hardware_uuid]["hostname"] == "laptop-2"
    assert by_uuid[agent.hardware_uuid]["team_id"] is None
    assert by_uuid[team_agent.hardware_uuid]["team_id"] == team_id
    assert one.status_code == 200
    host = one.json()["host"]
    assert host["id"] == agent.host_id
    assert host["uuid"] == agent.hardware_uuid
    assert host["hostname"] == host["computer_name"] == "orbit-host"  # orbit enrolled last and renamed it
    assert host["platform"] == "ubuntu"
    assert host["osquery_version"] == "5.14.1"
    assert host["orbit_version"] in (None, "")  # not reported yet
    assert also_v1.json()["host"]["id"] == agent.host_id


def test_host_goes_offline_when_it_stops_checking_in(stub: RunningStub) -> None:
    assert stub.clock is not None
    with stub.client() as client, stub.admin() as admin:
        agent = _agent(client, admin)
        assert client.post("/api/v1/osquery/config", json={"node_key": agent.node_key}).status_code == 200
        assert admin.get(f"/api/latest/fleet/hosts/{agent.host_id}").json()["host"]["status"] == "online"
        stub.clock.advance(3600)
        assert admin.get(f"/api/latest/fleet/hosts/{agent.host_id}").json()["host"]["status"] == "offline"
        _read(client, agent)
        assert admin.get(f"/api/latest/fleet/hosts/{agent.host_id}").json()["host"]["status"] == "online"


def test_unknown_host_is_404(stub: RunningStub) -> None:
    with stub.admin() as admin:
        for response in (
            admin.get("/api/latest/fleet/hosts/999"),
            admin.get("/api/latest/fleet/hosts/abc"),
            admin.delete("/api/latest/fleet/hosts/999"),
            admin.post("/api/latest/fleet/hosts/999/query", json={"query": "SELECT 1"}),
            admin.post("/api/latest/fleet/scripts/run", json={"host_id": 999, "script_contents": "true"}),
        ):
            assert_shape_b(response, 404)


def test_delete_host_revokes_every_credential(stub: RunningStub) -> None:
    with stub.client() as client, stub.admin() as admin:
        agent = _agent(client, admin)
        survivor = _agent(client, admin)
        orbit_key = orbit_enroll(client, agent.hardware_uuid)
        token = str(uuid.uuid4())
        registered = client.post(
            "/api/fleet/orbit/device_token", json={"orbit_node_key": orbit_key, "device_auth_token": token}
        )
        assert registered.status_code == 200
        deleted = admin.delete(f"/api/latest/fleet/hosts/{agent.host_id}")
        assert deleted.status_code == 200
        assert assert_shape_a(
            client.post("/api/v1/osquery/config", json={"node_key": agent.node_key}), node_invalid=True
        )
        assert_shape_a(
            client.post("/api/v1/osquery/distributed/read", json={"node_key": agent.node_key}), node_invalid=True
        )
        assert_shape_b(client.post("/api/fleet/orbit/config", json={"orbit_node_key": orbit_key}), 401)
        assert client.head(f"/api/latest/fleet/device/{token}/ping").status_code == 401
        assert_shape_b(client.get(f"/api/latest/fleet/device/{token}/desktop"), 401)
        assert_shape_b(admin.get(f"/api/latest/fleet/hosts/{agent.host_id}"), 404)
        assert [h["id"] for h in admin.get("/api/latest/fleet/hosts").json()["hosts"]] == [survivor.host_id]
        assert client.post("/api/v1/osquery/config", json={"node_key": survivor.node_key}).status_code == 200
        # the machine can come back by enrolling again
        osquery_enroll(client, agent.hardware_uuid)
        assert len(admin.get("/api/latest/fleet/hosts").json()["hosts"]) == 2


# --- live queries ---------------------------------------------------------------------------------------------


def test_live_query_round_trip(stub: RunningStub) -> None:
    with stub.client() as client, stub.admin() as admin, ThreadPoolExecutor(1) as pool:
        agent = _agent(client, admin)
        _read(client, agent)  # the first read hands out detail queries; drain them
        pending = _start_live_query(pool, stub, agent.host_id, "SELECT 1 AS one")
        name = _wait_for_live_query(client, agent, "SELECT 1 AS one")
        assert not pending.done()  # the admin caller is still waiting for the host
        _write(client, agent, name, [{"one": "1"}])
        response = pending.result(timeout=10)
        assert name not in _read(client, agent)  # handed out once
    assert response.status_code == 200
    assert response.json() == {
        "host_id": agent.host_id,
        "query": "SELECT 1 AS one",
        "status": "online",
        "error": None,
        "rows": [{"one": "1"}],
    }


def test_live_query_with_several_rows_keeps_them_as_strings(stub: RunningStub) -> None:
    sql = "SELECT name, pid FROM processes LIMIT 2"
    with stub.client() as client, stub.admin() as admin, ThreadPoolExecutor(1) as pool:
        agent = _agent(client, admin)
        pending = _start_live_query(pool, stub, agent.host_id, sql)
        name = _wait_for_live_query(client, agent, sql)
        _write(client, agent, name, [{"name": "init", "pid": "1"}, {"name": "sshd", "pid": "812"}])
        body = pending.result(timeout=10).json()
    assert body["status"] == "online"
    assert body["rows"] == [{"name": "init", "pid": "1"}, {"name": "sshd", "pid": "812"}]


def test_live_query_error_is_reported(stub: RunningStub) -> None:
    with stub.client() as client, stub.admin() as admin, ThreadPoolExecutor(1) as pool:
        agent = _agent(client, admin)
        pending = _start_live_query(pool, stub, agent.host_id, "SELECT * FROM nope")
        name = _wait_for_live_query(client, agent, "SELECT * FROM nope")
        _write(client, agent, name, [], status=1, message="no such table: nope")
        body = pending.result(timeout=10).json()
    assert body["status"] == "online"
    assert body["error"] == "no such table: nope"
    assert body["rows"] == []


def test_live_query_without_answer_times_out_offline(stub: RunningStub) -> None:
    with stub.client() as client, stub.admin() as admin:
        agent = _agent(client, admin)
        _read(client, agent)
        started = time.monotonic()
        response = admin.post(f"/api/latest/fleet/hosts/{agent.host_id}/query", json={"query": "SELECT 2 AS two"})
        waited = time.monotonic() - started
        assert response.status_code == 200
        body = response.json()
        # after giving up, the query is no longer handed out to the host, and is not pending any more
        assert _read(client, agent) == {}
        metrics = admin.get("/metrics").text
    assert 4.5 <= waited < 9, waited
    assert body["host_id"] == agent.host_id
    assert body["query"] == "SELECT 2 AS two"
    assert body["status"] == "offline"
    assert isinstance(body["error"], str) and body["error"]
    assert body["rows"] == []
    assert re.search(r"^fleet_stub_live_queries_pending 0$", metrics, re.MULTILINE)


def test_answer_from_another_host_is_ignored(stub: RunningStub) -> None:
    with stub.client() as client, stub.admin() as admin, ThreadPoolExecutor(1) as pool:
        target = _agent(client, admin)
        other = _agent(client, admin)
        pending = _start_live_query(pool, stub, target.host_id, "SELECT 1 AS one")
        name = _wait_for_live_query(client, target, "SELECT 1 AS one")
        assert name not in _read(client, other)
        _write(client, other, name, [{"one": "forged"}])
        assert not pending.done()
        _write(client, target, name, [{"one": "1"}])
        body = pending.result(timeout=10).json()
    assert body["host_id"] == target.host_id
    assert body["rows"] == [{"one": "1"}]


def test_live_query_needs_sql(stub: RunningStub) -> None:
    bodies: list[dict[str, object]] = [{}, {"query": ""}, {"query": "   "}, {"query": 5}]
    with stub.client() as client, stub.admin() as admin:
        agent = _agent(client, admin)
        for body in bodies:
            response = admin.post(f"/api/latest/fleet/hosts/{agent.host_id}/query", json=body)
            assert response.status_code in (400, 422), body
            assert_shape_b(response, response.status_code)
        assert not any(name.startswith("fleet_distributed_query_") for name in _read(client, agent))


# --- teams and agent options ----------------------------------------------------------------------------------


def test_team_lifecycle(stub: RunningStub) -> None:
    with stub.client() as client, stub.admin() as admin:
        created = admin.post("/api/latest/fleet/teams", json={"name": "Servers"})
        assert created.status_code == 200, created.text
        team = created.json()["team"]
        assert team["name"] == "Servers" and isinstance(team["id"], int)
        assert_shape_b(admin.post("/api/latest/fleet/teams", json={"name": "Servers"}), 409)
        assert_shape_b(admin.post("/api/latest/fleet/teams", json={"name": TEAM_NAME}), 409)
        names = [t["name"] for t in admin.get("/api/latest/fleet/teams").json()["teams"]]
        assert sorted(names) == sorted([TEAM_NAME, "Servers"])
        fetched = admin.get(f"/api/latest/fleet/teams/{team['id']}")
        assert fetched.status_code == 200 and fetched.json()["team"]["name"] == "Servers"

        secret = admin.patch(f"/api/latest/fleet/teams/{team['id']}/secrets", json={"secrets": [{"secret": "srv-1"}]})
        assert secret.status_code == 200 and secret.json()["secrets"] == [{"secret": "srv-1"}]
        hardware_uuid = str(uuid.uuid4())
        orbit_key = orbit_enroll(client, hardware_uuid, secret="srv-1")
        host_id = host_id_for_uuid(admin, hardware_uuid)
        assert admin.get(f"/api/latest/fleet/hosts/{host_id}").json()["host"]["team_id"] == team["id"]

        patched = admin.patch(
            f"/api/latest/fleet/teams/{team['id']}", json={"orbit_notifications": {"renew_enrollment_profile": True}}
        )
        assert patched.status_code == 200
        assert patched.json()["team"]["orbit_notifications"] == {"renew_enrollment_profile": True}
        config = client.post("/api/fleet/orbit/config", json={"orbit_node_key": orbit_key}).json()
        assert config["notifications"] == {"renew_enrollment_profile": True}

        assert admin.delete(f"/api/latest/fleet/teams/{team['id']}").status_code == 200
        assert_shape_b(admin.get(f"/api/latest/fleet/teams/{team['id']}"), 404)
        assert [t["name"] for t in admin.get("/api/latest/fleet/teams").json()["teams"]] == [TEAM_NAME]
        # the host survives without a team; the team's secret is gone with it
        assert admin.get(f"/api/latest/fleet/hosts/{host_id}").json()["host"]["team_id"] is None
        gone = client.post("/api/fleet/orbit/enroll", json={"enroll_secret": "srv-1", "hardware_uuid": "x"})
        assert_shape_b(gone, 401)
        assert_shape_b(admin.delete(f"/api/latest/fleet/teams/{team['id']}"), 404)
        assert_shape_b(admin.patch("/api/latest/fleet/teams/999", json={"orbit_notifications": {}}), 404)


def test_team_patch_rejects_bad_notifications(stub: RunningStub) -> None:
    with stub.admin() as admin:
        team_id = _team_id(admin, TEAM_NAME)
        for notifications in ([1], {"x": [1]}, {"pending_script_execution_ids": "a"}):
            response = admin.patch(f"/api/latest/fleet/teams/{team_id}", json={"orbit_notifications": notifications})
            assert_shape_b(response, 422)
        assert admin.get(f"/api/latest/fleet/teams/{team_id}").json()["team"]["orbit_notifications"] == {}


INVALID_AGENT_OPTIONS: list[object] = [
    {"config": {}, "bogus": 1},  # unknown key
    {"update_channels": {"foo": "x"}},  # unknown update target
    {"update_channels": {"orbit": ""}},
    {"update_channels": "stable"},
    {"script_execution_timeout": 0},
    {"script_execution_timeout": 3601},
    {"script_execution_timeout": "60"},
    {"config": "not an object"},
    {"config": []},
    {"config": {"options": [1]}},
    {"command_line_flags": {"--verbose": True}},
    {"command_line_flags": {"verbose": [1]}},
    [1, 2],  # not an object at all
    "text",
]


def test_invalid_global_agent_options_are_422(stub: RunningStub) -> None:
    with stub.client() as client, stub.admin() as admin:
        before = admin.get("/api/latest/fleet/config").json()["agent_options"]
        for options in INVALID_AGENT_OPTIONS:
            response = admin.patch("/api/latest/fleet/config", json={"agent_options": options})
            assert response.status_code == 422, options
            assert_shape_b(response, 422)
        assert admin.get("/api/latest/fleet/config").json()["agent_options"] == before
        agent = _agent(client, admin)
        served = client.post("/api/v1/osquery/config", json={"node_key": agent.node_key}).json()
    assert served["options"]["distributed_interval"] == 10  # the defaults are still served


def test_invalid_team_agent_options_are_422(stub: RunningStub) -> None:
    with stub.admin() as admin:
        team_id = _team_id(admin, TEAM_NAME)
        for options in INVALID_AGENT_OPTIONS:
            response = admin.post(f"/api/latest/fleet/teams/{team_id}/agent_options", json=options)
            if isinstance(options, dict):
                assert response.status_code == 422, options
            else:
                assert response.status_code in (400, 422), options  # a non-object body fails to decode
            assert_shape_b(response, response.status_code)
            patched = admin.patch(f"/api/latest/fleet/teams/{team_id}", json={"agent_options": options})
            assert patched.status_code == 422, options
            assert_shape_b(patched, 422)
        assert admin.get(f"/api/latest/fleet/teams/{team_id}").json()["team"]["agent_options"] is None


def test_valid_agent_options_are_stored_and_served_to_osquery(stub: RunningStub) -> None:
    options = {
        "config": {"options": {"distributed_interval": 7, "logger_tls_period": 9}},
        "overrides": {"platforms": {"darwin": {"options": {"distributed_interval": 99}}}},
        "command_line_flags": {"verbose": True},
        "update_channels": {"orbit": "stable"},
        "script_execution_timeout": 3600,
    }
    with stub.client() as client, stub.admin() as admin:
        response = admin.patch("/api/latest/fleet/config", json={"agent_options": options})
        assert response.status_code == 200
        assert admin.get("/api/latest/fleet/config").json()["agent_options"] == options
        agent = _agent(client, admin)
        served = client.post("/api/v1/osquery/config", json={"node_key": agent.node_key}).json()
    assert served["options"] == {"distributed_interval": 7, "logger_tls_period": 9}


# --- policies -------------------------------------------------------------------------------------------------


def test_policy_lifecycle(stub: RunningStub) -> None:
    assert stub.clock is not None
    with stub.client() as client, stub.admin() as admin:
        policy = _policy(admin, "Firewall on", "SELECT 1 FROM iptables;", resolution="Enable it.", platform="linux")
        policy_id = policy["id"]
        assert isinstance(policy_id, int)
        assert policy["name"] == "Firewall on" and policy["resolution"] == "Enable it."
        assert_shape_b(admin.post("/api/latest/fleet/global/policies", json={"name": "Firewall on", "query": "x"}), 409)
        assert_shape_b(admin.post("/api/latest/fleet/global/policies", json={"name": "", "query": "SELECT 1"}), 422)
        assert_shape_b(admin.post("/api/latest/fleet/global/policies", json={"name": "n", "query": ""}), 422)
        other = _policy(admin, "Disk encrypted")
        listed = admin.get("/api/latest/fleet/global/policies").json()["policies"]
        assert [p["name"] for p in listed] == ["Firewall on", "Disk encrypted"]

        agent = _agent(client, admin)
        assert f"fleet_policy_query_{policy_id}" in _read(client, agent)
        _write(client, agent, f"fleet_policy_query_{policy_id}", [{"1": "1"}])
        _write(client, agent, f"fleet_policy_query_{other['id']}", [])
        assert _host_policy_responses(admin, agent.host_id) == {policy_id: "pass", other["id"]: "fail"}

        # a new resolution text keeps the answers; a new query clears them
        stub.clock.advance(1)
        renamed = admin.patch(f"/api/latest/fleet/global/policies/{policy_id}", json={"resolution": "Run ufw enable."})
        assert renamed.status_code == 200 and renamed.json()["policy"]["resolution"] == "Run ufw enable."
        assert _host_policy_responses(admin, agent.host_id)[policy_id] == "pass"
        changed = admin.patch(f"/api/latest/fleet/global/policies/{policy_id}", json={"query": "SELECT 2;"})
        assert changed.status_code == 200 and changed.json()["policy"]["query"] == "SELECT 2;"
        assert _host_policy_responses(admin, agent.host_id) == {policy_id: "", other["id"]: "fail"}
        # the changed policy is sent to the host again with its new query
        assert _read(client, agent).get(f"fleet_policy_query_{policy_id}") == "SELECT 2;"
        assert_shape_b(
            admin.patch(f"/api/latest/fleet/global/policies/{policy_id}", json={"name": "Disk encrypted"}), 409
        )
        assert_shape_b(admin.patch("/api/latest/fleet/global/policies/999", json={"query": "SELECT 3"}), 404)

        deleted = admin.post("/api/latest/fleet/global/policies/delete", json={"ids": [policy_id]})
        assert deleted.status_code == 200
        assert [p["id"] for p in admin.get("/api/latest/fleet/global/policies").json()["policies"]] == [other["id"]]
        assert _host_policy_responses(admin, agent.host_id) == {other["id"]: "fail"}
        assert_shape_b(admin.post("/api/latest/fleet/global/policies/delete", json={"ids": "all"}), 400)
        # the name is free again
        assert _policy(admin, "Firewall on")["id"] != policy_id


def test_team_policies_are_listed_per_team(stub: RunningStub) -> None:
    with stub.admin() as admin:
        team_id = _team_id(admin, TEAM_NAME)
        response = admin.post(
            f"/api/latest/fleet/teams/{team_id}/policies", json={"name": "Team only", "query": "SELECT 1"}
        )
        assert response.status_code == 200
        assert response.json()["policy"]["team_id"] == team_id
        _policy(admin, "Global")
        team_list = admin.get(f"/api/latest/fleet/teams/{team_id}/policies").json()["policies"]
        global_list = admin.get("/api/latest/fleet/global/policies").json()["policies"]
    assert [p["name"] for p in team_list] == ["Team only"]
    assert [p["name"] for p in global_list] == ["Global"]


# --- enroll secrets -------------------------------------------------------------------------------------------


def test_global_enroll_secrets_spec(stub: RunningStub) -> None:
    with stub.client() as client, stub.admin() as admin:
        assert admin.get("/api/latest/fleet/spec/enroll_secret").json() == {
            "spec": {"secrets": [{"secret": GLOBAL_SECRET}]}
        }
        posted = admin.post(
            "/api/latest/fleet/spec/enroll_secret",
            json={"spec": {"secrets": [{"secret": GLOBAL_SECRET}, {"secret": "another-global"}]}},
        )
        assert posted.status_code == 200
        secrets = {s["secret"] for s in admin.get("/api/latest/fleet/spec/enroll_secret").json()["spec"]["secrets"]}
        assert secrets == {GLOBAL_SECRET, "another-global"}
        assert TEAM_SECRET not in secrets
        agent = _agent(client, admin, secret="another-global")
        assert admin.get(f"/api/latest/fleet/hosts/{agent.host_id}").json()["host"]["team_id"] is None

        admin.post("/api/latest/fleet/spec/enroll_secret", json={"spec": {"secrets": [{"secret": GLOBAL_SECRET}]}})
        rejected = client.post(
            "/api/v1/osquery/enroll", json={"enroll_secret": "another-global", "host_identifier": "x"}
        )
        assert_shape_a(rejected, node_invalid=True)
        # a secret that belongs to a team cannot become a global one
        clash = admin.post(
            "/api/latest/fleet/spec/enroll_secret", json={"spec": {"secrets": [{"secret": TEAM_SECRET}]}}
        )
        assert_shape_b(clash, 409)
        bad_bodies: list[dict[str, object]] = [
            {},
            {"spec": []},
            {"spec": {"secrets": [{"secret": ""}]}},
            {"spec": {"secrets": "x"}},
        ]
        for bad in bad_bodies:
            assert_shape_b(admin.post("/api/latest/fleet/spec/enroll_secret", json=bad), 400)


def test_team_secrets_enroll_into_the_team(stub: RunningStub) -> None:
    with stub.client() as client, stub.admin() as admin:
        team_id = _team_id(admin, TEAM_NAME)
        listed = admin.get(f"/api/latest/fleet/teams/{team_id}/secrets").json()["secrets"]
        assert listed == [{"secret": TEAM_SECRET}]
        patched = admin.patch(
            f"/api/latest/fleet/teams/{team_id}/secrets",
            json={"secrets": [{"secret": TEAM_SECRET}, {"secret": "laptops-2"}]},
        )
        assert patched.status_code == 200
        agent = _agent(client, admin, secret="laptops-2")
        orbit_uuid = str(uuid.uuid4())
        orbit_enroll(client, orbit_uuid, secret="laptops-2")
        hosts = {h["uuid"]: h for h in admin.get("/api/latest/fleet/hosts").json()["hosts"]}
        assert hosts[agent.hardware_uuid]["team_id"] == team_id
        assert hosts[orbit_uuid]["team_id"] == team_id
        assert_shape_b(
            admin.patch(f"/api/latest/fleet/teams/{team_id}/secrets", json={"secrets": [{"secret": GLOBAL_SECRET}]}),
            409,
        )


# --- carves ---------------------------------------------------------------------------------------------------


def test_carves_are_listed(stub: RunningStub) -> None:
    with stub.client() as client, stub.admin() as admin:
        assert admin.get("/api/latest/fleet/carves").json() == {"carves": []}
        agent = _agent(client, admin)
        begin = client.post(
            "/api/v1/osquery/carve/begin",
            json={
                "node_key": agent.node_key,
                "block_count": 2,
                "block_size": 10,
                "carve_size": 15,
                "carve_id": str(uuid.uuid4()),
                "request_id": "fleet_distributed_query_7",
            },
        )
        session_id = begin.json()["session_id"]
        carves = admin.get("/api/latest/fleet/carves").json()["carves"]
    assert len(carves) == 1
    carve = carves[0]
    assert carve["host_id"] == agent.host_id
    assert carve["session_id"] == session_id
    assert carve["request_id"] == "fleet_distributed_query_7"
    assert carve["block_count"] == 2 and carve["carve_size"] == 15
    assert carve["completed"] is False


# --- metrics --------------------------------------------------------------------------------------------------


def test_metrics_are_prometheus_text_without_secrets(stub: RunningStub) -> None:
    with stub.client() as client, stub.admin() as admin:
        agent = _agent(client, admin)
        orbit_key = orbit_enroll(client, agent.hardware_uuid)
        token = str(uuid.uuid4())
        client.post("/api/fleet/orbit/device_token", json={"orbit_node_key": orbit_key, "device_auth_token": token})
        client.get(f"/api/latest/fleet/device/{token}/desktop")
        client.get(f"/device/{token}")
        stranger = "stranger-" + uuid.uuid4().hex
        client.get(f"/api/latest/fleet/device/{stranger}/desktop")
        client.get(f"/device/{stranger}")
        client.get(f"/no/such/path/{stranger}")
        client.post("/api/v1/osquery/config", json={"node_key": agent.node_key})
        client.post("/api/v1/osquery/enroll", json={"enroll_secret": "wrong", "host_identifier": "x"})
        response = admin.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    lines = text.splitlines()
    assert 'fleet_stub_http_requests_total{endpoint="osquery_enroll",status="200"} 1' in lines
    assert 'fleet_stub_http_requests_total{endpoint="osquery_enroll",status="401"} 1' in lines
    assert any(line.startswith("fleet_stub_http_request_duration_seconds_bucket{") for line in lines)
    assert "fleet_stub_hosts_enrolled 1" in lines
    assert "fleet_stub_live_queries_pending 0" in lines
    sample = re.compile(r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_]+="[^"]*",?)*\})? -?[0-9.e+]+|\+Inf$')
    for line in lines:
        assert line.startswith("# ") or sample.match(line), line
    for secret in (agent.node_key, orbit_key, token, stranger, GLOBAL_SECRET, stub.admin_token):
        assert secret not in text


def test_metrics_count_pending_live_queries(stub: RunningStub) -> None:
    with stub.client() as client, stub.admin() as admin, ThreadPoolExecutor(1) as pool:
        agent = _agent(client, admin)
        pending = _start_live_query(pool, stub, agent.host_id, "SELECT 1 AS one")
        name = _wait_for_live_query(client, agent, "SELECT 1 AS one")
        assert "fleet_stub_live_queries_pending 1" in admin.get("/metrics").text.splitlines()
        _write(client, agent, name, [{"one": "1"}])
        assert pending.result(timeout=10).status_code == 200
        assert "fleet_stub_live_queries_pending 0" in admin.get("/metrics").text.splitlines()
