"""The update runner: one check (refresh, compare hashes, download, install) and its schedule as an async loop.

A check never touches an installed binary unless a verified new version is fully installed beside it: any
repository or network error is logged and reported, and the installed binaries keep running (freeze safety).
Schedule (Fleet's): an early check at start-up, the first periodic tick after the interval plus a uniform jitter in
[0, min(interval, 10 min)), then every interval. Blocking TUF and file work runs in a thread.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import random
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from types import TracebackType
from typing import Protocol

from tuf_updates.errors import FailureKind, UpdateError
from tuf_updates.install_record import InstalledVersion
from tuf_updates.installer import InstallResult
from tuf_updates.retry_limiter import RetryDecision, RetryLimiter
from tuf_updates.target_info import TargetInfo
from tuf_updates.targets import TargetSpec

logger = logging.getLogger(__name__)

# the same failure, unchanged, is logged at WARNING at most this often
REPEAT_WARNING = timedelta(hours=1)

DEFAULT_INTERVAL = 15 * 60.0
DEFAULT_MAX_JITTER = 10 * 60.0


class Repository(Protocol):
    """What the runner needs of ``repository_client.UpdateClient`` (a seam for tests)."""

    def __enter__(self) -> object: ...

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...

    def refresh(self) -> None: ...

    def lookup_path(self, target_path: str) -> TargetInfo | None: ...

    def download(self, target: TargetInfo, staging_dir: Path) -> Path: ...

    def clock_skew(self) -> float | None: ...


class Installer(Protocol):
    """What the runner needs of ``installer.TargetInstaller`` (a seam for tests)."""

    @property
    def staging_dir(self) -> Path: ...

    def executable_path(self, spec: TargetSpec) -> Path: ...

    def is_installed(self, spec: TargetSpec) -> bool: ...

    def installed(self, spec: TargetSpec) -> InstalledVersion | None: ...

    def installed_hash(self, spec: TargetSpec, algorithm: str) -> str | None: ...

    def install(self, spec: TargetSpec, target: TargetInfo, downloaded: Path) -> InstallResult: ...

    def stage(self, spec: TargetSpec, target: TargetInfo, downloaded: Path) -> Path: ...

    def recover(self, spec: TargetSpec) -> None: ...


class TargetOutcome(StrEnum):
    UP_TO_DATE = "up_to_date"
    INSTALLED = "installed"
    NOT_FOUND = "not_found"
    COOLING_DOWN = "cooling_down"
    FAILED = "failed"
    SKIPPED = "skipped"  # the metadata refresh failed: nothing was looked at, nothing was touched
    STAGED = "staged"  # a deferred target (orbit itself) is ready beside the current one, not switched to
    QUARANTINED = "quarantined"  # this exact hash failed a trial boot before; waiting for a newer target
    PAUSED = "paused"  # a trial of this target is in progress


@dataclass(frozen=True)
class TargetReport:
    spec: TargetSpec
    outcome: TargetOutcome
    version: str | None = None  # custom.version of the repository's target (or of the installed one if skipped)
    digest: str | None = None
    previous_version: str | None = None
    error: str | None = None
    error_kind: FailureKind | None = None
    executable: Path | None = None


@dataclass(frozen=True)
class CheckReport:
    started_at: datetime
    finished_at: datetime
    targets: tuple[TargetReport, ...]
    refresh_error: str | None = None
    refresh_error_kind: FailureKind | None = None
    clock_skew: float | None = None

    @property
    def installed(self) -> tuple[TargetReport, ...]:
        return tuple(report for report in self.targets if report.outcome is TargetOutcome.INSTALLED)

    @property
    def staged(self) -> tuple[TargetReport, ...]:
        return tuple(report for report in self.targets if report.outcome is TargetOutcome.STAGED)

    @property
    def ok(self) -> bool:
        failed = (TargetOutcome.FAILED, TargetOutcome.SKIPPED, TargetOutcome.NOT_FOUND)
        return self.refresh_error is None and all(report.outcome not in failed for report in self.targets)


@dataclass(frozen=True)
class UpdateSchedule:
    interval: float = DEFAULT_INTERVAL
    max_jitter: float = DEFAULT_MAX_JITTER

    def delays(self, rng: random.Random) -> Iterator[float]:
        """Seconds to wait after each check: the early start-up check is followed by interval + jitter once."""
        yield self.interval + rng.uniform(0.0, min(self.interval, self.max_jitter))
        while True:
            yield self.interval


OnInstalled = Callable[[str, TargetReport], Awaitable[None] | None]
TargetPredicate = Callable[[TargetSpec], bool]
DigestPredicate = Callable[[TargetSpec, str], bool]
OnReport = Callable[[CheckReport], Awaitable[None] | None]


def utc_now() -> datetime:
    return datetime.now(UTC)


class UpdateRunner:
    """Keeps ``targets`` current from the repository behind ``client``, installing with ``installer``."""

    def __init__(
        self,
        client: Repository,
        installer: Installer,
        targets: Sequence[TargetSpec],
        *,
        limiter: RetryLimiter | None = None,
        schedule: UpdateSchedule | None = None,
        clock: Callable[[], datetime] = utc_now,
        rng: random.Random | None = None,
        on_installed: OnInstalled | None = None,
        on_report: OnReport | None = None,
        deferred: TargetPredicate | None = None,
        quarantined: DigestPredicate | None = None,
        paused: TargetPredicate | None = None,
    ) -> None:
        self._client = client
        self._installer = installer
        self._targets = tuple(targets)
        self._limiter = limiter or RetryLimiter()
        self._schedule = schedule or UpdateSchedule()
        self._clock = clock
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self._on_installed = on_installed
        self._on_report = on_report
        self._last_refresh_error: str | None = None
        self._last_refresh_warning: datetime | None = None
        self._deferred = deferred or (lambda _spec: False)
        self._quarantined = quarantined or (lambda _spec, _digest: False)
        self._paused = paused or (lambda _spec: False)
        self._wake: asyncio.Event | None = None
        self._check_requested = False  # check_soon before run started: honoured by run's first wait
        self.last_report: CheckReport | None = None

    def check_soon(self) -> None:
        """Run the next check now instead of at its scheduled time (e.g. after a channel switch)."""
        if self._wake is not None:
            self._wake.set()
        else:
            self._check_requested = True

    @property
    def targets(self) -> tuple[TargetSpec, ...]:
        return self._targets

    def set_targets(self, targets: Sequence[TargetSpec]) -> None:
        """Track other targets from the next check on (e.g. a channel switch pinned by the server)."""
        self._targets = tuple(targets)

    def installed_executable(self, spec: TargetSpec) -> Path | None:
        """The installed executable of ``spec``, found without any network (start-up with no network works)."""
        return self._installer.executable_path(spec) if self._installer.is_installed(spec) else None

    # -- one check -----------------------------------------------------------------------------------------

    def check_once(self) -> CheckReport:
        started = self._clock()
        targets = self._targets
        try:
            with self._client:
                self._client.refresh()
                reports = tuple(self._check_target(spec) for spec in targets)
        except UpdateError as exc:
            return self._refresh_failed(started, targets, exc)
        self._last_refresh_error = None
        report = CheckReport(started, self._clock(), reports, clock_skew=self._client.clock_skew())
        logger.info(
            "update check done targets=%d installed=%d ok=%s",
            len(reports),
            len(report.installed),
            report.ok,
        )
        return report

    def _refresh_failed(self, started: datetime, targets: tuple[TargetSpec, ...], exc: UpdateError) -> CheckReport:
        message = str(exc)
        # a lagging mirror answers the same stale timestamp every tick: a repeat is a WARNING once an hour (so the
        # log of a broken host always shows the cause), DEBUG in between
        now = self._clock()
        repeat = message == self._last_refresh_error
        quiet = repeat and self._last_refresh_warning is not None and now - self._last_refresh_warning < REPEAT_WARNING
        if not quiet:
            self._last_refresh_warning = now
        level = logging.DEBUG if quiet else logging.WARNING
        logger.log(
            level,
            "update check failed, keeping the installed binaries kind=%s error=%s%s",
            exc.kind,
            message,
            " (still failing)" if repeat else "",
        )
        self._last_refresh_error = message
        skipped = tuple(
            TargetReport(
                spec,
                TargetOutcome.SKIPPED,
                version=(record.version if (record := self._installer.installed(spec)) is not None else None),
                error=message,
                error_kind=exc.kind,
                executable=self.installed_executable(spec),
            )
            for spec in targets
        )
        return CheckReport(started, self._clock(), skipped, message, exc.kind, clock_skew=self._client.clock_skew())

    def _check_target(self, spec: TargetSpec) -> TargetReport:
        if self._paused(spec):
            return TargetReport(spec, TargetOutcome.PAUSED, executable=self.installed_executable(spec))
        try:
            target = self._client.lookup_path(spec.path)
        except UpdateError as exc:
            return TargetReport(spec, TargetOutcome.FAILED, error=str(exc), error_kind=exc.kind)
        if target is None:
            logger.warning("target not in the repository target=%s", spec)
            return TargetReport(spec, TargetOutcome.NOT_FOUND, executable=self.installed_executable(spec))
        algorithm, digest = target.preferred_hash()
        if self._installer.installed_hash(spec, algorithm) == digest:
            return TargetReport(
                spec, TargetOutcome.UP_TO_DATE, target.version, digest, executable=self.installed_executable(spec)
            )
        if self._quarantined(spec, digest):
            logger.info("update skipped: this version failed its trial target=%s digest=%s", spec, digest[:16])
            return TargetReport(spec, TargetOutcome.QUARANTINED, target.version, digest)
        now = self._clock().timestamp()
        if self._deferred(spec):
            return self._stage_target(spec, target, digest, now)
        if self._limiter.decide(spec.path, digest, now) is RetryDecision.COOLING_DOWN:
            remaining = self._limiter.cooldown_remaining(spec.path, digest, now)
            logger.info("update cooling down target=%s digest=%s remaining_s=%.0f", spec, digest[:16], remaining)
            return TargetReport(spec, TargetOutcome.COOLING_DOWN, target.version, digest)
        try:
            staged = self._client.download(target, self._installer.staging_dir)
            result = self._installer.install(spec, target, staged)
        except UpdateError as exc:
            failures = self._limiter.record_failure(spec.path, digest, now)
            logger.warning(
                "update of target=%s to version=%s failed (%d in a row) kind=%s error=%s",
                spec,
                target.version,
                failures,
                exc.kind,
                exc,
            )
            return TargetReport(spec, TargetOutcome.FAILED, target.version, digest, error=str(exc), error_kind=exc.kind)
        self._limiter.record_success(spec.path)
        previous = result.previous.version if result.previous is not None else None
        return TargetReport(
            spec,
            TargetOutcome.INSTALLED,
            target.version,
            digest,
            previous_version=previous,
            executable=result.executable,
        )

    def _stage_target(self, spec: TargetSpec, target: TargetInfo, digest: str, now: float) -> TargetReport:
        if self._limiter.decide(spec.path, digest, now) is RetryDecision.COOLING_DOWN:
            return TargetReport(spec, TargetOutcome.COOLING_DOWN, target.version, digest)
        try:
            staged = self._installer.stage(spec, target, self._client.download(target, self._installer.staging_dir))
        except UpdateError as exc:
            self._limiter.record_failure(spec.path, digest, now)
            logger.warning("staging target=%s version=%s failed kind=%s error=%s", spec, target.version, exc.kind, exc)
            return TargetReport(spec, TargetOutcome.FAILED, target.version, digest, error=str(exc), error_kind=exc.kind)
        self._limiter.record_success(spec.path)
        installed = self._installer.installed(spec)
        return TargetReport(
            spec,
            TargetOutcome.STAGED,
            target.version,
            digest,
            previous_version=installed.version if installed is not None else None,
            executable=staged,
        )

    # -- the schedule --------------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event, *, initial_delay: float = 0.0) -> None:
        """Check (after ``initial_delay``), then on the schedule, until ``stop`` is set; callbacks run on the loop."""
        for spec in self._targets:
            try:
                await asyncio.to_thread(self._installer.recover, spec)
            except UpdateError as exc:
                logger.warning("cannot tidy the install directory target=%s error=%s", spec, exc)
        self._wake = wake = asyncio.Event()
        if self._check_requested:
            self._check_requested = False
            wake.set()
        if initial_delay > 0 and await _stopped_within(stop, wake, initial_delay):
            return
        for delay in self._schedule.delays(self._rng):
            if stop.is_set():
                return
            wake.clear()
            try:
                report = await asyncio.to_thread(self.check_once)
                self.last_report = report
                await self._deliver(report)
            except Exception:
                logger.exception("update check crashed; the installed binaries keep running")
            if await _stopped_within(stop, wake, delay):
                return

    async def _deliver(self, report: CheckReport) -> None:
        if self._on_report is not None:
            await _maybe_await(self._on_report(report))
        if self._on_installed is not None:
            for installed in (*report.installed, *report.staged):
                await _maybe_await(self._on_installed(str(installed.spec.name), installed))


async def _stopped_within(stop: asyncio.Event, wake: asyncio.Event, delay: float) -> bool:
    """Wait ``delay`` seconds or until ``wake``; True when ``stop`` was set meanwhile."""
    stopping = asyncio.ensure_future(stop.wait())
    woken = asyncio.ensure_future(wake.wait())
    await asyncio.wait((stopping, woken), timeout=delay, return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    woken.cancel()
    wake.clear()
    return stop.is_set()


async def _maybe_await(result: Awaitable[None] | None) -> None:
    if inspect.isawaitable(result):
        await result
