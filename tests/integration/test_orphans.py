"""Children a previous orbit left behind are recognised by orbit's record (pid + start time) or by their own pidfile
plus the executable they run, never by name, and ended with everything in their process group.

The child here is a *wrapper*: a shell script that starts the real program as its own child (no ``exec``), as a
one-file PyInstaller build or a vendor's wrapper does. A name check cannot see the inner process; a group can.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import psutil

from orbit.children.orphans import kill_orphans, read_record, runs_one_of
from orbit.children.supervisor import ChildSpec, Supervisor

PY = sys.executable


def _wrapper(tmp_path: Path) -> Path:
    """``wrapper``: starts python (sleeping, its pid in ``inner.pid``) as a child and waits for it."""
    inner = tmp_path / "inner.py"
    inner.write_text(
        textwrap.dedent(f"""
            import os, pathlib, time
            pathlib.Path({str(tmp_path / "inner.pid")!r}).write_text(str(os.getpid()))
            time.sleep(600)
        """)
    )
    wrapper = tmp_path / "wrapper"
    wrapper.write_text(f"#!/bin/sh\n{PY} {inner}\n")
    wrapper.chmod(0o755)
    return wrapper


def _spec(tmp_path: Path, wrapper: Path) -> ChildSpec:
    return ChildSpec(
        name="wrapped",
        argv=lambda: [str(wrapper)],
        env=lambda: {"PATH": os.environ["PATH"]},
        record=tmp_path / "state" / "wrapped.child.json",
        log_path=tmp_path / "child.log",
    )


def _wait(predicate: Callable[[], object], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_a_killed_orbit_leaves_a_wrapper_and_its_child_and_the_next_supervisor_ends_both(tmp_path: Path) -> None:
    wrapper = _wrapper(tmp_path)
    # "orbit" #1: a process running the supervisor, killed with -9 while its child runs
    runner = tmp_path / "runner.py"
    runner.write_text(
        textwrap.dedent(f"""
            import asyncio, os, sys
            sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})
            from pathlib import Path
            from tests.integration.test_orphans import _spec
            tmp = Path({str(tmp_path)!r})
            asyncio.run(__import__("orbit.children.supervisor", fromlist=["Supervisor"]).Supervisor(
                _spec(tmp, tmp / "wrapper")).run(asyncio.Event()))
        """)
    )
    first = subprocess.Popen([PY, str(runner)])
    try:
        _wait(lambda: (tmp_path / "inner.pid").exists() and read_record(tmp_path / "state" / "wrapped.child.json"))
        record = read_record(tmp_path / "state" / "wrapped.child.json")
        assert record is not None
        old_wrapper, old_inner = record.pid, int((tmp_path / "inner.pid").read_text())
        first.kill()
        first.wait(30)
        assert _alive(old_wrapper) and _alive(old_inner)  # the orphans a kill -9 leaves
        # the inner process is not named like anything orbit knows: a name check would miss it
        assert "wrapped" not in " ".join(psutil.Process(old_inner).cmdline())
        (tmp_path / "inner.pid").unlink()

        async def second_orbit() -> int:
            supervisor = Supervisor(_spec(tmp_path, wrapper))
            stop = asyncio.Event()
            task = asyncio.create_task(supervisor.run(stop))
            while not (tmp_path / "inner.pid").exists():
                await asyncio.sleep(0.02)
            new_inner = int((tmp_path / "inner.pid").read_text())
            assert not _alive(old_wrapper) and not _alive(old_inner)
            stop.set()
            await asyncio.wait_for(task, 60)
            return new_inner

        new_inner = asyncio.run(second_orbit())
        _wait(lambda: not _alive(new_inner))  # a clean stop takes the inner process too
    finally:
        first.kill()
        for pid_file in (tmp_path / "inner.pid",):
            if pid_file.exists():
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid_file.read_text()), signal.SIGKILL)


def test_a_kill_9_of_the_wrapper_takes_what_it_started_before_the_restart(tmp_path: Path) -> None:
    wrapper = _wrapper(tmp_path)

    async def scenario() -> tuple[int, int]:
        supervisor = Supervisor(_spec(tmp_path, wrapper))
        stop = asyncio.Event()
        task = asyncio.create_task(supervisor.run(stop))
        while not (tmp_path / "inner.pid").exists():
            await asyncio.sleep(0.02)
        first_wrapper = supervisor.status().pid
        first_inner = int((tmp_path / "inner.pid").read_text())
        (tmp_path / "inner.pid").unlink()
        assert first_wrapper is not None
        os.kill(first_wrapper, signal.SIGKILL)  # only the wrapper: its child is orphaned in the group
        while not (tmp_path / "inner.pid").exists():
            await asyncio.sleep(0.02)
        alive_after_restart = _alive(first_inner)
        stop.set()
        await asyncio.wait_for(task, 60)
        return first_inner, int(alive_after_restart)

    first_inner, alive = asyncio.run(scenario())
    assert not alive  # never two copies side by side
    assert not _alive(first_inner)


def test_a_pidfile_counts_only_for_an_older_process_running_a_known_executable(tmp_path: Path) -> None:
    wrapper = _wrapper(tmp_path)
    pidfile = tmp_path / "osquery.pid"
    stranger = subprocess.Popen([PY, "-c", "import time; time.sleep(600)"])
    ours = subprocess.Popen([str(wrapper)], start_new_session=True)
    try:
        _wait((tmp_path / "inner.pid").exists)
        inner = int((tmp_path / "inner.pid").read_text())
        assert runs_one_of(psutil.Process(ours.pid), [wrapper])
        # a pid that now belongs to another program (a recycled pid) is left alone
        pidfile.write_text(str(stranger.pid))
        assert kill_orphans(record=None, pidfile=pidfile, executables=[wrapper], own_start=time.time() + 60) == []
        assert stranger.poll() is None
        # our wrapper, started before "this orbit": ended with its group (the inner process too)
        pidfile.write_text(str(ours.pid))
        assert kill_orphans(record=None, pidfile=pidfile, executables=[wrapper], own_start=time.time() - 600) == []
        assert ours.poll() is None  # not older than this orbit: not an orphan
        assert kill_orphans(record=None, pidfile=pidfile, executables=[wrapper], own_start=time.time() + 60) == [
            ours.pid
        ]
        ours.wait(30)
        _wait(lambda: not _alive(inner))
    finally:
        stranger.kill()
        ours.kill()


def test_a_record_whose_pid_was_recycled_is_ignored(tmp_path: Path) -> None:
    record = tmp_path / "x.child.json"
    stranger = subprocess.Popen([PY, "-c", "import time; time.sleep(600)"])
    try:
        started = psutil.Process(stranger.pid).create_time()
        record.write_text(
            json.dumps({"pid": stranger.pid, "pgid": stranger.pid, "started": started - 30, "executable": "x"})
        )
        assert kill_orphans(record=record, pidfile=None) == []
        assert stranger.poll() is None and not record.exists()
    finally:
        stranger.kill()
