"""Staged rollouts on a real fleet-stub over TLS on loopback (docs/adr/0017): the admin REST API, the pins in the
orbit config answers of enrolled orbits, the halt rules fed by outcome reports, pause/resume/abort, and the state
surviving a restart. The orbits are raw HTTP clients (ADR 0002); the clock is injected and moved by the tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.agents import assert_shape_b
from tests.support.rollout_hosts import (
    FakeOrbit,
    create_rollout,
    enroll_orbits,
    in_wave,
    outcome,
    publish_repository,
    rollout,
    wait_for,
)
from tests.support.stub_server import TEAM_NAME, TEAM_SECRET, FakeClock, RunningStub, running_stub

TICK = 0.05


@pytest.fixture(scope="module")
def tuf_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return publish_repository(tmp_path_factory.mktemp("tuf") / "repository")


@pytest.fixture
def stub(tmp_path: Path, clock: FakeClock, tuf_repo: Path) -> Iterator[RunningStub]:
    with running_stub(tmp_path / "stub", clock=clock, tuf_repo=tuf_repo, rollout_tick=TICK) as running:
        yield running


def _state_becomes(admin: httpx.Client, rollout_id: int, state: str, wave: int | None = None) -> dict[str, object]:
    def reached() -> bool:
        found = rollout(admin, rollout_id)
        return found["state"] == state and (wave is None or found["current_wave"] == wave)

    wait_for(reached, what=f"rollout {rollout_id} {state} at wave {wave}")
    return rollout(admin, rollout_id)


def _soak(clock: FakeClock, client: httpx.Client, orbits: list[FakeOrbit], seconds: float) -> None:
    """Let ``seconds`` pass with the orbits polling as they do (every 30 s): they stay online."""
    clock.advance(seconds - 1)
    for orbit in orbits:
        orbit.config(client)
    clock.advance(1)


def _orbit_channels(client: httpx.Client, orbits: list[FakeOrbit]) -> dict[str, str | None]:
    return {o.hardware_uuid: o.channels(client).get("orbit") for o in orbits}


def test_a_good_release_walks_through_the_waves_as_the_soaks_pass(stub: RunningStub, clock: FakeClock) -> None:
    waves = [25, 50, 100]
    with stub.client() as client, stub.admin() as admin:
        orbits = enroll_orbits(client, 40)
        created = create_rollout(
            admin,
            target="orbit",
            version="1.4.0",
            from_version="1.3.0",
            waves=waves,
            soak_seconds=600,
            halt_rules={"max_failed_percent": 10, "min_healthy_percent": 50},
        )
        rollout_id = int(str(created["id"]))
        assert created["state"] == "running" and created["current_wave"] == 1 and created["wave_count"] == 3
        assert created["name"] == "orbit-1.4.0" and created["platforms"] == ["linux"]
        first, second, third = (in_wave(orbits, rollout_id, waves, w) for w in range(3))
        assert first and second and third and len(first) + len(second) + len(third) == 40

        # wave 1 is pinned to the new version, everyone else is held on from_version
        channels = _orbit_channels(client, orbits)
        assert {channels[o.hardware_uuid] for o in first} == {"1.4.0"}
        assert {channels[o.hardware_uuid] for o in second + third} == {"1.3.0"}

        for orbit in first:
            assert orbit.report(client, outcome("confirmed")).status_code == 200
        status = rollout(admin, rollout_id)
        wave_one = status["wave_status"][0]  # type: ignore[index]
        assert wave_one == {
            "wave": 1,
            "percent": 25,
            "reached": True,
            "targeted": len(first),
            "updated": len(first),
            "healthy": len(first),
            "rolled_back": 0,
            "offline": 0,
            "on_from_version": 0,
        }
        assert status["wave_status"][1]["reached"] is False  # type: ignore[index]

        _soak(clock, client, orbits, 599)  # not soaked yet
        assert rollout(admin, rollout_id)["current_wave"] == 1
        _soak(clock, client, orbits, 1)
        _state_becomes(admin, rollout_id, "running", wave=2)
        channels = _orbit_channels(client, orbits)
        assert {channels[o.hardware_uuid] for o in first + second} == {"1.4.0"}
        assert {channels[o.hardware_uuid] for o in third} == {"1.3.0"}

        for orbit in second + third:
            orbit.report(client, outcome("confirmed"))
        _soak(clock, client, orbits, 600)
        _state_becomes(admin, rollout_id, "running", wave=3)
        _soak(clock, client, orbits, 600)
        done = _state_becomes(admin, rollout_id, "completed")
        assert done["totals"] == {
            "targeted": 40,
            "updated": 40,
            "healthy": 40,
            "rolled_back": 0,
            "offline": 0,
            "on_from_version": 0,
        }
        assert set(_orbit_channels(client, orbits).values()) == {"1.4.0"}
        assert [e["event"] for e in done["events"]] == ["created", "advanced", "advanced", "completed"]  # type: ignore[attr-defined]


def test_failure_reports_halt_the_rollout_and_pin_everyone_back(stub: RunningStub, clock: FakeClock) -> None:
    waves = [50, 100]
    with stub.client() as client, stub.admin() as admin:
        orbits = enroll_orbits(client, 20)
        # rollout ids count from 1: the first wave is known before creating it
        first = in_wave(orbits, 1, waves, 0)
        assert len(first) >= 3
        limit = 100 * 2.5 / len(first)  # two failures are within the limit, a third is above it
        created = create_rollout(
            admin,
            target="orbit",
            version="1.4.0",
            from_version="1.3.0",
            waves=waves,
            soak_seconds=3600,
            halt_rules={"max_failed_percent": limit, "min_healthy_percent": 80},
        )
        rollout_id = int(str(created["id"]))
        assert rollout_id == 1
        first[0].report(client, outcome("rolled_back"))
        first[1].report(client, outcome("crash_loop"))
        assert rollout(admin, rollout_id)["state"] == "running"
        first[2].report(client, outcome("install_failed"))
        # no clock movement: failures halt at once, without waiting for the soak
        halted = _state_becomes(admin, rollout_id, "halted")
        reason = str(halted["halt_reason"])
        assert reason.startswith(f"wave 1: 3 of {len(first)} hosts") and f"above the {limit:g} % limit" in reason
        assert halted["wave_status"][0]["rolled_back"] == 3  # type: ignore[index]
        assert set(_orbit_channels(client, orbits).values()) == {"1.3.0"}

        # resuming does not get past the failures: the rule fires again
        response = admin.post(f"/api/latest/fleet/rollouts/{rollout_id}/resume")
        assert response.status_code == 200
        _state_becomes(admin, rollout_id, "halted")
        aborted = admin.post(f"/api/latest/fleet/rollouts/{rollout_id}/abort").json()["rollout"]
        assert aborted["state"] == "aborted"
        assert set(_orbit_channels(client, orbits).values()) == {"1.3.0"}
        assert_shape_b(admin.post(f"/api/latest/fleet/rollouts/{rollout_id}/resume"), 409)


def test_too_few_healthy_hosts_after_the_soak_halt(stub: RunningStub, clock: FakeClock) -> None:
    with stub.client() as client, stub.admin() as admin:
        enroll_orbits(client, 6)
        rollout_id = int(
            str(
                create_rollout(
                    admin, target="orbit", version="1.4.0", from_version="1.3.0", waves=[100], soak_seconds=60
                )["id"]
            )
        )
        clock.advance(60)  # nobody confirmed anything
        halted = _state_becomes(admin, rollout_id, "halted")
        assert "0 of 6 hosts (0.0 %) healthy on orbit 1.4.0 after the 60 s soak" in str(halted["halt_reason"])


def test_pause_holds_the_wave_and_resume_soaks_it_afresh(stub: RunningStub, clock: FakeClock) -> None:
    waves = [50, 100]
    with stub.client() as client, stub.admin() as admin:
        orbits = enroll_orbits(client, 10)
        rollout_id = int(
            str(
                create_rollout(
                    admin,
                    target="orbit",
                    version="1.4.0",
                    from_version="1.3.0",
                    waves=waves,
                    soak_seconds=100,
                    halt_rules={"min_healthy_percent": 0},
                )["id"]
            )
        )
        paused = admin.post(f"/api/latest/fleet/rollouts/{rollout_id}/pause").json()["rollout"]
        assert paused["state"] == "paused" and paused["next_wave_at"] is None
        # a witness: a running rollout of another target that completes at the first evaluation after the soak, so
        # once it has completed, the paused one had its evaluation too (the ticker evaluates all in one pass)
        witness = int(
            str(
                create_rollout(
                    admin,
                    target="osqueryd",
                    version="5.11.0",
                    from_version="5.12.0",
                    waves=[100],
                    soak_seconds=100,
                    halt_rules={"min_healthy_percent": 0},
                )["id"]
            )
        )
        clock.advance(1000)
        _state_becomes(admin, witness, "completed")
        assert rollout(admin, rollout_id)["current_wave"] == 1
        first = in_wave(orbits, rollout_id, waves, 0)
        assert {o.channels(client)["orbit"] for o in first} == {"1.4.0"}  # a pause keeps the pins as they are
        resumed = admin.post(f"/api/latest/fleet/rollouts/{rollout_id}/resume").json()["rollout"]
        assert resumed["state"] == "running" and resumed["current_wave"] == 1
        clock.advance(99)
        assert rollout(admin, rollout_id)["current_wave"] == 1
        clock.advance(1)
        _state_becomes(admin, rollout_id, "running", wave=2)


def test_a_team_rollout_pins_only_that_teams_hosts_and_keeps_agent_option_channels(
    stub: RunningStub, clock: FakeClock
) -> None:
    with stub.client() as client, stub.admin() as admin:
        assert (
            admin.patch(
                "/api/latest/fleet/config",
                json={"agent_options": {"update_channels": {"osqueryd": "edge", "orbit": "stable"}}},
            ).status_code
            == 200
        )
        team_id = next(t["id"] for t in admin.get("/api/latest/fleet/teams").json()["teams"] if t["name"] == TEAM_NAME)
        outsiders = enroll_orbits(client, 3)
        members = enroll_orbits(client, 3, secret=TEAM_SECRET)
        create_rollout(admin, target="orbit", version="1.4.0", from_version="1.3.0", team_ids=[team_id], waves=[100])
        for orbit in outsiders:
            assert orbit.channels(client) == {"osqueryd": "edge", "orbit": "stable"}  # untouched: agent options
        for orbit in members:  # the team has no options of its own: global ones, with orbit pinned by the rollout
            assert orbit.channels(client) == {"osqueryd": "edge", "orbit": "1.4.0"}


def test_from_version_is_derived_from_what_the_population_runs(stub: RunningStub) -> None:
    with stub.client() as client, stub.admin() as admin:
        orbits = enroll_orbits(client, 5)
        for orbit in orbits[:3]:
            orbit.report(client, outcome("confirmed", "1.3.0", previous="1.2.0"))
        orbits[3].report(client, outcome("confirmed", "1.2.0", previous=None))
        created = create_rollout(admin, target="orbit", version="1.4.0")
        assert created["from_version"] == "1.3.0"
        assert created["totals"]["on_from_version"] == 3  # type: ignore[index]


def test_definitions_the_world_does_not_allow_are_refused(stub: RunningStub) -> None:
    with stub.client() as client, stub.admin() as admin:
        enroll_orbits(client, 2)

        def refused(status: int, **body: object) -> str:
            answer = assert_shape_b(admin.post("/api/latest/fleet/rollouts", json=body), status)
            return str(answer["errors"][0]["reason"])  # type: ignore[index]

        assert "9.9.9 is not published for orbit" in refused(422, target="orbit", version="9.9.9", from_version="1.3.0")
        assert "published versions: 1.2.0, 1.3.0, 1.4.0" in refused(
            422, target="orbit", version="9.9.9", from_version="1.3.0"
        )
        assert "from_version 0.1.0 is not published" in refused(
            422, target="orbit", version="1.4.0", from_version="0.1.0"
        )
        assert "not published for windows, where 5.11.0 is" in refused(
            422, target="osqueryd", version="5.12.0", from_version="5.11.0"
        )
        assert "exact version" in refused(422, target="orbit", version="stable", from_version="1.3.0")
        assert "from_version is required" in refused(422, target="orbit", version="1.4.0")  # nobody reports one
        assert "team 999 does not exist" in refused(
            422, target="orbit", version="1.4.0", from_version="1.3.0", team_ids=[999]
        )
        assert "unknown key(s) soak" in refused(422, target="orbit", version="1.4.0", soak=60)
        assert "must be a string" in refused(400, target=["orbit"], version="1.4.0")
        create_rollout(admin, target="orbit", version="1.4.0", from_version="1.3.0", name="first")
        assert "rollout 1 (first) of orbit is running" in refused(
            409, target="orbit", version="1.4.0", from_version="1.2.0"
        )
        assert "already exists" in refused(
            409, target="osqueryd", version="5.11.0", from_version="5.12.0", name="first"
        )
        assert_shape_b(admin.get("/api/latest/fleet/rollouts/77"), 404)
        assert_shape_b(admin.post("/api/latest/fleet/rollouts/77/abort"), 404)
        assert_shape_b(admin.get("/api/latest/fleet/rollouts/x"), 404)
        assert_shape_b(admin.get(f"/api/latest/fleet/rollouts/{2**64}"), 400)
    with stub.client() as anonymous:
        assert_shape_b(anonymous.get("/api/latest/fleet/rollouts"), 401)
        assert_shape_b(anonymous.post("/api/latest/fleet/rollouts", json={"target": "orbit"}), 401)


def test_without_a_tuf_repository_a_rollout_is_refused(tmp_path: Path) -> None:
    with running_stub(tmp_path / "stub") as running, running.admin() as admin:
        answer = assert_shape_b(
            admin.post(
                "/api/latest/fleet/rollouts", json={"target": "orbit", "version": "1.4.0", "from_version": "1.3.0"}
            ),
            422,
        )
        assert "serves no TUF repository" in str(answer["errors"])


def test_list_shows_every_rollout(stub: RunningStub) -> None:
    with stub.client() as client, stub.admin() as admin:
        enroll_orbits(client, 3)
        create_rollout(admin, target="orbit", version="1.4.0", from_version="1.3.0")
        create_rollout(admin, target="osqueryd", version="5.11.0", from_version="5.12.0", waves=[100])
        listed = admin.get("/api/latest/fleet/rollouts").json()["rollouts"]
        assert [(r["id"], r["target"], r["totals"]["targeted"]) for r in listed] == [
            (1, "orbit", 3),
            (2, "osqueryd", 3),
        ]
        assert all("events" in r and r["events"] == [] for r in listed)  # the list leaves the history out


def test_state_survives_a_restart_and_a_soak_that_passed_meanwhile_advances(
    tmp_path: Path, clock: FakeClock, tuf_repo: Path
) -> None:
    data = tmp_path / "stub"
    waves = [50, 100]
    with (
        running_stub(data, clock=clock, tuf_repo=tuf_repo, rollout_tick=TICK) as first,
        first.client() as client,
        first.admin() as admin,
    ):
        orbits = enroll_orbits(client, 12)
        orbit_id = int(
            str(
                create_rollout(
                    admin,
                    target="orbit",
                    version="1.4.0",
                    from_version="1.3.0",
                    waves=waves,
                    soak_seconds=300,
                    halt_rules={"min_healthy_percent": 0},
                )["id"]
            )
        )
        osqueryd_id = int(
            str(
                create_rollout(
                    admin, target="osqueryd", version="5.11.0", from_version="5.12.0", waves=[100], soak_seconds=300
                )["id"]
            )
        )
        admin.post(f"/api/latest/fleet/rollouts/{osqueryd_id}/pause")
        before = {o.hardware_uuid: o.channels(client) for o in orbits}
        status_before = rollout(admin, orbit_id)
    clock.advance(301)  # the soak passes while the server is down
    with (
        running_stub(data, clock=clock, tuf_repo=tuf_repo, rollout_tick=TICK) as second,
        second.client() as client,
        second.admin() as admin,
    ):
        assert rollout(admin, osqueryd_id)["state"] == "paused"
        advanced = _state_becomes(admin, orbit_id, "running", wave=2)
        assert advanced["created_at"] == status_before["created_at"]
        after = {o.hardware_uuid: o.channels(client) for o in orbits}
        # every host kept its wave: the first wave's hosts were on 1.4.0 before and still are
        for orbit in in_wave(orbits, orbit_id, waves, 0):
            assert before[orbit.hardware_uuid]["orbit"] == after[orbit.hardware_uuid]["orbit"] == "1.4.0"
        assert {c["orbit"] for c in after.values()} == {"1.4.0"}
        assert {c["osqueryd"] for c in after.values()} == {"5.11.0"}  # paused, and everyone is in its one wave


def test_hostile_rollout_bodies_get_4xx_never_5xx(stub: RunningStub) -> None:
    good = {"target": "orbit", "version": "1.4.0", "from_version": "1.3.0"}
    bodies: list[bytes | dict[str, object]] = [
        b"",
        b"[1, 2]",
        b'"rollout"',
        b"{",
        b'{"target": "orbit", "version": "1.4.0", "waves": [1, NaN, 100]}',
        b'{"target": "orbit", "version": "1.4.0", "soak_seconds": 1e400}',
        b'{"target": "orbit", "version": "1.4.\\ud800"}',
        {**good, "team_ids": list(range(1, 100_001))},
        {**good, "waves": [i / 1000 for i in range(1, 100_001)]},
        {**good, "halt_rules": {"max_failed_percent": {"a": [1]}}},
        {**good, "name": "n" * 1_000_000},
        {**good, "from_version": ["1.3.0"]},
        {**good, "team_ids": [2**64]},
        b'{"target": "orbit", "version": "1.4.0", "waves": [' + b"9" * 5000 + b", 100]}",
    ]
    with stub.admin() as admin:
        for body in bodies:
            if isinstance(body, bytes):
                response = admin.post(
                    "/api/latest/fleet/rollouts", content=body, headers={"Content-Type": "application/json"}
                )
            else:
                response = admin.post("/api/latest/fleet/rollouts", json=body)
            assert 400 <= response.status_code < 500, (str(body)[:80], response.status_code, response.text[:200])
            assert_shape_b(response, response.status_code)
        assert admin.get("/api/latest/fleet/rollouts").json()["rollouts"] == []
