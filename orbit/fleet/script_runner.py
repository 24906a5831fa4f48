"""Run one Fleet script on this host (docs/reference/orbit-behaviour.md §11.3) and report what happened as a value.

- The script goes into a fresh private directory ``fleet-<execution_id>-*`` (0700) as ``script`` (Unix) or
  ``script.ps1`` (Windows), mode 0600; that directory is also the working directory. It is removed afterwards
  unless ``keep_tempdir`` (the caller maps ``FLEET_PREVENT_SCRIPT_TEMPDIR_DELETION`` onto it).
- Unix: a shebang, if present, must name ``/bin/sh``, ``/bin/zsh``, ``/usr/bin/sh`` or ``/usr/bin/zsh`` (optional
  whitespace after ``#!``, optional interpreter arguments — the set Fleet's server accepts at upload); the file is
  then made 0700 and executed directly. Without a shebang it runs as ``/bin/sh <file>``. Windows:
  ``powershell -MTA -ExecutionPolicy Bypass -File <file>``, exit code read as a signed 32-bit value.
- stdout and stderr share one pipe; only the last ``OUTPUT_TAIL_BYTES`` are kept while streaming, so a script that
  prints gigabytes costs CPU, not memory. Like Fleet, any execution error (non-zero exit, signal, timeout, spawn
  failure) is appended as ``\\nscript execution error: <err>`` and the tail is cut after appending, so the error
  text always survives.
- Timeout: the script runs in its own session/process group; at the deadline the whole group gets SIGKILL (Windows:
  ``taskkill /T /F``), we wait ``KILL_WAIT_DELAY`` for it, and the exit code is ``TIMEOUT_EXIT_CODE`` (-1).
- Where we differ from Fleet on purpose: a process killed by a signal (not by us) reports ``128 + signal`` (the
  shell convention) instead of Go's -1, which Fleet's UI would mislabel as a timeout; a missing shebang interpreter
  or a ``#!/bin/sh\\r`` (CRLF) shebang gets a message that names the real problem.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

log = logging.getLogger(__name__)

DEFAULT_SCRIPT_TIMEOUT = 300
OUTPUT_TAIL_BYTES = 40_000
DISABLED_EXIT_CODE = -2
TIMEOUT_EXIT_CODE = -1
DISABLED_OUTPUT = "Scripts are disabled"

KILL_WAIT_DELAY = 1.0
"""Seconds we wait after killing, and for the output pipe to close once the script has exited (Go's WaitDelay)."""

ERROR_PREFIX = "\nscript execution error: "

Platform = Literal["linux", "darwin", "windows"]

_POSIX = os.name == "posix"
_ALLOWED_SHEBANG = re.compile(r"#![ \t]*(?P<interpreter>(?:/usr)?/bin/z?sh)(?:[ \t].*)?")
_UNSAFE_ID_CHARS = re.compile(r"[^A-Za-z0-9_-]")
_MAX_ID_IN_DIR_NAME = 64
_MAX_SHEBANG_IN_MESSAGE = 200


def current_platform() -> Platform:
    if sys.platform.startswith("win"):
        return "windows"
    if sys.platform == "darwin":
        return "darwin"
    return "linux"


CURRENT_PLATFORM: Platform = current_platform()


@dataclass(frozen=True)
class ScriptOutcome:
    output: str
    exit_code: int
    runtime: int  # whole seconds
    timed_out: bool


class UnsupportedInterpreterError(ValueError):
    """The script's shebang names an interpreter we refuse to run."""


def parse_shebang(contents: str) -> str | None:
    """The interpreter to execute the script directly with, or None to run it with ``/bin/sh <file>``.

    Raises UnsupportedInterpreterError for any other ``#!`` line, with a message meant for the Fleet admin.
    """
    if not contents.startswith("#!"):
        return None
    first_line = contents.split("\n", 1)[0]
    shown = first_line.rstrip("\r")[:_MAX_SHEBANG_IN_MESSAGE]
    if first_line.endswith("\r"):
        raise UnsupportedInterpreterError(
            f'The shebang line "{shown}" ends with a carriage return (Windows CRLF line endings), so the system '
            "cannot find the interpreter. Save the script with Unix (LF) line endings."
        )
    match = _ALLOWED_SHEBANG.fullmatch(first_line)
    if match is None:
        raise UnsupportedInterpreterError(
            f'Interpreter not supported: "{shown}". Shell scripts must run in "#!/bin/sh" or "#!/bin/zsh" '
            '("#!/usr/bin/sh" and "#!/usr/bin/zsh" are also accepted), or have no shebang line.'
        )
    return match.group("interpreter")


def script_file_name(platform: Platform) -> str:
    return "script.ps1" if platform == "windows" else "script"


def script_command(script_path: Path, *, platform: Platform, direct_execute: bool) -> list[str]:
    if platform == "windows":
        return ["powershell", "-MTA", "-ExecutionPolicy", "Bypass", "-File", str(script_path)]
    if direct_execute:
        return [str(script_path)]
    return ["/bin/sh", str(script_path)]


def windows_exit_code(code: int) -> int:
    """Windows exit codes are unsigned 32-bit; Fleet reports them signed (0xFFFFFFFF → -1)."""
    code &= 0xFFFF_FFFF
    return code - 0x1_0000_0000 if code >= 0x8000_0000 else code


class OutputTail:
    """Keeps the last ``limit`` bytes fed to it, using at most about twice that much memory."""

    def __init__(self, limit: int = OUTPUT_TAIL_BYTES) -> None:
        self._limit = limit
        self._buffer = bytearray()
        self.total_bytes = 0

    def feed(self, data: bytes) -> None:
        self.total_bytes += len(data)
        if len(data) >= self._limit:
            self._buffer[:] = data[-self._limit :]
            return
        self._buffer += data
        if len(self._buffer) > 2 * self._limit:
            del self._buffer[: -self._limit]

    def value(self) -> bytes:
        return bytes(self._buffer[-self._limit :])


def finish_output(tail: bytes, error: str | None, *, truncated: bool = False, limit: int = OUTPUT_TAIL_BYTES) -> str:
    """Append the execution error (if any), keep the last ``limit`` bytes and decode them leniently.

    ``truncated`` says ``tail`` is already the end of a longer output (so it may start mid-character).
    """
    raw = tail + (ERROR_PREFIX + error).encode("utf-8", errors="replace") if error else tail
    if len(raw) > limit:
        raw = raw[-limit:]
        truncated = True
    return _decode_tail(raw, cut=truncated)


def _decode_tail(raw: bytes, *, cut: bool) -> str:
    if cut:
        # The cut may have landed inside a multi-byte character: drop its orphaned continuation bytes.
        skip = 0
        while skip < 3 and skip < len(raw) and 0x80 <= raw[skip] <= 0xBF:
            skip += 1
        raw = raw[skip:]
    return raw.decode("utf-8", errors="replace")


def _run_dir_prefix(execution_id: str) -> str:
    safe = _UNSAFE_ID_CHARS.sub("_", execution_id)[:_MAX_ID_IN_DIR_NAME]
    return f"fleet-{safe}-"


def _write_private(path: Path, contents: str) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0) | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(path, flags, 0o600)
    try:
        if _POSIX:
            os.fchmod(fd, 0o600)  # independent of the umask
        data = contents.encode("utf-8")
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
    finally:
        os.close(fd)


def _error_outcome(message: str, started: float) -> ScriptOutcome:
    return ScriptOutcome(
        output=finish_output(b"", message),
        exit_code=TIMEOUT_EXIT_CODE,  # Fleet reports -1 whenever the script could not run to completion
        runtime=int(time.monotonic() - started),
        timed_out=False,
    )


async def run_script(
    contents: str,
    execution_id: str,
    *,
    timeout: float,
    platform: Platform = CURRENT_PLATFORM,
    keep_tempdir: bool = False,
    tmp_root: Path | None = None,
) -> ScriptOutcome:
    """Write, run and clean up one script; never raises for problems with the script itself (only on cancel)."""
    if timeout <= 0:
        raise ValueError(f"timeout must be positive, got {timeout!r}")
    started = time.monotonic()
    try:
        run_dir = Path(tempfile.mkdtemp(prefix=_run_dir_prefix(execution_id), dir=tmp_root))
    except OSError as exc:
        return _error_outcome(f"could not create the script directory: {exc}", started)
    try:
        script_path = run_dir / script_file_name(platform)
        try:
            _write_private(script_path, contents)
        except (OSError, UnicodeError) as exc:
            return _error_outcome(f"could not write the script file: {exc}", started)
        interpreter: str | None = None
        if platform != "windows":
            try:
                interpreter = parse_shebang(contents)
            except UnsupportedInterpreterError as exc:
                return _error_outcome(str(exc), started)
            if interpreter is not None:
                try:
                    os.chmod(script_path, 0o700)
                except OSError as exc:
                    return _error_outcome(f"could not make the script executable: {exc}", started)
        argv = script_command(script_path, platform=platform, direct_execute=interpreter is not None)
        log.debug("event=script_start execution_id=%s argv0=%s timeout=%s", execution_id, argv[0], timeout)
        return await _execute(argv, run_dir, timeout=timeout, platform=platform, interpreter=interpreter)
    finally:
        if not keep_tempdir:
            _remove_run_dir(run_dir)


def _remove_run_dir(run_dir: Path) -> None:
    try:
        shutil.rmtree(run_dir)
    except OSError as exc:
        log.warning("event=script_tempdir_remove_failed path=%s error=%s", run_dir, exc)


class _ScriptProtocol(asyncio.SubprocessProtocol):
    """Feeds the combined output into a bounded tail; signals process exit and output EOF independently."""

    def __init__(self, loop: asyncio.AbstractEventLoop, tail: OutputTail) -> None:
        self._tail = tail
        self.exited: asyncio.Future[None] = loop.create_future()
        self.output_closed: asyncio.Future[None] = loop.create_future()

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        self._tail.feed(data)

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        _resolve(self.output_closed)

    def process_exited(self) -> None:
        _resolve(self.exited)

    def connection_lost(self, exc: Exception | None) -> None:
        _resolve(self.exited)
        _resolve(self.output_closed)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def _execute(
    argv: list[str], cwd: Path, *, timeout: float, platform: Platform, interpreter: str | None
) -> ScriptOutcome:
    loop = asyncio.get_running_loop()
    tail = OutputTail()
    protocol = _ScriptProtocol(loop, tail)
    started = time.monotonic()
    try:
        transport, _ = await loop.subprocess_exec(
            lambda: protocol,
            *argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            start_new_session=_POSIX,
        )
    except OSError as exc:
        return _error_outcome(_spawn_error(argv, exc, interpreter), started)

    errors: list[str] = []
    timed_out = False
    try:
        done, _ = await asyncio.wait({protocol.exited}, timeout=timeout)
        if not done:
            timed_out = True
            errors.append(f"timed out after {timeout:g} s; the script and its child processes were killed")
            await _kill_tree(transport)
            done, _ = await asyncio.wait({protocol.exited}, timeout=KILL_WAIT_DELAY)
            if not done:
                errors.append(f"the script process did not exit within {KILL_WAIT_DELAY:g} s of being killed")
        runtime = int(time.monotonic() - started)
        # Like Go's WaitDelay: a background process may still hold the output pipe; stop reading soon after.
        done, _ = await asyncio.wait({protocol.output_closed}, timeout=KILL_WAIT_DELAY)
        if not done:
            errors.append(
                f"output still held open by a background process {KILL_WAIT_DELAY:g} s after the script ended; "
                "stopped reading it"
            )
    finally:
        if transport.get_returncode() is None:
            _kill_tree_now(transport)  # cancelled (agent shutting down) or unkillable: leave nothing running
        transport.close()

    returncode = transport.get_returncode()
    if timed_out or returncode is None:
        exit_code = TIMEOUT_EXIT_CODE
    elif platform == "windows":
        exit_code = windows_exit_code(returncode)
        if exit_code != 0:
            errors.insert(0, f"exit status {exit_code}")
    elif returncode < 0:
        exit_code = 128 - returncode
        errors.insert(0, f"signal: {_signal_name(-returncode)}")
    else:
        exit_code = returncode
        if exit_code != 0:
            errors.insert(0, f"exit status {exit_code}")
    output = finish_output(
        tail.value(), "; ".join(errors) if errors else None, truncated=tail.total_bytes > OUTPUT_TAIL_BYTES
    )
    return ScriptOutcome(output=output, exit_code=exit_code, runtime=runtime, timed_out=timed_out)


def _spawn_error(argv: list[str], exc: OSError, interpreter: str | None) -> str:
    if interpreter is not None and isinstance(exc, FileNotFoundError) and not os.path.exists(interpreter):
        return f"the interpreter {interpreter} named in the shebang line is not installed on this host"
    if interpreter is not None and isinstance(exc, PermissionError):
        return f"permission denied executing the script (is the temporary directory mounted noexec?): {exc}"
    return f"could not start {argv[0]}: {exc}"


def _signal_name(number: int) -> str:
    try:
        description = signal.strsignal(number)
    except ValueError:
        description = None
    return (description or f"signal {number}").lower()


async def _kill_tree(transport: asyncio.SubprocessTransport) -> None:
    pid = transport.get_pid()
    if not _POSIX:
        try:
            killer = await asyncio.create_subprocess_exec(
                "taskkill",
                "/F",
                "/T",
                "/PID",
                str(pid),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            await asyncio.wait_for(killer.wait(), timeout=5 * KILL_WAIT_DELAY)
        except (OSError, TimeoutError) as exc:
            log.warning("event=script_taskkill_failed pid=%s error=%s", pid, exc)
    _kill_tree_now(transport)


def _kill_tree_now(transport: asyncio.SubprocessTransport) -> None:
    pid = transport.get_pid()
    if _POSIX:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)  # start_new_session made the script its own group leader
    if transport.get_returncode() is None:
        with contextlib.suppress(ProcessLookupError):
            transport.kill()
