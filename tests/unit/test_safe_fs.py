"""The client side's file-system toolkit (safe_fs): whole-or-nothing writes, locks, bounded reads."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from safe_fs.atomic_write import (
    PUBLIC_MODE,
    SECRET_MODE,
    atomic_output,
    install_file,
    remove_stale_temps,
    write_atomic,
    write_json_atomic,
)
from safe_fs.file_lock import try_lock, unlock
from safe_fs.secret_read import FileTooLargeError, read_bounded, read_text_or_none


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_failed_stream_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "pkg.deb"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_output(target, PUBLIC_MODE) as out:
        out.write(b"half of the new")
        raise RuntimeError("disk full, say")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pkg.deb"]


def test_a_stream_can_seek_back_and_gets_the_exact_mode_whatever_the_umask(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    old = os.umask(0o077)
    try:
        with atomic_output(target, PUBLIC_MODE) as out:
            out.write(b"0000rest")
            out.seek(0)
            out.write(b"head")
    finally:
        os.umask(old)
    assert target.read_bytes() == b"headrest"
    assert _mode(target) == PUBLIC_MODE


def test_secrets_are_written_0600_and_json_sorted(tmp_path: Path) -> None:
    write_atomic(tmp_path / "key", "s3cret")
    assert _mode(tmp_path / "key") == SECRET_MODE
    write_json_atomic(tmp_path / "doc.json", {"b": 1, "a": 2})
    assert (tmp_path / "doc.json").read_text() == '{\n "a": 2,\n "b": 1\n}'


def test_install_file_moves_a_finished_file_into_place_with_its_mode(tmp_path: Path) -> None:
    work = tmp_path / ".work"
    work.mkdir()
    (work / "built").write_bytes(b"package")
    install_file(work / "built", tmp_path / "final.rpm", SECRET_MODE)
    assert (tmp_path / "final.rpm").read_bytes() == b"package"
    assert _mode(tmp_path / "final.rpm") == SECRET_MODE
    assert not (work / "built").exists()


def test_stale_temporaries_of_a_killed_write_are_swept(tmp_path: Path) -> None:
    (tmp_path / ".node-key.abc.tmp").write_text("partial")
    (tmp_path / "node-key").write_text("whole")
    assert remove_stale_temps(tmp_path) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["node-key"]


def test_bounded_reads_refuse_oversized_files_without_reading_them_whole(tmp_path: Path) -> None:
    big = tmp_path / "secret"
    big.write_bytes(b"x" * 5000)
    with pytest.raises(FileTooLargeError, match="larger than 4096 bytes"):
        read_bounded(big, 4096)
    with pytest.raises(ValueError):  # FileTooLargeError is a ValueError: callers treat it as a bad file
        read_text_or_none(big, 100)
    assert read_text_or_none(tmp_path / "absent") is None
    (tmp_path / "blank").write_text("  \n")
    assert read_text_or_none(tmp_path / "blank") is None
    (tmp_path / "ok").write_text(" key\n")
    assert read_text_or_none(tmp_path / "ok") == "key"


@pytest.mark.skipif(sys.platform == "win32", reason="flock semantics")
def test_a_lock_held_by_another_process_is_refused_until_it_exits(tmp_path: Path) -> None:
    path = tmp_path / ".lock"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import os,sys; from safe_fs.file_lock import try_lock;"
            f"fd=os.open({str(path)!r}, os.O_RDWR|os.O_CREAT); assert try_lock(fd); print('held', flush=True);"
            "sys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        fd = os.open(path, os.O_RDWR)
        try:
            assert not try_lock(fd)
            assert not try_lock(fd, exclusive=False)
            assert holder.stdin is not None
            holder.stdin.close()
            holder.wait(timeout=60)
            assert try_lock(fd)
            unlock(fd)
        finally:
            os.close(fd)
    finally:
        holder.kill()
        holder.wait(timeout=60)
