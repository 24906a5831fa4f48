"""The channels rollouts pin a host to, as its orbit config answer's ``update_channels`` carries them (pure).

For each target, the newest rollout whose population holds the host decides; a target no rollout covers is left to
the agent options (today's behaviour). Built once per change of any rollout and kept in memory, so answering a
config poll costs a team check and one hash per covering rollout: no query, no scan (docs/adr/0017).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from server_stub.rollout_model import Rollout, Target
from server_stub.rollout_waves import wave_of


@dataclass(frozen=True)
class PinBook:
    by_target: tuple[tuple[Target, tuple[Rollout, ...]], ...]  # each target's rollouts, newest first

    @classmethod
    def of(cls, rollouts: Iterable[Rollout]) -> PinBook:
        newest_first = sorted(rollouts, key=lambda r: r.id, reverse=True)
        grouped = tuple(
            (target, tuple(r for r in newest_first if r.spec.target is target))
            for target in Target
            if any(r.spec.target is target for r in newest_first)
        )
        return cls(grouped)

    @property
    def empty(self) -> bool:
        return not self.by_target

    def pins_for(self, identity: str, team_id: int | None) -> dict[str, str]:
        """``{target: channel}`` for the targets a rollout covers this host for."""
        pins: dict[str, str] = {}
        for target, rollouts in self.by_target:
            for rollout in rollouts:
                if rollout.covers_team(team_id):
                    pins[str(target)] = rollout.channel_for_wave(wave_of(rollout.id, identity, rollout.spec.waves))
                    break
        return pins


EMPTY = PinBook(())
