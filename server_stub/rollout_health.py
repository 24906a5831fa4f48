"""How a rollout's hosts are doing, wave by wave: per-host facts in, per-wave counts out (pure).

The definitions (docs/adr/0017, protocol §5):

* **targeted**: hosts of the population assigned to the wave;
* **updated**: a host of a reached wave that reported an outcome for target + version, or whose running version
  (the version its latest outcome implies, else the version the host reports in its details) is the new version;
* **healthy**: a ``confirmed`` outcome for target + version, and the host is online;
* **rolled back**: its outcome for target + version is ``rolled_back``, ``crash_loop`` or ``install_failed``;
* **offline**: not seen within the host's online window (``hosts.host_status``'s rule);
* **on from_version**: its running version is ``from_version`` (how a halted rollout shows the way back).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from server_stub.rollout_model import FAILED_OUTCOMES, Outcome, Rollout
from server_stub.rollout_waves import wave_of


@dataclass(frozen=True)
class HostFacts:
    """What the server knows about one host for one rollout (gathered by ``rollout_status``)."""

    host_id: int
    identity: str  # hosts.osquery_host_id: the stable identity the wave hash uses
    team_id: int | None
    online: bool
    running_version: str  # the version implied by the latest outcome for the target, else the host's details; ""
    reported: bool  # sent any outcome for target + version
    health: Outcome | None  # latest confirmed / rolled_back / crash_loop / install_failed for target + version


@dataclass(frozen=True)
class WaveCounts:
    wave: int  # 0-based
    percent: float  # cumulative percentage of the population
    reached: bool
    targeted: int = 0
    updated: int = 0
    healthy: int = 0
    rolled_back: int = 0
    offline: int = 0
    on_from_version: int = 0

    def to_json(self) -> dict[str, object]:
        return {
            "wave": self.wave + 1,
            "percent": _number(self.percent),
            "reached": self.reached,
            "targeted": self.targeted,
            "updated": self.updated,
            "healthy": self.healthy,
            "rolled_back": self.rolled_back,
            "offline": self.offline,
            "on_from_version": self.on_from_version,
        }


def _number(value: float) -> float | int:
    return int(value) if float(value).is_integer() else value


class _Tally:
    __slots__ = ("healthy", "offline", "on_from", "rolled_back", "targeted", "updated")

    def __init__(self) -> None:
        self.targeted = self.updated = self.healthy = self.rolled_back = self.offline = self.on_from = 0


def count_waves(rollout: Rollout, hosts: Iterable[HostFacts]) -> tuple[WaveCounts, ...]:
    spec = rollout.spec
    tallies = [_Tally() for _ in spec.waves]
    for host in hosts:
        if not rollout.covers_team(host.team_id):
            continue
        wave = wave_of(rollout.id, host.identity, spec.waves)
        tally = tallies[wave]
        reached = wave <= rollout.current_wave
        tally.targeted += 1
        if (reached and host.reported) or host.running_version == spec.version:
            tally.updated += 1
        if host.health is Outcome.CONFIRMED and host.online:
            tally.healthy += 1
        if host.health in FAILED_OUTCOMES:
            tally.rolled_back += 1
        if not host.online:
            tally.offline += 1
        if host.running_version == spec.from_version:
            tally.on_from += 1
    return tuple(
        WaveCounts(
            wave=index,
            percent=percent,
            reached=index <= rollout.current_wave,
            targeted=tally.targeted,
            updated=tally.updated,
            healthy=tally.healthy,
            rolled_back=tally.rolled_back,
            offline=tally.offline,
            on_from_version=tally.on_from,
        )
        for index, (percent, tally) in enumerate(zip(spec.waves, tallies, strict=True))
    )


def totals(counts: Iterable[WaveCounts]) -> dict[str, int]:
    keys = ("targeted", "updated", "healthy", "rolled_back", "offline", "on_from_version")
    summed = dict.fromkeys(keys, 0)
    for wave in counts:
        for key in keys:
            summed[key] += int(getattr(wave, key))
    return summed


def implied_version(outcome: Outcome, version: str, previous_version: str | None) -> str | None:
    """The version a host runs after reporting ``outcome``: the new one when it runs (even crash-looping), the
    previous one when it went back or never installed (None when that is unknown)."""
    if outcome in (Outcome.ROLLED_BACK, Outcome.INSTALL_FAILED):
        return previous_version
    return version
