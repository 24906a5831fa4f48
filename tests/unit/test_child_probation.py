"""A new osqueryd/desktop version on probation (issue 18): confirmed after the stable period, crash_loop when the
breaker opens, nothing when the confirmed version starts again; state across orbit restarts."""

from __future__ import annotations

import json
from pathlib import Path

from orbit.child_probation import ChildProbation, RunningVersion, TargetVersions, decide, on_launch
from orbit.children.restart_policy import BreakerState
from orbit.children.supervisor import ChildState, ChildStatus
from orbit.outcome_queue import OutcomeKind, OutcomeQueue

OLD = RunningVersion("5.14.1", "a" * 128, "stable")
NEW = RunningVersion("5.15.0", "b" * 128, "5.15.0")


def status(
    state: ChildState = ChildState.RUNNING,
    uptime: float | None = 1.0,
    breaker: BreakerState = BreakerState.CLOSED,
    failures: int = 0,
    code: int | None = None,
) -> ChildStatus:
    return ChildStatus("osqueryd", state, 42, 0, failures, breaker, code, None, uptime)


def test_a_first_version_opens_a_probation_with_no_previous() -> None:
    state = on_launch(TargetVersions(), OLD)
    assert state.probation is not None and state.probation.previous_version is None and state.confirmed is None


def test_a_new_version_is_confirmed_after_the_stable_period() -> None:
    state = on_launch(TargetVersions(OLD, None), NEW)
    assert state.probation is not None and state.probation.previous_version == "5.14.1"
    assert decide(state, NEW.digest, status(uptime=59.0), 60.0) is None
    verdict = decide(state, NEW.digest, status(uptime=60.0), 60.0)
    assert verdict is not None and verdict.outcome is OutcomeKind.CONFIRMED
    assert verdict.state == TargetVersions(NEW, None)


def test_an_open_breaker_is_a_crash_loop_reported_once() -> None:
    state = on_launch(TargetVersions(OLD, None), NEW)
    looping = status(ChildState.BACKING_OFF, None, BreakerState.OPEN, 5, 1)
    verdict = decide(state, NEW.digest, looping, 60.0)
    assert verdict is not None and verdict.outcome is OutcomeKind.CRASH_LOOP
    assert verdict.reason == "crash-loop breaker open after 5 consecutive exits (last exit code 1)"
    assert decide(verdict.state, NEW.digest, looping, 60.0) is None


def test_the_confirmed_version_again_ends_the_probation_silently() -> None:
    state = on_launch(on_launch(TargetVersions(OLD, None), NEW), OLD)
    assert state == TargetVersions(OLD, None)


def test_another_version_running_is_not_judged() -> None:
    state = on_launch(TargetVersions(OLD, None), NEW)
    assert decide(state, OLD.digest, status(uptime=600.0), 60.0) is None
    assert decide(state, None, status(uptime=600.0), 60.0) is None


def test_outcomes_are_queued_and_the_state_survives_a_restart(tmp_path: Path) -> None:
    queue = OutcomeQueue(tmp_path / "q.json")
    path = tmp_path / "child-versions.json"
    probation = ChildProbation(path, queue, 60.0)
    probation.launching("osqueryd", OLD)
    probation.observe("osqueryd", status(uptime=61.0))
    probation.launching("osqueryd", NEW)
    assert path.stat().st_mode & 0o777 == 0o600
    restarted = ChildProbation(path, queue, 60.0)  # orbit restarted while the new version was on probation
    restarted.launching("osqueryd", NEW)
    restarted.observe("osqueryd", status(ChildState.BACKING_OFF, None, BreakerState.OPEN, 5, 2))
    restarted.observe("osqueryd", status(uptime=61.0))
    sent = [item.to_json() for item in queue.pending(10)]
    assert [(o["version"], o["outcome"], o["previous_version"], o["channel"]) for o in sent] == [
        ("5.14.1", "confirmed", None, "stable"),
        ("5.15.0", "crash_loop", "5.14.1", "5.15.0"),
        ("5.15.0", "confirmed", "5.14.1", "5.15.0"),
    ]
    assert restarted.state("osqueryd").confirmed == NEW


def test_an_unknown_version_is_never_judged(tmp_path: Path) -> None:
    queue = OutcomeQueue(tmp_path / "q.json")
    probation = ChildProbation(tmp_path / "v.json", queue, 1.0)
    probation.launching("desktop", None)
    probation.observe("desktop", status(uptime=100.0))
    assert len(queue) == 0


def test_a_damaged_state_file_starts_afresh(tmp_path: Path) -> None:
    path = tmp_path / "v.json"
    path.write_text(json.dumps({"osqueryd": {"confirmed": {"digest": 5}, "probation": "x"}, "desktop": []}))
    probation = ChildProbation(path, OutcomeQueue(tmp_path / "q.json"), 1.0)
    assert probation.state("osqueryd") == TargetVersions()


def test_going_back_after_a_reported_crash_loop_is_a_rollback(tmp_path: Path) -> None:
    queue = OutcomeQueue(tmp_path / "q.json")
    probation = ChildProbation(tmp_path / "v.json", queue, 60.0)
    probation.launching("osqueryd", OLD)
    probation.observe("osqueryd", status(uptime=61.0))
    probation.launching("osqueryd", NEW)
    probation.observe("osqueryd", status(ChildState.BACKING_OFF, None, BreakerState.OPEN, 5, 1))
    probation.launching("osqueryd", OLD)  # the server pinned the previous version again
    last = queue.pending(10)[-1]
    assert (last.outcome.value, last.version, last.previous_version) == ("rolled_back", "5.15.0", "5.14.1")
    assert last.reason == "back on 5.14.1 after the crash loop (the server pinned it again)"
    probation.launching("osqueryd", OLD)
    assert len(queue) == 3  # confirmed, crash_loop, rolled_back: once
