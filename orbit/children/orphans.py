"""Finding and ending children a previous orbit left behind (killed with ``kill -9``, a power cut mid-stop).

A child is recognised by what cannot be faked by coincidence, never by its name:

- orbit's own record, ``state/<child>.child.json``: the pid, its process group and the process's start time, written
  when the child starts. A live process with that pid *and* that start time is the same process (a recycled pid has
  another start time); its whole process group goes, so a wrapper (a shell script, PyInstaller's one-file
  bootloader) and what it started go together.
- the child's own pidfile (osqueryd writes ``osquery.pid``): the pid counts only when that process runs one of the
  child's known executables (its binary, or the script its interpreter was given) and started before this orbit.

Windows has no process groups here: the recorded process alone is ended there.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

from safe_fs.atomic_write import SECRET_MODE, write_atomic

log = logging.getLogger(__name__)

START_TIME_TOLERANCE_S = 0.05  # psutil's create_time is rounded to the clock tick


@dataclass(frozen=True)
class ChildRecord:
    pid: int
    pgid: int
    started: float  # psutil create_time (epoch seconds)
    executable: str


def write_record(path: Path, pid: int, executable: str) -> None:
    """Record a child just started (best effort: a child that already exited has no record to leave)."""
    with contextlib.suppress(psutil.Error, OSError):
        started = psutil.Process(pid).create_time()
        pgid = os.getpgid(pid) if hasattr(os, "getpgid") else pid
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps(asdict(ChildRecord(pid, pgid, started, executable))), SECRET_MODE)


def read_record(path: Path) -> ChildRecord | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return ChildRecord(int(data["pid"]), int(data["pgid"]), float(data["started"]), str(data["executable"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def clear_record(path: Path, pid: int) -> None:
    """Remove the record of ``pid`` (a newer child's record is left alone)."""
    record = read_record(path)
    if record is not None and record.pid == pid:
        path.unlink(missing_ok=True)


def _same_path(candidate: str, executable: Path) -> bool:
    if not candidate:
        return False
    with contextlib.suppress(OSError):
        return Path(candidate).resolve() == executable.resolve()
    return False


def runs_one_of(process: psutil.Process, executables: Sequence[Path]) -> bool:
    """The process's binary, or the script its interpreter was given, is one of ``executables``."""
    try:
        exe, cmdline = process.exe(), process.cmdline()
    except psutil.Error:
        return False
    candidates = [exe, *cmdline[:2]]
    return any(_same_path(candidate, path) for candidate in candidates for path in executables)


def _recorded_orphan(record: ChildRecord) -> psutil.Process | None:
    try:
        process = psutil.Process(record.pid)
        same = abs(process.create_time() - record.started) <= START_TIME_TOLERANCE_S
    except psutil.Error:
        return None
    return process if same else None


def _pidfile_orphan(pidfile: Path, executables: Sequence[Path], own_start: float) -> psutil.Process | None:
    try:
        pid = int(pidfile.read_text(encoding="ascii").strip())
        process = psutil.Process(pid)
        older = process.create_time() < own_start
    except (OSError, ValueError, UnicodeDecodeError, psutil.Error):
        return None
    if pid == os.getpid() or not older or not runs_one_of(process, executables):
        return None
    return process


def _end_group(pgid: int, timeout: float) -> None:
    """SIGTERM the process group, SIGKILL whatever is left after ``timeout``."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)
        give_up = time.monotonic() + timeout
        while time.monotonic() < give_up:
            try:
                os.killpg(pgid, 0)
            except (ProcessLookupError, PermissionError):
                return
            time.sleep(0.02)


def _end_process(process: psutil.Process, timeout: float) -> None:
    with contextlib.suppress(psutil.Error):
        process.terminate()
        try:
            process.wait(timeout)
        except psutil.TimeoutExpired:
            process.kill()
            process.wait(timeout)


def kill_orphans(
    *,
    record: Path | None,
    pidfile: Path | None,
    executables: Sequence[Path] = (),
    timeout: float = 2.0,
    own_start: float | None = None,
) -> list[int]:
    """End the children a previous orbit left running; returns the pids found (their groups went with them)."""
    if own_start is None:
        own_start = psutil.Process().create_time()
    found: dict[int, tuple[psutil.Process, int | None]] = {}
    if record is not None and (recorded := read_record(record)) is not None:
        if (process := _recorded_orphan(recorded)) is not None:
            found[process.pid] = (process, recorded.pgid)
        record.unlink(missing_ok=True)
    if pidfile is not None and (process := _pidfile_orphan(pidfile, executables, own_start)) is not None:
        pgid = None
        with contextlib.suppress(OSError):
            pgid = os.getpgid(process.pid) if hasattr(os, "getpgid") else None
        found.setdefault(process.pid, (process, pgid))
    own_group = os.getpgrp() if hasattr(os, "getpgrp") else None
    for pid, (process, pgid) in found.items():
        log.warning("event=orphan_killed pid=%d pgid=%s cmdline=%r", pid, pgid, _cmdline(process))
        if sys.platform != "win32" and pgid is not None and pgid not in (own_group, 0, 1):
            _end_group(pgid, timeout)
        else:
            _end_process(process, timeout)
    return sorted(found)


def _cmdline(process: psutil.Process) -> str:
    with contextlib.suppress(psutil.Error):
        return " ".join(process.cmdline()[:3])
    return "?"
