"""orbit's TUF update client against real repositories over real TLS on loopback.

Happy paths go through fleet-stub (``--tuf-repo``) serving a repository built with python-tuf (consistent snapshots
on, and Fleet's layout with them off); attacks replace files in the served folder; network faults (dripping,
endless data, error statuses, a skewed clock) come from a tiny purpose-built TLS server. Every attack must leave
the installed binaries and the trusted metadata alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import io
import json
import logging
import os
import signal
import socket
import ssl
import subprocess
import sys
import tarfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from tuf.api.metadata import MetaFile

from server_stub.tls_material import ensure_self_signed, server_ssl_context
from tests.support.counting_proxy import CountingProxy
from tests.support.stub_server import RunningStub, running_stub
from tests.support.tuf_builder import RepoBuilder
from tuf_updates import fetcher as fetcher_module
from tuf_updates import repository_client
from tuf_updates.errors import DirectoryLockedError, FailureKind, NetworkError
from tuf_updates.fetcher import DeadlinePolicy
from tuf_updates.http_client import TlsOptions, build_http_client
from tuf_updates.installer import TargetInstaller
from tuf_updates.repository_client import TargetInfo, UpdateClient
from tuf_updates.retry_limiter import RetryLimiter
from tuf_updates.targets import TargetSpec, target_spec
from tuf_updates.update_runner import CheckReport, TargetOutcome, TargetReport, UpdateRunner, UpdateSchedule

ORBIT = target_spec("orbit", "linux", "stable")
OSQUERYD = target_spec("osqueryd", "linux", "stable")
DESKTOP = target_spec("desktop", "linux", "stable")
EVERY_KIND = [
    ORBIT,
    OSQUERYD,
    DESKTOP,
    target_spec("orbit", "linux-arm64", "stable"),
    target_spec("orbit", "macos", "stable"),
    target_spec("orbit", "windows", "stable"),
    target_spec("osqueryd", "macos-app", "stable"),
    target_spec("osqueryd", "windows", "stable"),
    target_spec("desktop", "macos", "stable"),
    target_spec("desktop", "windows", "stable"),
]


# -- payloads ------------------------------------------------------------------------------------------------


def _script(name: str, version: str) -> bytes:
    return (
        f'#!/bin/sh\ncase "$1" in\n  --help) echo "usage: {name}"; exit 0;;\n'
        f'  --version) echo "{name} {version}"; exit 0;;\nesac\nexit 0\n'
    ).encode()


def _archive(spec: TargetSpec, executable: bytes) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        parts = spec.executable.split("/")
        for depth in range(1, len(parts)):
            directory = tarfile.TarInfo("/".join(parts[:depth]))
            directory.type, directory.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(directory)
        info = tarfile.TarInfo(spec.executable)
        info.size, info.mode = len(executable), 0o755
        tar.addfile(info, io.BytesIO(executable))
    return buffer.getvalue()


def payload(spec: TargetSpec, version: str) -> bytes:
    executable = _script(str(spec.name), version)
    return _archive(spec, executable) if spec.is_archive else executable


def publish(repo: RepoBuilder, spec: TargetSpec, version: str, data: bytes | None = None) -> bytes:
    content = payload(spec, version) if data is None else data
    repo.add_target(spec.path, content, version=version, hash_algorithms=("sha256", "sha512"))
    repo.publish()
    return content


def run_version(path: Path) -> str:
    return subprocess.run([str(path), "--version"], capture_output=True, text=True, check=True, timeout=10).stdout


# -- the agent side ------------------------------------------------------------------------------------------


@dataclass
class Agent:
    http: httpx.Client
    client: UpdateClient
    installer: TargetInstaller
    runner: UpdateRunner

    def check(self) -> CheckReport:
        return self.runner.check_once()

    def outcome(self, spec: TargetSpec) -> TargetReport:
        return next(r for r in self.check().targets if r.spec == spec)


AgentFactory = Callable[..., Agent]


def _agent(
    url: str,
    ca: Path | None,
    root_dir: Path,
    bootstrap: bytes,
    targets: list[TargetSpec],
    *,
    policy: DeadlinePolicy | None = None,
    read_timeout: float = 10.0,
    on_installed: Callable[[str, TargetReport], None] | None = None,
    on_report: Callable[[CheckReport], None] | None = None,
    schedule: UpdateSchedule | None = None,
) -> Agent:
    http = build_http_client(TlsOptions(root_ca=ca), user_agent="orbit-test/1.0", trust_env=False, connect_retries=0)
    client = UpdateClient(
        root_dir / "tuf-metadata",
        url,
        bootstrap_root=bootstrap,
        http=http,
        deadline_policy=policy,
        read_timeout=read_timeout,
        lock_timeout=0.2,
    )
    installer = TargetInstaller(root_dir)
    runner = UpdateRunner(
        client,
        installer,
        targets,
        limiter=RetryLimiter(),
        on_installed=on_installed,
        on_report=on_report,
        schedule=schedule,
    )
    return Agent(http, client, installer, runner)


@pytest.fixture
def consistent() -> bool:
    return True


@pytest.fixture
def repo(tmp_path: Path, consistent: bool) -> RepoBuilder:
    return RepoBuilder(tmp_path / "repo" / "repository", consistent_snapshot=consistent)


@pytest.fixture
def stub(tmp_path: Path, repo: RepoBuilder) -> Iterator[RunningStub]:
    with running_stub(tmp_path / "stub", tuf_repo=repo.dir) as running:
        yield running


@pytest.fixture
def agents(tmp_path: Path, repo: RepoBuilder, stub: RunningStub) -> Iterator[AgentFactory]:
    made: list[Agent] = []

    def make(targets: list[TargetSpec] | None = None, *, root: str = "root", **kwargs: Any) -> Agent:
        agent = _agent(
            f"{stub.url}/tuf", stub.ca_path, tmp_path / root, repo.root_bytes(1), targets or [OSQUERYD], **kwargs
        )
        made.append(agent)
        return agent

    yield make
    for agent in made:
        agent.http.close()  # before the stub stops: it waits for open connections


def _metadata_versions(agent: Agent) -> dict[str, int]:
    directory = agent.client.metadata_dir
    return {
        role: json.loads((directory / f"{role}.json").read_bytes())["signed"]["version"]
        for role in ("root", "timestamp", "snapshot", "targets")
        if (directory / f"{role}.json").exists()
    }


def _assert_frozen(agent: Agent, report: CheckReport, kind: FailureKind, installed: bytes) -> None:
    """The check failed with ``kind`` and changed nothing: same binary, nothing staged, metadata kept."""
    assert report.refresh_error_kind is kind or any(r.error_kind is kind for r in report.targets), report
    assert not report.installed
    assert agent.installer.executable_path(OSQUERYD).read_bytes() == installed
    assert [p.name for p in agent.installer.staging_dir.iterdir()] == []
    assert set(_metadata_versions(agent)) == {"root", "timestamp", "snapshot", "targets"}


# -- happy paths ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("consistent", [True, False], ids=["consistent-snapshot", "fleet-layout"])
def test_every_target_kind_installs_and_a_quiet_check_costs_two_requests(
    repo: RepoBuilder, agents: AgentFactory
) -> None:
    for number, spec in enumerate(EVERY_KIND):
        repo.add_target(spec.path, payload(spec, f"1.{number}.0"), version=f"1.{number}.0")
    repo.publish()
    agent = agents(EVERY_KIND)
    report = agent.check()
    assert report.ok, report
    assert [(str(r.spec), r.outcome, r.version) for r in report.targets] == [
        (str(spec), TargetOutcome.INSTALLED, f"1.{number}.0") for number, spec in enumerate(EVERY_KIND)
    ]
    for spec in (ORBIT, OSQUERYD, DESKTOP):  # native: exec-checked and runnable at Fleet's paths
        assert run_version(agent.installer.executable_path(spec)).startswith(str(spec.name))
    macos = agent.installer.executable_path(target_spec("osqueryd", "macos-app", "stable"))
    assert str(macos).endswith("bin/osqueryd/macos-app/stable/osquery.app/Contents/MacOS/osqueryd")
    assert macos.is_file()  # extracted, not exec-checked (foreign platform)
    before = agent.client.fetcher.requests
    again = agent.check()
    assert {r.outcome for r in again.targets} == {TargetOutcome.UP_TO_DATE}
    assert agent.client.fetcher.requests - before == 2  # N+1.root.json (404) and timestamp.json


def test_a_quiet_check_runs_on_one_connection(tmp_path: Path, repo: RepoBuilder, stub: RunningStub) -> None:
    """The 404 for the next root is read to its end, so timestamp.json follows on the same TLS connection."""
    publish(repo, OSQUERYD, "5.1.0")
    port = int(urlsplit(stub.url).port or 0)
    proxy = CountingProxy(("127.0.0.1", port))
    try:
        agent = _agent(
            f"https://127.0.0.1:{proxy.port}/tuf", stub.ca_path, tmp_path / "root", repo.root_bytes(1), [OSQUERYD]
        )
        try:
            assert agent.outcome(OSQUERYD).outcome is TargetOutcome.INSTALLED
        finally:
            agent.http.close()
        # a new process's check (orbit runs each in a helper): a new client, the same metadata
        quiet = _agent(
            f"https://127.0.0.1:{proxy.port}/tuf", stub.ca_path, tmp_path / "root", repo.root_bytes(1), [OSQUERYD]
        )
        proxy.reset()
        try:
            assert quiet.outcome(OSQUERYD).outcome is TargetOutcome.UP_TO_DATE
            assert quiet.client.fetcher.requests == 2  # 2.root.json (404) and timestamp.json
        finally:
            quiet.http.close()
        assert proxy.counts.connections == 1
    finally:
        proxy.close()


def test_new_versions_channel_switch_and_the_async_loop(repo: RepoBuilder, agents: AgentFactory) -> None:
    publish(repo, OSQUERYD, "5.1.0")
    installed: list[tuple[str, str | None]] = []
    checked = asyncio.Event()  # set by the report callback, which the runner awaits on its own loop
    agent = agents(
        [OSQUERYD],
        on_installed=lambda name, report: installed.append((name, report.version)),
        on_report=lambda report: checked.set(),
        schedule=UpdateSchedule(interval=3600.0),
    )

    async def one_tick() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(agent.runner.run(stop))
        await asyncio.wait_for(checked.wait(), 10)
        stop.set()
        await asyncio.wait_for(task, 10)

    asyncio.run(one_tick())
    assert installed == [("osqueryd", "5.1.0")]
    publish(repo, OSQUERYD, "5.2.0")
    report = agent.outcome(OSQUERYD)
    assert (report.outcome, report.version, report.previous_version) == (TargetOutcome.INSTALLED, "5.2.0", "5.1.0")
    executable = agent.installer.executable_path(OSQUERYD)
    assert "5.2.0" in run_version(executable)
    assert "5.1.0" in run_version(executable.with_name("osqueryd.previous"))
    edge = target_spec("osqueryd", "linux", "edge")
    publish(repo, edge, "5.3.0-rc1")
    agent.runner.set_targets([edge])
    switched = agent.outcome(edge)
    assert (switched.outcome, switched.version) == (TargetOutcome.INSTALLED, "5.3.0-rc1")
    assert "5.3.0-rc1" in run_version(agent.installer.executable_path(edge))
    assert "5.2.0" in run_version(executable)  # the stable channel is left as it was


def test_root_rotation_n_to_n_plus_2(repo: RepoBuilder, agents: AgentFactory) -> None:
    repo.rotate_keys("root")
    repo.publish_root()  # v2: new root key, signed by old and new
    repo.rotate_keys("timestamp")
    repo.rotate_keys("targets")
    repo.publish_root()  # v3: new timestamp and targets keys
    content = publish(repo, OSQUERYD, "5.1.0")
    agent = agents([OSQUERYD])  # pinned to root v1
    assert agent.outcome(OSQUERYD).outcome is TargetOutcome.INSTALLED
    history = sorted(p.name for p in (agent.client.metadata_dir / "root_history").iterdir())
    assert history == ["1.root.json", "2.root.json", "3.root.json"]
    assert _metadata_versions(agent)["root"] == 3
    assert agent.installer.executable_path(OSQUERYD).read_bytes() == content


def test_conformance_cli_against_the_stub(tmp_path: Path, repo: RepoBuilder, stub: RunningStub) -> None:
    content = publish(repo, OSQUERYD, "5.1.0")
    (tmp_path / "root.json").write_bytes(repo.root_bytes(1))
    base = [sys.executable, "-m", "orbit.update.conformance_client", "--metadata-dir", str(tmp_path / "md")]
    urls = ["--metadata-url", f"{stub.url}/tuf"]
    env = {**os.environ, "SSL_CERT_FILE": str(stub.ca_path), "NO_PROXY": "127.0.0.1"}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*base, *args], env=env, capture_output=True, text=True, timeout=30, check=False)

    assert cli("init", str(tmp_path / "root.json")).returncode == 0
    assert cli(*urls, "refresh").returncode == 0
    download = [*urls, "--target-base-url", f"{stub.url}/tuf/targets", "--target-dir", str(tmp_path / "t")]
    assert cli(*download, "--target-name", OSQUERYD.path, "download").returncode == 0
    assert (tmp_path / "t" / "osqueryd%2Flinux%2Fstable%2Fosqueryd").read_bytes() == content
    missing = cli(*download, "--target-name", "osqueryd/linux/stable/nope", "download")
    assert missing.returncode == 1 and "not in the repository" in missing.stderr
    assert sorted(p.name for p in (tmp_path / "md").iterdir() if p.suffix == ".json") == [
        "root.json",
        "snapshot.json",
        "targets.json",
        "timestamp.json",
    ]


ORBITCTL_ENV = {
    "ORBITCTL_ROOT_PASSPHRASE": "root-passphrase",
    "ORBITCTL_TARGETS_PASSPHRASE": "targets-passphrase",
    "ORBITCTL_SNAPSHOT_PASSPHRASE": "snapshot-passphrase",
    "ORBITCTL_TIMESTAMP_PASSPHRASE": "timestamp-passphrase",
}


def test_a_repository_published_by_orbitctl_updates(tmp_path: Path) -> None:
    """Interop with our repository tooling (docs/contracts.md: ``orbitctl updates init|add|roots``)."""
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("ORBITCTL_")}, **ORBITCTL_ENV}

    def orbitctl(*args: str) -> str:
        result = subprocess.run(
            [sys.executable, "-m", "packager", "updates", *args, "--path", str(tmp_path / "repo")],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            stdin=subprocess.DEVNULL,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    def add(spec: TargetSpec, version: str) -> None:
        source = tmp_path / f"{spec.name}-{version}"
        source.write_bytes(payload(spec, version))
        orbitctl("add", "--target", str(source), "--name", str(spec.name), "--platform", str(spec.platform),
                 "--version", version, "-t", "stable")  # fmt: skip

    orbitctl("init")
    add(OSQUERYD, "5.1.0")
    add(DESKTOP, "1.40.0")
    bootstrap = orbitctl("roots").encode()
    with running_stub(tmp_path / "stub", tuf_repo=tmp_path / "repo" / "repository") as stub:
        agent = _agent(f"{stub.url}/tuf", stub.ca_path, tmp_path / "root", bootstrap, [OSQUERYD, DESKTOP])
        try:
            first = agent.check()
            assert [(r.outcome, r.version) for r in first.targets] == [
                (TargetOutcome.INSTALLED, "5.1.0"),
                (TargetOutcome.INSTALLED, "1.40.0"),
            ], first
            add(OSQUERYD, "5.2.0")
            second = agent.check()
            assert [r.outcome for r in second.targets] == [TargetOutcome.INSTALLED, TargetOutcome.UP_TO_DATE]
            assert "5.2.0" in run_version(agent.installer.executable_path(OSQUERYD))
            assert "1.40.0" in run_version(agent.installer.executable_path(DESKTOP))
        finally:
            agent.http.close()


# -- attacks through the served folder -----------------------------------------------------------------------


@pytest.fixture
def installed_agent(repo: RepoBuilder, agents: AgentFactory) -> tuple[Agent, bytes]:
    """An agent with osqueryd 5.1.0 installed; the repository then offers 5.2.0 (which attacks must block)."""
    content = publish(repo, OSQUERYD, "5.1.0")
    agent = agents([OSQUERYD])
    assert agent.outcome(OSQUERYD).outcome is TargetOutcome.INSTALLED
    return agent, content


@pytest.mark.parametrize("role", ["timestamp", "snapshot", "targets", "root"])
def test_rollback_of_each_role_is_refused(repo: RepoBuilder, installed_agent: tuple[Agent, bytes], role: str) -> None:
    agent, content = installed_agent
    trusted = _metadata_versions(agent)
    if role == "timestamp":  # an older timestamp than the trusted one
        publish(repo, OSQUERYD, "5.2.0")
        repo.write("timestamp.json", repo.published[("timestamp", trusted["timestamp"] - 1)])
        expected = FailureKind.STALE
    elif role == "snapshot":  # a newer timestamp naming an older snapshot
        publish(repo, OSQUERYD, "5.2.0")
        repo.timestamp.signed.version += 1
        repo.timestamp.signed.snapshot_meta = MetaFile(version=trusted["snapshot"] - 1)
        repo.sign_with("timestamp", repo.signers["timestamp"])
        expected = FailureKind.ROLLBACK
    elif role == "targets":  # a newer snapshot naming an older targets
        repo.add_target(OSQUERYD.path, payload(OSQUERYD, "5.2.0"), version="5.2.0")
        repo.publish(["snapshot"])
        repo.snapshot.signed.meta = {"targets.json": MetaFile(version=trusted["targets"] - 1)}
        repo.sign_with("snapshot", repo.signers["snapshot"])
        repo.publish(["timestamp"])
        expected = FailureKind.ROLLBACK
    else:  # root v2 with the same keys is trusted; then v1 is served as "3.root.json"
        repo.publish_root()
        assert agent.outcome(OSQUERYD).outcome is TargetOutcome.UP_TO_DATE
        trusted = _metadata_versions(agent)
        repo.write("3.root.json", repo.root_bytes(1))
        publish(repo, OSQUERYD, "5.2.0")
        expected = FailureKind.ROLLBACK
    report = agent.check()
    _assert_frozen(agent, report, expected, content)
    after = _metadata_versions(agent)  # nothing older was stored, nothing was deleted
    assert {role: after[role] for role in ("root", "snapshot", "targets")} == {
        role: trusted[role] for role in ("root", "snapshot", "targets")
    }
    assert after["timestamp"] >= trusted["timestamp"]  # a valid newer timestamp may be kept, never an older one


@pytest.mark.parametrize("role", ["timestamp", "snapshot", "targets", "root"])
def test_freeze_expired_metadata_keeps_the_installed_binaries(
    repo: RepoBuilder, installed_agent: tuple[Agent, bytes], role: str
) -> None:
    agent, content = installed_agent
    repo.expiry[role] = timedelta(days=-1)
    if role == "root":
        repo.publish_root()
    publish(repo, OSQUERYD, "5.2.0")
    report = agent.check()
    _assert_frozen(agent, report, FailureKind.EXPIRED, content)
    assert "expired" in (report.refresh_error or "")
    skipped = report.targets[0]
    assert skipped.outcome is TargetOutcome.SKIPPED and skipped.version == "5.1.0"
    assert skipped.executable is not None and "5.1.0" in run_version(skipped.executable)  # it still starts


def test_mix_and_match_is_refused(repo: RepoBuilder, installed_agent: tuple[Agent, bytes]) -> None:
    agent, content = installed_agent
    old_targets = repo.published[("targets", repo.targets.signed.version)]
    publish(repo, OSQUERYD, "5.2.0")
    # the current snapshot names targets v(N); serve an older, validly signed targets under every name
    repo.write(f"{repo.targets.signed.version}.targets.json", old_targets)
    repo.write("targets.json", old_targets)
    _assert_frozen(agent, agent.check(), FailureKind.ROLLBACK, content)


def test_signatures_below_threshold_are_refused(tmp_path: Path) -> None:
    repo = RepoBuilder(tmp_path / "repository", keys_per_role=2, thresholds={"targets": 2})
    content = publish(repo, OSQUERYD, "5.1.0")
    with running_stub(tmp_path / "stub", tuf_repo=repo.dir) as stub:
        agent = _agent(f"{stub.url}/tuf", stub.ca_path, tmp_path / "root", repo.root_bytes(1), [OSQUERYD])
        try:
            assert agent.outcome(OSQUERYD).outcome is TargetOutcome.INSTALLED
            repo.add_target(OSQUERYD.path, payload(OSQUERYD, "5.2.0"), version="5.2.0")
            repo.publish()
            repo.sign_with("targets", repo.signers["targets"][:1])  # 1 of the 2 required signatures
            report = agent.check()
            _assert_frozen(agent, report, FailureKind.UNTRUSTED, content)
            assert "signed by 1/2" in (report.refresh_error or "")
        finally:
            agent.http.close()


@pytest.mark.parametrize("attack", ["tampered-same-length", "oversized"])
def test_bad_target_bytes_are_refused_and_leave_nothing(
    repo: RepoBuilder, installed_agent: tuple[Agent, bytes], attack: str
) -> None:
    agent, content = installed_agent
    signed = payload(OSQUERYD, "5.2.0")
    publish(repo, OSQUERYD, "5.2.0", signed)
    served = signed.replace(b"5.2.0", b"6.6.6") if attack == "tampered-same-length" else signed + b"\nextra"
    assert len(served) == len(signed) or attack == "oversized"
    repo.write_target_bytes(OSQUERYD.path, served)
    report = agent.check()
    expected = FailureKind.TARGET_MISMATCH if attack == "tampered-same-length" else FailureKind.OVERSIZED
    _assert_frozen(agent, report, expected, content)
    assert report.targets[0].outcome is TargetOutcome.FAILED and report.refresh_error is None


def test_a_stale_timestamp_from_a_lagging_mirror_is_logged_once(
    repo: RepoBuilder, installed_agent: tuple[Agent, bytes], caplog: pytest.LogCaptureFixture
) -> None:
    agent, content = installed_agent
    stale = repo.published[("timestamp", repo.timestamp.signed.version)]
    publish(repo, OSQUERYD, "5.2.0")
    assert agent.outcome(OSQUERYD).outcome is TargetOutcome.INSTALLED  # saw the newer timestamp
    newer = _metadata_versions(agent)
    repo.write("timestamp.json", stale)  # the CDN serves an old copy again
    with caplog.at_level(logging.WARNING, logger="tuf_updates.update_runner"):
        kinds = [agent.check().refresh_error_kind for _ in range(3)]
    assert kinds == [FailureKind.STALE] * 3
    runner_warnings = [r for r in caplog.records if r.name == "tuf_updates.update_runner"]
    assert len(runner_warnings) == 1 and "kind=stale" in runner_warnings[0].getMessage()
    assert _metadata_versions(agent) == newer
    assert "5.2.0" in run_version(agent.installer.executable_path(OSQUERYD))
    assert content != agent.installer.executable_path(OSQUERYD).read_bytes()


def test_disk_full_during_download_is_a_clean_error(
    repo: RepoBuilder, installed_agent: tuple[Agent, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    agent, content = installed_agent
    publish(repo, OSQUERYD, "5.2.0")

    class FullDisk:
        """The partial file on a disk that fills up after the first 10 bytes."""

        def __init__(self, path: Path) -> None:
            self.real = path.open("wb")

        def __enter__(self) -> FullDisk:
            return self

        def __exit__(self, *_: object) -> None:
            self.real.close()

        def write(self, data: bytes) -> int:
            self.real.write(data[:10])
            self.real.flush()
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(repository_client, "_open_for_write", FullDisk)
    report = agent.check()
    _assert_frozen(agent, report, FailureKind.DISK_FULL, content)
    assert "disk full" in (report.targets[0].error or "")
    monkeypatch.undo()
    assert agent.outcome(OSQUERYD).outcome is TargetOutcome.INSTALLED  # space is back: the next check works


def test_no_network_at_start_up_keeps_the_installed_binaries(
    tmp_path: Path, repo: RepoBuilder, installed_agent: tuple[Agent, bytes]
) -> None:
    _, content = installed_agent
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens here once closed
    offline = _agent(f"https://127.0.0.1:{port}/tuf", None, tmp_path / "root", repo.root_bytes(1), [OSQUERYD])
    try:
        report = offline.check()
    finally:
        offline.http.close()
    assert report.refresh_error_kind is FailureKind.NETWORK and "ConnectError" in (report.refresh_error or "")
    start = offline.runner.installed_executable(OSQUERYD)
    assert start is not None and start.read_bytes() == content and "5.1.0" in run_version(start)


def test_the_metadata_directory_is_locked(
    repo: RepoBuilder, installed_agent: tuple[Agent, bytes], agents: AgentFactory
) -> None:
    agent, _ = installed_agent
    second = agents([OSQUERYD])  # same root dir, so the same metadata directory
    with agent.client:
        with pytest.raises(DirectoryLockedError, match="in use by another process") as caught:
            second.client.refresh()
        assert caught.value.kind is FailureKind.LOCKED
        assert second.check().refresh_error_kind is FailureKind.LOCKED
    second.client.refresh()


# -- faults from a purpose-built server ----------------------------------------------------------------------


class HostileServer:
    """Serves the repository folder over TLS, except for paths with an override; ``date_offset`` skews ``Date``."""

    def __init__(self, directory: Path, tls_dir: Path, *, require_client_cert: bool = False) -> None:
        self.directory = directory
        tls = ensure_self_signed(tls_dir)
        self.ca = tls.ca
        context = server_ssl_context(tls.cert, tls.key)
        if require_client_cert:
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(cafile=str(tls.ca))
        self.overrides: dict[str, Callable[[BaseHTTPRequestHandler], None]] = {}
        self.date_offset = timedelta(0)
        self.stop = threading.Event()
        self.requests: list[str] = []
        hostile = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                return

            def date_time_string(self, timestamp: float | None = None) -> str:
                now = (timestamp or __import__("time").time()) + hostile.date_offset.total_seconds()
                return formatdate(now, usegmt=True)

            def do_GET(self) -> None:
                path = urlsplit(self.path).path.removeprefix("/tuf/")
                hostile.requests.append(path)
                if path in hostile.overrides:
                    hostile.overrides[path](self)
                    return
                file = hostile.directory / path
                if ".." in path or not file.is_file():
                    self.send_error(404)
                    return
                data = file.read_bytes()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.server.server_address[1]}/tuf"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def drip(self, handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", "10000")
        handler.end_headers()
        while not self.stop.is_set():
            try:
                handler.wfile.write(b" ")
            except OSError:
                return
            self.stop.wait(1.0)  # one byte a second

    def endless(self, handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.end_headers()  # no length: the body never ends
        while not self.stop.is_set():
            try:
                handler.wfile.write(b"{" * 65536)
            except OSError:
                return

    def close(self) -> None:
        self.stop.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hostile(tmp_path: Path, repo: RepoBuilder) -> Iterator[HostileServer]:
    server = HostileServer(repo.dir, tmp_path / "hostile-tls")
    yield server
    server.close()


@pytest.fixture
def hostile_agent(tmp_path: Path, repo: RepoBuilder, hostile: HostileServer) -> Iterator[tuple[Agent, bytes]]:
    content = publish(repo, OSQUERYD, "5.1.0")
    agent = _agent(
        hostile.url,
        hostile.ca,
        tmp_path / "root",
        repo.root_bytes(1),
        [OSQUERYD],
        policy=DeadlinePolicy(base=1.0, min_rate=1e9),
        read_timeout=5.0,
    )
    assert agent.outcome(OSQUERYD).outcome is TargetOutcome.INSTALLED
    publish(repo, OSQUERYD, "5.2.0")
    yield agent, content
    agent.http.close()


@pytest.mark.parametrize(("status", "installs"), [(403, True), (404, True), (500, False)])
def test_error_statuses_on_the_next_root(
    hostile: HostileServer, hostile_agent: tuple[Agent, bytes], status: int, installs: bool
) -> None:
    agent, content = hostile_agent
    hostile.overrides["2.root.json"] = lambda handler: handler.send_error(status)
    report = agent.check()
    if installs:  # python-tuf ends the root walk at 403/404 and carries on with the trusted root
        assert report.installed and report.installed[0].version == "5.2.0"
    else:
        _assert_frozen(agent, report, FailureKind.NETWORK, content)
        assert "HTTP 500" in (report.refresh_error or "")


def test_a_large_404_body_is_not_read_and_the_check_goes_on(
    hostile: HostileServer, hostile_agent: tuple[Agent, bytes]
) -> None:
    """Only a small error body is drained for the connection's sake; a big one costs a new connection, no more."""
    agent, _content = hostile_agent

    def big_404(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(404)
        handler.send_header("Content-Length", str(50 * 1024 * 1024))
        handler.end_headers()
        with contextlib.suppress(OSError):
            for _ in range(50 * 16):
                handler.wfile.write(b"x" * 65536)

    hostile.overrides["2.root.json"] = big_404
    report = agent.check()
    assert report.installed and report.installed[0].version == "5.2.0"
    assert fetcher_module.ERROR_BODY_LIMIT < 50 * 1024 * 1024


def test_a_dripping_server_is_cut_off(hostile: HostileServer, hostile_agent: tuple[Agent, bytes]) -> None:
    agent, content = hostile_agent
    hostile.overrides["timestamp.json"] = hostile.drip
    report = agent.check()
    _assert_frozen(agent, report, FailureKind.SLOW_RETRIEVAL, content)
    assert "deadline" in (report.refresh_error or "")


@pytest.mark.parametrize("where", ["timestamp", "target"])
def test_endless_data_stops_at_the_signed_or_configured_length(
    repo: RepoBuilder, hostile: HostileServer, hostile_agent: tuple[Agent, bytes], where: str
) -> None:
    agent, content = hostile_agent
    if where == "timestamp":
        hostile.overrides["timestamp.json"] = hostile.endless
    else:
        digest = repo.targets.signed.targets[OSQUERYD.path].hashes["sha256"]
        prefix = f"{digest}." if repo.consistent_snapshot else ""
        hostile.overrides[f"targets/osqueryd/linux/stable/{prefix}osqueryd"] = hostile.endless
    report = agent.check()
    _assert_frozen(agent, report, FailureKind.OVERSIZED, content)


def test_clock_skew_is_measured_and_reported(
    hostile: HostileServer, hostile_agent: tuple[Agent, bytes], repo: RepoBuilder, caplog: pytest.LogCaptureFixture
) -> None:
    agent, _ = hostile_agent
    hostile.date_offset = timedelta(hours=-3)  # the server says it is three hours earlier: our clock runs ahead
    with caplog.at_level(logging.WARNING, logger="tuf_updates.repository_client"):
        report = agent.check()
    assert report.installed and report.clock_skew is not None and 3 * 3600 - 5 < report.clock_skew < 3 * 3600 + 5
    assert any("clock skew suspected: local clock ahead of the update server" in r.getMessage() for r in caplog.records)
    repo.expiry["timestamp"] = timedelta(hours=-1)  # expired by our clock, still valid by the server's
    publish(repo, OSQUERYD, "5.3.0")
    expired = agent.check()
    assert expired.refresh_error_kind is FailureKind.EXPIRED and expired.clock_skew is not None
    assert expired.clock_skew > 3 * 3600 - 5


def _client_certificate(tls_dir: Path, out: Path) -> tuple[Path, Path]:
    """A client certificate issued by the hostile server's CA (whose key ``ensure_self_signed`` left beside it)."""
    ca = x509.load_pem_x509_certificate((tls_dir / "ca.pem").read_bytes())
    ca_key = serialization.load_pem_private_key((tls_dir / "ca-key.pem").read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "orbit-host")]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    out.mkdir(parents=True)
    cert_path, key_path = out / "update_client.crt", out / "update_client.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


def test_mutual_tls_to_the_update_server(tmp_path: Path, repo: RepoBuilder) -> None:
    publish(repo, OSQUERYD, "5.1.0")
    server = HostileServer(repo.dir, tmp_path / "tls", require_client_cert=True)
    cert, key = _client_certificate(tmp_path / "tls", tmp_path / "client")
    try:
        for tls, works in ((TlsOptions(root_ca=server.ca), False), (TlsOptions(server.ca, cert, key), True)):
            with build_http_client(tls, user_agent="orbit-test", trust_env=False, connect_retries=0) as http:
                client = UpdateClient(tmp_path / "md", server.url, bootstrap_root=repo.root_bytes(1), http=http)
                if works:
                    client.refresh()
                    assert client.lookup("osqueryd", "linux", "stable") is not None
                else:
                    with pytest.raises(NetworkError, match="download failed"):
                        client.refresh()
    finally:
        server.close()


# -- kill during install -------------------------------------------------------------------------------------

KILL_SCRIPT = r"""
import os, signal, sys
from pathlib import Path
from types import MappingProxyType

import tuf_updates.installer as installer_module
from tuf_updates.installer import TargetInstaller
from tuf_updates.repository_client import TargetInfo
from tuf_updates.targets import target_spec

root, point, staged, path, length, sha256, version = sys.argv[1:8]
spec = target_spec(*path.split("/")[:3])


def die(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)


if point == "half-copied":
    def half(source, destination):
        data = Path(source).read_bytes()
        Path(destination).write_bytes(data[: len(data) // 2])
        die()
    installer_module.move_file = half
elif point == "mid-extract":
    real_extract = installer_module.safe_extract
    def partial(archive, destination, limits):
        real_extract(archive, destination, limits)
        next(p for p in destination.rglob("*") if p.is_file()).write_bytes(b"trunc")
        die()
    installer_module.safe_extract = partial
elif point == "before-switch":
    real_replace = installer_module.replace_pointer
    def replace(temp, pointer):
        if not pointer.name.endswith(".previous"):
            die()
        real_replace(temp, pointer)
    installer_module.replace_pointer = replace
elif point == "after-switch":
    TargetInstaller._tidy = die
info = TargetInfo(path, int(length), MappingProxyType({"sha256": sha256}), version)
TargetInstaller(Path(root)).install(spec, info, Path(staged))
print("install finished")
"""

BLOCKING_HELP = """#!{python}
import os, socket, sys, time
if sys.argv[1:] == ["--help"]:
    with socket.create_connection(("127.0.0.1", int(os.environ["READY_PORT"]))) as ready:
        ready.sendall(str(os.getpid()).encode())
    time.sleep(60)
"""


def _hidden_leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.rglob(".*") if p.name.endswith((".incoming", ".tmp")))


@pytest.mark.parametrize(
    ("spec", "point", "survivor"),
    [
        (OSQUERYD, "half-copied", "old"),
        (OSQUERYD, "exec-check", "old"),
        (OSQUERYD, "before-switch", "old"),
        (OSQUERYD, "after-switch", "new"),
        (DESKTOP, "mid-extract", "old"),
        (DESKTOP, "before-switch", "old"),
    ],
)
def test_a_kill_during_install_never_leaves_a_half_written_binary(
    tmp_path: Path, spec: TargetSpec, point: str, survivor: str
) -> None:
    def info(data: bytes, version: str) -> TargetInfo:
        return TargetInfo(spec.path, len(data), {"sha256": hashlib.sha256(data).hexdigest()}, version)

    installer = TargetInstaller(tmp_path / "root")
    installer.staging_dir.mkdir(parents=True)
    staged = installer.staging_dir / spec.file_name
    staged.write_bytes(payload(spec, "1.0.0"))
    installer.install(spec, info(payload(spec, "1.0.0"), "1.0.0"), staged)
    executable = installer.executable_path(spec)
    old_exe = executable.read_bytes()
    good = payload(spec, "2.0.0")
    new = BLOCKING_HELP.format(python=sys.executable).encode() if point == "exec-check" else good
    staged.write_bytes(new)
    target = info(new, "2.0.0")
    args = [
        str(installer.root_dir),
        point,
        str(staged),
        spec.path,
        str(target.length),
        target.hashes["sha256"],
        "2.0.0",
    ]
    with socket.socket() as ready:
        ready.bind(("127.0.0.1", 0))
        ready.listen(1)
        ready.settimeout(10)
        env = {**os.environ, "READY_PORT": str(ready.getsockname()[1])}
        process = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, *args], env=env, stdout=subprocess.PIPE)
        if point == "exec-check":  # killed from outside while the new binary's --help runs
            connection, _ = ready.accept()
            with connection:
                helper_pid = int(connection.recv(32))
            process.kill()
            os.kill(helper_pid, signal.SIGKILL)
        stdout, _ = process.communicate(timeout=20)
    assert process.returncode == -signal.SIGKILL and b"install finished" not in stdout
    new_exe = _script(str(spec.name), "2.0.0")
    assert executable.read_bytes() == (old_exe if survivor == "old" else new_exe)
    installer.recover(spec)
    assert _hidden_leftovers(installer.channel_dir(spec)) == []
    assert executable.read_bytes() == (old_exe if survivor == "old" else new_exe)
    if survivor == "old":  # and the interrupted update simply happens next time
        staged.write_bytes(good)
        installer.install(spec, info(good, "2.0.0"), staged)
        assert executable.read_bytes() == new_exe
    previous = installer.previous(spec)
    assert previous is not None and previous.version == "1.0.0"
