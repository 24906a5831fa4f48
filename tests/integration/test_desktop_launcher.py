"""The real Supervisor starting a stand-in fleet-desktop through DesktopLauncher.

The stand-in is a shell script that records its environment, ``id -u`` and ``id -G`` in a world-writable
directory, then idles. As root, a second test has orbit drop to ``nobody`` and checks that the switch really
happened (uid and supplementary groups)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import psutil
import pytest

from orbit.children.desktop_launch import DesktopLauncher, desktop_environment
from orbit.children.gui_session import GuiSession, StaticSessionFinder
from orbit.children.restart_policy import RestartPolicy
from orbit.children.supervisor import ChildLaunch, ChildSpec, ChildState, Supervisor

pytestmark = pytest.mark.timeout(60)

FAST = RestartPolicy(first_delay=0.05, max_delay=0.5, stable_after=30.0)
TOKEN = "0f1e2d3c-device-token"
SCRIPT = """#!/bin/sh
out="$(dirname "$0")/out"
env > "$out/env.$$.tmp" && mv "$out/env.$$.tmp" "$out/env.$$"
id -G > "$out/groups.$$"
id -u > "$out/uid.$$.tmp" && mv "$out/uid.$$.tmp" "$out/uid.$$"
while :; do sleep 1; done
"""


@pytest.fixture
def desktop_dir() -> Iterator[Path]:
    """A directory every user can reach (pytest's tmp_path is private to root), with the stand-in and out/."""
    base = Path(tempfile.mkdtemp(prefix="fleet-desktop-test-"))
    try:
        base.chmod(0o755)
        (base / "out").mkdir()
        (base / "out").chmod(0o777)
        script = base / "fleet-desktop"
        script.write_text(SCRIPT)
        script.chmod(0o755)
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _env_builder(root: Path) -> Callable[[], dict[str, str]]:
    return lambda: desktop_environment(
        fleet_url="https://fleet.example.test",
        identifier_path=root / "identifier",
        root_dir=root,
        fleet_root_ca=None,
        insecure=True,
        client_cert_pem="",
        client_key_pem="",
        alternative_browser_host=None,
        token_at_launch=TOKEN,
    )


def _read_env(path: Path) -> dict[str, str]:
    pairs = (line.partition("=") for line in path.read_text().splitlines())
    return {key: value for key, sep, value in pairs if sep}


@contextlib.asynccontextmanager
async def running(supervisor: Supervisor) -> AsyncIterator[None]:
    """The supervisor runs inside the block and is stopped (its child with it) however the block ends."""
    stop = asyncio.Event()
    runner = asyncio.create_task(supervisor.run(stop))
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(runner, 15)


async def _until(predicate: Callable[[], object], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not reached")


def _recorded(out: Path, kind: str, pid: int) -> Path | None:
    """The stand-in's record; ``uid`` is written last, so once it exists all records are complete."""
    path = out / f"{kind}.{pid}"
    return path if path.exists() else None


def _current_session(home: Path) -> GuiSession:
    entry = pwd.getpwuid(os.getuid())
    env = {"DISPLAY": ":42", "XDG_RUNTIME_DIR": str(home), "DBUS_SESSION_BUS_ADDRESS": f"unix:path={home}/bus"}
    return GuiSession(entry.pw_name, entry.pw_uid, entry.pw_gid, str(home), env, "7")


def test_desktop_runs_in_the_session_env_and_is_respawned_after_a_kill(
    desktop_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As the current user (root in CI: a root GUI session needs no user switch)."""
    monkeypatch.setenv("ORBIT_ENROLL_SECRET", "must-not-leak")
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.test:3128")
    out, exe, pidfile = desktop_dir / "out", desktop_dir / "fleet-desktop", desktop_dir / "fleet-desktop.pid"
    launcher = DesktopLauncher(
        StaticSessionFinder(_current_session(desktop_dir)),
        lambda: exe,
        _env_builder(desktop_dir),
        "linux",
        pidfile=pidfile,
    )
    supervisor = Supervisor(launcher.child_spec(policy=FAST, stop_timeout=3))

    async def scenario() -> tuple[int, int, dict[str, str]]:
        async with running(supervisor):
            await _until(lambda: supervisor.status().pid and _recorded(out, "uid", supervisor.status().pid or 0))
            first = supervisor.status().pid
            assert first is not None
            assert psutil.Process(first).cmdline() == ["/bin/sh", str(exe)]  # no token, no sudo on the command line
            env = _read_env(out / f"env.{first}")
            assert pidfile.read_text().strip() == str(first)
            os.kill(first, signal.SIGKILL)
            await _until(lambda: supervisor.status().pid not in (None, first))
            second = supervisor.status().pid
            assert second is not None
            await _until(lambda: _recorded(out, "uid", second))
            await _until(lambda: pidfile.read_text().strip() == str(second))
            assert supervisor.tracker.consecutive_failures == 1
        return first, second, env

    first, second, env = asyncio.run(scenario())
    assert not psutil.pid_exists(second) or psutil.Process(second).status() == psutil.STATUS_ZOMBIE
    assert not pidfile.exists()  # removed with the child
    assert env["FLEET_DESKTOP_FLEET_URL"] == "https://fleet.example.test"
    assert env["FLEET_DESKTOP_DEVICE_IDENTIFIER_PATH"] == str(desktop_dir / "identifier")
    assert env["FLEET_DESKTOP_DEVICE_URL"] == f"https://fleet.example.test/device/{TOKEN}"
    assert env["FLEET_DESKTOP_INSECURE"] == "1" and env["FLEET_DESKTOP_TUF_UPDATE_ROOT"] == str(desktop_dir)
    assert env["HTTPS_PROXY"] == "http://proxy.test:3128"
    assert env["DISPLAY"] == ":42" and env["XDG_RUNTIME_DIR"] == str(desktop_dir)
    assert env["LD_LIBRARY_PATH"] == str(desktop_dir) and env["PATH"] == "/usr/local/bin:/usr/bin:/bin"
    assert env["USER"] == env["LOGNAME"] == pwd.getpwuid(os.getuid()).pw_name and env["HOME"] == str(desktop_dir)
    assert "ORBIT_ENROLL_SECRET" not in env
    assert int((out / f"uid.{first}").read_text()) == os.getuid()


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="dropping privileges needs root")
def test_root_orbit_drops_desktop_to_the_session_user(desktop_dir: Path) -> None:
    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no nobody user")
    out, exe = desktop_dir / "out", desktop_dir / "fleet-desktop"
    session = GuiSession("nobody", nobody.pw_uid, nobody.pw_gid, nobody.pw_dir, {"DISPLAY": ":5"}, "3")
    launcher = DesktopLauncher(
        StaticSessionFinder(session),
        lambda: exe,
        _env_builder(desktop_dir),
        "linux",
        running_as_root=True,
        pidfile=desktop_dir / "fleet-desktop.pid",
    )
    supervisor = Supervisor(launcher.child_spec(policy=FAST, stop_timeout=3))
    root_groups = os.getgroups()
    os.setgroups([0, 4])  # give orbit supplementary groups (adm) that the user's Desktop must not keep

    async def scenario() -> int:
        async with running(supervisor):
            await _until(lambda: supervisor.status().pid and _recorded(out, "uid", supervisor.status().pid or 0))
            pid = supervisor.status().pid
            assert pid is not None
            assert psutil.Process(pid).uids().real == nobody.pw_uid
            os.kill(pid, signal.SIGKILL)  # orbit (root) can still stop and respawn it
            await _until(lambda: supervisor.status().pid not in (None, pid))
        return pid

    try:
        pid = asyncio.run(scenario())
    finally:
        os.setgroups(root_groups)
    assert int((out / f"uid.{pid}").read_text()) == nobody.pw_uid
    groups = {int(g) for g in (out / f"groups.{pid}").read_text().split()}
    assert groups == set(os.getgrouplist("nobody", nobody.pw_gid))  # root's groups are gone
    assert not groups & {0, 4}
    env = _read_env(out / f"env.{pid}")
    assert (env["USER"], env["HOME"], env["DISPLAY"]) == ("nobody", nobody.pw_dir, ":5")
    assert env["FLEET_DESKTOP_FLEET_URL"] == "https://fleet.example.test"


def test_no_gui_session_means_waiting_not_failing(desktop_dir: Path) -> None:
    out, exe = desktop_dir / "out", desktop_dir / "fleet-desktop"
    sessions: list[GuiSession | None] = [None]

    class LoginLater:
        def find(self) -> GuiSession | None:
            return sessions[0]

    launcher = DesktopLauncher(LoginLater(), lambda: exe, _env_builder(desktop_dir), "linux", running_as_root=False)
    supervisor = Supervisor(launcher.child_spec(policy=FAST, retry_interval=60.0, stop_timeout=3))

    async def scenario() -> None:
        async with running(supervisor):
            await _until(lambda: supervisor.status().state is ChildState.WAITING)
            status = supervisor.status()
            assert status.pid is None and status.consecutive_failures == 0 and status.restarts == 0
            assert status.next_start_in is not None and 55 < status.next_start_in <= 60
            sessions[0] = _current_session(desktop_dir)
            supervisor.restart("a user logged in")  # the agent may poke; otherwise the 60 s retry finds it
            await _until(lambda: supervisor.status().pid and _recorded(out, "uid", supervisor.status().pid or 0))
            assert supervisor.tracker.consecutive_failures == 0

    asyncio.run(scenario())


def test_a_stale_desktop_we_can_attribute_is_killed_before_the_first_start(desktop_dir: Path) -> None:
    exe, pidfile = desktop_dir / "fleet-desktop", desktop_dir / "fleet-desktop.pid"
    from_pidfile = subprocess.Popen([str(exe)], start_new_session=True)
    same_path = subprocess.Popen([str(exe)], start_new_session=True)
    unrelated = subprocess.Popen(["sleep", "30"], start_new_session=True)  # e.g. someone else's program
    pidfile.write_text(f"{from_pidfile.pid}\n")
    launcher = DesktopLauncher(
        StaticSessionFinder(_current_session(desktop_dir)),
        lambda: exe,
        _env_builder(desktop_dir),
        "linux",
        pidfile=pidfile,
    )
    supervisor = Supervisor(launcher.child_spec(policy=FAST, stop_timeout=3))

    async def scenario() -> None:
        async with running(supervisor):
            await _until(lambda: supervisor.status().pid)
            assert from_pidfile.poll() is not None and same_path.poll() is not None
            assert unrelated.poll() is None

    try:
        asyncio.run(scenario())
    finally:
        for process in (from_pidfile, same_path, unrelated):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)


def test_static_user_fields_and_a_failing_launch_callable(tmp_path: Path) -> None:
    """ChildSpec's own user/group fields, and a launch callable that raises: counted as a start failure."""
    calls: list[int] = []
    marker = tmp_path / "ran"

    def flaky() -> ChildLaunch | None:
        calls.append(1)
        if len(calls) < 3:
            raise OSError("session bus not ready")
        return ChildLaunch(["/bin/sh", "-c", f"id -u > {marker}; sleep 30"], {"PATH": "/usr/bin:/bin"})

    supervisor = Supervisor(ChildSpec(name="flaky", launch=flaky, policy=FAST, stop_timeout=3))

    async def scenario() -> None:
        async with running(supervisor):
            await _until(lambda: marker.exists() and marker.read_text())
            assert supervisor.tracker.consecutive_failures == 2 and len(calls) == 3

    asyncio.run(scenario())
    assert int(marker.read_text()) == os.getuid()
    with pytest.raises(RuntimeError, match="launch callable"):
        ChildSpec(name="no-argv").static_launch()
    if os.geteuid() == 0:
        nobody = pwd.getpwnam("nobody")
        out = Path(tempfile.mkdtemp(prefix="uid-test-"))
        out.chmod(0o777)
        spec = ChildSpec(
            name="as-nobody",
            argv=lambda: ["/bin/sh", "-c", f"id -u > {out}/uid; sleep 30"],
            env=lambda: {"PATH": "/usr/bin:/bin"},
            cwd=Path("/"),
            user=nobody.pw_uid,
            group=nobody.pw_gid,
            extra_groups=(nobody.pw_gid,),
            policy=FAST,
            stop_timeout=3,
        )
        as_nobody = Supervisor(spec)

        async def switched() -> None:
            async with running(as_nobody):
                await _until(lambda: (out / "uid").exists() and (out / "uid").read_text())

        try:
            asyncio.run(switched())
            assert int((out / "uid").read_text()) == nobody.pw_uid
        finally:
            shutil.rmtree(out, ignore_errors=True)
