"""Self-healing installs (issue 18): orbit's healer against real installs from a real TUF repository served over TLS
by fleet-stub. The damage is what the field saw — a file truncated in place, replaced, removed, altered by one
byte — and each test says where the repair came from and what is logged."""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from orbit.self_heal.install_healer import LOCAL_STORE, REPOSITORY, HealState, InstallHealer
from orbit.self_heal.trusted_installs import TrustedInstalls
from tests.integration.test_update_client import payload, publish
from tests.support.stub_server import RunningStub, running_stub
from tests.support.tuf_builder import RepoBuilder
from tuf_updates.http_client import TlsOptions, build_http_client
from tuf_updates.installer import TargetInstaller
from tuf_updates.repository_client import UpdateClient
from tuf_updates.targets import TargetSpec, target_spec
from tuf_updates.update_runner import TargetOutcome, UpdateRunner

OSQUERYD = target_spec("osqueryd", "linux", "stable")
DESKTOP = target_spec("desktop", "linux", "stable")


@dataclass
class Host:
    root: Path
    http: httpx.Client
    client: UpdateClient
    installer: TargetInstaller
    runner: UpdateRunner
    trusted: TrustedInstalls
    online: bool = True

    def healer(self) -> InstallHealer:
        return InstallHealer(self.installer, self.trusted, lambda: self.client if self.online else None)

    def executable(self, spec: TargetSpec) -> Path:
        return self.installer.executable_path(spec)


@pytest.fixture
def repo(tmp_path: Path) -> RepoBuilder:
    return RepoBuilder(tmp_path / "repo" / "repository")


@pytest.fixture
def stub(tmp_path: Path, repo: RepoBuilder) -> Iterator[RunningStub]:
    with running_stub(tmp_path / "stub", tuf_repo=repo.dir) as running:
        yield running


@pytest.fixture
def host(tmp_path: Path, repo: RepoBuilder, stub: RunningStub) -> Iterator[Host]:
    publish(repo, OSQUERYD, "5.14.1")
    publish(repo, DESKTOP, "1.40.0")
    http = build_http_client(TlsOptions(root_ca=stub.ca_path), user_agent="orbit-test/1.0", trust_env=False)
    root = tmp_path / "orbit-root"
    client = UpdateClient(root / "tuf", f"{stub.url}/tuf", bootstrap_root=repo.root_bytes(1), http=http)
    installer = TargetInstaller(root)
    runner = UpdateRunner(client, installer, [OSQUERYD, DESKTOP])
    report = runner.check_once()
    assert {item.outcome for item in report.targets} == {TargetOutcome.INSTALLED}, report
    yield Host(root, http, client, installer, runner, TrustedInstalls(root / "state" / "trusted-installs.json"))
    http.close()


def run_version(path: Path) -> str:
    return subprocess.run([str(path), "--version"], capture_output=True, text=True, check=True, timeout=10).stdout


def truncate(path: Path, size: int) -> None:
    with path.open("r+b") as handle:
        handle.truncate(size)


def test_osqueryd_truncated_in_place_is_reinstalled_from_the_repository(
    host: Host, caplog: pytest.LogCaptureFixture
) -> None:
    healer = host.healer()
    assert healer.check(OSQUERYD, full=True).state is HealState.VERIFIED
    path = host.executable(OSQUERYD)
    good = path.read_bytes()
    truncate(path, len(good) // 2)  # both hard links of the current version are damaged: the store cannot help
    with caplog.at_level(logging.WARNING):
        report = healer.check(OSQUERYD, full=True)
    assert report.state is HealState.REPAIRED, report
    assert report.source == REPOSITORY
    assert report.problem == f"size {len(good) // 2} != {len(good)}"
    assert report.version == "5.14.1"
    assert path.read_bytes() == good
    assert run_version(path) == "osqueryd 5.14.1\n"
    assert any(
        "event=install_repaired" in r.getMessage() and "osqueryd/linux/stable/osqueryd" in r.getMessage()
        for r in caplog.records
    )
    # the stored copy is intact again too, so a later replacement is repaired without the network
    installed = host.installer.installed(OSQUERYD)
    assert installed is not None and host.installer.version_problem(OSQUERYD, installed.digest_id) is None


def test_a_replaced_executable_is_restored_from_the_local_store_without_network(host: Host) -> None:
    healer = host.healer()
    healer.check(OSQUERYD, full=True)
    path = host.executable(OSQUERYD)
    good = path.read_bytes()
    host.online = False
    replacement = path.with_name("replacement")
    replacement.write_bytes(b"#!/bin/sh\necho not osqueryd\n")
    os.replace(replacement, path)  # a new inode: the version's own copy stayed intact
    report = healer.check(OSQUERYD, full=False)  # the fingerprint changed, so it is hashed
    assert report.state is HealState.REPAIRED and report.source == LOCAL_STORE, report
    assert report.problem is not None and report.problem.startswith("size ")
    assert path.read_bytes() == good


def test_a_removed_executable_comes_back_from_orbits_record(host: Host) -> None:
    host.healer().check(OSQUERYD, full=True)  # orbit remembers which version belongs there
    path = host.executable(OSQUERYD)
    good = path.read_bytes()
    path.unlink()
    host.online = False
    report = host.healer().check(OSQUERYD, full=False)  # a new healer: what a restarted orbit knows
    assert report.state is HealState.REPAIRED and report.problem == "missing" and report.source == LOCAL_STORE
    assert path.read_bytes() == good


def test_one_altered_byte_of_the_same_size_is_found_by_the_full_hash(host: Host) -> None:
    healer = host.healer()
    healer.check(OSQUERYD, full=True)
    path = host.executable(OSQUERYD)
    data = bytearray(path.read_bytes())
    data[-2] ^= 0x01
    with path.open("r+b") as handle:
        handle.write(bytes(data))
    report = healer.check(OSQUERYD, full=True)
    assert report.state is HealState.REPAIRED and report.problem == "sha512 mismatch", report


def test_the_extracted_desktop_executable_is_checked_and_repaired(host: Host) -> None:
    healer = host.healer()
    assert healer.check(DESKTOP, full=True).state is HealState.VERIFIED
    path = host.executable(DESKTOP)
    good = path.read_bytes()
    truncate(path, 3)
    report = healer.check(DESKTOP, full=True)
    assert report.state is HealState.REPAIRED and report.source == REPOSITORY, report
    assert path.read_bytes() == good


def test_unchanged_files_are_not_hashed_again(host: Host) -> None:
    healer = host.healer()
    healer.check(OSQUERYD, full=True)
    before = healer.full_checks
    for _ in range(5):
        assert healer.check(OSQUERYD, full=False).state is HealState.UNCHANGED
    assert healer.full_checks == before
    os.utime(host.executable(OSQUERYD))  # a touch changes the fingerprint: hashed once, found intact
    assert healer.check(OSQUERYD, full=False).state is HealState.VERIFIED
    assert healer.full_checks == before + 1


def test_offline_damage_is_reported_broken_and_repaired_once_the_repository_answers(host: Host) -> None:
    healer = host.healer()
    healer.check(OSQUERYD, full=True)
    path = host.executable(OSQUERYD)
    truncate(path, 0)
    host.online = False
    broken = healer.check(OSQUERYD, full=False)
    assert broken.state is HealState.BROKEN and not broken.usable
    assert broken.error is not None and "update repository" in broken.error
    host.online = True
    assert healer.check(OSQUERYD, full=False).state is HealState.REPAIRED


def test_a_channel_that_moved_on_is_left_to_the_update_check(host: Host, repo: RepoBuilder) -> None:
    healer = host.healer()
    healer.check(OSQUERYD, full=True)
    truncate(host.executable(OSQUERYD), 10)
    publish(repo, OSQUERYD, "5.15.0")
    report = healer.check(OSQUERYD, full=True)
    assert report.state is HealState.BROKEN
    assert report.error is not None and "now publishes version 5.15.0" in report.error
    # the update check installs the new version over the damaged one (it never reuses a damaged directory)
    assert host.runner.check_once().targets[0].outcome is TargetOutcome.INSTALLED
    assert run_version(host.executable(OSQUERYD)) == "osqueryd 5.15.0\n"
    assert healer.check(OSQUERYD, full=True).state is HealState.VERIFIED


def test_reinstalling_over_a_damaged_version_fixes_it(host: Host, repo: RepoBuilder) -> None:
    """Fleet's P1: re-installing the same version over a truncated osqueryd left it truncated. Ours rebuilds it."""
    path = host.executable(OSQUERYD)
    good = path.read_bytes()
    truncate(path, 5)
    report = host.runner.check_once()  # the hash differs from the signed one: download and install again
    assert report.targets[0].outcome is TargetOutcome.INSTALLED
    assert path.read_bytes() == good
    previous = host.installer.previous(OSQUERYD)
    assert previous is None  # the damaged file did not become the previous version


def test_a_package_placed_file_is_trusted_once_an_update_check_matched_it(tmp_path: Path, host: Host) -> None:
    placed = target_spec("osqueryd", "linux", "edge")
    channel = host.installer.channel_dir(placed)
    channel.mkdir(parents=True)
    data = payload(placed, "5.14.1")
    (channel / "osqueryd").write_bytes(data)
    healer = host.healer()
    assert healer.check(placed, full=True).state is HealState.UNVERIFIABLE
    healer.note_signed_match(placed, "5.14.1", "sha512", hashlib.sha512(data).hexdigest())
    assert healer.check(placed, full=True).state is HealState.VERIFIED
    truncate(channel / "osqueryd", 1)
    host.online = False
    broken = healer.check(placed, full=True)
    assert broken.state is HealState.BROKEN and broken.problem == f"size 1 != {len(data)}"
    trusted = (host.root / "state" / "trusted-installs.json").stat()
    assert trusted.st_mode & 0o777 == 0o600
