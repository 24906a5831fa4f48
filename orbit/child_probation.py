"""A new osqueryd or Fleet Desktop version is on probation until it has run for the stable period (issue 18).

Each start of a child names the version it runs (the self-heal check just verified its digest). A digest other than
the last *confirmed* one opens a probation; the watcher then reports, once per probation:

- ``confirmed`` when the child has run that version without exiting for ``stable_period`` seconds (the same period
  that resets the supervisor's backoff), and that version becomes the confirmed one;
- ``crash_loop`` when the supervisor's crash-loop breaker opens while that version runs.

Starting the confirmed version again (the server re-pinned the host back) ends an open probation; when that
probation had reported its crash loop, a ``rolled_back`` follows (the host runs ``previous_version`` again — what a
server needs to see the host back), otherwise nothing is reported.
The state (``state/child-versions.json``, 0600, one rename) survives orbit's restarts, so a probation goes on across
them and ``previous_version`` is the version that was confirmed before. ``decide`` is the pure part.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from orbit.children.restart_policy import BreakerState
from orbit.children.supervisor import ChildState, ChildStatus
from orbit.outcome_queue import OutcomeKind, OutcomeQueue, new_outcome
from safe_fs.atomic_write import SECRET_MODE, write_atomic

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunningVersion:
    version: str | None
    digest: str
    channel: str


@dataclass(frozen=True)
class Probation:
    version: str | None
    digest: str
    channel: str
    previous_version: str | None
    crash_loop_reported: bool = False


@dataclass(frozen=True)
class TargetVersions:
    confirmed: RunningVersion | None = None
    probation: Probation | None = None


def on_launch(state: TargetVersions, launched: RunningVersion) -> TargetVersions:
    """The child starts ``launched``: keep, open or end a probation."""
    if state.confirmed is not None and launched.digest == state.confirmed.digest:
        return TargetVersions(state.confirmed, None)
    if state.probation is not None and state.probation.digest == launched.digest:
        return state
    previous = state.confirmed.version if state.confirmed is not None else None
    return TargetVersions(state.confirmed, Probation(launched.version, launched.digest, launched.channel, previous))


@dataclass(frozen=True)
class Verdict:
    outcome: OutcomeKind
    reason: str | None
    state: TargetVersions


def decide(
    state: TargetVersions, running_digest: str | None, status: ChildStatus, stable_period: float
) -> Verdict | None:
    """What the child's current status says about the version on probation (None: nothing yet)."""
    probation = state.probation
    if probation is None or running_digest != probation.digest:
        return None
    if status.state is ChildState.RUNNING and status.uptime is not None and status.uptime >= stable_period:
        confirmed = RunningVersion(probation.version, probation.digest, probation.channel)
        return Verdict(OutcomeKind.CONFIRMED, None, TargetVersions(confirmed, None))
    if status.breaker is BreakerState.OPEN and not probation.crash_loop_reported:
        reason = (
            f"crash-loop breaker open after {status.consecutive_failures} consecutive exits"
            f" (last exit code {status.last_exit_code})"
        )
        return Verdict(
            OutcomeKind.CRASH_LOOP, reason, replace(state, probation=replace(probation, crash_loop_reported=True))
        )
    return None


def _version_from(data: object) -> RunningVersion | None:
    if (
        not isinstance(data, dict)
        or not isinstance(data.get("digest"), str)
        or not isinstance(data.get("channel"), str)
    ):
        return None
    version = data.get("version")
    return RunningVersion(version if isinstance(version, str) else None, data["digest"], data["channel"])


def _probation_from(data: object) -> Probation | None:
    base = _version_from(data)
    if base is None or not isinstance(data, dict):
        return None
    previous = data.get("previous_version")
    return Probation(
        base.version,
        base.digest,
        base.channel,
        previous if isinstance(previous, str) else None,
        data.get("crash_loop_reported") is True,
    )


class ChildProbation:
    """The persisted per-target state, fed by ``launching`` (before each start) and ``observe`` (the watcher)."""

    def __init__(self, path: Path, queue: OutcomeQueue, stable_period: float) -> None:
        self.path = path
        self._queue = queue
        self.stable_period = stable_period
        self._lock = threading.Lock()
        self._states = self._load()
        self._running: dict[str, str | None] = {}

    def _load(self) -> dict[str, TargetVersions]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.error("event=child_versions_unreadable path=%s error=%s", self.path, exc)
            return {}
        states = {}
        for target, item in (data if isinstance(data, dict) else {}).items():
            if isinstance(item, dict):
                states[str(target)] = TargetVersions(
                    _version_from(item.get("confirmed")), _probation_from(item.get("probation"))
                )
        return states

    def _save(self) -> None:
        data = {
            target: {
                "confirmed": asdict(state.confirmed) if state.confirmed is not None else None,
                "probation": asdict(state.probation) if state.probation is not None else None,
            }
            for target, state in sorted(self._states.items())
        }
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(self.path, json.dumps(data, indent=1), SECRET_MODE)
        except OSError as exc:
            log.warning("event=child_versions_write_failed error=%s", exc)

    def state(self, target: str) -> TargetVersions:
        with self._lock:
            return self._states.get(target, TargetVersions())

    def launching(self, target: str, launched: RunningVersion | None) -> None:
        """``target`` is about to start ``launched`` (None: a version nobody can name — not judged)."""
        with self._lock:
            self._running[target] = launched.digest if launched is not None else None
            if launched is None:
                return
            before = self._states.get(target, TargetVersions())
            after = on_launch(before, launched)
            if after == before:
                return
            self._states[target] = after
            self._save()
        left = before.probation
        if left is not None and left.crash_loop_reported and after.probation is None and after.confirmed is not None:
            back = after.confirmed.version
            self._queue.add(
                new_outcome(
                    target,
                    left.version,
                    back,
                    left.channel,
                    OutcomeKind.ROLLED_BACK,
                    f"back on {back} after the crash loop (the server pinned it again)",
                )
            )
        if after.probation is not None and after.probation != before.probation:
            log.info(
                "event=version_on_probation target=%s version=%s previous=%s stable_after=%.0fs",
                target,
                launched.version,
                after.probation.previous_version,
                self.stable_period,
            )

    def observe(self, target: str, status: ChildStatus | None) -> None:
        if status is None:
            return
        with self._lock:
            state = self._states.get(target, TargetVersions())
            verdict = decide(state, self._running.get(target), status, self.stable_period)
            if verdict is None:
                return
            self._states[target] = verdict.state
            self._save()
        probation = state.probation
        assert probation is not None
        self._queue.add(
            new_outcome(
                target,
                probation.version,
                probation.previous_version,
                probation.channel,
                verdict.outcome,
                verdict.reason,
            )
        )

    async def run(
        self, statuses: Callable[[], Mapping[str, ChildStatus | None]], stop: asyncio.Event, interval: float = 1.0
    ) -> None:
        """The watcher: look at the children's status every ``interval`` seconds until ``stop``."""
        while not stop.is_set():
            for target, status in statuses().items():
                self.observe(target, status)
            try:
                await asyncio.wait_for(stop.wait(), timeout=interval)
            except TimeoutError:
                continue


__all__ = ["ChildProbation", "Probation", "RunningVersion", "TargetVersions", "decide", "on_launch"]
