"""The update runner's decisions and schedule with a fake repository and installer (no network, no files)."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import Any

import pytest

from tuf_updates.errors import FailureKind, InstallError, MetadataExpiredError, NetworkError, UpdateError
from tuf_updates.install_record import InstalledVersion
from tuf_updates.installer import InstallResult
from tuf_updates.repository_client import TargetInfo
from tuf_updates.retry_limiter import RetryLimiter
from tuf_updates.targets import TargetSpec, target_spec
from tuf_updates.update_runner import CheckReport, TargetOutcome, TargetReport, UpdateRunner, UpdateSchedule

OSQUERYD = target_spec("osqueryd", "linux", "stable")
ORBIT = target_spec("orbit", "linux", "stable")


class FakeRepository:
    def __init__(self) -> None:
        self.targets: dict[str, TargetInfo] = {}
        self.refresh_error: UpdateError | None = None
        self.download_error: UpdateError | None = None
        self.downloads: list[str] = []
        self.locked = 0

    def publish(self, spec: TargetSpec, digest: str, version: str) -> None:
        self.targets[spec.path] = TargetInfo(spec.path, 10, MappingProxyType({"sha512": digest}), version)

    def __enter__(self) -> FakeRepository:
        self.locked += 1
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.locked -= 1

    def refresh(self) -> None:
        assert self.locked
        if self.refresh_error is not None:
            raise self.refresh_error

    def lookup_path(self, target_path: str) -> TargetInfo | None:
        return self.targets.get(target_path)

    def download(self, target: TargetInfo, staging_dir: Path) -> Path:
        self.downloads.append(target.path)
        if self.download_error is not None:
            raise self.download_error
        return staging_dir / target.file_name

    def clock_skew(self) -> float | None:
        return 0.5


class FakeInstaller:
    def __init__(self) -> None:
        self.current: dict[TargetSpec, InstalledVersion] = {}
        self.install_error: UpdateError | None = None
        self.installs: list[str] = []
        self.recovered: list[TargetSpec] = []

    @property
    def staging_dir(self) -> Path:
        return Path("/root/staging")

    def executable_path(self, spec: TargetSpec) -> Path:
        return Path("/root/bin") / spec.path

    def is_installed(self, spec: TargetSpec) -> bool:
        return spec in self.current

    def installed(self, spec: TargetSpec) -> InstalledVersion | None:
        return self.current.get(spec)

    def installed_hash(self, spec: TargetSpec, algorithm: str) -> str | None:
        record = self.current.get(spec)
        return record.hashes.get(algorithm) if record is not None else None

    def install(self, spec: TargetSpec, target: TargetInfo, downloaded: Path) -> InstallResult:
        self.installs.append(f"{spec.path}@{target.version}")
        if self.install_error is not None:
            raise self.install_error
        previous = self.current.get(spec)
        record = InstalledVersion(target.preferred_hash()[1], target.hashes, target.length, target.version, None)
        self.current[spec] = record
        return InstallResult(spec, record, previous, self.executable_path(spec))

    def recover(self, spec: TargetSpec) -> None:
        self.recovered.append(spec)


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2030, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def repo() -> FakeRepository:
    return FakeRepository()


@pytest.fixture
def installer() -> FakeInstaller:
    return FakeInstaller()


@pytest.fixture
def clock() -> Clock:
    return Clock()


def _runner(repo: FakeRepository, installer: FakeInstaller, clock: Clock, **kwargs: Any) -> UpdateRunner:
    return UpdateRunner(repo, installer, [OSQUERYD, ORBIT], clock=clock, **kwargs)


def _outcomes(report: CheckReport) -> dict[str, TargetOutcome]:
    return {str(r.spec.name): r.outcome for r in report.targets}


def test_installs_what_changed_and_reports_versions(
    repo: FakeRepository, installer: FakeInstaller, clock: Clock
) -> None:
    repo.publish(OSQUERYD, "aa", "5.1.0")
    repo.publish(ORBIT, "bb", "1.40.0")
    runner = _runner(repo, installer, clock)
    report = runner.check_once()
    assert _outcomes(report) == {"osqueryd": TargetOutcome.INSTALLED, "orbit": TargetOutcome.INSTALLED}
    assert [r.version for r in report.installed] == ["5.1.0", "1.40.0"] and report.ok
    repo.publish(OSQUERYD, "cc", "5.2.0")
    second = runner.check_once()
    assert _outcomes(second) == {"osqueryd": TargetOutcome.INSTALLED, "orbit": TargetOutcome.UP_TO_DATE}
    assert second.installed[0].previous_version == "5.1.0" and second.clock_skew == 0.5
    assert repo.downloads == [OSQUERYD.path, ORBIT.path, OSQUERYD.path]
    assert repo.locked == 0


@pytest.mark.parametrize(
    "error",
    [
        MetadataExpiredError("metadata expired (timestamp)"),
        NetworkError("connection refused"),
        UpdateError("untrusted metadata (root): signed by 0/1 keys"),
    ],
)
def test_a_refused_repository_touches_nothing(
    repo: FakeRepository, installer: FakeInstaller, clock: Clock, error: UpdateError
) -> None:
    installer.current[OSQUERYD] = InstalledVersion("old", MappingProxyType({"sha512": "old"}), 1, "5.0.0", None)
    repo.publish(OSQUERYD, "new", "5.1.0")
    repo.refresh_error = error
    report = _runner(repo, installer, clock).check_once()
    assert report.refresh_error == str(error) and report.refresh_error_kind is error.kind and not report.ok
    assert {r.outcome for r in report.targets} == {TargetOutcome.SKIPPED}
    skipped = report.targets[0]
    assert skipped.version == "5.0.0" and skipped.executable == installer.executable_path(OSQUERYD)
    assert installer.installs == [] and repo.downloads == []


def test_the_same_refresh_error_is_a_warning_once_an_hour_with_its_cause(
    repo: FakeRepository, installer: FakeInstaller, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    repo.refresh_error = UpdateError("stale timestamp (lagging mirror?)", kind=FailureKind.STALE)
    runner = _runner(repo, installer, clock)
    with caplog.at_level("DEBUG", logger="tuf_updates.update_runner"):
        for _ in range(12):  # three hours of 15-minute checks
            runner.check_once()
            clock.now += timedelta(minutes=15)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 3  # the first failure, then once an hour: a broken host's log always shows the cause
    assert all("kind=stale" in w and "lagging mirror" in w for w in warnings)
    assert "still failing" in warnings[1]
    repo.refresh_error = UpdateError("connection refused", kind=FailureKind.NETWORK)
    caplog.clear()
    with caplog.at_level("DEBUG", logger="tuf_updates.update_runner"):
        runner.check_once()  # a new cause is a warning at once
    assert [r.levelname for r in caplog.records if "connection refused" in r.getMessage()] == ["WARNING"]


def test_three_failures_of_one_hash_cool_down_and_a_new_hash_is_tried(
    repo: FakeRepository, installer: FakeInstaller, clock: Clock
) -> None:
    repo.publish(OSQUERYD, "bad", "5.1.0")
    installer.install_error = InstallError("exec check: osqueryd --help exited 1")
    runner = UpdateRunner(repo, installer, [OSQUERYD], clock=clock, limiter=RetryLimiter())
    outcomes = []
    for _ in range(5):
        outcomes.append(runner.check_once().targets[0].outcome)
        clock.now += timedelta(minutes=15)
    assert outcomes == [TargetOutcome.FAILED] * 3 + [TargetOutcome.COOLING_DOWN] * 2
    assert len(installer.installs) == 3
    repo.publish(OSQUERYD, "fixed", "5.1.1")
    installer.install_error = None
    assert runner.check_once().targets[0].outcome is TargetOutcome.INSTALLED
    clock.now += timedelta(hours=24)
    assert runner.check_once().targets[0].outcome is TargetOutcome.UP_TO_DATE


def test_missing_targets_and_download_failures_are_reported(
    repo: FakeRepository, installer: FakeInstaller, clock: Clock
) -> None:
    repo.publish(ORBIT, "bb", "1.40.0")
    repo.download_error = NetworkError("HTTP 500", status_code=500)
    report = _runner(repo, installer, clock).check_once()
    by_name = {str(r.spec.name): r for r in report.targets}
    assert by_name["osqueryd"].outcome is TargetOutcome.NOT_FOUND
    assert by_name["orbit"].outcome is TargetOutcome.FAILED and by_name["orbit"].error_kind is FailureKind.NETWORK
    assert not report.ok and installer.installs == []


def test_a_channel_switch_tracks_the_new_path(repo: FakeRepository, installer: FakeInstaller, clock: Clock) -> None:
    edge = target_spec("osqueryd", "linux", "edge")
    repo.publish(OSQUERYD, "stable", "5.1.0")
    repo.publish(edge, "edge", "5.2.0-rc1")
    runner = UpdateRunner(repo, installer, [OSQUERYD], clock=clock)
    runner.check_once()
    runner.set_targets([edge])
    report = runner.check_once()
    assert report.installed[0].spec == edge and report.installed[0].version == "5.2.0-rc1"
    assert installer.installs == [f"{OSQUERYD.path}@5.1.0", f"{edge.path}@5.2.0-rc1"]


def test_schedule_early_check_then_jittered_first_tick_then_interval() -> None:
    delays = UpdateSchedule(interval=900.0, max_jitter=600.0).delays(random.Random(7))
    first, second, third = next(delays), next(delays), next(delays)
    assert 900.0 <= first < 1500.0 and second == third == 900.0
    short = UpdateSchedule(interval=60.0, max_jitter=600.0).delays(random.Random(1))
    assert 60.0 <= next(short) < 120.0  # jitter bounded by min(interval, 10 min)


def test_run_checks_at_start_calls_back_and_stops(repo: FakeRepository, installer: FakeInstaller, clock: Clock) -> None:
    repo.publish(OSQUERYD, "aa", "5.1.0")
    installed: list[tuple[str, TargetReport]] = []

    async def on_installed(name: str, report: TargetReport) -> None:
        installed.append((name, report))

    async def scenario() -> list[CheckReport]:
        reports: asyncio.Queue[CheckReport] = asyncio.Queue()
        runner = UpdateRunner(
            repo,
            installer,
            [OSQUERYD],
            clock=clock,
            schedule=UpdateSchedule(interval=3600.0),
            on_installed=on_installed,
            on_report=reports.put_nowait,
        )
        stop = asyncio.Event()
        task = asyncio.create_task(runner.run(stop))
        first = await asyncio.wait_for(reports.get(), 5)
        stop.set()
        await asyncio.wait_for(task, 5)
        return [first, *(reports.get_nowait() for _ in range(reports.qsize()))]

    reports = asyncio.run(scenario())
    assert len(reports) == 1  # the next tick was an hour away: no second check before the stop
    assert reports[0].installed and installed[0][0] == "osqueryd" and installed[0][1].version == "5.1.0"
    assert installer.recovered == [OSQUERYD]


def test_a_first_start_downloads_nothing_a_package_shipped(tmp_path: Path, repo: FakeRepository, clock: Clock) -> None:
    """fleet-desktop as orbitctl package ships it (the archive beside what it extracted): the first update check
    finds it up to date and downloads 0 bytes."""
    import hashlib  # noqa: PLC0415
    import io  # noqa: PLC0415
    import tarfile  # noqa: PLC0415

    from tuf_updates.installer import TargetInstaller  # noqa: PLC0415
    from tuf_updates.targets import target_spec  # noqa: PLC0415

    desktop = target_spec("desktop", "linux", "stable")
    program = b"#!/bin/sh\necho desktop\n"
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        member = tarfile.TarInfo("fleet-desktop/fleet-desktop")
        member.size, member.mode = len(program), 0o755
        tar.addfile(member, io.BytesIO(program))
    archive = buffer.getvalue()
    installer = TargetInstaller(tmp_path / "root", system="Linux", machine="x86_64")
    channel = installer.channel_dir(desktop)
    (channel / "fleet-desktop").mkdir(parents=True)
    (channel / "fleet-desktop" / "fleet-desktop").write_bytes(program)
    (channel / "desktop.tar.gz").write_bytes(archive)
    repo.publish(desktop, hashlib.sha512(archive).hexdigest(), "1.0.0")
    report = UpdateRunner(repo, installer, [desktop], clock=clock).check_once()
    assert [t.outcome for t in report.targets] == [TargetOutcome.UP_TO_DATE]
    assert repo.downloads == []
