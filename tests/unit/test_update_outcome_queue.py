"""The durable queue of update outcomes (issue 18 protocol §3): wire form, persistence, cap, hostile files."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from orbit.outcome_queue import MAX_QUEUED, OutcomeKind, OutcomeQueue, UpdateOutcome, new_outcome


def outcome(version: str = "1.4.0", kind: OutcomeKind = OutcomeKind.CONFIRMED) -> UpdateOutcome:
    return new_outcome("osqueryd", version, "1.3.0", version, kind, None)


def test_the_wire_form_is_the_protocols() -> None:
    made = new_outcome(
        "orbit",
        "1.4.0",
        None,
        "1.4.0",
        OutcomeKind.ROLLED_BACK,
        "x" * 5000,
        now=lambda: datetime(2026, 12, 5, 10, 0, 0, 123456, tzinfo=UTC),
    )
    wire = made.to_json()
    assert set(wire) == {"id", "target", "version", "previous_version", "channel", "outcome", "reason", "at"}
    assert uuid.UUID(str(wire["id"])).version == 4
    assert wire["outcome"] == "rolled_back" and wire["previous_version"] is None
    assert wire["at"] == "2026-12-05T10:00:00Z"
    assert len(str(wire["reason"])) == 1024
    json.dumps(wire)  # plain JSON types only


def test_unknown_version_and_bad_target() -> None:
    assert new_outcome("desktop", None, None, "stable", OutcomeKind.REPAIRED).version == "unknown"
    with pytest.raises(ValueError, match="not an update target"):
        new_outcome("osquery", "1", None, "stable", OutcomeKind.CONFIRMED)


def test_entries_survive_a_restart_in_order_and_the_file_is_private(tmp_path: Path) -> None:
    path = tmp_path / "state" / "update-outcomes.json"
    queue = OutcomeQueue(path)
    first, second = outcome("1.4.0"), outcome("1.5.0", OutcomeKind.CRASH_LOOP)
    queue.add(first)
    queue.add(second)
    assert path.stat().st_mode & 0o777 == 0o600
    again = OutcomeQueue(path)
    assert again.pending(10) == [first, second]
    again.remove([first.id])
    assert OutcomeQueue(path).pending(10) == [second]
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temporaries left


def test_the_queue_keeps_the_newest_200(tmp_path: Path) -> None:
    queue = OutcomeQueue(tmp_path / "q.json")
    made = [outcome(f"1.{i}.0") for i in range(MAX_QUEUED + 5)]
    for item in made:
        queue.add(item)
    assert len(queue) == MAX_QUEUED
    assert queue.pending(MAX_QUEUED) == made[5:]
    assert OutcomeQueue(tmp_path / "q.json").pending(1) == [made[5]]


@pytest.mark.parametrize(
    "content",
    [
        "not json",
        '{"an": "object"}',
        '[1, "two", null, {"id": "x"}]',
        '[{"id": "a", "target": "kernel", "version": "1", "channel": "c", "outcome": "confirmed", "at": "t"}]',
        '[{"id": "a", "target": "orbit", "version": "1", "channel": "c", "outcome": "exploded", "at": "t"}]',
        '[{"id": "a", "target": "orbit", "version": 1, "channel": "c", "outcome": "confirmed", "at": "t"}]',
        '[{"id": "a", "target": "orbit", "version": "1", "channel": "c", "outcome": "confirmed", "at": "t",'
        ' "reason": ["list"]}]',
    ],
)
def test_a_damaged_or_foreign_file_yields_only_valid_entries(tmp_path: Path, content: str) -> None:
    path = tmp_path / "q.json"
    path.write_text(content)
    queue = OutcomeQueue(path)
    assert queue.pending(10) == []
    queue.add(outcome())  # and the queue still works, replacing the bad file
    assert len(OutcomeQueue(path)) == 1


def test_valid_entries_are_kept_beside_invalid_ones(tmp_path: Path) -> None:
    good = outcome()
    path = tmp_path / "q.json"
    path.write_text(json.dumps([{"bad": True}, good.to_json()]))
    assert OutcomeQueue(path).pending(10) == [good]
