"""orbit's side of the issue 18 protocol against a real TLS server that records every request: outcome reports go
only to a server advertising ``update_outcomes`` (a real Fleet server never receives one), in batches of at most
100, kept on 5xx and network errors, dropped on 400; restart-osqueryd requests are handled once per id and
acknowledged, across orbit restarts."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from orbit.fleet.client import ConfigFormatError, OrbitClient, parse_orbit_config
from orbit.fleet.node_key_store import NodeKeyStore
from orbit.fleet.osqueryd_restart import OsquerydRestartRequests, load_handled
from orbit.fleet.outcome_sender import OutcomeSender
from orbit.outcome_queue import OutcomeKind, OutcomeQueue, new_outcome
from tests.support.recording_fleet import RecordingFleet, recording_fleet
from tuf_updates.http_client import TlsOptions, build_async_http_client

OUTCOMES = "/api/fleet/orbit/update_outcomes"
RESTART_RESULT = "/api/fleet/orbit/osqueryd_restart/result"
CONFIG = "/api/fleet/orbit/config"


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[RecordingFleet]:
    with recording_fleet(tmp_path / "tls") as server:
        yield server


Scenario = Callable[[OrbitClient], Awaitable[None]]


def with_client(tmp_path: Path, fleet: RecordingFleet, scenario: Scenario) -> None:
    """Run ``scenario`` on its own event loop with an orbit client that trusts the recording server."""

    async def main() -> None:
        http = build_async_http_client(
            TlsOptions(root_ca=fleet.ca), user_agent="orbit-test/1.0", trust_env=False, connect_retries=0
        )
        client = OrbitClient(
            http,
            fleet.url,
            NodeKeyStore(tmp_path / "secret-orbit-node-key.txt"),
            lambda: {"enroll_secret": "s", "hardware_uuid": "u"},
            enroll_attempts=1,
        )
        try:
            await scenario(client)
        finally:
            await http.aclose()

    asyncio.run(main())


def queue_of(tmp_path: Path, count: int) -> OutcomeQueue:
    queue = OutcomeQueue(tmp_path / "state" / "update-outcomes.json")
    for index in range(count):
        queue.add(new_outcome("osqueryd", f"5.{index}.0", "5.0.0", "stable", OutcomeKind.CONFIRMED))
    return queue


async def poll(client: OrbitClient, sender: OutcomeSender) -> None:
    """What orbit's config loop does: fetch the config (which refreshes the server's capabilities), then the
    receivers run."""
    await sender.on_config(await client.get_config())
    client._config_cache = None  # the next poll asks again (orbit's 3 s cache would answer it)


def test_a_server_without_the_capability_never_receives_an_outcome(tmp_path: Path, fleet: RecordingFleet) -> None:
    async def scenario(client: OrbitClient) -> None:
        fleet.capabilities = ["orbit_endpoints", "token_rotation"]  # what a real Fleet server advertises
        queue = queue_of(tmp_path, 3)
        sender = OutcomeSender(client, queue)
        for _ in range(3):
            await poll(client, sender)
        assert await client.ping()
        await sender.send_pending()
        assert OUTCOMES not in fleet.paths()
        assert fleet.paths().count(CONFIG) == 3
        assert len(queue) == 3  # kept: a server that gains the capability later gets them

    with_client(tmp_path, fleet, scenario)


def test_outcomes_go_in_batches_of_100_and_leave_the_queue(tmp_path: Path, fleet: RecordingFleet) -> None:
    async def scenario(client: OrbitClient) -> None:
        fleet.capabilities = ["orbit_endpoints", "update_outcomes"]
        queue = queue_of(tmp_path, 150)
        expected = [item.to_json() for item in queue.pending(150)]
        sender = OutcomeSender(client, queue)
        await poll(client, sender)
        bodies = fleet.bodies(OUTCOMES)
        assert [len(body["outcomes"]) for body in bodies] == [100, 50]  # type: ignore[arg-type]
        assert all(body["orbit_node_key"] == "node-key-1" for body in bodies)
        sent = [item for body in bodies for item in body["outcomes"]]  # type: ignore[attr-defined]
        assert sent == expected
        assert len(queue) == 0 and sender.sent == 150
        assert OutcomeQueue(tmp_path / "state" / "update-outcomes.json").pending(1) == []  # also on disk

    with_client(tmp_path, fleet, scenario)


def test_server_errors_and_an_unreachable_server_keep_the_outcomes(tmp_path: Path, fleet: RecordingFleet) -> None:
    async def scenario(client: OrbitClient) -> None:
        fleet.capabilities = ["update_outcomes"]
        queue = queue_of(tmp_path, 2)
        sender = OutcomeSender(client, queue)
        fleet.status[OUTCOMES] = 503
        await poll(client, sender)
        assert len(queue) == 2 and fleet.paths().count(OUTCOMES) == 1
        fleet.status[OUTCOMES] = 401  # the client's re-enroll debounce deals with it; the outcomes wait
        await poll(client, sender)
        assert len(queue) == 2
        fleet.status.pop(OUTCOMES)
        await poll(client, sender)
        assert len(queue) == 0
        # a server that went away: nothing is lost
        queue.add(new_outcome("orbit", "1.1.0", "1.0.0", "stable", OutcomeKind.ROLLED_BACK, "trial failed"))
        fleet.url = "https://127.0.0.1:9"  # nothing listens there
        unreachable = OrbitClient(
            client._http, fleet.url, NodeKeyStore(tmp_path / "secret-orbit-node-key.txt"), lambda: {}, enroll_attempts=1
        )
        unreachable.server_capabilities = frozenset({"update_outcomes"})
        assert await OutcomeSender(unreachable, queue).send_pending() == 0
        assert len(queue) == 1

    with_client(tmp_path, fleet, scenario)


def test_a_refused_body_is_dropped_with_a_log_line(
    tmp_path: Path, fleet: RecordingFleet, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario(client: OrbitClient) -> None:
        fleet.capabilities = ["update_outcomes"]
        queue = queue_of(tmp_path, 1)
        fleet.status[OUTCOMES] = 400
        with caplog.at_level(logging.ERROR):
            await poll(client, OutcomeSender(client, queue))
        assert len(queue) == 0
        assert any("event=update_outcomes_dropped count=1" in r.getMessage() for r in caplog.records)

    with_client(tmp_path, fleet, scenario)


def test_a_server_that_loses_the_capability_gets_nothing_more(tmp_path: Path, fleet: RecordingFleet) -> None:
    async def scenario(client: OrbitClient) -> None:
        fleet.capabilities = ["update_outcomes"]
        queue = queue_of(tmp_path, 1)
        sender = OutcomeSender(client, queue)
        await poll(client, sender)
        fleet.capabilities = []  # downgraded to a real Fleet server
        queue.add(new_outcome("desktop", "1.2.0", None, "stable", OutcomeKind.REPAIRED, "missing"))
        await poll(client, sender)
        assert fleet.paths().count(OUTCOMES) == 1 and len(queue) == 1

    with_client(tmp_path, fleet, scenario)


# -- restart osqueryd on request (protocol §4) ---------------------------------------------------------------


class Jobs:
    """Runs the receiver's background jobs and lets the test wait for them."""

    def __init__(self) -> None:
        self.tasks: list[asyncio.Task[None]] = []

    def spawn(self, job: Awaitable[None]) -> None:
        self.tasks.append(asyncio.ensure_future(job))

    async def done(self) -> None:
        await asyncio.wait_for(asyncio.gather(*self.tasks), timeout=30)
        self.tasks.clear()


def test_a_restart_request_is_done_once_and_acknowledged(tmp_path: Path, fleet: RecordingFleet) -> None:
    async def scenario(client: OrbitClient) -> None:
        restarts: list[str] = []

        async def restart(reason: str) -> str | None:
            restarts.append(reason)
            return None

        state = tmp_path / "state" / "osqueryd-restart-request.json"
        jobs = Jobs()
        requests = OsquerydRestartRequests(client, state, restart, jobs.spawn)
        fleet.config = {"notifications": {"restart_osqueryd_request_id": "req-1"}}
        fleet.status[RESTART_RESULT] = 503  # the first acknowledgement fails
        for _ in range(2):
            requests.on_config(await client.get_config())
            await jobs.done()
            client._config_cache = None
        assert len(restarts) == 1  # the failed ack is retried; the restart is not repeated
        fleet.status.pop(RESTART_RESULT)
        requests.on_config(await client.get_config())
        await jobs.done()
        assert restarts == ["server request req-1"]
        assert fleet.bodies(RESTART_RESULT)[-1] == {
            "orbit_node_key": "node-key-1",
            "request_id": "req-1",
            "error": None,
        }
        handled = load_handled(state)
        assert handled is not None and handled.acknowledged and state.stat().st_mode & 0o777 == 0o600
        # a restarted orbit seeing the same id (the server has not dropped it yet) does nothing
        again = OsquerydRestartRequests(client, state, restart, jobs.spawn)
        again.on_config(await client.get_config())
        assert not jobs.tasks and len(restarts) == 1
        # a newer request is honoured
        fleet.config = {"notifications": {"restart_osqueryd_request_id": "req-2"}}
        client._config_cache = None
        again.on_config(await client.get_config())
        await jobs.done()
        assert len(restarts) == 2 and fleet.bodies(RESTART_RESULT)[-1]["request_id"] == "req-2"

    with_client(tmp_path, fleet, scenario)


def test_a_failed_restart_is_acknowledged_with_its_error(tmp_path: Path, fleet: RecordingFleet) -> None:
    async def scenario(client: OrbitClient) -> None:
        async def restart(_reason: str) -> str | None:
            return "osqueryd is not running again after 60s (state backing_off)"

        jobs = Jobs()
        requests = OsquerydRestartRequests(client, tmp_path / "r.json", restart, jobs.spawn)
        fleet.config = {"notifications": {"restart_osqueryd_request_id": "r9"}}
        requests.on_config(await client.get_config())
        await jobs.done()
        assert (
            fleet.bodies(RESTART_RESULT)[-1]["error"] == "osqueryd is not running again after 60s (state backing_off)"
        )

    with_client(tmp_path, fleet, scenario)


@pytest.mark.parametrize("value", [5, "", "x" * 257, "bad\nid", ["list"]])
def test_a_malformed_request_id_is_refused_like_any_bad_config(value: object) -> None:
    with pytest.raises(ConfigFormatError, match="restart_osqueryd_request_id"):
        parse_orbit_config({"notifications": {"restart_osqueryd_request_id": value}})
    assert parse_orbit_config({"notifications": {}}).restart_osqueryd_request_id is None
