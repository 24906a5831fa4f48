"""Rollout definitions, TUF catalogs and outcome reports as the stub parses them: defaults, and every bad input
refused with a clear message (docs/adr/0017)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from server_stub.declarative_config import ConfigFileError, parse_config
from server_stub.errors import ApiError
from server_stub.rfc3339 import parse_rfc3339
from server_stub.rollout_model import DEFAULT_WAVES, HaltRules, Outcome, Target
from server_stub.rollout_spec import InvalidRollout, parse_request, parse_team_ids, parse_team_names
from server_stub.rollouts_cli import parse_duration, parse_waves, render_list, render_status
from server_stub.tuf_catalog import TufCatalogError, catalog_from_paths, read_catalog
from server_stub.update_outcomes import MAX_REASON_LENGTH, parse_outcomes

API = frozenset({"team_ids"})


def test_defaults() -> None:
    request = parse_request({"target": "orbit", "version": "1.4.0"}, API)
    assert request.target is Target.ORBIT and request.version == "1.4.0"
    assert request.from_version is None and request.name is None
    assert request.waves == DEFAULT_WAVES and request.soak_seconds == 3600 and request.rules == HaltRules()


def test_a_full_definition() -> None:
    request = parse_request(
        {
            "name": " canary ",
            "target": "osqueryd",
            "version": "5.12.1",
            "from_version": "5.11.0",
            "waves": [0.5, 5, 100],
            "soak_seconds": 0,
            "halt_rules": {"max_failed_percent": 2.5, "min_healthy_percent": 95},
        },
        API,
    )
    assert request.name == "canary" and request.waves == (0.5, 5.0, 100.0) and request.soak_seconds == 0
    assert request.rules == HaltRules(2.5, 95.0)


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"target": "orbitd", "version": "1.4.0"}, 422, "target must be one of"),
        ({"target": 3, "version": "1.4.0"}, 400, "target must be a string"),
        ({"target": "orbit"}, 422, "version is required"),
        ({"target": "orbit", "version": "stable"}, 422, "exact version"),
        ({"target": "orbit", "version": "1.4.0/../../x"}, 422, "exact version"),
        ({"target": "orbit", "version": "1." + "1" * 80 + ".0"}, 422, "exact version"),
        ({"target": "orbit", "version": "1.4.0", "from_version": "1.4.0"}, 422, "must differ"),
        ({"target": "orbit", "version": "1.4.0", "waves": [10, 1, 100]}, 422, "must increase"),
        ({"target": "orbit", "version": "1.4.0", "waves": [1, 10, 50]}, 422, "end at 100"),
        ({"target": "orbit", "version": "1.4.0", "waves": [0, 100]}, 422, "above 0"),
        ({"target": "orbit", "version": "1.4.0", "waves": [1, 150]}, 422, "at most 100"),
        ({"target": "orbit", "version": "1.4.0", "waves": []}, 422, "1 to 20"),
        ({"target": "orbit", "version": "1.4.0", "waves": list(range(1, 101))}, 422, "1 to 20"),
        ({"target": "orbit", "version": "1.4.0", "waves": "1,10,100"}, 400, "list"),
        ({"target": "orbit", "version": "1.4.0", "waves": [1, None, 100]}, 400, "number"),
        ({"target": "orbit", "version": "1.4.0", "waves": [1, True, 100]}, 400, "number"),
        ({"target": "orbit", "version": "1.4.0", "waves": [1, 10**400, 100]}, 422, "finite"),
        ({"target": "orbit", "version": "1.4.0", "soak_seconds": -1}, 422, "soak_seconds"),
        ({"target": "orbit", "version": "1.4.0", "soak_seconds": 1.5}, 400, "integer"),
        ({"target": "orbit", "version": "1.4.0", "soak_seconds": 10**30}, 422, "soak_seconds"),
        ({"target": "orbit", "version": "1.4.0", "halt_rules": []}, 400, "object"),
        ({"target": "orbit", "version": "1.4.0", "halt_rules": {"max_failed": 5}}, 422, "unknown key"),
        ({"target": "orbit", "version": "1.4.0", "halt_rules": {"max_failed_percent": 101}}, 422, "0 to 100"),
        ({"target": "orbit", "version": "1.4.0", "halt_rules": {"min_healthy_percent": "80"}}, 400, "number"),
        ({"target": "orbit", "version": "1.4.0", "soak_second": 60}, 422, "unknown key(s) soak_second"),
        ({"target": "orbit", "version": "1.4.0", "name": "a\nb"}, 422, "printable"),
        ({"target": "orbit", "version": "1.4.0", "name": "n" * 101}, 422, "at most 100"),
    ],
)
def test_bad_definitions(body: dict[str, object], status: int, words: str) -> None:
    with pytest.raises(InvalidRollout) as caught:
        parse_request(body, API)
    assert caught.value.status == status
    assert words in str(caught.value)


def test_populations() -> None:
    assert parse_team_ids(None) is None
    assert parse_team_ids([3, 1, 3]) == (1, 3)
    for bad in ([], [0], [-1], [2**63], "1", [1.0], [True]):
        with pytest.raises(InvalidRollout):
            parse_team_ids(bad)
    assert parse_team_names(None, "") is None
    assert parse_team_names([" A ", "B", "A"], "") == ("A", "B")
    for bad_names in ([], [""], "A", [1]):
        with pytest.raises(InvalidRollout):
            parse_team_names(bad_names, "")


# --- TUF catalog -----------------------------------------------------------------------------------------------


def test_catalog_from_target_paths() -> None:
    catalog = catalog_from_paths(
        {
            "orbit/linux/1.3.0/orbit": {},
            "orbit/linux/stable/orbit": {},
            "orbit/windows/1.3.0/orbit.exe": {},
            "osqueryd/linux/5.12.1/osqueryd": {},
            "extensions/x.ext": {},  # not Fleet's 4-part layout: skipped
            "a//b/c": {},
        }
    )
    assert catalog.platforms("orbit", "1.3.0") == {"linux", "windows"}
    assert catalog.has("orbit", "stable") and not catalog.has("orbit", "1.4.0")
    assert catalog.channels_of("osqueryd") == {"5.12.1"}
    assert not catalog.has("desktop", "1.3.0")
    assert catalog_from_paths(["not", "a", "mapping"]).channels == {}


def _signed(path: Path, signed: dict[str, object]) -> None:
    path.write_text(json.dumps({"signatures": [], "signed": signed}))


def test_the_catalog_follows_timestamp_snapshot_targets(tmp_path: Path) -> None:
    _signed(tmp_path / "timestamp.json", {"meta": {"snapshot.json": {"version": 3}}})
    _signed(tmp_path / "3.snapshot.json", {"meta": {"targets.json": {"version": 5}}})
    _signed(tmp_path / "5.targets.json", {"targets": {"orbit/linux/1.4.0/orbit": {}}})
    _signed(tmp_path / "targets.json", {"targets": {"orbit/linux/1.0.0/orbit": {}}})  # a stale convenience copy
    assert read_catalog(tmp_path).has("orbit", "1.4.0")
    assert not read_catalog(tmp_path).has("orbit", "1.0.0")


def test_the_catalog_of_a_plain_layout(tmp_path: Path) -> None:
    _signed(tmp_path / "timestamp.json", {"meta": {"snapshot.json": {"version": 3}}})
    _signed(tmp_path / "snapshot.json", {"meta": {"targets.json": {"version": 5}}})
    _signed(tmp_path / "targets.json", {"targets": {"desktop/linux/1.2.0/desktop.tar.gz": {}}})
    assert read_catalog(tmp_path).has("desktop", "1.2.0")


@pytest.mark.parametrize(
    ("files", "words"),
    [
        ({}, "no targets metadata"),
        ({"targets.json": b"{not json"}, "not JSON"),
        ({"targets.json": b"[1, 2]"}, "not TUF metadata"),
        ({"timestamp.json": b'{"signed": {"meta": {"snapshot.json": {"version": "3"}}}}'}, "no valid version"),
    ],
)
def test_unreadable_repositories(tmp_path: Path, files: dict[str, bytes], words: str) -> None:
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    with pytest.raises(TufCatalogError, match=words):
        read_catalog(tmp_path)


# --- outcome reports -------------------------------------------------------------------------------------------


def outcome(**changes: object) -> dict[str, object]:
    item: dict[str, object] = {
        "id": "5b0c9a4e-8f3e-4a57-9d3b-0c1f0a7e2b11",
        "target": "orbit",
        "version": "1.4.0",
        "previous_version": "1.3.0",
        "channel": "1.4.0",
        "outcome": "confirmed",
        "reason": None,
        "at": "2026-12-05T10:00:00Z",
    }
    item.update(changes)
    return item


def test_outcomes_parse() -> None:
    (report,) = parse_outcomes({"outcomes": [outcome(previous_version=None, reason="x" * 5000)]})
    assert report.outcome is Outcome.CONFIRMED and report.previous_version is None
    assert report.reason is not None and len(report.reason) == MAX_REASON_LENGTH  # cut, not refused


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({}, "'outcomes' must be a list"),
        ({"outcomes": {}}, "'outcomes' must be a list"),
        ({"outcomes": []}, "1 to 100"),
        ({"outcomes": [outcome()] * 101}, "1 to 100 outcomes (got 101)"),
        ({"outcomes": [1]}, "outcomes[0] must be an object"),
        ({"outcomes": [outcome(id="")]}, "outcomes[0].id"),
        ({"outcomes": [outcome(id=7)]}, "outcomes[0].id"),
        ({"outcomes": [outcome(id="x" * 129)]}, "longer than 128"),
        ({"outcomes": [outcome(), outcome(target="orbitd")]}, "outcomes[1].target must be one of"),
        ({"outcomes": [outcome(outcome="fine")]}, "outcome must be one of"),
        ({"outcomes": [outcome(outcome=None)]}, "outcome must be one of"),
        ({"outcomes": [outcome(version=None)]}, "version must be a non-empty string"),
        ({"outcomes": [outcome(version="1" * 65)]}, "longer than 64"),
        ({"outcomes": [outcome(previous_version=1)]}, "previous_version"),
        ({"outcomes": [outcome(channel=[])]}, "channel"),
        ({"outcomes": [outcome(reason=12)]}, "reason must be a string or null"),
        ({"outcomes": [outcome(at="yesterday")]}, "RFC 3339"),
        ({"outcomes": [outcome(at="2026-12-05T10:00:00")]}, "RFC 3339"),  # no offset
        ({"outcomes": [outcome(at="2026-12-05")]}, "RFC 3339"),
        ({"outcomes": [outcome(at=1_800_000_000)]}, "at must be"),
    ],
)
def test_bad_outcome_reports(body: dict[str, object], words: str) -> None:
    with pytest.raises(ApiError) as caught:
        parse_outcomes(body)
    assert caught.value.status == 400
    assert words in caught.value.reason


def test_rfc3339() -> None:
    parsed = parse_rfc3339("2026-12-05T11:00:00+01:00")
    assert parsed is not None and parsed.hour == 10
    assert parse_rfc3339("2026-12-05T10:00:00.123456Z") is not None
    for bad in ("", "2026-12-05", "10:00:00Z", "2026-13-05T10:00:00Z", "x" * 100):
        assert parse_rfc3339(bad) is None


# --- the configuration file and the CLI's own parsing ----------------------------------------------------------


def test_declared_rollouts_parse() -> None:
    declared = parse_config(
        {
            "teams": [{"name": "Canaries"}],
            "rollouts": [
                {
                    "name": "canary",
                    "target": "orbit",
                    "version": "1.4.0",
                    "from_version": "1.3.0",
                    "teams": ["Canaries"],
                    "waves": [50, 100],
                    "soak_seconds": 60,
                }
            ],
        }
    )
    (rollout,) = declared.rollouts
    assert rollout.team_names == ("Canaries",) and rollout.request.name == "canary"
    assert rollout.request.waves == (50.0, 100.0) and rollout.request.soak_seconds == 60
    assert parse_config({}).rollouts == ()


@pytest.mark.parametrize(
    ("table", "words"),
    [
        ({"target": "orbit", "version": "1.4.0"}, "rollouts[0].from_version is required"),
        ({"target": "orbit", "version": "1.4.0", "from_version": "1.3.0", "team_ids": [1]}, "unknown key(s) team_ids"),
        ({"target": "orbit", "version": "1.4.0", "from_version": "1.3.0", "teams": []}, "rollouts[0].teams"),
        ({"target": "orbit", "version": "latest", "from_version": "1.3.0"}, "rollouts[0].version must be an exact"),
    ],
)
def test_bad_declared_rollouts(table: dict[str, object], words: str) -> None:
    with pytest.raises(ConfigFileError) as caught:
        parse_config({"rollouts": [{"name": "r", **table}]})
    assert words in str(caught.value)
    with pytest.raises(ConfigFileError, match="declared twice"):
        parse_config({"rollouts": [{"name": "r"}, {"name": "r"}]})


def test_cli_durations_and_waves() -> None:
    assert [parse_duration(t) for t in ("3600", "90s", "15m", "1h30m", "2d", " 1H ")] == [
        3600,
        90,
        900,
        5400,
        172800,
        3600,
    ]
    for bad in ("", "1x", "h", "1.5h", "-5", "1h 30m", "٣"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_duration(bad)
    assert parse_waves("1, 10,50.5,100") == [1, 10, 50.5, 100]
    with pytest.raises(argparse.ArgumentTypeError):
        parse_waves("1,ten")


def test_cli_status_rendering_survives_odd_answers() -> None:
    assert render_status({})[0].startswith("rollout None")  # a server answering nonsense does not crash the CLI
    assert render_list([{}])[1].split() == ["None/None"]  # missing values are blank cells
