"""The exec check of a new executable before it is switched in: ``<exe> --help`` must exit 0 in time.

The child runs in its own process group (POSIX) so a timeout kills it and anything it started; its stderr goes to
an unnamed temporary file, so a grandchild that keeps the descriptor open cannot hang the check.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path

from tuf_updates.errors import InstallError

DEFAULT_EXEC_CHECK_TIMEOUT = 10.0
_STDERR_TAIL = 300

ExecCheck = Callable[[Path, Mapping[str, str]], None]


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    if sys.platform != "win32":
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
    process.kill()
    process.wait()


def run_help(timeout: float) -> ExecCheck:
    """The default exec check: ``<exe> --help`` must exit 0 within ``timeout`` seconds."""

    def check(executable: Path, env: Mapping[str, str]) -> None:
        with tempfile.TemporaryFile() as stderr:
            try:
                process = subprocess.Popen(
                    [str(executable), "--help"],
                    env=dict(env),
                    cwd=executable.parent,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=stderr,
                    start_new_session=sys.platform != "win32",
                )
            except OSError as exc:
                raise InstallError(f"exec check: cannot run {executable.name}: {exc.strerror or exc}") from exc
            try:
                returncode = process.wait(timeout=timeout)
            except subprocess.TimeoutExpired as exc:
                _kill_group(process)
                raise InstallError(f"exec check: {executable.name} --help did not finish in {timeout:g} s") from exc
            if returncode != 0:
                stderr.seek(max(0, stderr.seek(0, os.SEEK_END) - _STDERR_TAIL))
                tail = stderr.read().decode(errors="replace").strip()
                raise InstallError(f"exec check: {executable.name} --help exited {returncode}: {tail}")

    return check
