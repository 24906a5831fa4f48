"""orbit's root dir: the single-instance lock, Fleet's file names, leftovers removed at start."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

import pytest

from orbit.root_layout import InstanceLock, InstanceLockError, RootLayout
from safe_fs.atomic_write import PUBLIC_MODE, SECRET_MODE, remove_stale_temps, write_atomic
from safe_fs.secret_read import read_text_or_none


def test_fleet_file_names() -> None:
    layout = RootLayout(Path("/opt/orbit"))
    assert layout.node_key == Path("/opt/orbit/secret-orbit-node-key.txt")
    assert layout.device_token == Path("/opt/orbit/identifier")
    assert layout.osquery_flags == Path("/opt/orbit/osquery.flags")
    assert layout.server_overrides == Path("/opt/orbit/server-overrides.json")
    assert layout.extension_socket == Path("/opt/orbit/orbit-osquery.em")


def _hold(path: str, ready: multiprocessing.synchronize.Event, done: multiprocessing.synchronize.Event) -> None:
    lock = InstanceLock(Path(path))
    lock.acquire()
    ready.set()
    done.wait(30)
    lock.release()


def test_a_second_instance_is_refused_with_the_holders_pid(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    ready, done = context.Event(), context.Event()
    holder = context.Process(target=_hold, args=(str(tmp_path / "orbit.lock"), ready, done))
    holder.start()
    try:
        assert ready.wait(30)
        with pytest.raises(InstanceLockError, match=f"pid {holder.pid}"):
            InstanceLock(tmp_path / "orbit.lock").acquire()
        assert InstanceLock(tmp_path / "orbit.lock").holder_pid() == holder.pid
    finally:
        done.set()
        holder.join(30)
    # the lock dies with its holder: no stale-lock clean-up is ever needed
    lock = InstanceLock(tmp_path / "orbit.lock")
    lock.acquire()
    lock.release()
    assert InstanceLock(tmp_path / "orbit.lock").holder_pid() is None


def test_old_files_and_half_written_temps_are_removed(tmp_path: Path) -> None:
    layout = RootLayout(tmp_path)
    layout.ensure()
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "orbit.exe.old").write_text("x")
    (tmp_path / "keep.txt").write_text("x")
    assert layout.remove_old_files() == 1
    (tmp_path / ".identifier.abc.tmp").write_text("half")
    assert remove_stale_temps(tmp_path) == 1
    assert (tmp_path / "keep.txt").exists()
    assert oct(layout.state_dir.stat().st_mode & 0o777) == "0o700"


def test_atomic_writes_have_their_mode_from_the_start(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        write_atomic(tmp_path / "identifier", "token", PUBLIC_MODE)
    finally:
        os.umask(old)
    assert (tmp_path / "identifier").stat().st_mode & 0o777 == 0o644
    write_atomic(tmp_path / "key", b"secret", SECRET_MODE)
    assert (tmp_path / "key").stat().st_mode & 0o777 == 0o600
    assert read_text_or_none(tmp_path / "key") == "secret"
    assert read_text_or_none(tmp_path / "missing") is None
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_a_root_dir_too_deep_for_the_extension_socket_is_reported() -> None:
    assert RootLayout(Path("/opt/orbit")).socket_path_problem() is None
    problem = RootLayout(Path("/tmp/" + "d" * 90)).socket_path_problem()
    assert problem is not None and "shorter --root-dir" in problem
