"""The pure rollout core: wave assignment, per-wave health, the decisions with an injected clock, admin transitions,
the pins a config answer carries (docs/adr/0017)."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import pytest

from server_stub.rollout_health import HostFacts, WaveCounts, count_waves, implied_version, totals
from server_stub.rollout_model import HaltRules, Outcome, Rollout, RolloutSpec, RolloutState, Target
from server_stub.rollout_pins import PinBook
from server_stub.rollout_rules import (
    Action,
    AdminAction,
    TransitionRefused,
    admin_transition,
    decide,
    next_state,
)
from server_stub.rollout_waves import wave_for_point, wave_of, wave_point

T0 = 1_800_000_000.0
WAVES = (1.0, 10.0, 50.0, 100.0)


def make_rollout(
    *,
    rollout_id: int = 7,
    state: RolloutState = RolloutState.RUNNING,
    current_wave: int = 0,
    waves: tuple[float, ...] = WAVES,
    soak: int = 600,
    rules: HaltRules | None = None,
    team_ids: tuple[int, ...] | None = None,
    target: Target = Target.ORBIT,
) -> Rollout:
    spec = RolloutSpec(
        name="r",
        target=target,
        version="1.4.0",
        from_version="1.3.0",
        team_ids=team_ids,
        waves=waves,
        soak_seconds=soak,
        rules=rules or HaltRules(max_failed_percent=5.0, min_healthy_percent=80.0),
    )
    return Rollout(
        id=rollout_id,
        spec=spec,
        state=state,
        current_wave=current_wave,
        wave_started_at=T0,
        halt_reason=None,
        created_at=T0,
        updated_at=T0,
        source="api",
        platforms=("linux",),
    )


def counts(*waves: tuple[int, int, int]) -> tuple[WaveCounts, ...]:
    """(targeted, healthy, rolled back) per wave."""
    return tuple(
        WaveCounts(wave=i, percent=WAVES[i], reached=True, targeted=t, healthy=h, rolled_back=f)
        for i, (t, h, f) in enumerate(waves)
    )


# --- wave assignment -------------------------------------------------------------------------------------------


def test_a_host_keeps_its_wave_whatever_else_happens() -> None:
    first = [wave_of(3, f"host-{i}", WAVES) for i in range(500)]
    again = [wave_of(3, f"host-{i}", WAVES) for i in reversed(range(500))]
    assert first == list(reversed(again))
    # the point does not depend on the wave list: growing a later wave never moves a host out of an earlier one
    for i in range(500):
        point = wave_point(3, f"host-{i}")
        assert 0.0 <= point < 100.0
        if wave_for_point(point, WAVES) == 0:
            assert wave_for_point(point, (1.0, 20.0, 100.0)) == 0


def test_waves_hold_their_share_of_a_large_population() -> None:
    population = 40_000
    sizes = Counter(wave_of(11, f"uuid-{i:06d}", WAVES) for i in range(population))
    expected = {0: 0.01, 1: 0.09, 2: 0.40, 3: 0.50}
    for wave, share in expected.items():
        mean = population * share
        spread = 4 * (population * share * (1 - share)) ** 0.5  # 4 standard deviations of a binomial
        assert abs(sizes[wave] - mean) < spread, (wave, sizes[wave], mean)


def test_each_rollout_draws_its_own_first_wave() -> None:
    ids = [f"uuid-{i}" for i in range(20_000)]
    first_a = {h for h in ids if wave_of(1, h, WAVES) == 0}
    first_b = {h for h in ids if wave_of(2, h, WAVES) == 0}
    assert 120 < len(first_a) < 280 and 120 < len(first_b) < 280
    assert len(first_a & first_b) < 15  # independent draws: about 1 % of 1 %


def test_wave_boundaries() -> None:
    assert wave_for_point(0.0, WAVES) == 0
    assert wave_for_point(0.999, WAVES) == 0
    assert wave_for_point(1.0, WAVES) == 1
    assert wave_for_point(99.99, WAVES) == 3
    assert wave_for_point(100.0, WAVES) == 3  # rounding at the very top stays in the last wave
    assert wave_for_point(42.0, (100.0,)) == 0


# --- decisions, clock injected ---------------------------------------------------------------------------------


def test_a_wave_advances_only_once_its_soak_has_passed() -> None:
    rollout = make_rollout(soak=600)
    healthy = counts((10, 10, 0), (50, 0, 0), (200, 0, 0), (300, 0, 0))
    assert decide(rollout, healthy, T0 + 599.9).action is Action.NONE
    decision = decide(rollout, healthy, T0 + 600)
    assert decision.action is Action.ADVANCE
    advanced = next_state(rollout, decision, T0 + 600)
    assert advanced.current_wave == 1 and advanced.wave_started_at == T0 + 600
    # the next wave soaks from when it began
    assert decide(advanced, healthy, T0 + 1199).action is Action.NONE


def test_a_good_release_walks_through_every_wave_and_completes() -> None:
    rollout = make_rollout(soak=60)
    all_healthy = counts((2, 2, 0), (9, 9, 0), (40, 39, 0), (49, 45, 0))
    now = T0
    seen = []
    while rollout.state is RolloutState.RUNNING:
        now += 60
        decision = decide(rollout, all_healthy, now)
        seen.append(decision.action)
        rollout = next_state(rollout, decision, now)
    assert seen == [Action.ADVANCE, Action.ADVANCE, Action.ADVANCE, Action.COMPLETE]
    assert rollout.state is RolloutState.COMPLETED and rollout.current_wave == 3


def test_failures_above_the_limit_halt_at_once_without_waiting_for_the_soak() -> None:
    rollout = make_rollout(soak=3600)
    bad = counts((40, 30, 3), (0, 0, 0), (0, 0, 0), (0, 0, 0))  # 7.5 % > 5 %
    decision = decide(rollout, bad, T0 + 1)
    assert decision.action is Action.HALT
    assert decision.reason is not None and "wave 1: 3 of 40 hosts (7.5 %)" in decision.reason
    halted = next_state(rollout, decision, T0 + 1)
    assert halted.state is RolloutState.HALTED and halted.halt_reason == decision.reason
    at_limit = counts((40, 30, 2), (0, 0, 0), (0, 0, 0), (0, 0, 0))  # exactly 5 %: not above
    assert decide(rollout, at_limit, T0 + 1).action is Action.NONE


def test_failures_in_an_earlier_wave_still_halt() -> None:
    rollout = make_rollout(current_wave=2)
    late = counts((10, 5, 4), (90, 90, 0), (400, 0, 0), (500, 0, 0))
    assert decide(rollout, late, T0 + 5).action is Action.HALT


def test_failures_in_waves_not_reached_are_not_the_rollouts_doing() -> None:
    rollout = make_rollout(current_wave=0)
    elsewhere = counts((10, 10, 0), (90, 0, 50), (400, 0, 0), (500, 0, 0))
    assert decide(rollout, elsewhere, T0 + 5).action is Action.NONE


def test_too_few_healthy_after_the_soak_halts() -> None:
    rollout = make_rollout(soak=600)
    slow = counts((10, 7, 0), (90, 0, 0), (400, 0, 0), (500, 0, 0))  # 70 % < 80 %
    assert decide(rollout, slow, T0 + 300).action is Action.NONE  # still soaking: no verdict yet
    decision = decide(rollout, slow, T0 + 600)
    assert decision.action is Action.HALT
    assert decision.reason is not None and "7 of 10 hosts (70.0 %) healthy" in decision.reason


def test_an_empty_wave_soaks_too_then_passes() -> None:
    rollout = make_rollout(soak=3600)
    empty_first = counts((0, 0, 0), (5, 0, 0), (20, 0, 0), (30, 0, 0))
    assert decide(rollout, empty_first, T0).action is Action.NONE  # hosts enrolling meanwhile would land in it
    assert decide(rollout, empty_first, T0 + 3600).action is Action.ADVANCE
    last = make_rollout(soak=3600, current_wave=3)
    assert decide(last, counts((0, 0, 0), (0, 0, 0), (0, 0, 0), (0, 0, 0)), T0 + 3600).action is Action.COMPLETE


def test_a_paused_rollout_does_not_advance_but_still_halts() -> None:
    paused = make_rollout(state=RolloutState.PAUSED)
    good = counts((10, 10, 0), (90, 0, 0), (400, 0, 0), (500, 0, 0))
    assert decide(paused, good, T0 + 10_000).action is Action.NONE
    bad = counts((10, 5, 5), (90, 0, 0), (400, 0, 0), (500, 0, 0))
    assert decide(paused, bad, T0 + 1).action is Action.HALT


@pytest.mark.parametrize("state", [RolloutState.HALTED, RolloutState.ABORTED, RolloutState.COMPLETED])
def test_settled_rollouts_decide_nothing(state: RolloutState) -> None:
    rollout = make_rollout(state=state)
    bad = counts((10, 0, 10), (90, 0, 0), (400, 0, 0), (500, 0, 0))
    assert decide(rollout, bad, T0 + 10_000).action is Action.NONE


def test_zero_limits() -> None:
    strict = make_rollout(rules=HaltRules(max_failed_percent=0.0, min_healthy_percent=100.0))
    assert decide(strict, counts((100, 100, 1), (0, 0, 0), (0, 0, 0), (0, 0, 0)), T0).action is Action.HALT
    lax = make_rollout(rules=HaltRules(max_failed_percent=100.0, min_healthy_percent=0.0))
    assert decide(lax, counts((10, 0, 10), (0, 0, 0), (0, 0, 0), (0, 0, 0)), T0 + 600).action is Action.ADVANCE


# --- admin transitions -----------------------------------------------------------------------------------------


def test_pause_resume_abort() -> None:
    rollout = make_rollout()
    paused = admin_transition(rollout, AdminAction.PAUSE, T0 + 10)
    assert paused.state is RolloutState.PAUSED
    assert admin_transition(paused, AdminAction.PAUSE, T0 + 11) is paused  # repeating is harmless
    resumed = admin_transition(paused, AdminAction.RESUME, T0 + 500)
    assert resumed.state is RolloutState.RUNNING and resumed.wave_started_at == T0 + 500  # the wave soaks afresh
    aborted = admin_transition(resumed, AdminAction.ABORT, T0 + 600)
    assert aborted.state is RolloutState.ABORTED
    assert admin_transition(aborted, AdminAction.ABORT, T0 + 601) is aborted
    with pytest.raises(TransitionRefused):
        admin_transition(aborted, AdminAction.RESUME, T0 + 602)
    with pytest.raises(TransitionRefused):
        admin_transition(aborted, AdminAction.PAUSE, T0 + 602)


def test_a_halted_rollout_can_be_resumed_or_aborted_a_completed_one_neither() -> None:
    halted = replace(make_rollout(), state=RolloutState.HALTED, halt_reason="too many failures")
    resumed = admin_transition(halted, AdminAction.RESUME, T0 + 100)
    assert resumed.state is RolloutState.RUNNING and resumed.halt_reason is None
    assert admin_transition(halted, AdminAction.ABORT, T0 + 100).state is RolloutState.ABORTED
    done = make_rollout(state=RolloutState.COMPLETED)
    for action in AdminAction:
        with pytest.raises(TransitionRefused):
            admin_transition(done, action, T0)


# --- pins ------------------------------------------------------------------------------------------------------


def _identity_in_wave(rollout_id: int, wave: int) -> str:
    return next(f"h{i}" for i in range(100_000) if wave_of(rollout_id, f"h{i}", WAVES) == wave)


def test_channel_per_wave_and_state() -> None:
    rollout = make_rollout(current_wave=1)
    assert rollout.channel_for_wave(0) == "1.4.0"
    assert rollout.channel_for_wave(1) == "1.4.0"
    assert rollout.channel_for_wave(2) == "1.3.0"  # not reached yet: held on from_version
    for state in (RolloutState.HALTED, RolloutState.ABORTED):
        back = replace(rollout, state=state)
        assert {back.channel_for_wave(w) for w in range(4)} == {"1.3.0"}
    done = replace(rollout, state=RolloutState.COMPLETED, current_wave=3)
    assert {done.channel_for_wave(w) for w in range(4)} == {"1.4.0"}


def test_pin_book_newest_covering_rollout_decides_each_target() -> None:
    old_all = make_rollout(rollout_id=1, state=RolloutState.COMPLETED, current_wave=3)
    new_team = make_rollout(rollout_id=5, team_ids=(2,))
    osqueryd = make_rollout(rollout_id=3, target=Target.OSQUERYD, state=RolloutState.ABORTED)
    book = PinBook.of([old_all, new_team, osqueryd])
    first_wave = _identity_in_wave(5, 0)
    later = _identity_in_wave(5, 3)
    assert book.pins_for(first_wave, 2) == {"orbit": "1.4.0", "osqueryd": "1.3.0"}
    assert book.pins_for(later, 2)["orbit"] == "1.3.0"  # team 2 follows the newer rollout: not reached
    assert book.pins_for(later, 9)["orbit"] == "1.4.0"  # another team: the completed rollout for everyone
    assert book.pins_for(later, None)["orbit"] == "1.4.0"
    assert "desktop" not in book.pins_for(later, None)  # untouched targets stay with the agent options
    assert PinBook.of([]).empty and PinBook.of([]).pins_for("x", None) == {}


def test_team_population_leaves_other_hosts_alone() -> None:
    rollout = make_rollout(team_ids=(4,))
    book = PinBook.of([rollout])
    assert book.pins_for("anyone", None) == {}
    assert book.pins_for("anyone", 3) == {}
    assert set(book.pins_for("anyone", 4)) == {"orbit"}


# --- health counts ---------------------------------------------------------------------------------------------


def _facts(identity: str, **kw: object) -> HostFacts:
    values: dict[str, object] = {
        "host_id": 1,
        "identity": identity,
        "team_id": None,
        "online": True,
        "running_version": "1.3.0",
        "reported": False,
        "health": None,
    }
    values.update(kw)
    return HostFacts(**values)  # type: ignore[arg-type]


def test_counting_follows_the_definitions() -> None:
    rollout = make_rollout(waves=(100.0,))
    hosts = [
        _facts("a", reported=True, health=Outcome.CONFIRMED, running_version="1.4.0"),
        _facts("b", reported=True, health=Outcome.CONFIRMED, running_version="1.4.0", online=False),
        _facts("c", reported=True, health=Outcome.ROLLED_BACK, running_version="1.3.0"),
        _facts("d", reported=True, health=Outcome.CRASH_LOOP, running_version="1.4.0"),
        _facts("e", reported=True, health=Outcome.INSTALL_FAILED),
        _facts("f", reported=True, health=None, running_version="1.4.0"),  # only "repaired" so far
        _facts("g", running_version="1.4.0"),  # says it runs it (details), no outcome yet
        _facts("h"),
        _facts("i", team_id=5),
    ]
    (wave,) = count_waves(rollout, hosts)
    assert wave.targeted == 9
    assert wave.updated == 7  # all but h and i
    assert wave.healthy == 1  # b is offline
    assert wave.rolled_back == 3
    assert wave.offline == 1
    assert wave.on_from_version == 4  # c, e, h, i
    assert totals([wave, wave])["targeted"] == 18


def test_hosts_of_waves_not_reached_count_as_updated_only_by_what_they_run() -> None:
    rollout = make_rollout(current_wave=0)
    late = _identity_in_wave(7, 2)
    waves = count_waves(rollout, [_facts(late, reported=True)])
    assert waves[2].targeted == 1 and waves[2].updated == 0 and not waves[2].reached


def test_implied_versions() -> None:
    assert implied_version(Outcome.CONFIRMED, "1.4.0", "1.3.0") == "1.4.0"
    assert implied_version(Outcome.CRASH_LOOP, "1.4.0", "1.3.0") == "1.4.0"
    assert implied_version(Outcome.REPAIRED, "1.4.0", None) == "1.4.0"
    assert implied_version(Outcome.ROLLED_BACK, "1.4.0", "1.3.0") == "1.3.0"
    assert implied_version(Outcome.INSTALL_FAILED, "1.4.0", None) is None
