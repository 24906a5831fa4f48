"""Trial-boot bookkeeping: the marker, the start-up decision, the quarantine list and the exec environment."""

from __future__ import annotations

import dataclasses
import json
import stat
from pathlib import Path

import pytest

from orbit.self_update.trial_boot import (
    MAX_QUARANTINE_ENTRIES,
    TRIAL_ENV,
    Quarantine,
    QuarantineEntry,
    StartKind,
    TrialMarker,
    classify_start,
    clear_marker,
    read_marker,
    restart_env,
    write_marker,
)

MARKER = TrialMarker(
    digest_id="0123456789abcdef0123456789abcdef",
    digest="0123456789abcdef0123456789abcdef" + "f" * 96,
    version="1.41.0",
    previous_version="1.40.0",
    candidate="/opt/orbit/bin/orbit/linux/stable/.versions/0123456789abcdef0123456789abcdef/orbit",
    target_path="orbit/linux/stable/orbit",
    started_at=1_700_000_000.0,
    deadline=300.0,
)


def test_marker_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "state" / "trial-boot.json"  # the state directory is created on demand
    write_marker(path, MARKER)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_marker(path) == MARKER
    clear_marker(path)
    assert read_marker(path) is None and not path.exists()
    clear_marker(path)  # clearing twice is fine


@pytest.mark.parametrize(
    "content",
    [
        "",
        "{half",
        "[]",
        '"text"',
        json.dumps({"digest_id": "x"}),  # keys missing
        MARKER.to_json()[:-20],  # cut short by a crash of an older writer
    ],
)
def test_an_unreadable_marker_is_removed(tmp_path: Path, content: str) -> None:
    path = tmp_path / "trial-boot.json"
    path.write_text(content)
    assert read_marker(path) is None
    assert not path.exists()  # it would otherwise be misread at every start


def test_a_marker_with_extra_fields_is_still_read(tmp_path: Path) -> None:
    path = tmp_path / "trial-boot.json"
    path.write_text(json.dumps({**json.loads(MARKER.to_json()), "written_by": "a newer orbit"}))
    assert read_marker(path) == MARKER


def test_classify_start() -> None:
    assert classify_start(None, {}) is StartKind.NORMAL
    assert classify_start(None, {TRIAL_ENV: MARKER.digest_id}) is StartKind.NORMAL
    assert classify_start(MARKER, {TRIAL_ENV: MARKER.digest_id}) is StartKind.CANDIDATE
    assert classify_start(MARKER, {TRIAL_ENV: "another-digest"}) is StartKind.FAILED_TRIAL
    assert classify_start(MARKER, {}) is StartKind.FAILED_TRIAL  # the service manager restarted the old orbit


def test_a_trial_stopped_by_a_signal_is_tried_again_not_quarantined(tmp_path: Path) -> None:
    interrupted = dataclasses.replace(MARKER, interrupted=True)
    assert classify_start(interrupted, {}) is StartKind.INTERRUPTED_TRIAL
    assert classify_start(interrupted, {TRIAL_ENV: MARKER.digest_id}) is StartKind.CANDIDATE
    path = tmp_path / "trial-boot.json"
    write_marker(path, interrupted)
    assert read_marker(path) == interrupted
    # a marker written before the field existed reads as not interrupted
    old = {k: v for k, v in json.loads(MARKER.to_json()).items() if k != "interrupted"}
    path.write_text(json.dumps(old))
    assert read_marker(path) == MARKER


def test_quarantine_add_and_contains(tmp_path: Path) -> None:
    quarantine = Quarantine(tmp_path / "state" / "quarantined-updates.json")
    assert not quarantine.contains("aa") and quarantine.entries() == []
    quarantine.add("aa", "1.41.0", "crashed", now=10.0)
    quarantine.add("bb", None, "unhealthy", now=20.0)
    assert quarantine.contains("aa") and quarantine.contains("bb") and not quarantine.contains("a")
    assert stat.S_IMODE(quarantine.path.stat().st_mode) == 0o600
    quarantine.add("aa", "1.41.0", "crashed again", now=30.0)  # no duplicates: the newest reason wins
    assert Quarantine(quarantine.path).entries() == [
        QuarantineEntry("bb", None, "unhealthy", 20.0),
        QuarantineEntry("aa", "1.41.0", "crashed again", 30.0),
    ]


def test_quarantine_is_bounded_dropping_the_oldest(tmp_path: Path) -> None:
    quarantine = Quarantine(tmp_path / "quarantined-updates.json")
    for number in range(MAX_QUARANTINE_ENTRIES + 5):
        quarantine.add(f"digest-{number}", None, "failed", now=float(number))
    entries = quarantine.entries()
    assert len(entries) == MAX_QUARANTINE_ENTRIES
    assert not quarantine.contains("digest-4") and quarantine.contains("digest-5")
    assert entries[-1].digest == f"digest-{MAX_QUARANTINE_ENTRIES + 4}"


@pytest.mark.parametrize("content", ["{broken", '{"digest": "aa"}', "\xff"])
def test_a_corrupt_quarantine_file_is_empty_and_can_be_rewritten(tmp_path: Path, content: str) -> None:
    quarantine = Quarantine(tmp_path / "quarantined-updates.json")
    quarantine.path.write_text(content, encoding="latin-1")
    assert quarantine.entries() == [] and not quarantine.contains("aa")
    quarantine.add("aa", "1", "failed", now=1.0)
    assert quarantine.entries() == [QuarantineEntry("aa", "1", "failed", 1.0)]


def test_damaged_quarantine_entries_are_skipped(tmp_path: Path) -> None:
    quarantine = Quarantine(tmp_path / "quarantined-updates.json")
    quarantine.path.write_text(
        json.dumps(
            [
                {"digest": "good", "version": "1", "reason": "r", "at": 1},
                {"digest": "no-reason", "at": 1},
                {"digest": "bad-time", "reason": "r", "at": "yesterday"},
                "just a string",
                7,
            ]
        )
    )
    assert [entry.digest for entry in quarantine.entries()] == ["good"]


def test_restart_env_sets_or_removes_the_trial_variable() -> None:
    env = {"PATH": "/usr/bin", TRIAL_ENV: "old"}
    assert restart_env(env, "new-digest") == {"PATH": "/usr/bin", TRIAL_ENV: "new-digest"}
    assert restart_env(env, None) == {"PATH": "/usr/bin"}
    assert env == {"PATH": "/usr/bin", TRIAL_ENV: "old"}  # the caller's mapping is not changed
