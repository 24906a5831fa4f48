"""fleet-stub under hostile input (issue 15): each case that answered 500 with a traceback, or stored non-JSON, or made
an osquery log batch unacceptable forever. Raw bytes over real TLS, so nothing on the client side fixes them first.

Rules checked (docs/architecture.md "fleet-stub inside", input handling): strings are decoded like Fleet's Go server
(invalid UTF-8 and lone surrogates become U+FFFD), every integer is range-checked (400 in the family's shape, or 404
for a path id that is not ASCII digits), what the stub writes is strict JSON, and one bad log line never costs the
batch. After every test the stub's own metrics show no 5xx.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.support.agents import (
    assert_shape_a,
    assert_shape_b,
    host_id_for_uuid,
    orbit_enroll,
    osquery_enroll,
)
from tests.support.stub_server import GLOBAL_SECRET, RunningStub

JSON = {"Content-Type": "application/json"}
BEYOND_INT64 = "9223372036854775808"
HUGE = "9" * 30
OSQ = "/api/v1/osquery"
ADMIN = "/api/latest/fleet"


def strict_loads(text: str) -> object:
    def refuse(name: str) -> object:
        raise ValueError(f"not JSON: {name}")

    return json.loads(text, parse_constant=refuse)


def metric(admin: httpx.Client, name: str) -> int:
    found = re.search(rf"^fleet_stub_{name}_total (\d+)$", admin.get("/metrics").text, re.MULTILINE)
    return int(found.group(1)) if found else 0


@pytest.fixture(autouse=True)
def _no_5xx_afterwards(stub: RunningStub) -> Iterator[None]:
    yield
    with stub.admin() as admin:
        served = admin.get("/metrics").text
    assert not re.findall(r'^fleet_stub_http_requests_total\{.*status="5\d\d"\} \d+$', served, re.MULTILINE)


def post(client: httpx.Client, path: str, raw: bytes | str) -> httpx.Response:
    return client.post(path, content=raw.encode() if isinstance(raw, str) else raw, headers=JSON)


def stored_lines(admin: httpx.Client, host_id: int, log_type: str = "result") -> list[object]:
    text = admin.get(f"{ADMIN}/hosts/{host_id}/logs/{log_type}").text
    return [strict_loads(line) for line in text.splitlines()]


# --- strings ------------------------------------------------------------------------------------------------


def test_lone_surrogates_in_osquery_enroll_become_u_fffd(stub: RunningStub) -> None:
    with stub.client() as client, stub.admin() as admin:
        raw = (
            f'{{"enroll_secret": "{GLOBAL_SECRET}", "host_identifier": "\\ud800host",'
            ' "host_details": {"system_info": {"hostname": "laptop-\\udc00", "uuid": "\\ud800host"}}}'
        )
        response = post(client, f"{OSQ}/enroll", raw)
        assert response.status_code == 200 and response.json()["node_key"]
        host = next(h for h in admin.get(f"{ADMIN}/hosts").json()["hosts"] if h["osquery_host_id"] == "\ufffdhost")
        assert host["hostname"] == "laptop-\ufffd"
        assert metric(admin, "json_values_repaired") >= 3


def test_lone_surrogates_in_orbit_and_admin_bodies(stub: RunningStub) -> None:
    with stub.client() as client, stub.admin() as admin:
        raw = f'{{"enroll_secret": "{GLOBAL_SECRET}", "hardware_uuid": "\\udc00", "hostname": "a\\ud800b"}}'
        response = post(client, "/api/fleet/orbit/enroll", raw)
        assert response.status_code == 200 and response.json()["orbit_node_key"]
        team = post(admin, f"{ADMIN}/teams", '{"name": "team \\ud800"}')
        assert team.status_code == 200 and team.json()["team"]["name"] == "team \ufffd"
        policy = post(admin, f"{ADMIN}/global/policies", '{"name": "p\\ud800", "query": "SELECT \'\\udfff\'"}')
        assert policy.status_code == 200 and policy.json()["policy"]["query"] == "SELECT '\ufffd'"


def test_invalid_utf8_is_replaced_not_refused(stub: RunningStub) -> None:
    """Fleet's Go decoder turns invalid UTF-8 into U+FFFD; the stub answered 400 "json decoder error"."""
    with stub.client() as client, stub.admin() as admin:
        raw = b'{"enroll_secret": "' + GLOBAL_SECRET.encode() + b'", "host_identifier": "id-\xff\xfe-\xed\xa0\x80"}'
        assert post(client, f"{OSQ}/enroll", raw).status_code == 200
        ids = [h["osquery_host_id"] for h in admin.get(f"{ADMIN}/hosts").json()["hosts"]]
    assert "id-\ufffd\ufffd-\ufffd\ufffd\ufffd" in ids


def test_a_device_error_report_with_surrogates_and_nan_is_stored(stub: RunningStub) -> None:
    with stub.client() as client, stub.admin() as admin:
        hardware_uuid = str(uuid.uuid4())
        orbit_key = orbit_enroll(client, hardware_uuid)
        token = uuid.uuid4().hex
        client.post("/api/fleet/orbit/device_token", json={"orbit_node_key": orbit_key, "device_auth_token": token})
        raw = '{"error_source": "\\ud800", "error_additional_info": {"n": NaN, "big": 1e999}}'
        assert post(client, f"/api/latest/fleet/device/{token}/debug/errors", raw).status_code == 200
        assert metric(admin, "json_values_repaired") >= 3


# --- osquery log batches ------------------------------------------------------------------------------------


def test_one_bad_line_never_costs_the_batch(stub: RunningStub) -> None:
    """A lone surrogate, NaN, Infinity, a number beyond a double and a non-object in one batch: accepted at once
    (osqueryd would otherwise retry it forever), every object line stored with its bad parts made valid, the
    non-object counted as dropped, and every stored line readable by a strict JSON reader."""
    hardware_uuid = str(uuid.uuid4())
    with stub.client() as client, stub.admin() as admin:
        key = osquery_enroll(client, hardware_uuid)
        host_id = host_id_for_uuid(admin, hardware_uuid)
        data = (
            '[{"name": "q", "columns": {"n": "0"}},'
            ' {"name": "q\\ud800", "columns": {"n": "\\udfff"}},'
            ' {"name": "q", "numerics": true, "columns": {"n": NaN, "m": Infinity, "o": -Infinity, "p": 1e400}},'
            ' "not an object",'
            f' {{"name": "q", "counter": {HUGE}}}]'
        )
        dropped_before = metric(admin, "log_items_dropped")
        response = post(client, f"{OSQ}/log", f'{{"node_key": "{key}", "log_type": "result", "data": {data}}}')
        assert response.status_code == 200 and response.json() == {}
        assert stored_lines(admin, host_id) == [
            {"name": "q", "columns": {"n": "0"}},
            {"name": "q\ufffd", "columns": {"n": "\ufffd"}},
            {"name": "q", "numerics": True, "columns": {"n": None, "m": None, "o": None, "p": None}},
            {"name": "q", "counter": int(HUGE)},  # a big integer is valid JSON: kept exactly
        ]
        assert metric(admin, "log_items_dropped") == dropped_before + 1
        host = admin.get(f"{ADMIN}/hosts/{host_id}").json()["host"]
        assert host["log_counts"]["result"] == 4


def test_the_raw_log_file_holds_no_nan_or_infinity(stub: RunningStub) -> None:
    hardware_uuid = str(uuid.uuid4())
    with stub.client() as client, stub.admin() as admin:
        key = osquery_enroll(client, hardware_uuid)
        host_id = host_id_for_uuid(admin, hardware_uuid)
        raw = f'{{"node_key": "{key}", "log_type": "status", "data": [{{"severity": NaN, "line": -Infinity}}]}}'
        assert post(client, f"{OSQ}/log", raw).status_code == 200
    on_disk = (stub.data_dir / "logs" / str(host_id) / "status.jsonl").read_text(encoding="utf-8")
    assert on_disk == '{"severity":null,"line":null}\n'


def test_unknown_log_type_is_a_400_in_shape_a(stub: RunningStub) -> None:
    with stub.client() as client:
        key = osquery_enroll(client)
        response = post(client, f"{OSQ}/log", f'{{"node_key": "{key}", "log_type": "result\\ud800", "data": []}}')
    assert response.status_code == 400  # Fleet answers 500; osqueryd reads only the body
    assert "unknown log type" in str(assert_shape_a(response, node_invalid=False)["error"])


# --- integers -------------------------------------------------------------------------------------------------


def test_distributed_write_names_beyond_int64_or_with_unicode_digits_are_ignored(stub: RunningStub) -> None:
    """fleet_policy_query_<n> / fleet_distributed_query_<n> that cannot be ours are ignored like any unknown
    name; the other results of the same write are still recorded."""
    hardware_uuid = str(uuid.uuid4())
    with stub.client() as client, stub.admin() as admin:
        key = osquery_enroll(client, hardware_uuid)
        policy = admin.post(f"{ADMIN}/global/policies", json={"name": "real", "query": "SELECT 1"}).json()["policy"]
        queries = {
            f"fleet_policy_query_{HUGE}": [],
            f"fleet_policy_query_{BEYOND_INT64}": [{"1": "1"}],
            "fleet_policy_query_\u00b2": [],
            "fleet_distributed_query_\u0663": [],
            f"fleet_distributed_query_{HUGE}": [{"a": "b"}],
            f"fleet_policy_query_{policy['id']}": [{"1": "1"}],
        }
        response = client.post(f"{OSQ}/distributed/write", json={"node_key": key, "queries": queries})
        assert response.status_code == 200 and response.json() == {}
        host = admin.get(f"{ADMIN}/hosts/{host_id_for_uuid(admin, hardware_uuid)}").json()["host"]
    assert [(p["id"], p["response"]) for p in host["policies"]] == [(policy["id"], "pass")]


@pytest.mark.parametrize("status", [HUGE, f"-{HUGE}", f'"{HUGE}"', '"\u00b2"', '"\u0663"', '"1e3"', "1.5", "true"])
def test_distributed_write_statuses_out_of_range_are_a_400(stub: RunningStub, status: str) -> None:
    with stub.client() as client:
        key = osquery_enroll(client)
        raw = f'{{"node_key": "{key}", "queries": {{"q": []}}, "statuses": {{"q": {status}}}}}'
        response = post(client, f"{OSQ}/distributed/write", raw)
    assert response.status_code == 400
    assert_shape_a(response, node_invalid=False)


def test_distributed_write_string_statuses_in_ascii_digits_still_work(stub: RunningStub) -> None:
    with stub.client() as client:
        key = osquery_enroll(client)
        raw = f'{{"node_key": "{key}", "queries": {{"q": [], "r": []}}, "statuses": {{"q": "0", "r": " -1 "}}}}'
        assert post(client, f"{OSQ}/distributed/write", raw).status_code == 200


@pytest.mark.parametrize(
    ("field", "value"),
    [("block_count", HUGE), ("block_size", BEYOND_INT64), ("carve_size", f"-{HUGE}")],
)
def test_carve_begin_integers_beyond_int64_are_a_400(stub: RunningStub, field: str, value: str) -> None:
    with stub.client() as client:
        key = osquery_enroll(client)
        fields = {"block_count": "1", "block_size": "10", "carve_size": "10", field: value}
        raw = (
            f'{{"node_key": "{key}", "carve_id": "\\ud800", "request_id": "r",'
            + ", ".join(f'"{k}": {v}' for k, v in fields.items())
            + "}"
        )
        response = post(client, f"{OSQ}/carve/begin", raw)
    assert response.status_code == 400
    assert "out of range" in str(assert_shape_a(response, node_invalid=False)["error"])


def test_carve_block_id_beyond_int64_and_surrogate_session_are_clean(stub: RunningStub) -> None:
    with stub.client() as client:
        huge = post(client, f"{OSQ}/carve/block", f'{{"session_id": "s", "block_id": {HUGE}, "data": ""}}')
        assert huge.status_code == 400
        assert_shape_a(huge, node_invalid=False)
        # before the data, a value's end is found without converting it: int() refuses 5,000 digits, the C
        # scanner recurses on nesting
        for head in (f'"block_id": {"9" * 5000}', '"x": ' + "[" * 3000 + "]" * 3000):
            answer = post(client, f"{OSQ}/carve/block", f'{{"session_id": "s", {head}, "data": ""}}')
            assert answer.status_code in (400, 404), head[:40]
            assert_shape_a(answer, node_invalid=False)
        lone = post(
            client, f"{OSQ}/carve/block", '{"session_id": "\\ud800", "block_id": 0, "data": "AA==", "request_id": ""}'
        )
        assert lone.status_code == 404
        assert_shape_a(lone, node_invalid=False)


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        (f'"exit_code": {HUGE}', "'exit_code' is out of range"),
        (f'"exit_code": -{HUGE}', "'exit_code' is out of range"),
        (f'"exit_code": 0, "runtime": {BEYOND_INT64}', "'runtime' is out of range"),
        ('"exit_code": 0, "runtime": -1', "'runtime' is out of range"),
    ],
)
def test_script_result_integers_out_of_range_are_a_400(stub: RunningStub, extra: str, reason: str) -> None:
    with stub.client() as client, stub.admin() as admin:
        hardware_uuid = str(uuid.uuid4())
        key = orbit_enroll(client, hardware_uuid)
        host_id = host_id_for_uuid(admin, hardware_uuid)
        queued = admin.post(f"{ADMIN}/scripts/run", json={"host_id": host_id, "script_contents": "echo hi"})
        execution_id = queued.json()["execution_id"]
        raw = f'{{"orbit_node_key": "{key}", "execution_id": "{execution_id}", "output": "\\ud800", {extra}}}'
        response = post(client, "/api/fleet/orbit/scripts/result", raw)
        assert reason in str(assert_shape_b(response, 400)["errors"][0]["reason"])  # type: ignore[index]
        # a result in range (a Windows NTSTATUS exit code, Fleet's -1 for a timeout) is stored
        for exit_code in (3221225477, -1):
            body = {"orbit_node_key": key, "execution_id": execution_id, "exit_code": exit_code, "runtime": 2}
            assert client.post("/api/fleet/orbit/scripts/result", json=body).status_code == 200
        shown = admin.get(f"{ADMIN}/scripts/results/{execution_id}").json()
    assert shown["exit_code"] == 3221225477  # the first result is kept


def test_admin_bodies_with_ids_beyond_int64_are_a_400(stub: RunningStub) -> None:
    with stub.admin() as admin:
        for raw in (f'{{"host_id": {HUGE}, "script_contents": "x"}}', '{"host_id": -1, "script_contents": "x"}'):
            assert_shape_b(post(admin, f"{ADMIN}/scripts/run", raw), 400)
        assert_shape_b(post(admin, f"{ADMIN}/global/policies/delete", f'{{"ids": [1, {HUGE}]}}'), 400)
        assert post(admin, f"{ADMIN}/global/policies/delete", f'{{"ids": [{2**63 - 1}]}}').json() == {"deleted": 0}


def test_agent_options_that_would_break_every_osquery_config_are_refused(stub: RunningStub) -> None:
    """A distributed_interval beyond int64 was accepted and then failed every osquery config request (500) where
    the stub records the host's intervals; NaN was stored and failed every config answer too."""
    with stub.client() as client, stub.admin() as admin:
        key = osquery_enroll(client)
        big = f'{{"agent_options": {{"config": {{"options": {{"distributed_interval": {HUGE}}}}}}}}}'
        assert_shape_b(admin.patch(f"{ADMIN}/config", content=big, headers=JSON), 422)
        nan = '{"agent_options": {"config": {"options": {"distributed_interval": 10, "x": NaN}}}}'
        patched = admin.patch(f"{ADMIN}/config", content=nan, headers=JSON)
        assert patched.status_code == 200
        assert patched.json()["agent_options"]["config"]["options"]["x"] is None
        config = client.post(f"{OSQ}/config", json={"node_key": key})
    assert config.status_code == 200
    assert strict_loads(config.text) == {"options": {"distributed_interval": 10, "x": None}}


# --- ids in paths and queries -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", f"{ADMIN}/hosts/%C2%B2", 404),  # "²": isdigit() but not a digit int() takes
        ("GET", f"{ADMIN}/hosts/%D9%A3", 404),  # "٣": int() would read it as 3
        ("GET", f"{ADMIN}/hosts/%EF%BC%91", 404),  # fullwidth "１"
        ("DELETE", f"{ADMIN}/hosts/%C2%B2", 404),
        ("GET", f"{ADMIN}/hosts/%C2%B2/logs/result", 404),
        ("POST", f"{ADMIN}/hosts/%C2%B2/query", 404),
        ("GET", f"{ADMIN}/teams/%C2%B2", 404),
        ("GET", f"{ADMIN}/teams/%C2%B2/policies", 404),
        ("PATCH", f"{ADMIN}/global/policies/%C2%B2", 404),
        ("GET", f"{ADMIN}/hosts/{HUGE}", 400),
        ("GET", f"{ADMIN}/hosts/{'9' * 5000}", 400),
        ("DELETE", f"{ADMIN}/teams/{BEYOND_INT64}", 400),
        ("PATCH", f"{ADMIN}/teams/1/policies/{HUGE}", 400),
        ("GET", f"{ADMIN}/hosts/{HUGE}/logs/status", 400),
        ("GET", f"{ADMIN}/hosts?team_id=%C2%B2", 400),
        ("GET", f"{ADMIN}/hosts?team_id={HUGE}", 400),
        ("GET", f"{ADMIN}/hosts/{2**63 - 1}", 404),
        ("GET", f"{ADMIN}/hosts/000", 404),
    ],
)
def test_path_ids_are_ascii_digits_within_int64(stub: RunningStub, method: str, path: str, status: int) -> None:
    with stub.admin() as admin:
        response = admin.request(method, path, json={"query": "SELECT 1"} if method != "GET" else None)
    assert_shape_b(response, status)


def test_a_device_token_with_a_trailing_newline_is_refused(stub: RunningStub) -> None:
    with stub.client() as client:
        key = orbit_enroll(client, str(uuid.uuid4()))
        response = client.post(
            "/api/fleet/orbit/device_token", json={"orbit_node_key": key, "device_auth_token": "abcdef\n"}
        )
    assert_shape_b(response, 400)
