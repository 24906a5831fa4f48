"""Rollouts stored by several processes on one database (``serve --workers N``, ADR 0019), on a real SQLite file
with one connection per "process": a change decided from a row another connection changed meanwhile is never
applied, however the evaluations interleave; and an engine that watches follows other connections' changes within
its check interval, and only by reading one row."""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path

import pytest

from server_stub.database import open_database
from server_stub.rollout_model import HaltRules, RolloutSpec, RolloutState, Target
from server_stub.rollout_rules import AdminAction, decide, next_state
from server_stub.rollout_status import wave_counts
from server_stub.rollout_store import generation, get_rollout, insert_rollout, recent_events, save_transition
from server_stub.rollouts import GENERATION_CHECK_SECONDS, RolloutEngine, RolloutRefused

T0 = 1_800_000_000.0
SPEC = RolloutSpec(
    name="r",
    target=Target.ORBIT,
    version="1.4.0",
    from_version="1.3.0",
    team_ids=None,
    waves=(50.0, 100.0),
    soak_seconds=0,
    rules=HaltRules(max_failed_percent=5.0, min_healthy_percent=0.0),
)


class Monotonic:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_change_decided_from_a_row_changed_meanwhile_is_not_stored(tmp_path: Path) -> None:
    first, second = (open_database(tmp_path / "db.sqlite3") for _ in range(2))
    rollout = insert_rollout(first, SPEC, ("linux",), "api", T0)
    decision = decide(rollout, wave_counts(first, rollout, T0 + 1), T0 + 1)
    advanced = next_state(rollout, decision, T0 + 1)
    stored = save_transition(first, advanced, "advanced", decision.reason)
    assert stored is not None and stored.revision == rollout.revision + 1
    assert save_transition(second, advanced, "advanced", decision.reason) is None  # the same decision, again
    assert [e.event for e in recent_events(second, rollout.id)] == ["created", "advanced"]
    row = get_rollout(second, rollout.id)
    assert row is not None and row.current_wave == 1 and row.revision == stored.revision


def _evaluate(engine: RolloutEngine, start: threading.Barrier, applied: list[int]) -> None:
    start.wait()
    applied.append(engine.evaluate(T0 + 10))


def test_evaluations_racing_in_two_processes_apply_each_step_once(tmp_path: Path) -> None:
    for attempt in range(5):  # several interleavings
        first, second = (open_database(tmp_path / f"db{attempt}.sqlite3") for _ in range(2))
        rollout = insert_rollout(first, SPEC, ("linux",), "api", T0)
        engines = [RolloutEngine(first, None), RolloutEngine(second, None, watching=True)]
        start = threading.Barrier(2)
        applied: list[int] = []
        threads = [threading.Thread(target=_evaluate, args=(engine, start, applied)) for engine in engines]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert sum(applied) == 2, applied  # wave 2, then completed: whoever stored them, once each
        assert [e.event for e in recent_events(first, rollout.id)] == ["created", "advanced", "completed"]
        for engine in engines:
            engine.evaluate(T0 + 20)  # nothing is left to do
        assert len(recent_events(first, rollout.id)) == 3
        for conn in (first, second):
            conn.close()


def test_a_watching_engine_follows_changes_stored_elsewhere_within_its_check_interval(tmp_path: Path) -> None:
    writer_conn, reader_conn = (open_database(tmp_path / "db.sqlite3") for _ in range(2))
    clock = Monotonic()
    writer = RolloutEngine(writer_conn, None)
    reader = RolloutEngine(reader_conn, None, watching=True, monotonic=clock)
    unwatched = RolloutEngine(reader_conn, None)  # the single process: only its own changes
    assert reader.pins.empty
    before = generation(writer_conn)
    rollout = insert_rollout(writer_conn, SPEC, ("linux",), "api", T0)
    assert generation(reader_conn) == before + 1
    assert reader.pins.empty  # read less than GENERATION_CHECK_SECONDS ago
    clock.now += GENERATION_CHECK_SECONDS
    assert set(reader.pins.pins_for("host-a", None)) == {"orbit"}  # the rollout pins every host now
    assert not reader.pins.empty and unwatched.pins.empty

    writer.transition(rollout.id, AdminAction.ABORT, T0 + 1)  # every host back to from_version
    clock.now += GENERATION_CHECK_SECONDS / 2
    assert reader.pins.by_target[0][1][0].state is RolloutState.RUNNING  # still within the interval
    clock.now += GENERATION_CHECK_SECONDS / 2
    pins = reader.pins
    assert pins.by_target[0][1][0].state is RolloutState.ABORTED
    assert {pins.pins_for(f"host-{n}", None)["orbit"] for n in range(50)} == {"1.3.0"}
    unchanged = reader.pins
    clock.now += GENERATION_CHECK_SECONDS
    assert reader.pins is unchanged  # the generation did not move: the book is not rebuilt


def test_an_insert_refused_inside_its_transaction_writes_nothing(tmp_path: Path) -> None:
    """What ``RolloutEngine.create`` checks again inside the insert's transaction (a conflicting rollout another
    process inserted after the first check) refuses the whole insert."""
    first, second = (open_database(tmp_path / "db.sqlite3") for _ in range(2))
    insert_rollout(first, SPEC, ("linux",), "api", T0)
    before = generation(second)

    def conflict() -> None:
        raise RolloutRefused(409, "taken meanwhile")

    with pytest.raises(RolloutRefused):
        insert_rollout(second, replace(SPEC, name="other"), ("linux",), "api", T0, conflict)
    assert generation(first) == before
    assert [r.spec.name for r in RolloutEngine(first, None).pins.by_target[0][1]] == ["r"]
    assert not second.in_transaction
