"""Generic child supervision: osqueryd and fleet-desktop are two ``ChildSpec``s of one mechanism.

Each child runs in its own process group (so a stop reaches its whole tree), is restarted by ``RestartTracker``
when it exits, and is stopped gracefully (SIGTERM to the group, ``stop_timeout`` seconds, then SIGKILL). A stale
instance recorded in the child's pidfile (left by a crashed orbit) is killed before the first start. The argv
and environment are rebuilt at every start, so new flags or a new binary take effect on restart. Unlike Fleet's
orbit, a child's exit never ends the agent.

A spec may instead give a ``launch`` callable, run in a thread before every start, that returns the whole
``ChildLaunch`` (argv, env, cwd and the user/group to run as) or None when the child cannot start yet (fleet-desktop
without a logged-in GUI user): the supervisor then waits ``not_ready_retry`` seconds (or a ``restart()`` request)
and asks again, without counting a failure. With ``write_pidfile`` the supervisor records the child's pid in
``pidfile`` itself (for children that write none) and removes it when it stops the child.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from orbit.children.orphans import clear_record, kill_orphans, write_record
from orbit.children.output_limit import OutputCap, OutputLimiter
from orbit.children.restart_policy import BreakerState, RestartPolicy, RestartTracker
from orbit.children.stale_bundles import sweep_stale_bundles
from safe_fs.atomic_write import PUBLIC_MODE, write_atomic

log = logging.getLogger(__name__)


# SIGTERM → SIGKILL: a stopping service (systemctl stop, an uninstall) has orbit and every child gone within 2 s.
CHILD_STOP_TIMEOUT_S = 1.5


class StartReason(Enum):
    """Why the supervisor is about to start the child (what a ``prepare`` hook may want to know)."""

    FIRST = "first"
    AFTER_CRASH = "after_crash"  # the last run ended by itself, or the start failed
    RESTART = "restart"  # asked for (new flags, a new binary, the server)


class ChildState(Enum):
    STARTING = "starting"
    RUNNING = "running"
    BACKING_OFF = "backing_off"
    WAITING = "waiting"  # ``launch`` said the child cannot start yet (e.g. no GUI session)
    STOPPED = "stopped"


@dataclass(frozen=True)
class ChildLaunch:
    """Everything one start needs; ``user``/``group``/``extra_groups`` go to ``create_subprocess_exec`` (POSIX)."""

    argv: list[str]
    env: dict[str, str]
    cwd: Path | None = None
    user: str | int | None = None
    group: str | int | None = None
    extra_groups: tuple[str | int, ...] | None = None  # set them when dropping from root, or root's groups stay


def _no_argv() -> list[str]:
    raise RuntimeError("this ChildSpec is started through its launch callable")


@dataclass(frozen=True)
class ChildSpec:
    name: str
    argv: Callable[[], list[str]] = _no_argv
    env: Callable[[], dict[str, str]] = dict
    cwd: Path | None = None
    stop_timeout: float = CHILD_STOP_TIMEOUT_S
    pidfile: Path | None = None
    # orbit's record of the running child (pid, group, start time): what a later orbit recognises as an orphan
    record: Path | None = None
    # what the child runs, to recognise the pid in its own ``pidfile`` as an orphan (osqueryd writes one)
    orphan_executables: Callable[[], Sequence[Path]] | None = None
    log_path: Path | None = None
    policy: RestartPolicy = field(default_factory=RestartPolicy)
    output: Callable[[str], None] | None = None  # each line of the child's stdout+stderr (e.g. into orbit's log)
    output_cap: OutputCap = field(default_factory=OutputCap)  # at most this much of it per window
    user: str | int | None = None
    group: str | int | None = None
    extra_groups: tuple[str | int, ...] | None = None
    launch: Callable[[], ChildLaunch | None] | None = None  # replaces argv/env/cwd/user/group when given
    not_ready_retry: float = 30.0  # seconds between ``launch`` calls while it returns None
    write_pidfile: bool = False  # the supervisor writes the child's pid to ``pidfile``
    # awaited before every start (e.g. the self-heal check of the executable); an error is logged, the start goes on
    prepare: Callable[[StartReason], Awaitable[None]] | None = None

    def static_launch(self) -> ChildLaunch:
        return ChildLaunch(self.argv(), self.env(), self.cwd, self.user, self.group, self.extra_groups)


def _temporary_directory(env: dict[str, str] | None) -> Path | None:
    """Where the child unpacks a one-file build: its own TMPDIR/TEMP/TMP, else orbit's temporary directory."""
    for name in ("TMPDIR", "TEMP", "TMP"):
        value = (env or {}).get(name)
        if value:
            return Path(value)
    return None


@dataclass(frozen=True)
class ChildStatus:
    name: str
    state: ChildState
    pid: int | None
    restarts: int
    consecutive_failures: int
    breaker: BreakerState
    last_exit_code: int | None
    next_start_in: float | None
    uptime: float | None = None  # seconds the current process has been running


class Supervisor:
    def __init__(self, spec: ChildSpec, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.spec = spec
        self.tracker = RestartTracker(spec.policy)
        self._clock = clock
        self._process: asyncio.subprocess.Process | None = None
        self._state = ChildState.STOPPED
        self._last_exit: int | None = None
        self._next_start_at: float | None = None
        self._began: float | None = None
        self._pumps: set[asyncio.Future[None]] = set()
        self._restart_requested = asyncio.Event()
        self._restart_reason = ""
        self.started = asyncio.Event()

    def status(self) -> ChildStatus:
        next_in = None if self._next_start_at is None else max(0.0, self._next_start_at - self._clock())
        return ChildStatus(
            name=self.spec.name,
            state=self._state,
            pid=self._process.pid if self._process and self._process.returncode is None else None,
            restarts=self.tracker.total_restarts,
            consecutive_failures=self.tracker.consecutive_failures,
            breaker=self.tracker.breaker,
            last_exit_code=self._last_exit,
            next_start_in=next_in,
            uptime=self._clock() - self._began
            if self._began is not None and self._state is ChildState.RUNNING
            else None,
        )

    def restart(self, reason: str) -> None:
        """Stop the child and start it again at once (not counted as a failure)."""
        self._restart_reason = reason
        self._restart_requested.set()

    async def _resolve_launch(self) -> ChildLaunch | None:
        if self.spec.launch is None:
            return self.spec.static_launch()
        return await asyncio.to_thread(self.spec.launch)

    async def _start(self, launch: ChildLaunch) -> asyncio.subprocess.Process:
        # what a killed one-file build of ours left in the temporary directory (a previous child, or orbit)
        await asyncio.to_thread(sweep_stale_bundles, _temporary_directory(launch.env))
        stdout: int | None = None
        handle = None
        if self.spec.output is not None:
            stdout = asyncio.subprocess.PIPE
        elif self.spec.log_path is not None:
            self.spec.log_path.parent.mkdir(parents=True, exist_ok=True)
            handle = self.spec.log_path.open("ab")
            stdout = handle.fileno()
        try:
            process = await asyncio.create_subprocess_exec(
                *launch.argv,
                env=launch.env,
                cwd=launch.cwd,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=stdout,
                stderr=asyncio.subprocess.STDOUT if stdout is not None else None,
                start_new_session=True,
                user=launch.user,
                group=launch.group,
                extra_groups=launch.extra_groups,
            )
        finally:
            if handle is not None:
                handle.close()
        log.info("event=child_started name=%s pid=%d", self.spec.name, process.pid)
        if self.spec.record is not None:
            write_record(self.spec.record, process.pid, launch.argv[0] if launch.argv else "")
        if self.spec.output is not None and process.stdout is not None:
            limiter = OutputLimiter(self.spec.name, self.spec.output, self.spec.output_cap)
            pump = asyncio.ensure_future(_pump_lines(process.stdout, limiter))
            pump.add_done_callback(lambda _done: limiter.close())
            self._pumps.add(pump)
            pump.add_done_callback(self._pumps.discard)
        if self.spec.write_pidfile and self.spec.pidfile is not None:
            try:
                write_atomic(self.spec.pidfile, f"{process.pid}\n", PUBLIC_MODE)
            except OSError as exc:
                log.warning("event=pidfile_write_failed name=%s error=%s", self.spec.name, exc)
        return process

    def _kill_orphans(self) -> list[int]:
        spec = self.spec
        executables = list(spec.orphan_executables()) if spec.orphan_executables is not None else []
        if spec.record is None and not executables:
            return []
        pidfile = spec.pidfile if executables and not spec.write_pidfile else None
        return kill_orphans(record=spec.record, pidfile=pidfile, executables=executables)

    def _remove_pidfile(self, pid: int) -> None:
        if self.spec.record is not None:
            clear_record(self.spec.record, pid)
        pidfile = self.spec.pidfile
        if not self.spec.write_pidfile or pidfile is None:
            return
        with contextlib.suppress(OSError, UnicodeDecodeError):
            if pidfile.read_text(encoding="ascii").strip() == str(pid):
                pidfile.unlink()

    async def _stop(self, process: asyncio.subprocess.Process) -> None:
        if process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), self.spec.stop_timeout)
        except TimeoutError:
            log.warning("event=child_kill name=%s pid=%d reason=stop_timeout", self.spec.name, process.pid)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)  # anything the child left behind in its group

    async def run(self, stop: asyncio.Event) -> None:
        """Keep the child running until ``stop``; a cancelled ``run`` still stops the child before it ends."""
        try:
            await self._run(stop)
        except asyncio.CancelledError:
            process = self._process
            if process is not None and process.returncode is None:
                await asyncio.shield(self._stop(process))
                self._remove_pidfile(process.pid)
            self._state = ChildState.STOPPED
            raise

    async def _run(self, stop: asyncio.Event) -> None:
        await asyncio.to_thread(self._kill_orphans)
        delay = 0.0
        reason = StartReason.FIRST
        while not stop.is_set():
            if delay > 0:
                self._state = ChildState.BACKING_OFF
                self._next_start_at = self._clock() + delay
                if await _wait_any(stop, self._restart_requested, delay) is stop:
                    break
            self._next_start_at = None
            self._restart_requested.clear()
            self._state = ChildState.STARTING
            delay = 0.0
            if self.spec.prepare is not None and await self._prepare(stop, reason):
                break
            try:
                resolving: asyncio.Future[ChildLaunch | None] = asyncio.ensure_future(self._resolve_launch())
                # finding a GUI session can take a while (loginctl): a stop must not wait for it
                if await _wait_any(stop, asyncio.Event(), None, resolving) is stop:
                    resolving.cancel()
                    break
                launch = resolving.result()
                if launch is None:
                    self._state = ChildState.WAITING
                    self._next_start_at = self._clock() + self.spec.not_ready_retry
                    if await _wait_any(stop, self._restart_requested, self.spec.not_ready_retry) is stop:
                        break
                    continue
                process = await self._start(launch)
            except Exception as exc:  # an OSError from exec, or a failing launch callable
                log.error("event=child_start_failed name=%s error=%s", self.spec.name, exc)
                delay = self.tracker.record_exit(0.0)
                reason = StartReason.AFTER_CRASH
                continue
            self._process = process
            self._state = ChildState.RUNNING
            self.started.set()
            began = self._clock()
            self._began = began
            exited = asyncio.ensure_future(process.wait())
            woke = await _wait_any(stop, self._restart_requested, None, exited)
            if woke is not exited:
                await self._stop(process)
            else:
                _kill_group_leftovers(process.pid)  # a wrapper's (or a one-file bootloader's) children go with it
            exited.cancel()
            code = process.returncode
            self._last_exit = code
            ran_for = self._clock() - began
            if stop.is_set():
                break
            intentional = woke is self._restart_requested
            reason = StartReason.RESTART if intentional else StartReason.AFTER_CRASH
            delay = self.tracker.record_exit(ran_for, intentional=intentional)
            if intentional:
                log.info("event=child_restart name=%s reason=%r", self.spec.name, self._restart_reason)
            else:
                log.warning(
                    "event=child_exited name=%s code=%s ran_for=%.1f restart_in=%.2f failures=%d breaker=%s",
                    self.spec.name,
                    code,
                    ran_for,
                    delay,
                    self.tracker.consecutive_failures,
                    self.tracker.breaker.value,
                )
        self._state = ChildState.STOPPED
        self._next_start_at = None
        if self._process is not None:
            await self._stop(self._process)
            self._remove_pidfile(self._process.pid)

    async def _prepare(self, stop: asyncio.Event, reason: StartReason) -> bool:
        """Await the spec's ``prepare`` hook; True when ``stop`` came first (the hook is cancelled)."""
        assert self.spec.prepare is not None
        preparing: asyncio.Future[None] = asyncio.ensure_future(self.spec.prepare(reason))
        if await _wait_any(stop, asyncio.Event(), None, preparing) is stop:
            preparing.cancel()
            return True
        if (error := preparing.exception()) is not None:
            log.error("event=child_prepare_failed name=%s error=%s", self.spec.name, error)
        return False


def _kill_group_leftovers(pgid: int) -> None:
    """The child (its group's leader) exited: end what it left in its group, so a restart never runs beside it."""
    if sys.platform == "win32":
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
        log.warning("event=child_group_leftovers_killed pgid=%d", pgid)


MAX_LINE = 16 * 1024


async def _pump_lines(stream: asyncio.StreamReader, output: Callable[[str], None]) -> None:
    """Hand a child's output to ``output`` line by line until the pipe closes; a line longer than 16 KiB comes in
    16 KiB pieces (nothing is dropped, and memory stays bounded whatever the child writes)."""
    pending = b""
    while chunk := await stream.read(65536):
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            for start in range(0, max(len(line), 1), MAX_LINE):
                output(line[start : start + MAX_LINE].decode("utf-8", "replace").rstrip("\r"))
        while len(pending) > MAX_LINE:
            output(pending[:MAX_LINE].decode("utf-8", "replace"))
            pending = pending[MAX_LINE:]
    if pending:
        output(pending.decode("utf-8", "replace"))


async def _wait_any(
    stop: asyncio.Event, restart: asyncio.Event, timeout: float | None, extra: asyncio.Future[Any] | None = None
) -> object:
    """Wait for the first of stop / restart / ``extra``; returns which (or None on timeout)."""
    waiters: dict[asyncio.Future[object], object] = {
        asyncio.ensure_future(stop.wait()): stop,
        asyncio.ensure_future(restart.wait()): restart,
    }
    if extra is not None:
        waiters[extra] = extra
    done, _ = await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    for future in waiters:
        if future is not extra:
            future.cancel()
    if stop.is_set():
        return stop
    for future in done:
        return waiters[future]
    return None
