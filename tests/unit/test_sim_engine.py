"""osqueryd-sim's client semantics without a network: body judging, schedules, diffs, config parsing, the engine."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest

from osquery_sim import engine as engine_module
from osquery_sim.engine import Endpoints, Engine, EngineSettings, apply_options
from osquery_sim.osquery_config import parse_config
from osquery_sim.remote_answer import RemoteAnswer, judge
from osquery_sim.remote_client import NODE_KEY, EnrollmentFailed, EnrollRequest, EnrollSettings, RemoteClient
from osquery_sim.result_logs import LogContext, calendar_time, diff_rows, differential_lines, snapshot_line
from osquery_sim.retry_schedules import distributed_wait, enroll_sleep, logger_backoff, request_retry_sleep
from osquery_sim.sim_store import SimStore


@pytest.mark.parametrize(
    ("raw", "ok", "node_invalid"),
    [
        (b"", True, False),
        (b"{}", True, False),
        (b'{"node_key": "k"}', True, False),
        (b"not json", False, False),
        (b"[1]", False, False),
        (b'{"error": "x"}', False, False),
        (b'{"error": "x", "node_invalid": true}', False, True),
        (b'{"node_invalid": "true"}', True, False),  # a string is not a boolean: osquery ignores it
        (b'{"message": "Authentication required", "errors": []}', True, False),  # shape B reads as success
    ],
)
def test_answers_are_judged_by_the_body(raw: bytes, ok: bool, node_invalid: bool) -> None:
    answer = judge(raw)
    assert (answer.ok, answer.node_invalid) == (ok, node_invalid)


def test_osquery_schedules() -> None:
    assert [enroll_sleep(k, 600) for k in (1, 2, 3, 11, 30)] == [1, 4, 9, 121, 600]
    assert sum(enroll_sleep(k, 600) for k in range(1, 12)) == 506  # ≈ 8.5 min before the 12th attempt
    assert [request_retry_sleep(i) for i in (1, 2, 3)] == [1, 4, 9]
    assert [logger_backoff(4, n, 3600) for n in (0, 1, 2, 3, 40)] == [4, 4, 16, 36, 3600]
    assert distributed_wait(60, 100.0, 110.0) == 5 and distributed_wait(60, 120.0, 110.0) == 60


def test_differential_results() -> None:
    first = diff_rows(None, [{"a": "1"}, {"a": "2"}])
    assert first.added == [{"a": "1"}, {"a": "2"}] and not first.removed
    change = diff_rows([{"a": "1"}, {"a": "2"}], [{"a": "2"}, {"a": "3"}])
    assert change.added == [{"a": "3"}] and change.removed == [{"a": "1"}]
    assert diff_rows([{"a": "1"}], [{"a": "1"}]).empty
    duplicates = diff_rows([{"a": "1"}], [{"a": "1"}, {"a": "1"}])
    assert duplicates.added == [{"a": "1"}]


def test_log_line_formats() -> None:
    context = LogContext(host_identifier="H", decorations={"host_uuid": "U"})
    diff = diff_rows([{"a": "1"}], [{"a": "2"}])
    lines = differential_lines("pack/p/q", diff, context, 1795737600.0, 3)
    assert [line["action"] for line in lines] == ["removed", "added"]
    assert lines[1] == {
        "name": "pack/p/q",
        "hostIdentifier": "H",
        "calendarTime": "Fri Nov 27 00:00:00 2026 UTC",
        "unixTime": 1795737600,
        "epoch": 0,
        "counter": 3,
        "numerics": False,
        "decorations": {"host_uuid": "U"},
        "columns": {"a": "2"},
        "action": "added",
    }
    assert differential_lines("q", diff, context, 0.0, 1, log_removed=False)[0]["action"] == "added"
    snap = snapshot_line("q", [{"a": "1"}], context, 0.0, 0)
    assert snap["action"] == "snapshot" and snap["snapshot"] == [{"a": "1"}]
    assert calendar_time(1796169600.0) == "Wed Dec  2 00:00:00 2026 UTC"  # day of month space-padded


def test_config_parsing_schedule_packs_platforms() -> None:
    config = parse_config(
        {
            "options": {"pack_delimiter": "/", "distributed_interval": 5},
            "schedule": {"a": {"query": "SELECT 1", "interval": 10}, "bad": {"query": "", "interval": 1}},
            "packs": {
                "p": {"queries": {"q": {"query": "SELECT 2", "interval": "20", "snapshot": True, "removed": False}}},
                "mac": {"platform": "darwin", "queries": {"m": {"query": "SELECT 3", "interval": 1}}},
                "file": "/etc/osquery/packs/x.conf",
            },
            "decorators": {"load": ["SELECT 1 AS one"], "always": [""], "interval": {"3600": ["SELECT 2 AS two"]}},
        },
        pack_delimiter="_",
    )
    names = {q.name: q for q in config.queries}
    assert set(names) == {"a", "pack/p/q"}
    assert names["pack/p/q"].snapshot and not names["pack/p/q"].removed and names["pack/p/q"].interval == 20
    assert config.decorators.load == ("SELECT 1 AS one",) and config.decorators.always == ()
    assert config.decorators.interval == ((3600, ("SELECT 2 AS two",)),)


def test_config_options_override_runtime_settings() -> None:
    settings = EngineSettings(Endpoints(), True, True, False, "", True)
    changed = apply_options(settings, {"distributed_interval": 7, "logger_tls_period": "3", "config_tls_refresh": 9})
    assert (changed.distributed_interval, changed.logger_tls_period, changed.config_refresh) == (7, 3, 9)
    assert apply_options(settings, {"distributed_interval": True}).distributed_interval == 60


def test_buffer_purges_the_oldest_beyond_the_maximum() -> None:
    store = SimStore.open("", in_memory=True)
    assert store.buffer_lines("result", [json.dumps({"n": n}) for n in range(5)], 3) == 2
    assert [json.loads(x.line)["n"] for x in store.peek_lines("result", 10)] == [2, 3, 4]


def test_denylist_after_a_crash() -> None:
    store = SimStore.open("", in_memory=True)
    store.mark_running("SELECT crash", 100.0)
    assert store.denylist_crashed(200.0, 86400) == 1
    assert store.is_denylisted("SELECT crash", 300.0)
    assert not store.is_denylisted("SELECT crash", 200.0 + 86401)


class FakeTransport:
    """Answers in order; records what was posted."""

    def __init__(self, answers: list[RemoteAnswer]) -> None:
        self.answers = answers
        self.posts: list[tuple[str, dict[str, object]]] = []

    async def post(self, endpoint: str, body: dict[str, object], **_: Any) -> RemoteAnswer:
        self.posts.append((endpoint, body))
        return self.answers.pop(0) if self.answers else RemoteAnswer(ok=True)


async def _no_sleep(_: float) -> None:
    return None


def _client(answers: list[RemoteAnswer], **settings: Any) -> tuple[RemoteClient, FakeTransport, SimStore]:
    transport = FakeTransport(answers)
    store = SimStore.open("", in_memory=True)
    client = RemoteClient(
        transport,  # type: ignore[arg-type]
        store,
        EnrollSettings(endpoint="/enroll", secret="s", **settings),
        lambda: EnrollRequest("H", "9", {}),
        sleep=_no_sleep,
    )
    return client, transport, store


def test_enroll_retries_then_succeeds_and_node_invalid_drops_the_key() -> None:
    client, transport, _ = _client(
        [
            RemoteAnswer(ok=False, error="down"),
            RemoteAnswer(ok=True, body={}),  # no key: still a failure
            RemoteAnswer(ok=True, body={"node_key": "K1"}),
            RemoteAnswer(ok=False, body={}, node_invalid=True, error="Invalid node key"),
            RemoteAnswer(ok=True, body={"node_key": "K2"}),
            RemoteAnswer(ok=True, body={"queries": {}}),
        ]
    )

    async def scenario() -> RemoteAnswer:
        return await client.request("/read", {}, attempts=3)

    answer = asyncio.run(scenario())
    assert answer.ok and client.node_key == "K2"
    assert [p[0] for p in transport.posts] == ["/enroll", "/enroll", "/enroll", "/read", "/enroll", "/read"]
    assert transport.posts[3][1]["node_key"] == "K1"


def test_the_node_key_is_stored_read_once_and_dropped_from_both() -> None:
    client, _, store = _client([RemoteAnswer(ok=True, body={"node_key": "K1"})])
    assert asyncio.run(client.ensure_node_key()) == "K1"
    assert store.get(NODE_KEY) == "K1"  # persisted: a restarted daemon keeps its enrollment
    restarted = RemoteClient(
        FakeTransport([]),  # type: ignore[arg-type]
        store,
        EnrollSettings(endpoint="/enroll", secret="s"),
        lambda: EnrollRequest("H", "9", {}),
        sleep=_no_sleep,
    )
    assert restarted.node_key == "K1"
    store.delete(NODE_KEY)  # read once (every request and load mode's progress use it): memory answers after
    assert restarted.node_key == "K1"
    restarted.drop_node_key()
    assert restarted.node_key is None and store.get(NODE_KEY) is None


def test_enrollment_gives_up_after_max_attempts() -> None:
    client, transport, _ = _client([RemoteAnswer(ok=False, error="nope")] * 3, max_attempts=3)
    with pytest.raises(EnrollmentFailed):
        asyncio.run(client.ensure_node_key())
    assert len(transport.posts) == 3


def test_disable_reenrollment_keeps_the_key() -> None:
    client, _, store = _client(
        [RemoteAnswer(ok=True, body={"node_key": "K"}), RemoteAnswer(ok=False, node_invalid=True)],
        disable_reenrollment=True,
    )
    asyncio.run(client.request("/config", {}))
    assert store.get("nodeKey") == "K"


class Tables:
    def __init__(self) -> None:
        self.value = "1"

    def query(self, sql: str) -> list[dict[str, str]]:
        if "nope" in sql:
            raise RuntimeError("no such table: nope")
        if "empty" in sql:
            return []
        return [{"v": self.value}]


@pytest.fixture
def engine_parts() -> Iterator[tuple[Engine, FakeTransport, SimStore]]:
    client, transport, store = _client([RemoteAnswer(ok=True, body={"node_key": "K"})])
    settings = EngineSettings(
        Endpoints("/config", "/log", "/read", "/write"), True, True, False, "", True, schedule_splay_percent=0
    )
    yield Engine(settings, client, store, Tables(), lambda: "H", clock=lambda: 1000.0), transport, store
    store.close()


def test_distributed_runs_discovery_reports_errors_and_accelerates(engine_parts: Any) -> None:
    engine, transport, _ = engine_parts
    transport.answers += [
        RemoteAnswer(
            ok=True,
            body={
                "queries": {"a": "SELECT ok", "b": "SELECT nope", "c": "SELECT skipped"},
                "discovery": {"a": "SELECT 1", "c": "SELECT empty"},
                "accelerate": 60,
            },
        ),
        RemoteAnswer(ok=True, body={}),
    ]
    asyncio.run(engine.distributed_once())
    endpoint, body = transport.posts[-1]
    assert endpoint == "/write"
    assert body["queries"] == {"a": [{"v": "1"}], "b": []}
    assert body["statuses"] == {"a": 0, "b": 1}
    assert body["messages"] == {"a": "", "b": "no such table: nope"}
    assert engine._accelerate_until == 1060.0


def test_a_batch_with_an_empty_query_is_rejected_whole(engine_parts: Any) -> None:
    engine, transport, _ = engine_parts
    transport.answers += [RemoteAnswer(ok=True, body={"queries": {"a": "SELECT ok", "b": ""}})]
    asyncio.run(engine.distributed_once())
    assert [p[0] for p in transport.posts] == ["/enroll", "/read"]


def test_failed_write_is_resent_next_cycle(engine_parts: Any) -> None:
    engine, transport, _ = engine_parts
    transport.answers += [
        RemoteAnswer(ok=True, body={"queries": {"a": "SELECT ok"}}),
        *[RemoteAnswer(ok=False, error="down")] * 3,
        RemoteAnswer(ok=True, body={}),
    ]
    asyncio.run(engine.distributed_once())
    asyncio.run(engine.distributed_once())
    assert [p[0] for p in transport.posts].count("/read") == 1
    assert [p[0] for p in transport.posts].count("/write") == 4


def test_scheduled_differential_and_logger_acknowledgement(engine_parts: Any) -> None:
    engine, transport, store = engine_parts
    engine.apply_config({"schedule": {"q": {"query": "SELECT v", "interval": 10}}})
    query = engine.config.queries[0]
    assert engine.run_scheduled(query) == 1
    assert engine.run_scheduled(query) == 0  # unchanged: nothing logged
    engine.tables.value = "2"
    assert engine.run_scheduled(query) == 2
    transport.answers += [RemoteAnswer(ok=False, error="down")]
    assert asyncio.run(engine.flush_logs()) is False
    assert store.buffered_count("result") == 3
    assert asyncio.run(engine.flush_logs()) is True
    assert store.buffered_count("result") == 0
    sent = [p[1] for p in transport.posts if p[0] == "/log"][-1]
    assert [(line["action"], line["counter"]) for line in sent["data"]] == [("added", 0), ("removed", 1), ("added", 1)]


def test_logger_backs_off_while_failing(engine_parts: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    engine, transport, store = engine_parts
    engine.settings = engine.base_settings = EngineSettings(
        Endpoints("/config", "/log", "/read", "/write"),
        True,
        True,
        False,
        "",
        True,
        logger_tls_period=2,
        logger_tls_backoff_max=30,
    )
    store.buffer_lines("status", ['{"message": "x"}'], 100)
    transport.answers += [RemoteAnswer(ok=False, error="down")] * 4
    waits: list[float] = []

    async def fake_wait(stop: asyncio.Event, seconds: float, wake: object = None) -> bool:
        waits.append(seconds)
        if len(waits) == 5:
            stop.set()
        return stop.is_set()

    monkeypatch.setattr(engine_module, "_wait", fake_wait)
    asyncio.run(engine.logger_loop(asyncio.Event()))
    assert waits == [2, 8, 18, 30, 2]  # period × n², capped; back to the period after a success
    assert store.buffered_count() == 0
