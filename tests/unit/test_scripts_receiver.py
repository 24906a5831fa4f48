"""orbit.fleet.scripts_receiver with a fake Fleet API and a fake runner (no subprocesses)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from orbit.fleet.script_runner import DEFAULT_SCRIPT_TIMEOUT, DISABLED_EXIT_CODE, DISABLED_OUTPUT, ScriptOutcome
from orbit.fleet.scripts_receiver import ScriptRequest, ScriptRequestError, ScriptsReceiver, effective_timeout

SECRET_CONTENTS = "echo TOP-SECRET-CONTENTS"
SECRET_OUTPUT = "TOP-SECRET-OUTPUT"


class ApiDown(Exception):
    pass


@dataclass(frozen=True)
class Posted:
    execution_id: str
    output: str
    runtime: int
    exit_code: int
    timeout: int


@dataclass
class FakeApi:
    scripts: dict[str, ScriptRequest] = field(default_factory=dict)
    fetch_failures: dict[str, int] = field(default_factory=dict)  # id → how many fetches fail
    post_failures: dict[str, int] = field(default_factory=dict)  # id → how many posts fail
    fetched: list[str] = field(default_factory=list)
    posted: list[Posted] = field(default_factory=list)

    def add(self, execution_id: str, *, exit_code: int | None = None) -> None:
        self.scripts[execution_id] = ScriptRequest(execution_id, f"{SECRET_CONTENTS} {execution_id}", exit_code, None)

    async def script_request(self, execution_id: str) -> ScriptRequest:
        self.fetched.append(execution_id)
        if self.fetch_failures.get(execution_id, 0) > 0:
            self.fetch_failures[execution_id] -= 1
            raise ApiDown(f"fetch {execution_id}: 502")
        return self.scripts[execution_id]

    async def post_script_result(
        self, execution_id: str, output: str, runtime: int, exit_code: int, timeout: int
    ) -> None:
        if self.post_failures.get(execution_id, 0) > 0:
            self.post_failures[execution_id] -= 1
            raise ApiDown(f"post {execution_id}: connection reset")
        self.posted.append(Posted(execution_id, output, runtime, exit_code, timeout))


@dataclass(frozen=True)
class RunCall:
    contents: str
    execution_id: str
    timeout: float
    keep_tempdir: bool


@dataclass
class FakeRunner:
    calls: list[RunCall] = field(default_factory=list)
    gate: asyncio.Event | None = None
    started: asyncio.Event | None = None
    exit_code: int = 0

    async def __call__(
        self,
        contents: str,
        execution_id: str,
        *,
        timeout: float,
        keep_tempdir: bool = False,
        tmp_root: Path | None = None,
    ) -> ScriptOutcome:
        self.calls.append(RunCall(contents, execution_id, timeout, keep_tempdir))
        if self.started is not None:
            self.started.set()
        if self.gate is not None:
            await self.gate.wait()
        return ScriptOutcome(f"{SECRET_OUTPUT} {execution_id}", self.exit_code, runtime=2, timed_out=False)


def make(
    api: FakeApi,
    runner: FakeRunner,
    *,
    enabled: bool = True,
    timeout: int | None = None,
    keep_tempdir: bool = False,
    history_size: int = 500,
) -> ScriptsReceiver:
    return ScriptsReceiver(
        api,
        enabled=lambda: enabled,
        timeout=lambda: timeout,
        keep_tempdir=keep_tempdir,
        runner=runner,
        history_size=history_size,
    )


def test_scripts_run_and_post_in_server_order() -> None:
    api, runner = FakeApi(), FakeRunner()
    for eid in ("c", "a", "b"):
        api.add(eid)
    asyncio.run(make(api, runner).handle(["c", "a", "b"]))
    assert [c.execution_id for c in runner.calls] == ["c", "a", "b"]
    assert [c.contents for c in runner.calls] == [f"{SECRET_CONTENTS} {e}" for e in ("c", "a", "b")]
    assert api.posted == [Posted(e, f"{SECRET_OUTPUT} {e}", 2, 0, DEFAULT_SCRIPT_TIMEOUT) for e in ("c", "a", "b")]


def test_disabled_posts_minus_two_without_fetching_or_running() -> None:
    api, runner = FakeApi(), FakeRunner()
    asyncio.run(make(api, runner, enabled=False, timeout=120).handle(["x", "y"]))
    assert api.fetched == []
    assert runner.calls == []
    assert api.posted == [
        Posted("x", DISABLED_OUTPUT, 0, DISABLED_EXIT_CODE, 120),
        Posted("y", DISABLED_OUTPUT, 0, DISABLED_EXIT_CODE, 120),
    ]


def test_script_with_an_exit_code_is_skipped_and_not_fetched_again() -> None:
    api, runner = FakeApi(), FakeRunner()
    api.add("done", exit_code=0)
    api.add("todo")
    receiver = make(api, runner)

    async def scenario() -> None:
        await receiver.handle(["done", "todo"])
        await receiver.handle(["done", "todo"])

    asyncio.run(scenario())
    assert [c.execution_id for c in runner.calls] == ["todo"]
    assert [p.execution_id for p in api.posted] == ["todo"]
    assert api.fetched == ["done", "todo"]


def test_fetch_error_stops_the_batch_and_the_next_tick_resumes_in_order(caplog: pytest.LogCaptureFixture) -> None:
    api, runner = FakeApi(fetch_failures={"b": 1}), FakeRunner()
    for eid in ("a", "b", "c"):
        api.add(eid)
    receiver = make(api, runner)

    asyncio.run(receiver.handle(["a", "b", "c"]))
    assert [c.execution_id for c in runner.calls] == ["a"]
    assert api.fetched == ["a", "b"]  # c is not even fetched: queue order is kept
    assert any("script_fetch_failed" in r.getMessage() and "execution_id=b" in r.getMessage() for r in caplog.records)

    asyncio.run(receiver.handle(["a", "b", "c"]))
    assert [c.execution_id for c in runner.calls] == ["a", "b", "c"]
    assert [p.execution_id for p in api.posted] == ["a", "b", "c"]


def test_failed_post_is_retried_next_tick_without_running_the_script_again() -> None:
    api, runner = FakeApi(post_failures={"a": 1}), FakeRunner(exit_code=7)
    api.add("a")
    api.add("b")
    receiver = make(api, runner, timeout=60)

    async def scenario() -> None:
        await receiver.handle(["a", "b"])
        assert not receiver.was_handled("a")
        assert [p.execution_id for p in api.posted] == ["b"]  # a's failure did not block b
        await receiver.handle(["a"])

    asyncio.run(scenario())
    assert [c.execution_id for c in runner.calls] == ["a", "b"]
    assert api.posted[-1] == Posted("a", f"{SECRET_OUTPUT} a", 2, 7, 60)
    assert receiver.was_handled("a")


def test_failed_disabled_post_is_retried_next_tick() -> None:
    api, runner = FakeApi(post_failures={"x": 1}), FakeRunner()
    receiver = make(api, runner, enabled=False)

    async def scenario() -> None:
        await receiver.handle(["x"])
        assert api.posted == []
        await receiver.handle(["x"])

    asyncio.run(scenario())
    assert api.posted == [Posted("x", DISABLED_OUTPUT, 0, DISABLED_EXIT_CODE, DEFAULT_SCRIPT_TIMEOUT)]


@pytest.mark.timeout(10)
def test_overlapping_ticks_never_run_a_script_twice() -> None:
    api = FakeApi()
    api.add("slow")
    runner = FakeRunner()

    async def scenario() -> None:
        runner.gate = asyncio.Event()
        runner.started = asyncio.Event()
        receiver = make(api, runner)
        first = asyncio.create_task(receiver.handle(["slow"]))
        await runner.started.wait()
        assert bool(receiver.busy)
        await asyncio.wait_for(receiver.handle(["slow"]), timeout=1)  # returns at once (try-lock)
        await asyncio.wait_for(receiver.handle(["slow", "other"]), timeout=1)
        runner.gate.set()
        await first
        assert not receiver.busy
        await receiver.handle(["slow"])  # already handled by this process

    asyncio.run(scenario())
    assert [c.execution_id for c in runner.calls] == ["slow"]
    assert [p.execution_id for p in api.posted] == ["slow"]
    assert api.fetched == ["slow"]


@pytest.mark.parametrize(("configured", "used"), [(42, 42), (0, 300), (None, 300), (-5, 300)])
def test_timeout_comes_from_config_with_300s_default(configured: int | None, used: int) -> None:
    api, runner = FakeApi(), FakeRunner()
    api.add("a")
    asyncio.run(make(api, runner, timeout=configured, keep_tempdir=True).handle(["a"]))
    assert runner.calls == [RunCall(f"{SECRET_CONTENTS} a", "a", used, True)]
    assert api.posted[0].timeout == used
    assert effective_timeout(configured) == used


def test_history_is_bounded_and_oldest_ids_are_forgotten() -> None:
    api, runner = FakeApi(), FakeRunner()
    for eid in ("a", "b", "c"):
        api.add(eid)
    receiver = make(api, runner, history_size=2)
    asyncio.run(receiver.handle(["a", "b", "c"]))
    assert not receiver.was_handled("a")
    assert receiver.was_handled("b")
    assert receiver.was_handled("c")


def test_runner_crash_is_logged_and_stops_the_batch(caplog: pytest.LogCaptureFixture) -> None:
    api = FakeApi()
    api.add("a")
    api.add("b")

    async def exploding_runner(
        contents: str, execution_id: str, *, timeout: float, keep_tempdir: bool = False, tmp_root: Path | None = None
    ) -> ScriptOutcome:
        raise RuntimeError("bug")

    receiver = ScriptsReceiver(api, enabled=lambda: True, timeout=lambda: None, runner=exploding_runner)
    asyncio.run(receiver.handle(["a", "b"]))
    assert api.fetched == ["a"]
    assert api.posted == []
    assert not receiver.was_handled("a")
    assert any("script_run_crashed" in r.getMessage() for r in caplog.records)


def test_logs_never_contain_script_contents_or_output(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="orbit.fleet.scripts_receiver")
    api, runner = FakeApi(post_failures={"a": 1}, fetch_failures={"b": 1}), FakeRunner()
    api.add("a")
    api.add("b")
    asyncio.run(make(api, runner).handle(["a", "b"]))
    assert caplog.records
    for record in caplog.records:
        text = record.getMessage()
        assert "TOP-SECRET" not in text


def test_empty_batch_does_nothing() -> None:
    api, runner = FakeApi(), FakeRunner()
    asyncio.run(make(api, runner).handle([]))
    assert api.fetched == []
    assert api.posted == []


# --- parsing the /scripts/request answer -------------------------------------------------------------------------


def test_parse_host_script_result() -> None:
    payload = {
        "host_id": 7,
        "execution_id": "e-1",
        "script_contents": "echo hi",
        "output": "",
        "runtime": 0,
        "exit_code": None,
        "timeout": 120,
        "script_id": None,
        "policy_id": None,
        "team_id": None,
        "message": "",
    }
    assert ScriptRequest.from_json(payload) == ScriptRequest("e-1", "echo hi", None, 120)
    assert ScriptRequest.from_json({"execution_id": "e", "script_contents": "", "exit_code": -1}).exit_code == -1


@pytest.mark.parametrize(
    ("payload", "complaint"),
    [
        ([], "JSON object"),
        ({"script_contents": "x"}, "execution_id"),
        ({"execution_id": "", "script_contents": "x"}, "execution_id"),
        ({"execution_id": "e"}, "script_contents"),
        ({"execution_id": "e", "script_contents": 5}, "script_contents"),
        ({"execution_id": "e", "script_contents": "x", "exit_code": "0"}, "exit_code"),
        ({"execution_id": "e", "script_contents": "x", "exit_code": True}, "exit_code"),
        ({"execution_id": "e", "script_contents": "x", "exit_code": 1.5}, "exit_code"),
        ({"execution_id": "e", "script_contents": "x", "timeout": "300"}, "timeout"),
    ],
)
def test_bad_host_script_result_is_rejected(payload: object, complaint: str) -> None:
    with pytest.raises(ScriptRequestError, match=complaint):
        ScriptRequest.from_json(payload)
