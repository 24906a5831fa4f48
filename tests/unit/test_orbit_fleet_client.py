"""orbit's Fleet client against a scripted server (httpx.MockTransport): enrollment, 401 debounce, errors, cache."""

from __future__ import annotations

import asyncio
import json
import stat
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from orbit.fleet.client import (
    CAPABILITIES_HEADER,
    ConfigFormatError,
    FleetError,
    FleetNotFound,
    FleetUnauthenticated,
    FleetUnavailable,
    OrbitClient,
    UpdateChannels,
    parse_orbit_config,
)
from orbit.fleet.device_token import DeviceTokenConflictError
from orbit.fleet.node_key_store import NodeKeyStore

T = TypeVar("T")

FLEET = "https://fleet.example.com/"
SECRET = "enroll-secret-abc123"
ENROLL_BODY = {"enroll_secret": SECRET, "hardware_uuid": "uuid-1", "hardware_serial": "serial-1", "hostname": "h1"}
ENROLL = "/api/fleet/orbit/enroll"
CONFIG = "/api/fleet/orbit/config"


@dataclass
class Reply:
    status: int = 200
    body: object = None
    headers: Mapping[str, str] = field(default_factory=dict)
    error: Exception | None = None


Answer = Reply | Callable[[httpx.Request], Reply]


class FakeFleet:
    """Answers per path from a script; the last answer of a path repeats. Unknown paths: 404 in shape B."""

    def __init__(self) -> None:
        self.script: dict[str, list[Answer]] = {}
        self.seen: list[httpx.Request] = []

    def on(self, path: str, *answers: Answer) -> None:
        self.script[path] = list(answers)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request)
        queue = self.script.get(request.url.path)
        if not queue:
            return httpx.Response(404, json={"message": "Resource Not Found"})
        answer = queue.pop(0) if len(queue) > 1 else queue[0]
        reply = answer(request) if callable(answer) else answer
        if reply.error is not None:
            raise reply.error
        if reply.body is None:
            return httpx.Response(reply.status, headers=dict(reply.headers))
        if isinstance(reply.body, bytes):
            return httpx.Response(reply.status, content=reply.body, headers=dict(reply.headers))
        return httpx.Response(reply.status, json=reply.body, headers=dict(reply.headers))

    def requests(self, path: str) -> list[httpx.Request]:
        return [request for request in self.seen if request.url.path == path]

    def bodies(self, path: str) -> list[dict[str, Any]]:
        return [json.loads(request.content) for request in self.requests(path)]


class FakeTime:
    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def unauthorized(reason: str = "invalid node key") -> Reply:
    return Reply(401, {"message": "Authentication required", "errors": [{"name": "base", "reason": reason}]})


def by_key(answers: Mapping[str, Reply]) -> Callable[[httpx.Request], Reply]:
    """A config answer that depends on the node key the request carries."""

    def answer(request: httpx.Request) -> Reply:
        return answers[json.loads(request.content)["orbit_node_key"]]

    return answer


@dataclass
class Harness:
    fleet: FakeFleet
    time: FakeTime
    key_path: Path

    def run(self, scenario: Callable[[OrbitClient], Awaitable[T]], **options: Any) -> T:
        async def main() -> T:
            async with httpx.AsyncClient(transport=httpx.MockTransport(self.fleet)) as http:
                client = OrbitClient(
                    http,
                    FLEET,
                    NodeKeyStore(self.key_path),
                    lambda: ENROLL_BODY,
                    monotonic=self.time.monotonic,
                    sleep=self.time.sleep,
                    **options,
                )
                return await scenario(client)

        return asyncio.run(main())


@pytest.fixture
def h(tmp_path: Path) -> Harness:
    return Harness(FakeFleet(), FakeTime(), tmp_path / "secret-orbit-node-key.txt")


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# -- enrollment ----------------------------------------------------------------------------------------------


def test_the_first_call_enrolls_with_the_enroll_body_and_stores_the_key(h: Harness) -> None:
    h.fleet.on(ENROLL, Reply(200, {"orbit_node_key": "nk-1"}))
    h.fleet.on(CONFIG, Reply(200, {}))

    async def scenario(client: OrbitClient) -> None:
        assert h.fleet.seen == []  # lazy: creating the client contacts nobody
        await client.get_config()
        assert client.enrolled

    h.run(scenario)
    assert h.fleet.bodies(ENROLL) == [ENROLL_BODY]
    assert h.fleet.bodies(CONFIG) == [{"orbit_node_key": "nk-1"}]
    assert h.key_path.read_bytes() == b"nk-1"  # raw key, no newline
    assert _mode(h.key_path) == 0o600
    assert [p.name for p in h.key_path.parent.iterdir()] == [h.key_path.name]  # no temp files left


def test_a_stored_key_is_used_without_enrolling(h: Harness) -> None:
    h.key_path.write_text("stored-key")
    h.fleet.on(CONFIG, Reply(200, {}))
    h.run(lambda client: client.get_config())
    assert h.fleet.requests(ENROLL) == []
    assert h.fleet.bodies(CONFIG) == [{"orbit_node_key": "stored-key"}]


def test_concurrent_callers_enroll_only_once(h: Harness) -> None:
    entered = asyncio.Event()
    release = asyncio.Event()
    enrolls = 0

    async def enroll_handler(request: httpx.Request) -> httpx.Response:
        nonlocal enrolls
        enrolls += 1
        entered.set()
        await release.wait()
        return httpx.Response(200, json={"orbit_node_key": f"nk-{enrolls}"})

    async def handler(request: httpx.Request) -> httpx.Response:
        h.fleet.seen.append(request)
        if request.url.path == ENROLL:
            return await enroll_handler(request)
        return httpx.Response(200, json={})

    async def main() -> list[str]:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
            client = OrbitClient(http, FLEET, NodeKeyStore(h.key_path), lambda: ENROLL_BODY, monotonic=h.time.monotonic)
            configs = [asyncio.create_task(client.get_config()) for _ in range(3)]
            keys = [asyncio.create_task(client.node_key()) for _ in range(3)]
            await asyncio.wait_for(entered.wait(), 5)
            for _ in range(20):  # give every other caller the chance to reach the server too
                await asyncio.sleep(0)
            release.set()
            await asyncio.wait_for(asyncio.gather(*configs), 5)
            return list(await asyncio.wait_for(asyncio.gather(*keys), 5))

    keys = asyncio.run(main())
    assert enrolls == 1
    assert keys == ["nk-1"] * 3
    assert {body["orbit_node_key"] for body in h.fleet.bodies(CONFIG)} == {"nk-1"}


def test_enroll_retries_with_doubling_waits_then_gives_up(h: Harness) -> None:
    h.fleet.on(ENROLL, Reply(500, {"message": "database down"}))

    async def scenario(client: OrbitClient) -> None:
        with pytest.raises(FleetUnavailable, match="enroll: 500 database down"):
            await client.get_config()

    h.run(scenario)
    assert h.time.sleeps == [10, 20, 40, 80, 160]
    assert len(h.fleet.requests(ENROLL)) == 6
    assert h.fleet.requests(CONFIG) == []
    assert not h.key_path.exists()


def test_enroll_succeeding_on_a_retry_stores_the_key(h: Harness) -> None:
    h.fleet.on(
        ENROLL,
        Reply(error=httpx.ConnectError("connection refused")),
        Reply(503, {"message": "starting"}),
        Reply(200, {"orbit_node_key": "nk-late"}),
    )
    key = h.run(lambda client: client.node_key(), enroll_retry_interval=1.5)
    assert key == "nk-late" and h.key_path.read_text() == "nk-late"
    assert h.time.sleeps == [1.5, 3.0]


def test_enroll_404_means_no_orbit_api_and_is_not_retried(h: Harness) -> None:
    h.fleet.on(ENROLL, Reply(404, {"message": "Resource Not Found"}))

    async def scenario(client: OrbitClient) -> None:
        with pytest.raises(FleetNotFound, match="no orbit enroll endpoint"):
            await client.node_key()

    h.run(scenario)
    assert h.time.sleeps == [] and len(h.fleet.requests(ENROLL)) == 1


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"orbit_node_key": ""},
        {"orbit_node_key": 42},
        {"orbit_node_key": "bad\nkey"},
        {"orbit_node_key": "k" * 2000},
    ],
)
def test_an_answer_without_a_usable_key_is_an_enroll_failure(h: Harness, body: dict[str, object]) -> None:
    h.fleet.on(ENROLL, Reply(200, body))

    async def scenario(client: OrbitClient) -> None:
        with pytest.raises(FleetError, match="orbit_node_key") as caught:
            await client.get_config()
        assert "bad\nkey" not in str(caught.value) and "k" * 100 not in str(caught.value)

    h.run(scenario, enroll_attempts=2)
    assert len(h.fleet.requests(ENROLL)) == 2 and h.time.sleeps == [10]
    assert not h.key_path.exists()


# -- 401 debounce ----------------------------------------------------------------------------------------------


def test_a_401_keeps_the_key_and_reenrolls_only_after_the_debounce(h: Harness) -> None:
    h.key_path.write_text("old-key")
    key_during_enroll: list[str] = []

    def enroll(request: httpx.Request) -> Reply:
        key_during_enroll.append(h.key_path.read_text())
        return Reply(200, {"orbit_node_key": "new-key"})

    h.fleet.on(ENROLL, enroll)
    h.fleet.on(CONFIG, by_key({"old-key": unauthorized(), "new-key": Reply(200, {"script_execution_timeout": 5})}))

    async def scenario(client: OrbitClient) -> None:
        with pytest.raises(FleetUnauthenticated, match="401 Authentication required: invalid node key"):
            await client.get_config()
        enrolled_after_401 = client.enrolled
        assert h.key_path.read_text() == "old-key" and not enrolled_after_401
        h.time.now += 44.9
        with pytest.raises(FleetUnauthenticated):
            await client.get_config()
        assert h.fleet.requests(ENROLL) == [] and h.key_path.read_text() == "old-key"
        h.time.now += 0.1  # 45 s of 401s
        config = await client.get_config()
        assert config.script_execution_timeout == 5
        assert client.enrolled and client.reenrollments == 1

    h.run(scenario)
    assert key_during_enroll == ["old-key"]  # the old key was never deleted before the new one was stored
    assert [body["orbit_node_key"] for body in h.fleet.bodies(CONFIG)] == ["old-key", "old-key", "old-key", "new-key"]
    assert h.key_path.read_bytes() == b"new-key" and _mode(h.key_path) == 0o600
    assert [p.name for p in h.key_path.parent.iterdir()] == [h.key_path.name]


def test_a_success_ends_the_run_of_401s(h: Harness) -> None:
    h.key_path.write_text("old-key")
    h.fleet.on(ENROLL, Reply(200, {"orbit_node_key": "new-key"}))
    h.fleet.on(CONFIG, unauthorized(), Reply(200, {}), unauthorized())

    async def scenario(client: OrbitClient) -> None:
        with pytest.raises(FleetUnauthenticated):
            await client.get_config()
        h.time.now += 30
        await client.get_config()  # the server accepts the key again
        h.time.now += 20  # 50 s after the first 401, but only the start of a new run
        with pytest.raises(FleetUnauthenticated):
            await client.get_config()
        h.time.now += 30
        with pytest.raises(FleetUnauthenticated):
            await client.get_config()
        assert h.fleet.requests(ENROLL) == []
        h.time.now += 15  # 45 s into the new run
        with pytest.raises(FleetUnauthenticated):
            await client.get_config()  # re-enrolled, and the new key is refused too

    h.run(scenario)
    assert len(h.fleet.requests(ENROLL)) == 1
    assert [body["orbit_node_key"] for body in h.fleet.bodies(CONFIG)][-2:] == ["old-key", "new-key"]


def test_a_refused_new_key_is_retried_once_only(h: Harness) -> None:
    h.key_path.write_text("old-key")
    h.fleet.on(ENROLL, Reply(200, {"orbit_node_key": "new-key"}))
    h.fleet.on(CONFIG, unauthorized())

    async def scenario(client: OrbitClient) -> None:
        with pytest.raises(FleetUnauthenticated):
            await client.get_config()
        h.time.now += 60
        with pytest.raises(FleetUnauthenticated):
            await client.get_config()
        h.time.now += 1
        with pytest.raises(FleetUnauthenticated):
            await client.get_config()  # a new run of 401s: no immediate second re-enrollment

    h.run(scenario)
    assert len(h.fleet.requests(ENROLL)) == 1
    assert len(h.fleet.requests(CONFIG)) == 4
    assert h.key_path.read_text() == "new-key"


# -- capabilities, cache -----------------------------------------------------------------------------------


def test_capabilities_are_sent_and_the_servers_set_is_replaced(h: Harness) -> None:
    h.key_path.write_text("nk")
    h.fleet.on(
        CONFIG,
        Reply(200, {}, {CAPABILITIES_HEADER: "orbit_endpoints, token_rotation"}),
        Reply(500, {"message": "x"}, {CAPABILITIES_HEADER: "should_not_count"}),
        Reply(200, {}, {CAPABILITIES_HEADER: "orbit_endpoints"}),
    )
    h.fleet.on("/api/latest/fleet/device/tok/ping", Reply(200, None, {CAPABILITIES_HEADER: "error_reporting"}))

    async def scenario(client: OrbitClient) -> list[frozenset[str]]:
        seen = [client.server_capabilities]
        await client.get_config()
        seen.append(client.server_capabilities)
        h.time.now += 5
        with pytest.raises(FleetUnavailable):
            await client.get_config()
        seen.append(client.server_capabilities)
        await client.check_device_token("tok")  # not an orbit endpoint
        seen.append(client.server_capabilities)
        h.time.now += 5
        await client.get_config()
        seen.append(client.server_capabilities)
        return seen

    seen = h.run(scenario)
    both = frozenset({"orbit_endpoints", "token_rotation"})
    assert seen == [frozenset(), both, both, both, frozenset({"orbit_endpoints"})]
    assert all(CAPABILITIES_HEADER in request.headers for request in h.fleet.seen)


def test_config_answers_are_cached_for_three_seconds(h: Harness) -> None:
    h.key_path.write_text("nk")
    h.fleet.on(CONFIG, Reply(200, {"script_execution_timeout": 1}), Reply(200, {"script_execution_timeout": 2}))

    async def scenario(client: OrbitClient) -> list[int | None]:
        timeouts = [(await client.get_config()).script_execution_timeout]
        h.time.now += 2.9
        timeouts.append((await client.get_config()).script_execution_timeout)
        h.time.now += 0.1
        timeouts.append((await client.get_config()).script_execution_timeout)
        return timeouts

    assert h.run(scenario) == [1, 1, 2]
    assert len(h.fleet.requests(CONFIG)) == 2


# -- errors ----------------------------------------------------------------------------------------------


def test_network_errors_never_carry_the_secret_or_the_node_key(h: Harness) -> None:
    h.fleet.on(ENROLL, Reply(error=httpx.ConnectError("connection refused")))

    async def scenario(client: OrbitClient) -> list[str]:
        messages = []
        with pytest.raises(FleetUnavailable) as caught:
            await client.node_key()
        messages += [str(caught.value), client.last_error or ""]
        h.key_path.write_text("node-key-xyz")
        h.fleet.on(CONFIG, Reply(error=httpx.ReadTimeout("timed out")))
        with pytest.raises(FleetUnavailable) as caught:
            await client.get_config()
        messages += [str(caught.value), client.last_error or ""]
        return messages

    messages = h.run(scenario, enroll_attempts=1)
    assert "cannot reach https://fleet.example.com: connection refused" in messages[0]
    assert "config: cannot reach" in messages[2] and "timed out" in messages[2]
    for message in messages:
        assert SECRET not in message and "node-key-xyz" not in message


@pytest.mark.parametrize("status", [500, 502, 503, 429])
def test_server_errors_are_unavailable(h: Harness, status: int) -> None:
    h.key_path.write_text("nk")
    h.fleet.on(CONFIG, Reply(status, {"message": "Internal Server Error", "errors": [{"name": "base", "reason": "x"}]}))

    async def scenario(client: OrbitClient) -> None:
        with pytest.raises(FleetUnavailable) as caught:
            await client.get_config()
        assert caught.value.status == status
        assert str(caught.value) == f"config: {status} Internal Server Error: x"

    h.run(scenario)


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        (Reply(422, {"message": "Validation Failed", "errors": [{"name": "base", "reason": "bad id"}]}), "422"),
        (Reply(200, {"error": "orbit host not found"}), "config: orbit host not found"),
        (Reply(200, b"<html>proxy</html>"), "not JSON"),
        (Reply(200, [1, 2]), "not a JSON object"),
        (Reply(200, {"update_channels": {"orbit": "../x"}}), "update_channels.orbit"),
    ],
)
def test_bad_answers_are_typed_errors(h: Harness, reply: Reply, message: str) -> None:
    h.key_path.write_text("nk")
    h.fleet.on(CONFIG, reply)

    async def scenario(client: OrbitClient) -> None:
        with pytest.raises(FleetError, match=message) as caught:
            await client.get_config()
        assert not isinstance(caught.value, FleetUnavailable)  # not worth retrying: nothing is applied

    h.run(scenario)


def test_a_shape_b_error_message_reaches_the_exception(h: Harness) -> None:
    h.key_path.write_text("nk")
    h.fleet.on(
        "/api/fleet/orbit/scripts/request",
        Reply(404, {"message": "Resource Not Found", "errors": [{"name": "base", "reason": "execution not found"}]}),
    )

    async def scenario(client: OrbitClient) -> None:
        with pytest.raises(FleetNotFound, match=r"^script request: 404 Resource Not Found: execution not found$"):
            await client.script_request("exec-1")

    h.run(scenario)


# -- device token ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ping", "desktop", "valid"),
    [
        (200, None, True),
        (401, None, False),
        (404, 200, True),
        (404, 402, True),  # Fleet Free answers 402 for a valid token
        (404, 401, False),
        (404, 404, False),
    ],
)
def test_check_device_token(h: Harness, ping: int, desktop: int | None, valid: bool) -> None:
    base = "/api/latest/fleet/device/tok-1"
    h.fleet.on(f"{base}/ping", Reply(ping))
    if desktop is not None:
        h.fleet.on(f"{base}/desktop", Reply(desktop, {}))
    assert h.run(lambda client: client.check_device_token("tok-1")) is valid
    assert [request.method for request in h.fleet.seen] == (["HEAD"] if desktop is None else ["HEAD", "GET"])


def test_check_device_token_server_error_and_escaping(h: Harness) -> None:
    h.fleet.on("/api/latest/fleet/device/a/b?c/ping", Reply(503))

    async def scenario(client: OrbitClient) -> None:
        with pytest.raises(FleetUnavailable, match="503"):
            await client.check_device_token("a/b?c")

    h.run(scenario)
    assert h.fleet.seen[0].url.raw_path == b"/api/latest/fleet/device/a%2Fb%3Fc/ping"


def test_register_device_token(h: Harness) -> None:
    h.key_path.write_text("nk")
    h.fleet.on(
        "/api/fleet/orbit/device_token",
        Reply(200, {}),
        Reply(409, {"message": "Conflict", "errors": [{"name": "base", "reason": "token in use"}]}),
    )

    async def scenario(client: OrbitClient) -> None:
        await client.register_device_token("tok-1")
        with pytest.raises(DeviceTokenConflictError, match="token in use"):
            await client.register_device_token("tok-2")

    h.run(scenario)
    assert h.fleet.bodies("/api/fleet/orbit/device_token") == [
        {"orbit_node_key": "nk", "device_auth_token": "tok-1"},
        {"orbit_node_key": "nk", "device_auth_token": "tok-2"},
    ]


# -- scripts, error reports -----------------------------------------------------------------------------------


def test_script_request_validates_the_answer(h: Harness) -> None:
    h.key_path.write_text("nk")
    h.fleet.on(
        "/api/fleet/orbit/scripts/request",
        Reply(200, {"execution_id": "e1", "script_contents": "echo hi", "exit_code": None, "timeout": 30}),
        Reply(200, {"execution_id": "e2", "exit_code": None}),
        Reply(200, {"execution_id": "e3", "script_contents": "x", "timeout": "30"}),
    )

    async def scenario(client: OrbitClient) -> None:
        request = await client.script_request("e1")
        assert (request.execution_id, request.script_contents, request.exit_code, request.timeout) == (
            "e1",
            "echo hi",
            None,
            30,
        )
        with pytest.raises(FleetError, match="script request: script_contents must be a string"):
            await client.script_request("e2")
        with pytest.raises(FleetError, match="script request: timeout must be an integer"):
            await client.script_request("e3")

    h.run(scenario)
    assert h.fleet.bodies("/api/fleet/orbit/scripts/request")[0] == {"orbit_node_key": "nk", "execution_id": "e1"}


def test_report_error_tries_three_times_with_the_injected_sleep(h: Harness) -> None:
    path = "/api/latest/fleet/device/tok/debug/errors"
    h.fleet.on(path, Reply(500, {"message": "no"}))
    error = {"vital": True, "error_source": "fleet-desktop", "error_message": "cannot launch"}
    assert h.run(lambda client: client.report_error("tok", error)) is False
    assert len(h.fleet.requests(path)) == 3 and h.time.sleeps == [15.0, 15.0]
    assert h.fleet.bodies(path)[0] == {"error": error}


def test_report_error_stops_at_the_first_success(h: Harness) -> None:
    path = "/api/latest/fleet/device/tok/debug/errors"
    h.fleet.on(path, Reply(error=httpx.ConnectError("refused")), Reply(200, {}))
    assert h.run(lambda client: client.report_error("tok", {"vital": True}, gap=2.0)) is True
    assert len(h.fleet.requests(path)) == 2 and h.time.sleeps == [2.0]


# -- parse_orbit_config ------------------------------------------------------------------------------------


def test_parse_orbit_config_reads_the_fields_and_ignores_unknown_ones() -> None:
    body: dict[str, object] = {
        "command_line_startup_flags": {"verbose": True},
        "update_channels": {"orbit": "edge", "osqueryd": "", "desktop": None},
        "script_execution_timeout": 120,
        "notifications": {"pending_script_execution_ids": ["a", "b"], "renew_enrollment_profile": True},
        "extensions": {"hello": {"platform": "linux", "channel": "stable"}},
        "nudge_config": {"whatever": 1},
        "future_field": [1, 2, 3],
    }
    config = parse_orbit_config(body)
    assert config.startup_flags == {"verbose": True}
    assert config.update_channels == UpdateChannels("edge", "stable", "stable")
    assert config.script_execution_timeout == 120
    assert config.pending_script_execution_ids == ("a", "b")
    assert config.extensions == {"hello": {"platform": "linux", "channel": "stable"}}
    empty = parse_orbit_config({})
    assert empty.startup_flags is None and empty.update_channels is None and empty.pending_script_execution_ids == ()


def test_the_digest_identifies_the_content_not_the_key_order() -> None:
    first = parse_orbit_config({"a": 1, "script_execution_timeout": 3})
    same = parse_orbit_config({"script_execution_timeout": 3, "a": 1})
    other = parse_orbit_config({"script_execution_timeout": 4, "a": 1})
    assert first.digest == same.digest != other.digest


@pytest.mark.parametrize(
    ("body", "field_name"),
    [
        ({"command_line_startup_flags": ["--verbose"]}, "command_line_startup_flags"),
        ({"update_channels": "edge"}, "update_channels"),
        ({"update_channels": {"orbit": 1}}, "update_channels.orbit"),
        ({"update_channels": {"osqueryd": "edge/evil"}}, "update_channels.osqueryd"),
        ({"update_channels": {"desktop": ".."}}, "update_channels.desktop"),
        ({"script_execution_timeout": "300"}, "script_execution_timeout"),
        ({"script_execution_timeout": True}, "script_execution_timeout"),
        ({"script_execution_timeout": -1}, "script_execution_timeout"),
        ({"notifications": ["x"]}, "notifications"),
        ({"notifications": {"pending_script_execution_ids": "a"}}, "pending_script_execution_ids"),
        ({"notifications": {"pending_script_execution_ids": [1]}}, "pending_script_execution_ids"),
        ({"extensions": ["x"]}, "extensions"),
    ],
)
def test_parse_orbit_config_refuses_wrong_types(body: dict[str, object], field_name: str) -> None:
    with pytest.raises(ConfigFormatError, match=field_name):
        parse_orbit_config(body)
