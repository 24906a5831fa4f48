"""A simulated host's orbit following pinned update channels (issue 18, ``osqueryd-sim load --with-orbit``)."""

from __future__ import annotations

import pytest

from osquery_sim.agent_updates import FailureRule, HostUpdates, UpdateBehaviour, parse_failure_rule, summarize

BASELINE = {"orbit": "1.0.0", "osqueryd": "5.14.1", "desktop": "1.0.0"}


def host(key: str = "h1", *rules: FailureRule) -> HostUpdates:
    return HostUpdates(key, UpdateBehaviour(BASELINE, rules, stable_period=10.0, failure_after=3.0, seed="s"))


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ("1.4.0=0.2", FailureRule("1.4.0", 0.2)),
        ("osqueryd:5.15.0=1", FailureRule("5.15.0", 1.0, "osqueryd")),
        (" orbit:1.1.0-rc.1=0 ", FailureRule("1.1.0-rc.1", 0.0, "orbit")),
    ],
)
def test_failure_rules_parse(text: str, rule: FailureRule) -> None:
    assert parse_failure_rule(text) == rule


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1.4.0", "is not"),
        ("1.4.0=1.5", "between 0 and 1"),
        ("kernel:1.0=0.1", "must be one of"),
        ("1.4.0=abc", "is not"),
        ("1.4.0=0..1", "is not a number"),
    ],
)
def test_bad_failure_rules_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_failure_rule(text)


def test_a_pinned_version_runs_at_once_and_is_confirmed_after_the_stable_period() -> None:
    updates = host()
    assert updates.on_channels({"orbit": "stable", "osqueryd": "5.15.0", "desktop": ""}, now=100.0, wall=0.0)
    assert updates.running == {"orbit": "1.0.0", "osqueryd": "5.15.0", "desktop": "1.0.0"}
    assert updates.next_due() == 110.0
    assert not updates.tick(109.0, 1e9) and not updates.outcomes
    updates.tick(110.0, 1764928800.0)
    [outcome] = updates.outcomes
    assert {k: outcome[k] for k in ("target", "version", "previous_version", "channel", "outcome", "reason", "at")} == {
        "target": "osqueryd",
        "version": "5.15.0",
        "previous_version": "5.14.1",
        "channel": "5.15.0",
        "outcome": "confirmed",
        "reason": None,
        "at": "2025-12-05T10:00:00Z",
    }
    assert not updates.on_channels({"osqueryd": "5.15.0"}, now=200.0, wall=0.0)  # already there: nothing new


def test_a_failing_host_reports_and_goes_back_and_does_not_try_again() -> None:
    updates = host("h1", FailureRule("1.1.0", 1.0, "orbit"))
    updates.on_channels({"orbit": "1.1.0"}, now=0.0, wall=0.0)
    assert updates.running["orbit"] == "1.1.0"
    assert updates.tick(3.0, 0.0)  # back to 1.0.0
    assert updates.running["orbit"] == "1.0.0"
    assert [(o["outcome"], o["version"], o["previous_version"]) for o in updates.outcomes] == [
        ("rolled_back", "1.1.0", "1.0.0")
    ]
    assert not updates.on_channels({"orbit": "1.1.0"}, now=10.0, wall=0.0)  # still pinned: quarantined
    assert updates.ever_ran["orbit"] == {"1.0.0", "1.1.0"}


def test_osqueryd_crash_loops_until_the_server_pins_the_previous_version() -> None:
    updates = host("h1", FailureRule("5.15.0", 1.0))
    updates.on_channels({"osqueryd": "5.15.0"}, now=0.0, wall=0.0)
    updates.tick(5.0, 0.0)
    assert updates.outcomes[0]["outcome"] == "crash_loop" and updates.running["osqueryd"] == "5.15.0"
    assert updates.next_due() is None
    updates.tick(500.0, 0.0)
    assert len(updates.outcomes) == 1  # reported once
    assert updates.on_channels({"osqueryd": "stable"}, now=600.0, wall=0.0)  # a halted rollout pins it back
    assert updates.running["osqueryd"] == "5.14.1"
    assert [(o["outcome"], o["version"], o["previous_version"]) for o in updates.outcomes] == [
        ("crash_loop", "5.15.0", "5.14.1"),
        ("rolled_back", "5.15.0", "5.14.1"),
    ]
    assert not updates.on_channels({"osqueryd": "5.15.0"}, now=700.0, wall=0.0)  # never tried again


def test_a_repin_during_the_trial_abandons_it_without_an_outcome() -> None:
    updates = host()
    updates.on_channels({"osqueryd": "5.15.0"}, now=0.0, wall=0.0)
    assert updates.on_channels({"osqueryd": "stable"}, now=1.0, wall=0.0)  # the rollout halted: back to the baseline
    assert updates.running["osqueryd"] == "5.14.1" and not updates.trials
    updates.tick(100.0, 0.0)
    assert not updates.outcomes


def test_null_channels_change_nothing() -> None:
    updates = host()
    assert not updates.on_channels(None, now=0.0, wall=0.0)
    assert updates.running == BASELINE


def test_the_failing_share_is_deterministic_and_near_the_fraction() -> None:
    behaviour = UpdateBehaviour(BASELINE, (FailureRule("2.0.0", 0.2),), seed="bench")
    chosen = [behaviour.fails(f"host-{i}", "orbit", "2.0.0") for i in range(5000)]
    assert chosen == [behaviour.fails(f"host-{i}", "orbit", "2.0.0") for i in range(5000)]
    assert 900 < sum(chosen) < 1100
    assert not any(behaviour.fails(f"host-{i}", "orbit", "2.0.1") for i in range(100))


def test_the_summary_counts_hosts_per_version() -> None:
    good, bad = host("a"), host("b", FailureRule("5.15.0", 1.0))
    for updates in (good, bad):
        updates.on_channels({"osqueryd": "5.15.0"}, now=0.0, wall=0.0)
        updates.tick(20.0, 0.0)
    summary = summarize([good, bad])
    versions = summary["versions"]
    assert isinstance(versions, dict)
    assert versions["osqueryd"]["5.15.0"] == {"ever_ran": 2, "running": 2, "failed": 1}  # one crash-looping on it
    assert versions["osqueryd"]["5.14.1"] == {"ever_ran": 2, "running": 0, "failed": 0}
    assert summary["outcomes_unsent"] == 2


def test_the_queue_keeps_the_newest_200() -> None:
    updates = host()
    for index in range(205):
        updates.on_channels({"desktop": f"1.{index + 1}.0"}, now=float(index * 100), wall=0.0)
        updates.tick(float(index * 100 + 50), 0.0)
    assert len(updates.outcomes) == 200 and updates.dropped == 5
    assert updates.outcomes[-1]["version"] == "1.205.0"
