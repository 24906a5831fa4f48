"""The values of a staged rollout (docs/adr/0017): what is rolled out to whom, in which waves, under which rules.

Pure data, no I/O. A rollout moves one update target (orbit, osqueryd or desktop) of a population (every host, or
the hosts of some teams) from ``from_version`` to ``version``, both exact-version TUF channels. Waves are cumulative
percentages of the population (``1, 10, 50, 100``); wave ``k`` (0-based) is *reached* once the rollout got that far,
and a reached host is pinned to ``version``, every other host of the population to ``from_version``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Target(StrEnum):
    ORBIT = "orbit"
    OSQUERYD = "osqueryd"
    DESKTOP = "desktop"


class RolloutState(StrEnum):
    RUNNING = "running"  # waves advance by themselves
    PAUSED = "paused"  # no advancing; halt rules still apply
    HALTED = "halted"  # a halt rule fired: everyone back on from_version; may be resumed
    ABORTED = "aborted"  # an admin stopped it: everyone back on from_version; final
    COMPLETED = "completed"  # the last wave passed: everyone stays on version; final


ACTIVE_STATES = frozenset({RolloutState.RUNNING, RolloutState.PAUSED})
# states in which reached hosts run the new version; in the others every host is pinned back to from_version
FORWARD_STATES = frozenset({RolloutState.RUNNING, RolloutState.PAUSED, RolloutState.COMPLETED})


class Outcome(StrEnum):
    """What orbit reports after an install (docs/adr/0017, "Agent side")."""

    CONFIRMED = "confirmed"
    ROLLED_BACK = "rolled_back"
    CRASH_LOOP = "crash_loop"
    INSTALL_FAILED = "install_failed"
    REPAIRED = "repaired"


FAILED_OUTCOMES = frozenset({Outcome.ROLLED_BACK, Outcome.CRASH_LOOP, Outcome.INSTALL_FAILED})
# outcomes that say something about the version's health; ``repaired`` only says the file was fixed
HEALTH_OUTCOMES = FAILED_OUTCOMES | {Outcome.CONFIRMED}

DEFAULT_WAVES: tuple[float, ...] = (1.0, 10.0, 50.0, 100.0)
DEFAULT_SOAK_SECONDS = 3600
DEFAULT_MAX_FAILED_PERCENT = 5.0
DEFAULT_MIN_HEALTHY_PERCENT = 80.0


@dataclass(frozen=True)
class HaltRules:
    """Halt when more than ``max_failed_percent`` of any reached wave reported rolled_back / crash_loop /
    install_failed for the version (checked all the time), or when fewer than ``min_healthy_percent`` of the
    current wave are healthy on it once its soak time has passed."""

    max_failed_percent: float = DEFAULT_MAX_FAILED_PERCENT
    min_healthy_percent: float = DEFAULT_MIN_HEALTHY_PERCENT


@dataclass(frozen=True)
class RolloutSpec:
    """What an admin asks for; checked by ``rollout_spec`` before it gets here."""

    name: str
    target: Target
    version: str
    from_version: str
    team_ids: tuple[int, ...] | None  # None = every host
    waves: tuple[float, ...]
    soak_seconds: int
    rules: HaltRules


@dataclass(frozen=True)
class Rollout:
    id: int
    spec: RolloutSpec
    state: RolloutState
    current_wave: int  # 0-based index of the wave being soaked (the last one once completed)
    wave_started_at: float
    halt_reason: str | None
    created_at: float
    updated_at: float
    source: str  # "api" or "config"
    platforms: tuple[str, ...]  # TUF platforms the version is published for
    revision: int = 0  # the row's count of changes: a change is stored only onto the revision it was decided from

    @property
    def wave_count(self) -> int:
        return len(self.spec.waves)

    def covers_team(self, team_id: int | None) -> bool:
        """Whether a host of ``team_id`` (None = no team) belongs to the population."""
        teams = self.spec.team_ids
        return teams is None or (team_id is not None and team_id in teams)

    def channel_for_wave(self, wave: int) -> str:
        """The channel a host of ``wave`` is pinned to right now."""
        if self.state in FORWARD_STATES and wave <= self.current_wave:
            return self.spec.version
        return self.spec.from_version
