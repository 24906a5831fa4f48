"""What a simulated host's orbit does with the update channels its server pins (issue 18), for ``load --with-orbit``.

A real orbit reads ``update_channels`` from every orbit config answer, installs the pinned version of orbit, osqueryd
and Fleet Desktop, runs it on trial, and reports the outcome to a server advertising ``update_outcomes``. A simulated
host does the same without binaries: an exact-version channel (``1.4.0``) makes it run that version at once — it is
what its osquery and orbit traffic report from then on (``osquery_info.version`` ``1.4.0+sim``,
``orbit_info.version``) — and after ``stable_period`` seconds it reports ``confirmed``. A host that is chosen to fail
on that version (``--fail-fraction-on``: a deterministic share of hosts, by a hash of the host and the version) fails
after ``failure_after`` seconds, as orbit would: orbit's own trial fails, so the host reports ``rolled_back`` and runs
the version before again at once, never trying that version again while it stays pinned to it (orbit's quarantine);
osqueryd or desktop crash-loop, so the host reports ``crash_loop`` and keeps the version until the server pins another
one, then reports ``rolled_back`` if that is the version it ran before. Any other channel name (``stable``, ``edge``)
means the host's baseline version of that target.

Nothing here does I/O; ``orbit_traffic`` feeds it config answers and the clock and sends what it queues.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

TARGETS = ("orbit", "osqueryd", "desktop")
MAX_QUEUED = 200  # orbit's cap: the oldest outcome goes first
_EXACT_VERSION = re.compile(r"\d+(\.\d+)+([-+][0-9A-Za-z.+-]*)?")
_RULE = re.compile(r"(?:(?P<target>[a-z]+):)?(?P<version>[^=\s]+)=(?P<fraction>[0-9.]+)")


@dataclass(frozen=True)
class FailureRule:
    version: str
    fraction: float
    target: str | None = None  # None: every target published with that version


def parse_failure_rule(text: str) -> FailureRule:
    """``[TARGET:]VERSION=FRACTION`` (e.g. ``osqueryd:5.15.0=0.2``); ValueError with what is wrong."""
    match = _RULE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not [TARGET:]VERSION=FRACTION (e.g. 1.4.0=0.2 or osqueryd:5.15.0=0.2)")
    target = match["target"]
    if target is not None and target not in TARGETS:
        raise ValueError(f"{text!r}: the target must be one of {', '.join(TARGETS)}")
    try:
        fraction = float(match["fraction"])
    except ValueError:
        raise ValueError(f"{text!r}: {match['fraction']!r} is not a number") from None
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"{text!r}: the fraction must be between 0 and 1")
    return FailureRule(match["version"], fraction, target)


@dataclass(frozen=True)
class UpdateBehaviour:
    baseline: Mapping[str, str]  # target → the version "stable" (any non-version channel) stands for
    rules: tuple[FailureRule, ...] = ()
    stable_period: float = 60.0
    failure_after: float = 20.0
    seed: str = ""

    def fails(self, host_key: str, target: str, version: str) -> bool:
        """Is this host one of the deterministic share that fails on ``version`` of ``target``?"""
        for rule in self.rules:
            if rule.version == version and rule.target in (None, target):
                digest = hashlib.sha256(f"{self.seed}/{host_key}/{target}/{version}".encode()).digest()
                return int.from_bytes(digest[:8], "big") / 2**64 < rule.fraction
        return False

    def version_for(self, target: str, channel: str) -> str:
        return channel if _EXACT_VERSION.fullmatch(channel) else self.baseline[target]


@dataclass
class Trial:
    version: str
    previous: str
    channel: str
    started: float
    fails: bool
    looping: bool = False  # the crash loop was reported; waiting for the server to pin another version


def rfc3339(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class HostUpdates:
    """One host's versions, trials and outcomes waiting to be sent."""

    host_key: str
    behaviour: UpdateBehaviour
    running: dict[str, str] = field(default_factory=dict)
    trials: dict[str, Trial] = field(default_factory=dict)
    refused: dict[str, set[str]] = field(default_factory=dict)
    ever_ran: dict[str, set[str]] = field(default_factory=dict)
    outcomes: list[dict[str, object]] = field(default_factory=list)
    dropped: int = 0

    def __post_init__(self) -> None:
        for target in TARGETS:
            version = self.behaviour.baseline[target]
            self.running.setdefault(target, version)
            self.ever_ran.setdefault(target, {version})
            self.refused.setdefault(target, set())

    def on_channels(self, channels: Mapping[str, object] | None, now: float, wall: float) -> bool:
        """A config answer's ``update_channels`` (None: the server does not pin); True when a version changed."""
        if channels is None:
            return False
        changed = False
        for target in TARGETS:
            raw = channels.get(target)
            channel = raw if isinstance(raw, str) and raw else "stable"
            wanted = self.behaviour.version_for(target, channel)
            trial = self.trials.get(target)
            if trial is not None:
                if trial.version == wanted:
                    continue
                del self.trials[target]  # re-pinned during the trial: what it ran before, or a third version
                self.running[target] = trial.previous
                changed = True
                if trial.looping and wanted == trial.previous:
                    reason = f"simulated: back on {trial.previous} after the crash loop (the server pinned it again)"
                    self._queue(target, trial, "rolled_back", reason, wall)
            if wanted == self.running[target] or wanted in self.refused[target]:
                continue
            previous = self.running[target]
            self.running[target] = wanted
            self.ever_ran[target].add(wanted)
            fails = self.behaviour.fails(self.host_key, target, wanted)
            self.trials[target] = Trial(wanted, previous, channel, now, fails)
            changed = True
        return changed

    def tick(self, now: float, wall: float) -> bool:
        """Judge the trials that are due; True when a version changed (a failed trial went back)."""
        changed = False
        for target, trial in list(self.trials.items()):
            if trial.looping:
                continue
            if trial.fails and now - trial.started >= self.behaviour.failure_after:
                self.refused[target].add(trial.version)
                if target == "orbit":  # the trial boot fails: orbit goes back by itself
                    del self.trials[target]
                    self.running[target] = trial.previous
                    reason = "simulated: the new orbit was not healthy within its trial"
                    self._queue(target, trial, "rolled_back", reason, wall)
                    changed = True
                else:  # the child crash-loops on the version until the server pins another one
                    trial.looping = True
                    reason = "simulated: crash-loop breaker open after 5 consecutive exits"
                    self._queue(target, trial, "crash_loop", reason, wall)
            elif not trial.fails and now - trial.started >= self.behaviour.stable_period:
                del self.trials[target]
                self._queue(target, trial, "confirmed", None, wall)
        return changed

    def next_due(self) -> float | None:
        """When the earliest trial is judged (monotonic seconds), or None."""
        due = [
            trial.started + (self.behaviour.failure_after if trial.fails else self.behaviour.stable_period)
            for trial in self.trials.values()
            if not trial.looping
        ]
        return min(due) if due else None

    def _queue(self, target: str, trial: Trial, kind: str, reason: str | None, wall: float) -> None:
        self.outcomes.append(
            {
                "id": str(uuid.uuid4()),
                "target": target,
                "version": trial.version,
                "previous_version": trial.previous,
                "channel": trial.channel,
                "outcome": kind,
                "reason": reason,
                "at": rfc3339(wall),
            }
        )
        if len(self.outcomes) > MAX_QUEUED:
            self.dropped += len(self.outcomes) - MAX_QUEUED
            del self.outcomes[: len(self.outcomes) - MAX_QUEUED]

    def sent(self, ids: set[str]) -> None:
        self.outcomes = [item for item in self.outcomes if item["id"] not in ids]


def summarize(hosts: list[HostUpdates]) -> dict[str, object]:
    """Per target and version: how many hosts ever ran it, run it now, failed on it; outcomes not sent."""
    per_target: dict[str, dict[str, dict[str, int]]] = {}
    for target in TARGETS:
        versions: dict[str, dict[str, int]] = {}
        for host in hosts:
            for version in host.ever_ran[target]:
                versions.setdefault(version, {"ever_ran": 0, "running": 0, "failed": 0})["ever_ran"] += 1
            versions.setdefault(host.running[target], {"ever_ran": 0, "running": 0, "failed": 0})["running"] += 1
            for version in host.refused[target]:
                versions.setdefault(version, {"ever_ran": 0, "running": 0, "failed": 0})["failed"] += 1
        per_target[target] = versions
    return {
        "versions": per_target,
        "outcomes_unsent": sum(len(host.outcomes) for host in hosts),
        "outcomes_dropped": sum(host.dropped for host in hosts),
    }


__all__ = ["FailureRule", "HostUpdates", "UpdateBehaviour", "parse_failure_rule", "summarize"]
