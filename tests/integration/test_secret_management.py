"""Enroll secrets managed by flags or the config file cannot be silently kept when an admin replaces the set."""

from __future__ import annotations

from tests.support.agents import assert_shape_b
from tests.support.stub_server import GLOBAL_SECRET, RunningStub


def test_replacing_global_secrets_cannot_drop_flag_managed_ones(stub: RunningStub) -> None:
    with stub.admin() as admin:
        refused = admin.post("/api/latest/fleet/spec/enroll_secret", json={"spec": {"secrets": []}})
        body = assert_shape_b(refused, 409)
        assert "--enroll-secret" in str(body["errors"])
        kept = admin.post(
            "/api/latest/fleet/spec/enroll_secret",
            json={"spec": {"secrets": [{"secret": GLOBAL_SECRET}, {"secret": "api-added-1"}]}},
        )
        assert kept.status_code == 200
        secrets = admin.get("/api/latest/fleet/spec/enroll_secret").json()["spec"]["secrets"]
    assert {s["secret"] for s in secrets} == {GLOBAL_SECRET, "api-added-1"}


def test_json_answers_declare_utf8(stub: RunningStub) -> None:
    with stub.client() as client:
        response = client.post("/api/v1/osquery/enroll", json={"enroll_secret": GLOBAL_SECRET, "host_identifier": "x"})
    assert response.headers["content-type"] == "application/json; charset=utf-8"
