"""The orbit endpoints of issue 18 on a real stub (docs/adr/0017, "Agent side"): outcome reports, the
``update_outcomes`` capability, osqueryd restarts on demand — and every malformed or hostile body answered with a
4xx in Fleet's shape, never a 5xx."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.agents import assert_shape_b, host_id_for_uuid
from tests.support.rollout_hosts import FakeOrbit, create_rollout, enroll_orbits, outcome, publish_repository, rollout
from tests.support.stub_server import TEAM_NAME, TEAM_SECRET, FakeClock, RunningStub, running_stub

OUTCOMES = "/api/fleet/orbit/update_outcomes"
RESTART_RESULT = "/api/fleet/orbit/osqueryd_restart/result"


@pytest.fixture
def stub(tmp_path: Path, clock: FakeClock) -> Iterator[RunningStub]:
    repo = publish_repository(tmp_path / "tuf")
    with running_stub(tmp_path / "stub", clock=clock, tuf_repo=repo, rollout_tick=0.05) as running:
        yield running


@pytest.fixture
def orbit(stub: RunningStub) -> FakeOrbit:
    with stub.client() as client:
        return enroll_orbits(client, 1)[0]


def test_the_capability_is_advertised_on_every_orbit_answer(stub: RunningStub, orbit: FakeOrbit) -> None:
    with stub.client() as client:
        for response in (
            client.head("/api/fleet/orbit/ping"),
            client.post("/api/fleet/orbit/config", json={"orbit_node_key": orbit.node_key}),
            orbit.report(client, outcome("confirmed")),
        ):
            assert response.status_code == 200
            capabilities = response.headers["X-Fleet-Capabilities"].split(",")
            assert "update_outcomes" in capabilities and "orbit_endpoints" in capabilities


def test_outcomes_are_stored_once_and_counted(stub: RunningStub, orbit: FakeOrbit) -> None:
    with stub.client() as client, stub.admin() as admin:
        confirmed = outcome("confirmed")
        response = orbit.report(client, confirmed, confirmed)  # a duplicate inside the batch
        assert response.status_code == 200 and response.json() == {}
        assert orbit.report(client, confirmed).status_code == 200  # a resend after a lost answer
        created = create_rollout(admin, target="orbit", version="1.4.0", from_version="1.3.0", waves=[100])
        assert created["totals"]["updated"] == 1 and created["totals"]["healthy"] == 1  # type: ignore[index]
        # a later report on the same version replaces its health; "repaired" does not change it
        orbit.report(client, outcome("repaired"))
        assert rollout(admin, 1)["totals"]["healthy"] == 1  # type: ignore[index]
        orbit.report(client, outcome("crash_loop"))
        totals = rollout(admin, 1)["totals"]
        assert totals["healthy"] == 0 and totals["rolled_back"] == 1  # type: ignore[index]


def test_an_unknown_or_missing_node_key_is_a_401(stub: RunningStub) -> None:
    with stub.client() as client:
        for body in (
            {"orbit_node_key": "nope", "outcomes": [outcome("confirmed")]},
            {"outcomes": [outcome("confirmed")]},
            {"orbit_node_key": None, "outcomes": [outcome("confirmed")]},
        ):
            assert_shape_b(client.post(OUTCOMES, json=body), 401)
        assert_shape_b(client.post(RESTART_RESULT, json={"orbit_node_key": "nope", "request_id": "x"}), 401)


def _hostile_outcome_bodies(key: str) -> list[tuple[str, bytes | dict[str, object]]]:
    good = outcome("confirmed")
    return [
        ("empty body", b""),
        ("not json", b"{outcomes: ["),
        ("a list", b"[]"),
        ("a string", b'"outcomes"'),
        ("no outcomes", {"orbit_node_key": key}),
        ("outcomes null", {"orbit_node_key": key, "outcomes": None}),
        ("outcomes object", {"orbit_node_key": key, "outcomes": good}),
        ("empty list", {"orbit_node_key": key, "outcomes": []}),
        ("101 outcomes", {"orbit_node_key": key, "outcomes": [good] * 101}),
        ("100 000 outcomes", {"orbit_node_key": key, "outcomes": [1] * 100_000}),
        ("node key a number", {"orbit_node_key": 12, "outcomes": [good]}),
        ("item a number", {"orbit_node_key": key, "outcomes": [7]}),
        ("item nested", {"orbit_node_key": key, "outcomes": [[good]]}),
        ("id an object", {"orbit_node_key": key, "outcomes": [{**good, "id": {"a": 1}}]}),
        ("id huge", {"orbit_node_key": key, "outcomes": [{**good, "id": "x" * 100_000}]}),
        ("target unknown", {"orbit_node_key": key, "outcomes": [{**good, "target": "kernel"}]}),
        ("outcome unknown", {"orbit_node_key": key, "outcomes": [{**good, "outcome": "meh"}]}),
        ("version a float", {"orbit_node_key": key, "outcomes": [{**good, "version": 1.4}]}),
        ("version empty", {"orbit_node_key": key, "outcomes": [{**good, "version": ""}]}),
        ("at in the wrong shape", {"orbit_node_key": key, "outcomes": [{**good, "at": "05/12/2026"}]}),
        ("at huge", {"orbit_node_key": key, "outcomes": [{**good, "at": "2" * 10_000}]}),
        ("reason a list", {"orbit_node_key": key, "outcomes": [{**good, "reason": ["x"]}]}),
    ]


def test_malformed_outcome_reports_are_400s_never_5xx(stub: RunningStub, orbit: FakeOrbit) -> None:
    with stub.client() as client:
        for name, body in _hostile_outcome_bodies(orbit.node_key):  # the node key is good: only the body is wrong
            if isinstance(body, bytes):
                response = client.post(OUTCOMES, content=body, headers={"Content-Type": "application/json"})
            else:
                response = client.post(OUTCOMES, json=body)
            assert response.status_code == 400, name
            assert_shape_b(response, 400)
        # NaN, lone surrogates and invalid UTF-8 are repaired as Fleet's decoder would, then judged like the rest
        odd = json.dumps({"orbit_node_key": orbit.node_key, "outcomes": [outcome("confirmed")]})
        for raw in (
            odd.replace('"reason": null', '"reason": NaN').encode(),
            odd.replace('"channel": "1.4.0"', '"channel": "\\ud800"').encode(),
            odd.replace('"1.4.0"', '"1.4.\xff"', 1).encode("latin-1"),
        ):
            response = client.post(OUTCOMES, content=raw, headers={"Content-Type": "application/json"})
            assert response.status_code == 200, response.text
    # a 413 closes its connection (the rest of the body is never read): its own client, and a fresh one after it
    too_big = {"orbit_node_key": orbit.node_key, "outcomes": [{**outcome("confirmed"), "reason": "r" * 2_000_000}]}
    with stub.client() as client:
        assert_shape_b(client.post(OUTCOMES, json=too_big), 413)
    with stub.client() as client:  # the endpoint still works afterwards
        assert orbit.report(client, outcome("confirmed")).status_code == 200


def test_a_long_reason_is_cut_not_refused(stub: RunningStub, orbit: FakeOrbit) -> None:
    with stub.client() as client:
        assert orbit.report(client, {**outcome("rolled_back"), "reason": "why " * 1000}).status_code == 200


# --- restart osqueryd on demand ---------------------------------------------------------------------------------


def _ack(client: httpx.Client, orbit: FakeOrbit, request_id: object, error: object = None) -> httpx.Response:
    return client.post(
        RESTART_RESULT, json={"orbit_node_key": orbit.node_key, "request_id": request_id, "error": error}
    )


def test_a_host_restart_is_carried_until_acknowledged(stub: RunningStub) -> None:
    with stub.client() as client, stub.admin() as admin:
        orbit, other = enroll_orbits(client, 2)
        assert "restart_osqueryd_request_id" not in orbit.notifications(client)
        host_id = host_id_for_uuid(admin, orbit.hardware_uuid)
        answer = admin.post(f"/api/latest/fleet/hosts/{host_id}/restart_osqueryd")
        assert answer.status_code == 200
        request_id = answer.json()["request_id"]
        assert answer.json()["host_count"] == 1
        assert orbit.notifications(client)["restart_osqueryd_request_id"] == request_id
        assert orbit.notifications(client)["restart_osqueryd_request_id"] == request_id  # until acknowledged
        assert "restart_osqueryd_request_id" not in other.notifications(client)
        assert _ack(client, other, request_id).status_code == 200  # another host's ack changes nothing
        assert orbit.notifications(client)["restart_osqueryd_request_id"] == request_id
        assert _ack(client, orbit, request_id).status_code == 200
        assert _ack(client, orbit, request_id).json() == {}  # a repeat is fine
        assert "restart_osqueryd_request_id" not in orbit.notifications(client)
        hosts = admin.get(f"/api/latest/fleet/osqueryd_restarts/{request_id}").json()["hosts"]
        assert [(h["host_id"], h["state"], h["error"]) for h in hosts] == [(host_id, "done", None)]


def test_a_newer_request_supersedes_and_a_failure_is_recorded(stub: RunningStub) -> None:
    with stub.client() as client, stub.admin() as admin:
        (orbit,) = enroll_orbits(client, 1)
        host_id = host_id_for_uuid(admin, orbit.hardware_uuid)
        old = admin.post(f"/api/latest/fleet/hosts/{host_id}/restart_osqueryd").json()["request_id"]
        new = admin.post(f"/api/latest/fleet/hosts/{host_id}/restart_osqueryd").json()["request_id"]
        assert old != new
        assert orbit.notifications(client)["restart_osqueryd_request_id"] == new
        assert _ack(client, orbit, new, "osqueryd did not come back").status_code == 200
        assert "restart_osqueryd_request_id" not in orbit.notifications(client)
        states = {rid: admin.get(f"/api/latest/fleet/osqueryd_restarts/{rid}").json()["hosts"][0] for rid in (old, new)}
        assert states[old]["state"] == "superseded"
        assert states[new]["state"] == "failed" and states[new]["error"] == "osqueryd did not come back"


def test_team_restarts_and_team_zero_for_hosts_without_a_team(stub: RunningStub) -> None:
    with stub.client() as client, stub.admin() as admin:
        loners = enroll_orbits(client, 2)
        members = enroll_orbits(client, 3, secret=TEAM_SECRET)
        team_id = next(t["id"] for t in admin.get("/api/latest/fleet/teams").json()["teams"] if t["name"] == TEAM_NAME)
        answer = admin.post(f"/api/latest/fleet/teams/{team_id}/restart_osqueryd").json()
        assert answer["host_count"] == 3
        assert {o.notifications(client).get("restart_osqueryd_request_id") for o in members} == {answer["request_id"]}
        assert all("restart_osqueryd_request_id" not in o.notifications(client) for o in loners)
        no_team = admin.post("/api/latest/fleet/teams/0/restart_osqueryd").json()
        assert no_team["host_count"] == 2
        assert {o.notifications(client).get("restart_osqueryd_request_id") for o in loners} == {no_team["request_id"]}


def test_restart_admin_errors(stub: RunningStub) -> None:
    with stub.admin() as admin, stub.client() as anonymous:
        assert_shape_b(admin.post("/api/latest/fleet/hosts/999/restart_osqueryd"), 404)
        assert_shape_b(admin.post("/api/latest/fleet/teams/999/restart_osqueryd"), 404)
        assert_shape_b(admin.post("/api/latest/fleet/hosts/x/restart_osqueryd"), 404)
        assert_shape_b(admin.post(f"/api/latest/fleet/hosts/{2**64}/restart_osqueryd"), 400)
        assert_shape_b(admin.get(f"/api/latest/fleet/osqueryd_restarts/{uuid.uuid4()}"), 404)
        assert_shape_b(anonymous.post("/api/latest/fleet/teams/0/restart_osqueryd"), 401)


def test_malformed_restart_acknowledgements_are_400s(stub: RunningStub, orbit: FakeOrbit) -> None:
    with stub.client() as client:
        key = orbit.node_key
        for body in (
            {"orbit_node_key": key},
            {"orbit_node_key": key, "request_id": ""},
            {"orbit_node_key": key, "request_id": 12},
            {"orbit_node_key": key, "request_id": ["a"]},
            {"orbit_node_key": key, "request_id": "x" * 129},
            {"orbit_node_key": key, "request_id": "a", "error": 1},
            {"orbit_node_key": key, "request_id": "a", "error": {"text": "x"}},
        ):
            assert_shape_b(client.post(RESTART_RESULT, json=body), 400)
        assert_shape_b(client.post(RESTART_RESULT, content=b"nope", headers={"Content-Type": "application/json"}), 400)
        # an id the server never issued: acknowledged and ignored
        assert _ack(client, orbit, str(uuid.uuid4())).status_code == 200
        assert _ack(client, orbit, "a", "e" * 100_000).status_code == 200
