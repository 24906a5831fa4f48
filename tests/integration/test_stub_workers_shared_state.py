"""Rollouts and the console on fleet-stub with two worker processes (``serve --workers 2``, ADR 0019 "Rollouts and
the console across workers"), as real processes.

Each test holds one client per worker: new connections until ``X-Fleet-Stub-Worker`` says the kernel put one on the
other worker. What is changed through one worker must hold on the other: a rollout's pins (created, halted,
aborted), the console's session, CSRF token and logout; rollouts are evaluated in one place only (each step is one
event, logged by worker 1); a failure reported to the other worker still halts at once (the nudge crosses the
parent); SIGHUP applies the configuration file's rollouts once for every worker; a restart keeps the rollouts and
logs the console out.
"""

from __future__ import annotations

import re
import signal
import ssl
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import pytest

from server_stub.console.routes import COOKIE
from server_stub.state import LOGIN_BURST
from tests.support.rollout_hosts import FakeOrbit, enroll_orbits, in_wave, outcome, publish_repository, wait_for
from tests.support.stub_process import StubProcess, clean_env

pytestmark = pytest.mark.timeout(300)

SECRET = "shared-state-secret-1"
TEAM_SECRET = "shared-state-team-2"
WORKER = "x-fleet-stub-worker"
DEADLINE = 60.0
ROLLOUT_EVENTS = re.compile(r"worker=(\d) .*event=rollout_(advanced|halted|completed) rollout_id=(\d+)")


@pytest.fixture(scope="module")
def tuf_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return publish_repository(tmp_path_factory.mktemp("tuf") / "repository")


def _start(data: Path, tuf_repo: Path, *args: str, tick: str = "0.1") -> tuple[StubProcess, dict[str, object]]:
    env = clean_env(FLEET_STUB_ENROLL_SECRET=SECRET, FLEET_STUB_ROLLOUT_TICK=tick)
    stub = StubProcess(
        data,
        "--workers",
        "2",
        "--tuf-repo",
        str(tuf_repo),
        *args,
        env=env,
        output_dir=data.parent / f"{data.name}-out",
    )
    return stub, stub.wait_ready(60)


def _connect(info: dict[str, object], worker: str, **kwargs: object) -> httpx.Client:
    """A client whose keep-alive connection is served by ``worker`` (new connections until the hash puts one there)."""
    context = ssl.create_default_context(cafile=str(info["ca_cert"]))
    for _ in range(400):
        client = httpx.Client(base_url=str(info["url"]), verify=context, trust_env=False, timeout=30, **kwargs)  # type: ignore[arg-type]
        if client.head("/api/fleet/orbit/ping").headers[WORKER] == worker:
            return client
        client.close()
    raise AssertionError(f"no connection reached worker {worker}")


@contextmanager
def _both_workers(info: dict[str, object], **kwargs: object) -> Iterator[tuple[httpx.Client, httpx.Client]]:
    with ExitStack() as stack:
        one = _connect(info, "1", **kwargs)
        stack.callback(one.close)
        two = _connect(info, "2", **kwargs)
        stack.callback(two.close)
        yield one, two


def _admin_headers(info: dict[str, object]) -> dict[str, str]:
    return {"Authorization": f"Bearer {info['admin_token']}"}


def _rollout(client: httpx.Client, info: dict[str, object], rollout_id: int) -> dict[str, object]:
    answer = client.get(f"/api/latest/fleet/rollouts/{rollout_id}", headers=_admin_headers(info))
    assert answer.status_code == 200, answer.text
    found: dict[str, object] = answer.json()["rollout"]
    return found


def _create(client: httpx.Client, info: dict[str, object], **body: object) -> int:
    answer = client.post("/api/latest/fleet/rollouts", json=body, headers=_admin_headers(info))
    assert answer.status_code == 200, answer.text
    assert answer.headers[WORKER] == client.head("/api/fleet/orbit/ping").headers[WORKER]
    return int(answer.json()["rollout"]["id"])


def _events(client: httpx.Client, info: dict[str, object], rollout_id: int) -> list[str]:
    events = _rollout(client, info, rollout_id)["events"]
    assert isinstance(events, list)
    return [str(e["event"]) for e in events]


def _channels(client: httpx.Client, orbits: list[FakeOrbit], target: str) -> set[str | None]:
    return {o.channels(client).get(target) for o in orbits}


def _logged_steps(data: Path) -> list[tuple[str, str, str]]:
    text = (data / "fleet-stub.log").read_text()
    return [(m.group(1), m.group(2), m.group(3)) for m in ROLLOUT_EVENTS.finditer(text)]


def test_rollouts_changed_through_one_worker_hold_on_the_other(tmp_path: Path, tuf_repo: Path) -> None:
    data = tmp_path / "data"
    stub, info = _start(data, tuf_repo)
    try:
        with _both_workers(info) as (one, two):
            orbits = enroll_orbits(one, 12, secret=SECRET)
            assert _channels(two, orbits, "orbit") == {None}

            # created through worker 1: worker 2's answers pin the hosts as soon as it has seen the change
            orbit_id = _create(
                one, info, target="orbit", version="1.4.0", from_version="1.3.0", waves=[50, 100], soak_seconds=3600
            )
            first_wave = in_wave(orbits, orbit_id, [50, 100], 0)
            assert first_wave and len(first_wave) < len(orbits)

            def pinned_on_two() -> bool:
                return all(o.channels(two).get("orbit") == ("1.4.0" if o in first_wave else "1.3.0") for o in orbits)

            wait_for(pinned_on_two, DEADLINE, "worker 2 pinning the rollout created through worker 1")

            # halted by the ticker (nobody healthy after a 0 s soak) for a rollout created through worker 2
            halting = _create(
                two, info, target="osqueryd", version="5.11.0", from_version="5.12.0", waves=[100], soak_seconds=0
            )
            wait_for(lambda: _rollout(one, info, halting)["state"] == "halted", DEADLINE, "the halt")
            for client in (one, two):  # halted: every host back on from_version, on both workers
                wait_for(lambda c=client: _channels(c, orbits, "osqueryd") == {"5.12.0"}, DEADLINE, "pinning back")  # type: ignore[misc]

            # a wave advances once, and completes once, whoever serves the admin and the hosts
            walking = _create(
                two,
                info,
                target="osqueryd",
                version="5.11.0",
                from_version="5.12.0",
                waves=[50, 100],
                soak_seconds=0,
                halt_rules={"max_failed_percent": 100, "min_healthy_percent": 0},
            )
            wait_for(lambda: _rollout(two, info, walking)["state"] == "completed", DEADLINE, "the completion")
            assert _events(one, info, walking) == ["created", "advanced", "completed"]
            assert _events(two, info, halting) == ["created", "halted"]

            # aborted through worker 2: worker 1 sends everyone back
            aborted = two.post(f"/api/latest/fleet/rollouts/{orbit_id}/abort", headers=_admin_headers(info))
            assert aborted.status_code == 200 and aborted.json()["rollout"]["state"] == "aborted"
            wait_for(lambda: _channels(one, orbits, "orbit") == {"1.3.0"}, DEADLINE, "worker 1 after the abort")
            paused = one.post(f"/api/latest/fleet/rollouts/{orbit_id}/pause", headers=_admin_headers(info))
            assert paused.status_code == 409  # aborted is final, whichever worker is asked
            before = {o.hardware_uuid: (o.channels(one), o.channels(two)) for o in orbits}
        assert stub.stop() == 0
        steps = _logged_steps(data)
        assert sorted(steps) == sorted(
            [("1", "halted", str(halting)), ("1", "advanced", str(walking)), ("1", "completed", str(walking))]
        ), steps  # one evaluator, worker 1: every step decided and logged once

        # a restart keeps every rollout where it was, on both workers
        stub, info = _start(data, tuf_repo)
        with _both_workers(info) as (one, two):
            assert [_rollout(two, info, n)["state"] for n in (orbit_id, halting, walking)] == [
                "aborted",
                "halted",
                "completed",
            ]
            assert {o.hardware_uuid: (o.channels(one), o.channels(two)) for o in orbits} == before
    finally:
        stub.stop()


def test_a_failure_reported_to_another_worker_halts_at_once(tmp_path: Path, tuf_repo: Path) -> None:
    """The tick is an hour: only the nudge, passed from worker 2 through the parent to worker 1's ticker, can halt
    the rollout within the test's deadline."""
    data = tmp_path / "data"
    stub, info = _start(data, tuf_repo, tick="3600")
    try:
        with _both_workers(info) as (one, two):
            orbits = enroll_orbits(two, 6, secret=SECRET)
            rollout_id = _create(
                two,
                info,
                target="orbit",
                version="1.4.0",
                from_version="1.3.0",
                waves=[100],
                soak_seconds=3600,
                halt_rules={"max_failed_percent": 10, "min_healthy_percent": 0},
            )
            wait_for(lambda: _channels(one, orbits, "orbit") == {"1.4.0"}, DEADLINE, "worker 1 pinning")
            for orbit in orbits[:2]:
                assert orbit.report(two, outcome("rolled_back")).headers[WORKER] == "2"
            wait_for(lambda: _rollout(two, info, rollout_id)["state"] == "halted", DEADLINE, "the halt")
            wait_for(lambda: _channels(two, orbits, "orbit") == {"1.3.0"}, DEADLINE, "worker 2 pinning back")
            assert _events(one, info, rollout_id) == ["created", "halted"]
    finally:
        assert stub.stop() == 0
    assert _logged_steps(data) == [("1", "halted", str(rollout_id))]


def _log_in(client: httpx.Client, token: str) -> str:
    answer = client.post("/console/login", data={"token": token})
    assert answer.status_code == 303 and answer.headers["location"] == "/console/hosts", answer.text
    value = answer.cookies.get(COOKIE)
    assert value
    return value


def _csrf(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found, page[:2000]
    return found.group(1)


def test_a_console_session_holds_on_every_worker(tmp_path: Path, tuf_repo: Path) -> None:
    data = tmp_path / "data"
    stub, info = _start(data, tuf_repo)
    token = str(info["admin_token"])
    try:
        with _both_workers(info, follow_redirects=False) as (one, two):
            orbits = enroll_orbits(one, 4, secret=SECRET)
            rollout_id = _create(
                one, info, target="orbit", version="1.4.0", from_version="1.3.0", waves=[100], soak_seconds=3600
            )
            cookie = _log_in(one, token)
            two.cookies.set(COOKIE, cookie)
            page = two.get("/console/hosts")
            assert page.status_code == 200 and page.headers[WORKER] == "2", page.headers
            csrf = _csrf(page.text)
            assert _csrf(one.get("/console/hosts").text) == csrf  # one session, one token

            # a form from worker 2's page, sent to worker 1: its CSRF token is the session's on every worker
            paused = one.post(f"/console/rollouts/{rollout_id}/pause", data={"csrf": csrf})
            assert paused.status_code == 303, paused.text
            assert _rollout(two, info, rollout_id)["state"] == "paused"
            stale = two.post(f"/console/rollouts/{rollout_id}/resume", data={"csrf": csrf[:-2]})
            assert stale.status_code == 403 and _rollout(one, info, rollout_id)["state"] == "paused"
            aborted = two.post(f"/console/rollouts/{rollout_id}/abort", data={"csrf": csrf})
            assert aborted.status_code == 303
            wait_for(lambda: _channels(one, orbits, "orbit") == {"1.3.0"}, DEADLINE, "worker 1 after the abort")

            # logout through worker 2 ends the session on worker 1 too
            assert two.post("/console/logout", data={"csrf": csrf}).status_code == 303
            after = one.get("/console/hosts")
            assert after.status_code == 303 and after.headers["location"].startswith("/console/login")
            assert one.post("/console/logout", data={"csrf": csrf}).status_code == 403

            # a restart logs everyone out, as the single process does
            second_cookie = _log_in(two, token)
        assert stub.stop() == 0
        stub, info = _start(data, tuf_repo)
        with _both_workers(info, follow_redirects=False) as (one, two):
            for client in (one, two):
                client.cookies.set(COOKIE, second_cookie)
                assert client.get("/console/hosts").status_code == 303

            # failed logins: the budget is the server's, split over the workers, not one per worker
            refused: dict[str, int] = {}
            for name, client in (("1", one), ("2", two)):
                client.cookies.clear()
                refused[name] = 0
                while (answer := client.post("/console/login", data={"token": "wrong"})).status_code == 401:
                    refused[name] += 1
                    assert refused[name] <= LOGIN_BURST
                assert answer.status_code == 429 and answer.headers[WORKER] == name
            assert refused == {"1": LOGIN_BURST // 2, "2": LOGIN_BURST // 2}
    finally:
        stub.stop()


CONFIG = """
[[teams]]
name = "Canaries"
enroll_secrets = ["{team_secret}"]
"""

ROLLOUT = """
[[rollouts]]
name = "canary-orbit"
target = "orbit"
version = "1.4.0"
from_version = "1.3.0"
teams = ["Canaries"]
waves = [100]
soak_seconds = 3600
"""


def test_sighup_applies_the_config_files_rollouts_for_every_worker(tmp_path: Path, tuf_repo: Path) -> None:
    data = tmp_path / "data"
    config = tmp_path / "fleet.toml"
    config.write_text(CONFIG.format(team_secret=TEAM_SECRET))
    stub, info = _start(data, tuf_repo, "--config", str(config))
    try:
        with _both_workers(info) as (one, two):
            members = enroll_orbits(one, 3, secret=TEAM_SECRET)
            others = enroll_orbits(two, 2, secret=SECRET)
            config.write_text(CONFIG.format(team_secret=TEAM_SECRET) + ROLLOUT)
            stub.proc.send_signal(signal.SIGHUP)
            for client in (one, two):
                wait_for(lambda c=client: _channels(c, members, "orbit") == {"1.4.0"}, DEADLINE, "the declared pins")  # type: ignore[misc]
                assert _channels(client, others, "orbit") == {None}
            listed = one.get("/api/latest/fleet/rollouts", headers=_admin_headers(info)).json()["rollouts"]
            assert [(r["name"], r["source"]) for r in listed] == [("canary-orbit", "config")]
    finally:
        assert stub.stop() == 0
    log = (data / "fleet-stub.log").read_text()
    assert len(re.findall(r"event=config_applied path=\S+ teams=1 policies=0 rollouts=1", log)) == 1  # once
