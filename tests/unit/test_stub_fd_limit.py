"""fleet-stub raises its open-files limit at start (each agent holds keep-alive connections)."""

from __future__ import annotations

import resource
import subprocess
import sys

import pytest

CHILD = """
import resource, sys
from server_stub.fd_limit import raise_open_files_limit
print(raise_open_files_limit(int(sys.argv[1])), *resource.getrlimit(resource.RLIMIT_NOFILE))
"""


def run_with_limits(soft: int, hard: int, wanted: int) -> list[int]:
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(wanted)],
        preexec_fn=limit,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.split()
    return [int(x) for x in out]


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX limits")
def test_soft_limit_raised_within_the_hard_limit() -> None:
    assert run_with_limits(1024, 4096, 2048) == [2048, 2048, 4096]


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX limits")
def test_above_the_hard_limit_raised_when_privileged_else_capped() -> None:
    got = run_with_limits(1024, 2048, 8192)
    if may_raise_hard_limit():
        assert got == [8192, 8192, 8192]
    else:  # e.g. root in a container without CAP_SYS_RESOURCE
        assert got == [2048, 2048, 2048]


def may_raise_hard_limit() -> bool:
    def lower() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 2048))

    probe = "import resource; resource.setrlimit(resource.RLIMIT_NOFILE, (4096, 4096))"
    probed = subprocess.run(
        [sys.executable, "-c", probe], preexec_fn=lower, capture_output=True, timeout=60, check=False
    )
    return probed.returncode == 0


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX limits")
def test_never_lowered() -> None:
    assert run_with_limits(4096, 8192, 2048) == [4096, 4096, 8192]
