"""The osquery TLS API as osqueryd sees it: success judged by the body, every error in shape A."""

from __future__ import annotations

import base64
import gzip
import json
import uuid

import httpx
import pytest

from tests.support.agents import assert_shape_a, host_details, host_id_for_uuid, orbit_enroll, osquery_enroll
from tests.support.stub_server import GLOBAL_SECRET, RunningStub

PREFIXES = ("/api/osquery", "/api/v1/osquery")


@pytest.mark.parametrize("prefix", PREFIXES)
def test_enroll_then_config_on_both_path_families(stub: RunningStub, prefix: str) -> None:
    with stub.client() as client:
        key = osquery_enroll(client, prefix=prefix)
        assert isinstance(key, str) and len(key) == 32
        config = client.post(f"{prefix}/config", json={"node_key": key})
    assert config.status_code == 200
    body = config.json()
    assert "error" not in body and "node_invalid" not in body
    assert body["options"]["distributed_interval"] == 10
    assert body["decorators"]["load"]


def test_enroll_with_wrong_or_empty_secret_is_node_invalid(stub: RunningStub) -> None:
    with stub.client() as client:
        for secret in ("wrong", "", None):
            payload = {"enroll_secret": secret, "host_identifier": "h"}
            body = assert_shape_a(client.post("/api/osquery/enroll", json=payload), node_invalid=True)
            assert str(body["error"]).startswith("enroll failed")
            assert "node_key" not in body


def test_enroll_secret_in_query_string(stub: RunningStub) -> None:
    with stub.client() as client:
        response = client.post(f"/api/osquery/enroll?enroll_secret={GLOBAL_SECRET}", json={"host_identifier": "q"})
    assert response.json()["node_key"]


def test_enroll_stores_host_details(stub: RunningStub) -> None:
    hardware_uuid = str(uuid.uuid4()).upper()
    with stub.client() as client, stub.admin() as admin:
        osquery_enroll(client, hardware_uuid, hostname="laptop-7")
        host = admin.get(f"/api/latest/fleet/hosts/{host_id_for_uuid(admin, hardware_uuid)}").json()["host"]
    assert host["hostname"] == "laptop-7"
    assert host["platform"] == "ubuntu"
    assert host["os_version"] == "Ubuntu 22.04.4 LTS"
    assert host["osquery_version"] == "5.14.1"
    assert host["hardware_serial"].startswith("SER-")
    assert host["status"] == "online"


def test_reenroll_reissues_key_and_old_key_is_invalid(stub: RunningStub) -> None:
    hardware_uuid = str(uuid.uuid4())
    with stub.client() as client, stub.admin() as admin:
        first = osquery_enroll(client, hardware_uuid)
        second = osquery_enroll(client, hardware_uuid)
        assert first != second
        assert_shape_a(client.post("/api/v1/osquery/config", json={"node_key": first}), node_invalid=True)
        assert client.post("/api/v1/osquery/config", json={"node_key": second}).status_code == 200
        hosts = admin.get("/api/latest/fleet/hosts").json()["hosts"]
    assert [h["uuid"] for h in hosts].count(hardware_uuid) == 1


@pytest.mark.parametrize("path", ["config", "log", "distributed/read", "distributed/write", "carve/begin"])
def test_missing_and_bad_node_keys(stub: RunningStub, path: str) -> None:
    with stub.client() as client:
        missing = assert_shape_a(client.post(f"/api/v1/osquery/{path}", json={}), node_invalid=True)
        assert "missing node key" in str(missing["error"])
        assert client.post(f"/api/v1/osquery/{path}", json={}).status_code == 401
        bad = assert_shape_a(client.post(f"/api/v1/osquery/{path}", json={"node_key": "nope"}), node_invalid=True)
        assert "invalid node key" in str(bad["error"])


def test_node_key_in_authorization_header(stub: RunningStub) -> None:
    with stub.client() as client:
        key = osquery_enroll(client)
        for scheme in ("NodeKey", "nodekey"):
            response = client.post("/api/v1/osquery/config", json={}, headers={"Authorization": f"{scheme} {key}"})
            assert response.status_code == 200 and "error" not in response.json()


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b'{"node_key": ', "json decoder error"),
        (b"not json", "json decoder error"),
        (b"[1, 2]", "json decoder error"),
        (b"", "Expected JSON Body"),
    ],
)
def test_malformed_bodies_are_shape_a_400(stub: RunningStub, content: bytes, reason: str) -> None:
    with stub.client() as client:
        response = client.post("/api/v1/osquery/enroll", content=content)
    body = assert_shape_a(response, node_invalid=False)
    assert response.status_code == 400
    assert reason in str(body["error"])


def test_wrong_field_types_are_rejected_cleanly(stub: RunningStub) -> None:
    with stub.client() as client:
        key = osquery_enroll(client)
        enroll = client.post("/api/v1/osquery/enroll", json={"enroll_secret": 12, "host_identifier": "x"})
        assert_shape_a(enroll, node_invalid=False)
        log = client.post("/api/v1/osquery/log", json={"node_key": key, "log_type": "result", "data": {"a": 1}})
        assert_shape_a(log, node_invalid=False)
        write = client.post("/api/v1/osquery/distributed/write", json={"node_key": key, "queries": []})
        assert_shape_a(write, node_invalid=False)
        status = client.post(
            "/api/v1/osquery/distributed/write",
            json={"node_key": key, "queries": {"q": []}, "statuses": {"q": "bad"}},
        )
        assert_shape_a(status, node_invalid=False)


def test_unknown_fields_are_ignored(stub: RunningStub) -> None:
    with stub.client() as client:
        key = osquery_enroll(client)
        response = client.post("/api/v1/osquery/config", json={"node_key": key, "future_field": {"x": [1]}})
    assert response.status_code == 200


def test_unknown_osquery_path_is_shape_a(stub: RunningStub) -> None:
    with stub.client() as client:
        assert_shape_a(client.post("/api/v1/osquery/nope", json={}), node_invalid=False)
        assert_shape_a(client.get("/api/osquery/config"), node_invalid=False)


def _result_line(name: str, n: int) -> dict[str, object]:
    return {
        "name": name,
        "hostIdentifier": "h",
        "calendarTime": "Fri Nov 27 00:00:00 2026 UTC",
        "unixTime": 1795737600 + n,
        "epoch": 0,
        "counter": n,
        "numerics": False,
        "columns": {"n": str(n)},
        "action": "added",
    }


def test_logs_are_stored_as_json_lines_and_counted(stub: RunningStub) -> None:
    hardware_uuid = str(uuid.uuid4())
    with stub.client() as client, stub.admin() as admin:
        key = osquery_enroll(client, hardware_uuid)
        batch = [_result_line("pack/p/q", n) for n in range(5)]
        response = client.post("/api/v1/osquery/log", json={"node_key": key, "log_type": "result", "data": batch})
        assert response.status_code == 200 and response.json() == {}
        status_line = {"hostIdentifier": "h", "severity": 0, "filename": "x.cpp", "line": 1, "message": "hi"}
        client.post("/api/v1/osquery/log", json={"node_key": key, "log_type": "status", "data": [status_line]})
        compressed = gzip.compress(
            json.dumps({"node_key": key, "log_type": "result", "data": [_result_line("pack/p/q", 99)]}).encode()
        )
        gz = client.post("/api/v1/osquery/log", content=compressed, headers={"Content-Encoding": "gzip"})
        assert gz.status_code == 200, gz.text
        host_id = host_id_for_uuid(admin, hardware_uuid)
        host = admin.get(f"/api/latest/fleet/hosts/{host_id}").json()["host"]
        stored = admin.get(f"/api/latest/fleet/hosts/{host_id}/logs/result").text.splitlines()
    assert host["log_counts"] == {"result": 6, "status": 1}
    assert [json.loads(line)["counter"] for line in stored] == [0, 1, 2, 3, 4, 99]
    assert json.loads(stored[0]) == batch[0]


def test_unknown_log_type_and_non_object_items(stub: RunningStub) -> None:
    with stub.client() as client:
        key = osquery_enroll(client)
        bad_type = client.post("/api/v1/osquery/log", json={"node_key": key, "log_type": "snapshot", "data": []})
        assert "unknown log type: snapshot" in str(assert_shape_a(bad_type, node_invalid=False)["error"])
        mixed = client.post(
            "/api/v1/osquery/log",
            json={"node_key": key, "log_type": "result", "data": [_result_line("q", 1), "junk", 5]},
        )
        assert mixed.status_code == 200  # unparseable items are dropped, as Fleet does, not retried forever


def test_body_size_limits(stub: RunningStub) -> None:
    with stub.client() as client:
        key = osquery_enroll(client)
        big_line = _result_line("q", 1) | {"columns": {"blob": "x" * 1_000_000}}
        nine_mib = {"node_key": key, "log_type": "result", "data": [big_line] * 9}
        assert client.post("/api/v1/osquery/log", json=nine_mib).status_code == 200
        eleven_mib = {"node_key": key, "log_type": "result", "data": [big_line] * 11}
        too_big = client.post("/api/v1/osquery/log", json=eleven_mib)
        assert too_big.status_code == 413
        assert_shape_a(too_big, node_invalid=False)
        # elsewhere the limit is 1 MiB
        config = client.post("/api/v1/osquery/config", json={"node_key": key, "pad": "x" * (1024 * 1024 + 1)})
        assert config.status_code == 413
        assert_shape_a(config, node_invalid=False)


def test_gzip_bomb_is_rejected_without_inflating_it(stub: RunningStub) -> None:
    with stub.client() as client:
        key = osquery_enroll(client)
        payload = b'{"node_key": "' + key.encode() + b'", "log_type": "result", "data": [], "pad": "'
        bomb = gzip.compress(payload + b"A" * (200 * 1024 * 1024) + b'"}', compresslevel=9)
        assert len(bomb) < 1024 * 1024
        response = client.post("/api/v1/osquery/log", content=bomb, headers={"Content-Encoding": "gzip"})
        assert response.status_code == 413
        assert_shape_a(response, node_invalid=False)
        truncated = client.post(
            "/api/v1/osquery/log", content=gzip.compress(payload)[:20], headers={"Content-Encoding": "gzip"}
        )
        assert_shape_a(truncated, node_invalid=False)


def _read(client: httpx.Client, key: str) -> dict[str, object]:
    response = client.post("/api/v1/osquery/distributed/read", json={"node_key": key})
    assert response.status_code == 200
    body: dict[str, object] = response.json()
    assert "error" not in body
    return body


def test_distributed_read_sends_detail_queries_with_discovery(stub: RunningStub) -> None:
    with stub.client() as client:
        key = osquery_enroll(client)
        first = _read(client, key)
        queries = first["queries"]
        discovery = first["discovery"]
        assert isinstance(queries, dict) and isinstance(discovery, dict)
        assert "fleet_detail_query_system_info" in queries
        assert set(discovery) == set(queries)
        assert all(isinstance(v, str) and v for v in [*queries.values(), *discovery.values()])
        assert "accelerate" not in first  # hostname and platform came with enrollment
        second = _read(client, key)
        assert second["queries"] == {}


def test_accelerate_until_details_are_known(stub: RunningStub) -> None:
    hardware_uuid = str(uuid.uuid4())
    with stub.client() as client, stub.admin() as admin:
        key = client.post(
            "/api/v1/osquery/enroll", json={"enroll_secret": GLOBAL_SECRET, "host_identifier": hardware_uuid}
        ).json()["node_key"]
        first = _read(client, key)
        assert first["accelerate"] == 10 and isinstance(first["accelerate"], int)
        details = host_details(hardware_uuid, "late-name")
        rows = {
            "fleet_detail_query_system_info": [details["system_info"]],
            "fleet_detail_query_os_version": [details["os_version"]],
            "fleet_detail_query_osquery_info": [details["osquery_info"]],
            "fleet_detail_query_orbit_info": [{"version": "1.38.0"}],
        }
        written = client.post(
            "/api/v1/osquery/distributed/write",
            json={
                "node_key": key,
                "queries": rows,
                "statuses": dict.fromkeys(rows, 0),
                "messages": dict.fromkeys(rows, ""),
                "stats": {name: {"wall_time_ms": 1, "user_time": 0, "system_time": 0, "memory": 0} for name in rows},
            },
        )
        assert written.status_code == 200 and written.json() == {}
        assert "accelerate" not in _read(client, key)
        host = admin.get(f"/api/latest/fleet/hosts/{host_id_for_uuid(admin, hardware_uuid)}").json()["host"]
    assert host["hostname"] == "late-name"
    assert host["orbit_version"] == "1.38.0"
    assert host["platform"] == "ubuntu"


def test_detail_queries_come_back_after_the_interval(stub: RunningStub) -> None:
    assert stub.clock is not None
    with stub.client() as client:
        key = osquery_enroll(client)
        assert _read(client, key)["queries"]
        assert _read(client, key)["queries"] == {}
        stub.clock.advance(3601)
        assert "fleet_detail_query_os_version" in _read(client, key)["queries"]  # type: ignore[operator]


def test_distributed_write_accepts_old_osquery_shapes(stub: RunningStub) -> None:
    with stub.client() as client:
        key = osquery_enroll(client)
        response = client.post(
            "/api/v1/osquery/distributed/write",
            json={
                "node_key": key,
                "queries": {"fleet_policy_query_999": ""},
                "statuses": {"fleet_policy_query_999": "0"},
            },
        )
    assert response.status_code == 200 and response.json() == {}


def _begin(client: httpx.Client, key: str, count: int, size: int, total: int) -> httpx.Response:
    return client.post(
        "/api/v1/osquery/carve/begin",
        json={
            "node_key": key,
            "block_count": count,
            "block_size": size,
            "carve_size": total,
            "carve_id": str(uuid.uuid4()),
            "request_id": "fleet_distributed_query_1",
        },
    )


def _block(
    client: httpx.Client, session: str, block_id: int, data: bytes, request_id: str = "fleet_distributed_query_1"
) -> httpx.Response:
    return client.post(
        "/api/v1/osquery/carve/block",
        json={
            "block_id": block_id,
            "session_id": session,
            "request_id": request_id,
            "data": base64.b64encode(data).decode(),
        },
    )


def test_carve_round_trip_is_stored_in_order(stub: RunningStub) -> None:
    content = bytes(range(256)) * 10  # 2560 bytes in blocks of 1000
    with stub.client() as client, stub.admin() as admin:
        key = osquery_enroll(client)
        begin = _begin(client, key, 3, 1000, len(content))
        assert begin.status_code == 200
        session = begin.json()["session_id"]
        assert isinstance(session, str) and session and begin.json()["success"] is True
        assert _block(client, session, 0, content[:1000]).json() == {"success": True}
        assert_shape_a(_block(client, session, 2, content[2000:]), node_invalid=False)  # out of order
        assert _block(client, session, 1, content[1000:2000]).status_code == 200
        assert _block(client, session, 1, content[1000:2000]).status_code == 200  # a resent block is harmless
        assert_shape_a(_block(client, session, 2, content[2000:], "other"), node_invalid=False)
        assert_shape_a(_block(client, session, 2, content[2000:] + b"x"), node_invalid=False)
        assert _block(client, session, 2, content[2000:]).status_code == 200
        carves = admin.get("/api/latest/fleet/carves").json()["carves"]
    assert carves[0]["completed"] is True
    assert (stub.data_dir / "carves" / f"{session}.bin").read_bytes() == content


@pytest.mark.parametrize(
    ("count", "size", "total", "reason"),
    [
        (1, 100, 0, "carve_size must be greater than 0"),
        (1, 512 * 1024 * 1024, 100, "block_size exceeds max"),
        (3, 100, 150, "carve_size does not match"),
        (1, 100, 101, "carve_size does not match"),
        (2_000_000, 8192, 9 * 1024**3, "carve_size exceeds max"),
    ],
)
def test_carve_size_rules(stub: RunningStub, count: int, size: int, total: int, reason: str) -> None:
    with stub.client() as client:
        key = osquery_enroll(client)
        body = assert_shape_a(_begin(client, key, count, size, total), node_invalid=False)
    assert reason in str(body["error"])


def test_carve_block_hostile_inputs(stub: RunningStub) -> None:
    with stub.client() as client:
        assert_shape_a(_block(client, "no-such-session", 0, b"x"), node_invalid=False)
        key = osquery_enroll(client)
        session = _begin(client, key, 1, 10, 5).json()["session_id"]
        not_base64 = client.post(
            "/api/v1/osquery/carve/block",
            json={"block_id": 0, "session_id": session, "request_id": "fleet_distributed_query_1", "data": "!!"},
        )
        assert_shape_a(not_base64, node_invalid=False)


def _write_details(client: httpx.Client, key: str, hardware_uuid: str, orbit_version: str | None) -> None:
    details = host_details(hardware_uuid, "laptop")
    rows: dict[str, list[object]] = {
        "fleet_detail_query_system_info": [details["system_info"]],
        "fleet_detail_query_os_version": [details["os_version"]],
        "fleet_detail_query_osquery_info": [details["osquery_info"]],
    }
    statuses = dict.fromkeys(rows, 0)
    if orbit_version is None:  # orbit's extension not registered yet: osquery answers "no such table"
        rows["fleet_detail_query_orbit_info"] = []
        statuses["fleet_detail_query_orbit_info"] = 1
    else:
        rows["fleet_detail_query_orbit_info"] = [{"version": orbit_version}]
        statuses["fleet_detail_query_orbit_info"] = 0
    answer = client.post(
        "/api/v1/osquery/distributed/write",
        json={"node_key": key, "queries": rows, "statuses": statuses, "messages": dict.fromkeys(rows, "")},
    )
    assert answer.status_code == 200, answer.text


def test_orbit_info_missing_from_the_first_details_is_asked_again_within_a_minute(stub: RunningStub) -> None:
    """orbit's extension registers a moment after osqueryd starts: the first detail round can miss orbit_info, and
    the next must not wait for the detail interval (an hour) — orbit_version shows within a minute of start."""
    assert stub.clock is not None
    hardware_uuid = str(uuid.uuid4()).upper()
    with stub.client() as client, stub.admin() as admin:
        orbit_enroll(client, hardware_uuid)
        key = osquery_enroll(client, hardware_uuid=hardware_uuid)
        assert "fleet_detail_query_orbit_info" in _read(client, key)["queries"]  # type: ignore[operator]
        _write_details(client, key, hardware_uuid, orbit_version=None)
        assert _read(client, key)["queries"] == {}
        stub.clock.advance(61)
        assert "fleet_detail_query_orbit_info" in _read(client, key)["queries"]  # type: ignore[operator]
        _write_details(client, key, hardware_uuid, orbit_version="1.2.3")
        stub.clock.advance(61)
        assert _read(client, key)["queries"] == {}  # known now: back to the detail interval
        host = admin.get(f"/api/latest/fleet/hosts/{host_id_for_uuid(admin, hardware_uuid)}").json()["host"]
    assert host["orbit_version"] == "1.2.3"
