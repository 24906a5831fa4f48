"""orbit's update helper (ADR 0020): the TUF client in a short-lived process, driven by the daemon's
``RepositoryProcess`` over stdin/stdout, against a real repository served over TLS by fleet-stub.

The daemon itself must not load the TUF stack (that is the point: ≈ 13 MiB resident); the helper must give the
same verdicts as the in-process client, keep the metadata lock, relay its log lines, and fail as an ``UpdateError``
of kind ``helper`` — never hang, never touch the installed binaries — when it dies, lies or stalls.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from orbit.self_update.setup import update_helper_argv
from tests.support.stub_server import RunningStub, running_stub
from tests.support.tuf_builder import RepoBuilder
from tuf_updates.directory_lock import DirectoryLock
from tuf_updates.errors import FailureKind, UpdateError
from tuf_updates.helper_protocol import HelperConfig
from tuf_updates.installer import TargetInstaller
from tuf_updates.repository_process import RepositoryProcess
from tuf_updates.targets import target_spec
from tuf_updates.update_runner import TargetOutcome, UpdateRunner

OSQUERYD = target_spec("osqueryd", "linux", "stable")
EXECUTABLE = b'#!/bin/sh\n[ "$1" = --help ] && echo "usage: osqueryd"\nexit 0\n'


@pytest.fixture
def repo(tmp_path: Path) -> RepoBuilder:
    builder = RepoBuilder(tmp_path / "repo" / "repository", consistent_snapshot=True)
    builder.add_target(OSQUERYD.path, EXECUTABLE, version="5.1.0", hash_algorithms=("sha256", "sha512"))
    builder.publish()
    return builder


@pytest.fixture
def stub(tmp_path: Path, repo: RepoBuilder) -> Iterator[RunningStub]:
    with running_stub(tmp_path / "stub", tuf_repo=repo.dir) as running:
        yield running


def config(tmp_path: Path, stub: RunningStub, repo: RepoBuilder, **changes: object) -> HelperConfig:
    base = HelperConfig(
        metadata_dir=tmp_path / "root" / "tuf",
        base_url=f"{stub.url}/tuf",
        bootstrap_root=repo.root_bytes(1),
        user_agent="orbit-test/1.0",
        root_ca=stub.ca_path,
        lock_timeout=0.2,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def test_the_daemon_never_loads_the_tuf_stack() -> None:
    code = (
        "import sys, orbit.__main__, orbit.agent; "
        "heavy = sorted(m for m in sys.modules "
        "if m.startswith(('cryptography', 'securesystemslib.signer', 'tuf.api.metadata', 'tuf.ngclient'))); "
        "print(heavy)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert result.stdout.strip() == "[]"


def test_a_check_through_the_helper_installs_and_then_finds_nothing_new(
    tmp_path: Path, stub: RunningStub, repo: RepoBuilder, caplog: pytest.LogCaptureFixture
) -> None:
    repository = RepositoryProcess(update_helper_argv(), config(tmp_path, stub, repo))
    installer = TargetInstaller(tmp_path / "root")
    runner = UpdateRunner(repository, installer, [OSQUERYD])
    with caplog.at_level(logging.INFO):
        first = runner.check_once()
    assert [(r.outcome, r.version) for r in first.targets] == [(TargetOutcome.INSTALLED, "5.1.0")]
    assert installer.executable_path(OSQUERYD).read_bytes() == EXECUTABLE
    # the helper's own log line, relayed under its logger's name
    assert any(r.name == "tuf_updates.repository_client" and "downloaded target=" in r.message for r in caplog.records)
    assert first.clock_skew is not None and abs(first.clock_skew) < 60
    again = runner.check_once()
    assert [r.outcome for r in again.targets] == [TargetOutcome.UP_TO_DATE]
    assert repository.helpers_started == 2  # one process per check, each gone afterwards
    assert repository.last_helper_pid is not None
    with pytest.raises(ProcessLookupError):
        os.kill(repository.last_helper_pid, 0)


def test_a_tampered_target_is_refused_by_the_helper_as_by_the_library(
    tmp_path: Path, stub: RunningStub, repo: RepoBuilder
) -> None:
    info = repo.targets.signed.targets[OSQUERYD.path]
    repo.write_target_bytes(OSQUERYD.path, EXECUTABLE.replace(b"exit 0", b"exit 1"), info)
    repository = RepositoryProcess(update_helper_argv(), config(tmp_path, stub, repo))
    installer = TargetInstaller(tmp_path / "root")
    report = UpdateRunner(repository, installer, [OSQUERYD]).check_once()
    assert report.targets[0].outcome is TargetOutcome.FAILED
    assert report.targets[0].error_kind is FailureKind.TARGET_MISMATCH
    assert not installer.is_installed(OSQUERYD)


def test_the_metadata_lock_is_held_by_the_helper(tmp_path: Path, stub: RunningStub, repo: RepoBuilder) -> None:
    settings = config(tmp_path, stub, repo)
    settings.metadata_dir.mkdir(parents=True)
    repository = RepositoryProcess(update_helper_argv(), settings)
    lock = DirectoryLock(settings.metadata_dir, timeout=0.1)
    with lock:
        with pytest.raises(UpdateError) as refused, repository:
            pass
        assert refused.value.kind is FailureKind.LOCKED
    with repository:  # taken by the helper now: the daemon's side cannot have it meanwhile
        repository.refresh()
        with pytest.raises(UpdateError) as busy, lock:
            pass
        assert busy.value.kind is FailureKind.LOCKED
    with lock:  # and released when the helper is gone
        pass


@pytest.mark.parametrize(
    ("program", "words"),
    [
        ("import sys; sys.exit(3)", "exited during open (status 3)"),
        ("print('hello, I am not a helper', flush=True); import time; time.sleep(120)", "bad line"),
        ("import sys; sys.stdout.write('[1, 2]\\n'); sys.stdout.flush(); import time; time.sleep(120)", "bad line"),
        ("import sys, json; sys.stdin.readline(); print(json.dumps({'ok': False}), flush=True)", "refused open"),
        (
            "import sys, json; sys.stdin.readline(); "
            "print(json.dumps({'ok': False, 'error': {'type': 'os.system', 'kind': 'network', 'message': 'x'}}), "
            "flush=True); import time; time.sleep(120)",
            "bad error",
        ),
        ("import time; time.sleep(30)", "did not answer open within 1 s"),
    ],
    ids=["dies", "prints-text", "prints-json-array", "says-not-ok", "names-a-foreign-error", "stalls"],
)
def test_a_helper_that_dies_lies_or_stalls_is_a_helper_failure(tmp_path: Path, program: str, words: str) -> None:
    settings = HelperConfig(tmp_path / "tuf", "https://127.0.0.1:9/tuf", None, "orbit-test/1.0")
    # the stalling helper is given 1 s; the others a generous minute (their interpreter may start slowly on a
    # loaded machine, and they answer, or die, long before)
    timeout = 1.0 if "did not answer" in words else 60.0
    repository = RepositoryProcess([sys.executable, "-c", program], settings, answer_timeout=timeout)
    with pytest.raises(UpdateError) as failure, repository:
        pass
    assert failure.value.kind is FailureKind.HELPER
    assert words in str(failure.value)
    assert repository.last_helper_pid is not None
    # killed or exited, and reaped: nothing left behind
    with pytest.raises(ProcessLookupError):
        os.kill(repository.last_helper_pid, 0)


def test_a_missing_helper_executable_is_a_helper_failure(tmp_path: Path) -> None:
    settings = HelperConfig(tmp_path / "tuf", "https://127.0.0.1:9/tuf", None, "orbit-test/1.0")
    report = UpdateRunner(
        RepositoryProcess([str(tmp_path / "no-such-orbit"), "update-helper"], settings),
        TargetInstaller(tmp_path / "root"),
        [OSQUERYD],
    ).check_once()
    assert report.refresh_error_kind is FailureKind.HELPER
    assert [r.outcome for r in report.targets] == [TargetOutcome.SKIPPED]


@pytest.mark.parametrize(
    "line",
    [b"not json\n", b'{"op": "refresh"}\n', b'{"op": "open", "config": {"metadata_dir": 3}}\n', b"[]\n"],
    ids=["not-json", "no-open-first", "bad-config", "not-an-object"],
)
def test_the_helper_refuses_what_is_not_the_protocol(tmp_path: Path, line: bytes) -> None:
    result = subprocess.run(
        update_helper_argv(), input=line, capture_output=True, timeout=60, check=False, cwd=tmp_path
    )
    assert result.returncode == 2
    answer = json.loads(result.stdout.splitlines()[-1])
    assert answer["ok"] is False and answer["protocol_error"]


def test_the_helper_ends_when_its_input_ends(tmp_path: Path) -> None:
    result = subprocess.run(update_helper_argv(), input=b"", capture_output=True, timeout=60, check=False)
    assert result.returncode == 0
    assert result.stdout == b""


def test_update_helper_argv_re_enters_the_same_program() -> None:
    assert update_helper_argv("/opt/orbit/bin/orbit/orbit", frozen=True) == [
        "/opt/orbit/bin/orbit/orbit",
        "update-helper",
    ]
    assert update_helper_argv("/usr/bin/python3", frozen=False) == ["/usr/bin/python3", "-m", "orbit", "update-helper"]
