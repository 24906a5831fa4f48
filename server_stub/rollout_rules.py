"""When a rollout advances, halts or completes: a pure decision from its state, its wave counts and the time.

Rules (docs/adr/0017):

1. Halt rules apply while the rollout runs or is paused. *Failures*: more than ``max_failed_percent`` of any
   reached wave reported ``rolled_back`` / ``crash_loop`` / ``install_failed`` for the version → halt at once,
   without waiting for the soak (a bad release should reach as few hosts as possible).
2. A paused rollout does not advance.
3. A wave advances when its soak time has passed since it began (or since the rollout was resumed) and, then,
   at least ``min_healthy_percent`` of its hosts are healthy on the version; fewer → halt. A wave with no host
   soaks too (hosts enrolling meanwhile land in it and are watched), then passes: otherwise a rollout created
   before its hosts enrolled (a configuration file read at start, a new team) would complete at once and send
   every later host straight to the new version.
4. Passing the last wave completes the rollout.

The shell applies a decision and asks again until nothing changes (a soak of 0 s lets several waves pass at once).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from enum import Enum

from server_stub.rollout_health import WaveCounts
from server_stub.rollout_model import ACTIVE_STATES, Rollout, RolloutState


class Action(Enum):
    NONE = "none"
    ADVANCE = "advance"
    HALT = "halt"
    COMPLETE = "complete"


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str | None = None  # why it halted (shown to admins), or what happened

    @property
    def changes_something(self) -> bool:
        return self.action is not Action.NONE


NOTHING = Decision(Action.NONE)


def _percent(part: int, whole: int) -> str:
    return f"{100.0 * part / whole:.1f} %"


def _limit(value: float) -> str:
    return f"{value:g} %"


def _failure_halt(rollout: Rollout, counts: Sequence[WaveCounts]) -> Decision | None:
    limit = rollout.spec.rules.max_failed_percent
    target, version = rollout.spec.target, rollout.spec.version
    for wave in counts[: rollout.current_wave + 1]:
        if wave.targeted and wave.rolled_back * 100.0 > limit * wave.targeted:
            return Decision(
                Action.HALT,
                f"wave {wave.wave + 1}: {wave.rolled_back} of {wave.targeted} hosts "
                f"({_percent(wave.rolled_back, wave.targeted)}) reported rolled_back, crash_loop or install_failed "
                f"for {target} {version}, above the {_limit(limit)} limit",
            )
    return None


def decide(rollout: Rollout, counts: Sequence[WaveCounts], now: float) -> Decision:
    if rollout.state not in ACTIVE_STATES:
        return NOTHING
    failure = _failure_halt(rollout, counts)
    if failure is not None:
        return failure
    if rollout.state is RolloutState.PAUSED:
        return NOTHING
    current = counts[rollout.current_wave]
    if now - rollout.wave_started_at < rollout.spec.soak_seconds:
        return NOTHING
    minimum = rollout.spec.rules.min_healthy_percent
    if current.targeted and current.healthy * 100.0 < minimum * current.targeted:
        return Decision(
            Action.HALT,
            f"wave {current.wave + 1}: {current.healthy} of {current.targeted} hosts "
            f"({_percent(current.healthy, current.targeted)}) healthy on {rollout.spec.target} "
            f"{rollout.spec.version} after the {rollout.spec.soak_seconds} s soak, below the {_limit(minimum)} "
            "minimum",
        )
    if rollout.current_wave + 1 >= rollout.wave_count:
        return Decision(Action.COMPLETE, f"wave {current.wave + 1} of {rollout.wave_count} passed")
    return Decision(Action.ADVANCE, f"wave {current.wave + 1} passed; wave {current.wave + 2} begins")


def next_state(rollout: Rollout, decision: Decision, now: float) -> Rollout:
    """The rollout after ``decision`` (pure; the shell stores it)."""
    if decision.action is Action.ADVANCE:
        return replace(rollout, current_wave=rollout.current_wave + 1, wave_started_at=now, updated_at=now)
    if decision.action is Action.COMPLETE:
        return replace(rollout, state=RolloutState.COMPLETED, updated_at=now)
    if decision.action is Action.HALT:
        return replace(rollout, state=RolloutState.HALTED, halt_reason=decision.reason, updated_at=now)
    return rollout


class TransitionRefused(ValueError):
    """An admin action that the rollout's state does not allow (a 409)."""


class AdminAction(Enum):
    PAUSE = "pause"
    RESUME = "resume"
    ABORT = "abort"


def admin_transition(rollout: Rollout, action: AdminAction, now: float) -> Rollout:
    """Pause (running → paused), resume (paused or halted → running, the current wave soaks afresh) or abort
    (running, paused or halted → aborted: every host back on from_version, for good)."""
    state = rollout.state
    if action is AdminAction.PAUSE:
        if state is RolloutState.PAUSED:
            return rollout
        if state is not RolloutState.RUNNING:
            raise TransitionRefused(f"rollout {rollout.id} is {state}; only a running rollout can be paused")
        return replace(rollout, state=RolloutState.PAUSED, updated_at=now)
    if action is AdminAction.RESUME:
        if state is RolloutState.RUNNING:
            return rollout
        if state not in (RolloutState.PAUSED, RolloutState.HALTED):
            raise TransitionRefused(f"rollout {rollout.id} is {state}; only a paused or halted rollout can be resumed")
        return replace(rollout, state=RolloutState.RUNNING, wave_started_at=now, halt_reason=None, updated_at=now)
    if state is RolloutState.ABORTED:
        return rollout
    if state is RolloutState.COMPLETED:
        raise TransitionRefused(
            f"rollout {rollout.id} is completed; start a new rollout to go back to {rollout.spec.from_version}"
        )
    return replace(rollout, state=RolloutState.ABORTED, updated_at=now)
