"""orbit's own update as the agent runs it (ADR 0005): start a trial, judge it at start-up, confirm or revert it.

The bookkeeping (marker, quarantine, start classification) is ``trial_boot``; this module decides and acts:
staging is done by the update runner, the exec by ``__main__`` through the ``AgentExit`` handed to ``exit_with``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

from orbit.outcome_queue import OutcomeKind, OutcomeQueue, new_outcome
from orbit.root_layout import RootLayout
from orbit.self_update.setup import orbit_link
from orbit.self_update.trial_boot import (
    Quarantine,
    StartKind,
    TrialMarker,
    classify_start,
    clear_marker,
    read_marker,
    restart_env,
    write_marker,
)
from orbit.timings import Timings
from tuf_updates.errors import UpdateError
from tuf_updates.installer import TargetInstaller
from tuf_updates.targets import Platform, TargetName, TargetSpec
from tuf_updates.update_runner import TargetReport

log = logging.getLogger(__name__)

EXIT_RESTART_FOR_UPDATE = 3


class UpdateJournal(Protocol):
    """Where the self-updater records what happened (the agent's status file: ``AgentState``)."""

    start_kind: str

    def note_rollback(self, version: str | None, running: str | None, reason: str) -> None: ...
    def health_summary(self) -> str: ...


@dataclass(frozen=True)
class AgentExit:
    code: int = 0
    exec_argv: tuple[str, ...] | None = None
    exec_env: Mapping[str, str] | None = None
    reason: str = ""


def own_command(layout: RootLayout) -> list[str]:
    """How to start the installed orbit again: the ``bin/orbit/orbit`` link the service runs, else this Python."""
    link = orbit_link(layout)
    if link.exists():
        return [str(link)]
    return [sys.executable, "-m", "orbit"]


def point_link(link: Path, target: Path) -> None:
    """Point ``bin/orbit/orbit`` at ``target`` (relative), atomically."""
    relative = os.path.relpath(target, link.parent)
    if link.is_symlink() and os.readlink(link) == relative:
        return
    temp = link.with_name(f".{link.name}.{os.getpid()}.tmp")
    temp.unlink(missing_ok=True)
    os.symlink(relative, temp)
    os.replace(temp, link)


class SelfUpdater:
    def __init__(
        self,
        layout: RootLayout,
        installer: TargetInstaller,
        state: UpdateJournal,
        timings: Timings,
        *,
        version: str,
        argv: Sequence[str],
        orbit_platform: Platform,
        exit_with: Callable[[AgentExit], None],
        outcomes: OutcomeQueue | None = None,
    ) -> None:
        self.layout = layout
        self.installer = installer
        self.state = state
        self.timings = timings
        self.version = version
        self.argv = tuple(argv)
        self.orbit_platform = orbit_platform
        self.exit_with = exit_with
        self.quarantine = Quarantine(layout.quarantine)
        self.trial: TrialMarker | None = None
        self.outcomes = outcomes

    def _report(self, marker: TrialMarker, version: str | None, kind: OutcomeKind, reason: str | None) -> None:
        """The trial's outcome for the server (issue 18): confirmed, or rolled back to ``previous_version``."""
        if self.outcomes is None:
            return
        channel = marker.target_path.split("/")[2] if marker.target_path.count("/") >= 3 else "stable"
        try:
            self.outcomes.add(new_outcome("orbit", version, marker.previous_version, channel, kind, reason))
        except OSError as exc:
            log.warning("event=update_outcome_not_recorded error=%s", exc)

    def spec_for(self, marker: TrialMarker) -> TargetSpec:
        name, _platform, channel, _ = marker.target_path.split("/", 3)
        return TargetSpec(TargetName(name), self.orbit_platform, channel)

    def check_at_start(self, env: Mapping[str, str]) -> None:
        """Are we a candidate on trial, or the old orbit back after a candidate died? (records either)"""
        marker = read_marker(self.layout.trial_marker)
        kind = classify_start(marker, env)
        self.state.start_kind = kind.value
        if marker is None:
            return
        if kind is StartKind.CANDIDATE:
            self.trial = marker
            log.info("event=trial_boot version=%s previous=%s", marker.version, marker.previous_version)
            return
        if kind is StartKind.INTERRUPTED_TRIAL:
            clear_marker(self.layout.trial_marker)
            log.warning("event=trial_boot_interrupted version=%s action=%r", marker.version, "tried again")
            return
        reason = "the new orbit exited before it was confirmed healthy"
        self.quarantine.add(marker.digest, marker.version, reason)
        clear_marker(self.layout.trial_marker)
        with contextlib.suppress(OSError, UpdateError, ValueError):
            self.installer.discard_staged(self.spec_for(marker), marker.digest_id)
        self.state.note_rollback(marker.version, marker.previous_version, reason)
        self._report(marker, marker.version, OutcomeKind.ROLLED_BACK, reason)
        log.error("event=self_update_rolled_back version=%s running=%s reason=%r", marker.version, self.version, reason)

    def note_stop_signal(self) -> None:
        """A signal stops the candidate before it judged itself: mark the trial interrupted, so the orbit the
        service manager starts next tries it again instead of quarantining a good update."""
        marker = self.trial
        if marker is None:
            return
        with contextlib.suppress(OSError):
            write_marker(self.layout.trial_marker, replace(marker, interrupted=True))
        log.info("event=trial_boot_interrupted version=%s", marker.version)

    def is_quarantined(self, spec: TargetSpec, digest: str) -> bool:
        return spec.name is TargetName.ORBIT and self.quarantine.contains(digest)

    def is_paused(self, spec: TargetSpec) -> bool:
        return spec.name is TargetName.ORBIT and self.trial is not None

    async def start(self, report: TargetReport) -> bool:
        """A staged orbit: write the marker and ask to exec it (Windows: promote now and exit for SCM)."""
        if report.executable is None or report.digest is None:
            return False
        if sys.platform == "win32":
            await asyncio.to_thread(self.installer.promote, report.spec, report.executable.parent.name)
            self.exit_with(AgentExit(EXIT_RESTART_FOR_UPDATE, reason=f"self-update to {report.version}"))
            return True
        marker = TrialMarker(
            digest_id=report.executable.parent.name,
            digest=report.digest,
            version=report.version,
            previous_version=self.version,
            candidate=str(report.executable),
            target_path=report.spec.path,
            started_at=time.time(),
            deadline=self.timings.trial_deadline,
        )
        write_marker(self.layout.trial_marker, marker)
        log.info("event=self_update_start version=%s from=%s", report.version, self.version)
        argv = (str(report.executable), *self.argv)
        self.exit_with(
            AgentExit(0, argv, restart_env(os.environ, marker.digest_id), f"self-update to {report.version}")
        )
        return True

    async def monitor(self, healthy_for: Callable[[], float], sleep: Callable[[float], Awaitable[bool]]) -> None:
        """Candidate only: confirm once healthy for a stable period, or revert at the deadline."""
        marker = self.trial
        if marker is None:
            return
        began = time.monotonic()
        while True:
            if healthy_for() >= self.timings.trial_healthy_period:
                spec = self.spec_for(marker)
                await asyncio.to_thread(self.installer.promote, spec, marker.digest_id)
                await asyncio.to_thread(point_link, orbit_link(self.layout), self.installer.executable_path(spec))
                clear_marker(self.layout.trial_marker)
                self.trial = None
                self.state.start_kind = "confirmed"
                self._report(marker, marker.version or self.version, OutcomeKind.CONFIRMED, None)
                log.info("event=self_update_confirmed version=%s", self.version)
                return
            if time.monotonic() - began > marker.deadline:
                reason = f"not healthy within {marker.deadline:.0f}s ({self.state.health_summary()})"
                self.quarantine.add(marker.digest, marker.version, reason)
                clear_marker(self.layout.trial_marker)
                self._report(marker, marker.version or self.version, OutcomeKind.ROLLED_BACK, reason)
                log.error("event=self_update_reverting version=%s reason=%r", self.version, reason)
                argv = (*own_command(self.layout), *self.argv)
                self.exit_with(AgentExit(0, argv, restart_env(os.environ, None), reason))
                return
            if await sleep(1.0):
                return
