"""fleet-stub raises its open-files limit at start (each agent holds keep-alive connections)."""

from __future__ import annotations

import os
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
        preexec_fn=limit,  # noqa: PLW1509 - only setrlimit, before exec
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
    if os.geteuid() == 0:
        assert got == [8192, 8192, 8192]
    else:
        assert got == [2048, 2048, 2048]


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX limits")
def test_never_lowered() -> None:
    assert run_with_limits(4096, 8192, 2048) == [4096, 4096, 8192]
