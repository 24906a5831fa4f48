"""Small helpers that speak to the stub the way osqueryd and orbit do (raw JSON over TLS)."""

from __future__ import annotations

import uuid

import httpx

from tests.support.stub_server import GLOBAL_SECRET


def host_details(hardware_uuid: str, hostname: str = "test-host", platform: str = "ubuntu") -> dict[str, object]:
    return {
        "system_info": {
            "uuid": hardware_uuid,
            "hostname": hostname,
            "computer_name": hostname,
            "hardware_serial": "SER-" + hardware_uuid[:8],
            "hardware_model": "Sim 9000",
        },
        "os_version": {"platform": platform, "name": "Ubuntu", "version": "22.04.4 LTS", "platform_like": "debian"},
        "osquery_info": {"version": "5.14.1", "instance_id": str(uuid.uuid4()), "uuid": hardware_uuid},
    }


def osquery_enroll(
    client: httpx.Client,
    hardware_uuid: str | None = None,
    *,
    secret: str = GLOBAL_SECRET,
    hostname: str = "test-host",
    prefix: str = "/api/v1/osquery",
) -> str:
    hardware_uuid = hardware_uuid or str(uuid.uuid4()).upper()
    response = client.post(
        f"{prefix}/enroll",
        json={
            "enroll_secret": secret,
            "host_identifier": hardware_uuid,
            "platform_type": "9",
            "host_details": host_details(hardware_uuid, hostname),
        },
    )
    body = response.json()
    assert "node_key" in body, body
    key: str = body["node_key"]
    return key


def orbit_enroll(client: httpx.Client, hardware_uuid: str, *, secret: str = GLOBAL_SECRET) -> str:
    response = client.post(
        "/api/fleet/orbit/enroll",
        json={
            "enroll_secret": secret,
            "hardware_uuid": hardware_uuid,
            "hardware_serial": "SER-1",
            "hostname": "orbit-host",
            "platform": "ubuntu",
            "platform_like": "debian",
            "computer_name": "orbit-host",
            "hardware_model": "Sim 9000",
        },
    )
    assert response.status_code == 200, response.text
    key: str = response.json()["orbit_node_key"]
    return key


def host_id_for_uuid(admin: httpx.Client, hardware_uuid: str) -> int:
    hosts = admin.get("/api/latest/fleet/hosts").json()["hosts"]
    matches = [h["id"] for h in hosts if h["uuid"] == hardware_uuid]
    assert len(matches) == 1, hosts
    found: int = matches[0]
    return found


def assert_shape_a(response: httpx.Response, *, node_invalid: bool) -> dict[str, object]:
    """An osquery-family error: non-2xx, string ``error``, JSON boolean node_invalid only when required."""
    body: dict[str, object] = response.json()
    assert response.status_code >= 400, (response.status_code, body)
    assert isinstance(body.get("error"), str) and body["error"], body
    if node_invalid:
        assert body.get("node_invalid") is True, body
    else:
        assert "node_invalid" not in body, body
    return body


def assert_shape_b(response: httpx.Response, status: int) -> dict[str, object]:
    body: dict[str, object] = response.json()
    assert response.status_code == status, (response.status_code, body)
    assert isinstance(body.get("message"), str), body
    errors = body.get("errors")
    assert isinstance(errors, list) and errors and errors[0]["name"] == "base", body
    assert "error" not in body and "node_invalid" not in body, body
    return body
