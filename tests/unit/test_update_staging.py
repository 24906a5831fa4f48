"""orbit's own update on trial: staging beside the current version, promote, discard, and the runner's new outcomes."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType, TracebackType

import pytest

from tuf_updates.errors import InstallError, UpdateError
from tuf_updates.install_record import InstalledVersion
from tuf_updates.installer import InstallResult, TargetInstaller
from tuf_updates.repository_client import TargetInfo
from tuf_updates.targets import TargetSpec, target_spec
from tuf_updates.update_runner import CheckReport, TargetOutcome, TargetReport, UpdateRunner, UpdateSchedule

ORBIT = target_spec("orbit", "linux", "stable")
OSQUERYD = target_spec("osqueryd", "linux", "stable")


def _script(text: str) -> bytes:
    return f"#!/bin/sh\n{text}\n".encode()


def _info(spec: TargetSpec, data: bytes, version: str) -> TargetInfo:
    hashes = {"sha256": hashlib.sha256(data).hexdigest(), "sha512": hashlib.sha512(data).hexdigest()}
    return TargetInfo(spec.path, len(data), MappingProxyType(hashes), version)


def _digest_id(info: TargetInfo) -> str:
    return info.hashes["sha512"][:32]


class ExecCheck:
    def __init__(self, fail: bool = False) -> None:
        self.checked: list[Path] = []
        self.fail = fail

    def __call__(self, executable: Path, env: Mapping[str, str]) -> None:
        self.checked.append(executable)
        if self.fail:
            raise InstallError(f"exec check: {executable.name} --help exited 1")


@pytest.fixture
def checks() -> ExecCheck:
    return ExecCheck()


@pytest.fixture
def installer(tmp_path: Path, checks: ExecCheck) -> TargetInstaller:
    return TargetInstaller(tmp_path / "root", exec_check=checks, system="Linux", machine="x86_64", base_env={})


def _download(installer: TargetInstaller, spec: TargetSpec, data: bytes) -> Path:
    installer.staging_dir.mkdir(parents=True, exist_ok=True)
    downloaded = installer.staging_dir / spec.file_name
    downloaded.write_bytes(data)
    return downloaded


def _install(installer: TargetInstaller, spec: TargetSpec, data: bytes, version: str) -> TargetInfo:
    info = _info(spec, data, version)
    installer.install(spec, info, _download(installer, spec, data))
    return info


def _stage(installer: TargetInstaller, spec: TargetSpec, data: bytes, version: str) -> tuple[TargetInfo, Path]:
    info = _info(spec, data, version)
    return info, installer.stage(spec, info, _download(installer, spec, data))


def _version_dirs(installer: TargetInstaller, spec: TargetSpec) -> set[str]:
    return {entry.name for entry in (installer.channel_dir(spec) / ".versions").iterdir()}


# -- the installer -----------------------------------------------------------------------------------------


def test_stage_builds_the_version_beside_the_current_one_without_switching(
    installer: TargetInstaller, checks: ExecCheck
) -> None:
    old, new = _script("echo 1.40.0"), _script("echo 1.41.0")
    _install(installer, ORBIT, old, "1.40.0")
    info, staged = _stage(installer, ORBIT, new, "1.41.0")
    executable = installer.executable_path(ORBIT)
    assert staged == installer.channel_dir(ORBIT) / ".versions" / _digest_id(info) / "orbit"
    assert staged.read_bytes() == new and os.access(staged, os.X_OK)
    assert executable.read_bytes() == old  # what the service manager runs is unchanged
    current = installer.installed(ORBIT)
    assert current is not None and current.version == "1.40.0"
    record = installer.staged_record(ORBIT, _digest_id(info))
    assert record is not None and record.version == "1.41.0" and record.hashes == info.hashes
    assert len(checks.checked) == 2 and checks.checked[-1].parent.parent == staged.parent.parent  # checked first
    assert list(installer.staging_dir.iterdir()) == []  # the download is consumed


def test_stage_with_a_failing_exec_check_stages_nothing(tmp_path: Path) -> None:
    good = TargetInstaller(tmp_path / "root", exec_check=ExecCheck(), system="Linux", machine="x86_64")
    _install(good, ORBIT, _script("echo good"), "1")
    failing = TargetInstaller(tmp_path / "root", exec_check=ExecCheck(fail=True), system="Linux", machine="x86_64")
    before = _version_dirs(failing, ORBIT)
    with pytest.raises(InstallError, match="exited 1"):
        _stage(failing, ORBIT, _script("exit 1"), "2")
    assert _version_dirs(failing, ORBIT) == before
    assert failing.executable_path(ORBIT).read_bytes() == _script("echo good")


def test_stage_refuses_a_target_of_another_path(installer: TargetInstaller) -> None:
    info = _info(OSQUERYD, b"x", "1")
    with pytest.raises(ValueError, match="is not"):
        installer.stage(ORBIT, info, _download(installer, ORBIT, b"x"))


def test_promote_switches_and_keeps_the_old_version_as_previous(installer: TargetInstaller) -> None:
    old, new = _script("echo 1.40.0"), _script("echo 1.41.0")
    _install(installer, ORBIT, old, "1.40.0")
    info, _staged = _stage(installer, ORBIT, new, "1.41.0")
    result = installer.promote(ORBIT, _digest_id(info))
    executable = installer.executable_path(ORBIT)
    assert executable.read_bytes() == new and not executable.is_symlink()
    assert executable.with_name("orbit.previous").read_bytes() == old
    assert result.current.version == "1.41.0" and result.previous is not None and result.previous.version == "1.40.0"
    assert result.executable == executable
    previous = installer.previous(ORBIT)
    assert previous is not None and previous.version == "1.40.0"
    again = installer.promote(ORBIT, _digest_id(info))  # promoting twice changes nothing
    assert again.current.version == "1.41.0" and executable.with_name("orbit.previous").read_bytes() == old
    installer.rollback(ORBIT)
    assert executable.read_bytes() == old


def test_promote_of_an_unknown_version_changes_nothing(installer: TargetInstaller) -> None:
    _install(installer, ORBIT, _script("echo 1"), "1")
    with pytest.raises(InstallError, match="no staged version"):
        installer.promote(ORBIT, "0" * 32)
    assert installer.executable_path(ORBIT).read_bytes() == _script("echo 1")
    assert installer.staged_record(ORBIT, "0" * 32) is None


def test_a_package_placed_orbit_is_adopted_when_staging_and_kept_as_previous(installer: TargetInstaller) -> None:
    executable = installer.executable_path(ORBIT)
    executable.parent.mkdir(parents=True)
    packaged = _script("echo from the package")
    executable.write_bytes(packaged)
    info, _ = _stage(installer, ORBIT, _script("echo new"), "2.0.0")
    adopted = installer.installed(ORBIT)  # a managed version now, still the one that runs
    assert adopted is not None and adopted.version is None
    assert adopted.hashes["sha256"] == hashlib.sha256(packaged).hexdigest()
    assert executable.read_bytes() == packaged
    result = installer.promote(ORBIT, _digest_id(info))
    assert executable.read_bytes() == _script("echo new")
    assert result.previous is not None and result.previous.hashes["sha256"] == hashlib.sha256(packaged).hexdigest()
    assert executable.with_name("orbit.previous").read_bytes() == packaged


def test_discard_staged_removes_only_the_failed_version(installer: TargetInstaller) -> None:
    first = _install(installer, ORBIT, _script("echo 1"), "1")
    second = _install(installer, ORBIT, _script("echo 2"), "2")
    bad, _ = _stage(installer, ORBIT, _script("echo 3"), "3")
    assert _version_dirs(installer, ORBIT) == {_digest_id(first), _digest_id(second), _digest_id(bad)}
    installer.discard_staged(ORBIT, _digest_id(bad))
    assert _version_dirs(installer, ORBIT) == {_digest_id(first), _digest_id(second)}
    for keep in (_digest_id(first), _digest_id(second), "", ".", "..", "../..", "a/../.."):
        installer.discard_staged(ORBIT, keep)
        assert _version_dirs(installer, ORBIT) == {_digest_id(first), _digest_id(second)}, keep
    assert installer.executable_path(ORBIT).read_bytes() == _script("echo 2")
    installer.discard_staged(ORBIT, "f" * 32)  # already gone: nothing to do


def test_staging_twice_reuses_the_built_version(installer: TargetInstaller, checks: ExecCheck) -> None:
    _install(installer, ORBIT, _script("echo 1"), "1")
    info, first = _stage(installer, ORBIT, _script("echo 2"), "2")
    checked = len(checks.checked)
    _, second = _stage(installer, ORBIT, _script("echo 2"), "2")
    assert first == second and len(checks.checked) == checked  # no second build or check
    assert installer.staged_record(ORBIT, _digest_id(info)) is not None


# -- the runner --------------------------------------------------------------------------------------------


class FakeRepository:
    def __init__(self) -> None:
        self.targets: dict[str, TargetInfo] = {}
        self.lookups: list[str] = []
        self.downloads: list[str] = []

    def publish(self, spec: TargetSpec, digest: str, version: str) -> None:
        self.targets[spec.path] = TargetInfo(spec.path, 10, MappingProxyType({"sha512": digest}), version)

    def __enter__(self) -> FakeRepository:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None

    def refresh(self) -> None:
        return None

    def lookup_path(self, target_path: str) -> TargetInfo | None:
        self.lookups.append(target_path)
        return self.targets.get(target_path)

    def download(self, target: TargetInfo, staging_dir: Path) -> Path:
        self.downloads.append(target.path)
        return staging_dir / target.file_name

    def clock_skew(self) -> float | None:
        return None


class FakeInstaller:
    def __init__(self) -> None:
        self.current: dict[TargetSpec, InstalledVersion] = {}
        self.installs: list[str] = []
        self.stages: list[str] = []
        self.stage_error: UpdateError | None = None

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
        previous = self.current.get(spec)
        record = InstalledVersion(target.preferred_hash()[1], target.hashes, target.length, target.version, None)
        self.current[spec] = record
        return InstallResult(spec, record, previous, self.executable_path(spec))

    def stage(self, spec: TargetSpec, target: TargetInfo, downloaded: Path) -> Path:
        self.stages.append(f"{spec.path}@{target.version}")
        if self.stage_error is not None:
            raise self.stage_error
        return Path("/root/bin/orbit/linux/stable/.versions") / target.preferred_hash()[1] / "orbit"

    def recover(self, spec: TargetSpec) -> None:
        return None


def _installed(digest: str, version: str) -> InstalledVersion:
    return InstalledVersion(digest, MappingProxyType({"sha512": digest}), 10, version, None)


def _clock() -> datetime:
    return datetime(2030, 1, 1, tzinfo=UTC)


@pytest.fixture
def repo() -> FakeRepository:
    return FakeRepository()


@pytest.fixture
def fake() -> FakeInstaller:
    return FakeInstaller()


def test_a_deferred_target_is_staged_and_reported(repo: FakeRepository, fake: FakeInstaller) -> None:
    fake.current[ORBIT] = _installed("old", "1.40.0")
    repo.publish(ORBIT, "new", "1.41.0")
    repo.publish(OSQUERYD, "osq", "5.12.0")
    runner = UpdateRunner(repo, fake, [OSQUERYD, ORBIT], clock=_clock, deferred=lambda spec: spec == ORBIT)
    report = runner.check_once()
    by_name = {str(r.spec.name): r for r in report.targets}
    staged = by_name["orbit"]
    assert staged.outcome is TargetOutcome.STAGED and report.staged == (staged,)
    assert (staged.version, staged.digest, staged.previous_version) == ("1.41.0", "new", "1.40.0")
    assert staged.executable == Path("/root/bin/orbit/linux/stable/.versions/new/orbit")
    assert by_name["osqueryd"].outcome is TargetOutcome.INSTALLED  # not deferred: installed as before
    assert fake.stages == [f"{ORBIT.path}@1.41.0"] and fake.installs == [f"{OSQUERYD.path}@5.12.0"]
    assert report.ok


def test_a_staging_failure_is_reported_and_counted(repo: FakeRepository, fake: FakeInstaller) -> None:
    repo.publish(ORBIT, "new", "1.41.0")
    fake.stage_error = InstallError("exec check: orbit --help exited 1")
    runner = UpdateRunner(repo, fake, [ORBIT], clock=_clock, deferred=lambda spec: True)
    outcomes = [runner.check_once().targets[0].outcome for _ in range(4)]
    assert outcomes == [TargetOutcome.FAILED] * 3 + [TargetOutcome.COOLING_DOWN]
    assert len(fake.stages) == 3


def test_a_quarantined_digest_is_not_downloaded(repo: FakeRepository, fake: FakeInstaller) -> None:
    fake.current[ORBIT] = _installed("old", "1.40.0")
    repo.publish(ORBIT, "bad", "1.41.0")
    runner = UpdateRunner(
        repo, fake, [ORBIT], clock=_clock, deferred=lambda spec: True, quarantined=lambda spec, d: d == "bad"
    )
    report = runner.check_once()
    assert report.targets[0].outcome is TargetOutcome.QUARANTINED and report.targets[0].version == "1.41.0"
    assert repo.downloads == [] and fake.stages == [] and fake.installs == []
    assert report.ok  # waiting for a newer target is not a failure
    repo.publish(ORBIT, "fixed", "1.41.1")  # a newer target is tried
    assert runner.check_once().targets[0].outcome is TargetOutcome.STAGED


def test_an_up_to_date_target_is_not_reported_quarantined(repo: FakeRepository, fake: FakeInstaller) -> None:
    fake.current[ORBIT] = _installed("same", "1.40.0")
    repo.publish(ORBIT, "same", "1.40.0")
    runner = UpdateRunner(repo, fake, [ORBIT], clock=_clock, quarantined=lambda spec, d: True)
    assert runner.check_once().targets[0].outcome is TargetOutcome.UP_TO_DATE


def test_a_paused_target_is_not_even_looked_up(repo: FakeRepository, fake: FakeInstaller) -> None:
    fake.current[ORBIT] = _installed("old", "1.40.0")
    repo.publish(ORBIT, "new", "1.41.0")
    repo.publish(OSQUERYD, "osq", "5.12.0")
    runner = UpdateRunner(repo, fake, [OSQUERYD, ORBIT], clock=_clock, paused=lambda spec: spec == ORBIT)
    report = runner.check_once()
    paused = report.targets[1]
    assert paused.outcome is TargetOutcome.PAUSED and paused.executable == fake.executable_path(ORBIT)
    assert repo.lookups == [OSQUERYD.path] and repo.downloads == [OSQUERYD.path]
    assert fake.stages == [] and fake.installs == [f"{OSQUERYD.path}@5.12.0"]


def test_run_delivers_staged_reports_to_on_installed(repo: FakeRepository, fake: FakeInstaller) -> None:
    fake.current[ORBIT] = _installed("old", "1.40.0")
    repo.publish(ORBIT, "new", "1.41.0")
    delivered: list[tuple[str, TargetReport]] = []

    async def scenario() -> None:
        reports: asyncio.Queue[CheckReport] = asyncio.Queue()

        async def on_installed(name: str, report: TargetReport) -> None:
            delivered.append((name, report))

        runner = UpdateRunner(
            repo,
            fake,
            [ORBIT],
            clock=_clock,
            schedule=UpdateSchedule(interval=3600.0),
            deferred=lambda spec: True,
            on_installed=on_installed,
            on_report=reports.put_nowait,
        )
        stop = asyncio.Event()
        task = asyncio.create_task(runner.run(stop))
        await asyncio.wait_for(reports.get(), 5)
        stop.set()
        await asyncio.wait_for(task, 5)

    asyncio.run(scenario())
    assert [(name, report.outcome, report.version) for name, report in delivered] == [
        ("orbit", TargetOutcome.STAGED, "1.41.0")
    ]


def test_check_soon_runs_the_next_check_at_once(repo: FakeRepository, fake: FakeInstaller) -> None:
    repo.publish(OSQUERYD, "osq", "5.12.0")

    async def scenario() -> int:
        reports: asyncio.Queue[CheckReport] = asyncio.Queue()
        runner = UpdateRunner(
            repo, fake, [OSQUERYD], clock=_clock, schedule=UpdateSchedule(interval=3600.0), on_report=reports.put_nowait
        )
        stop = asyncio.Event()
        runner.check_soon()  # asked before the loop runs (a channel pinned by the start-up poll): not lost
        task = asyncio.create_task(runner.run(stop, initial_delay=3600.0))
        await asyncio.wait_for(reports.get(), 5)
        runner.check_soon()  # and while it waits for the next tick
        await asyncio.wait_for(reports.get(), 5)
        stop.set()
        await asyncio.wait_for(task, 5)
        return reports.qsize()

    assert asyncio.run(scenario()) == 0
    assert len(repo.lookups) == 2


def test_run_stops_during_the_initial_delay_without_checking(repo: FakeRepository, fake: FakeInstaller) -> None:
    async def scenario() -> None:
        runner = UpdateRunner(repo, fake, [OSQUERYD], clock=_clock, schedule=UpdateSchedule(interval=3600.0))
        stop = asyncio.Event()
        task = asyncio.create_task(runner.run(stop, initial_delay=3600.0))
        await asyncio.sleep(0)
        stop.set()
        await asyncio.wait_for(task, 5)

    asyncio.run(scenario())
    assert repo.lookups == []
