"""orbit removes what a killed one-file build of ours left in the temporary directory, and nothing else."""

from __future__ import annotations

import os
from pathlib import Path

from orbit.children.stale_bundles import BUNDLE_MARKER, stale_bundles, sweep_stale_bundles

DEAD, LIVE = 0x00001234, 0x00005678


def bundle(directory: Path, pid: int, suffix: str = "abc123", *, marker: bool = True) -> Path:
    folder = directory / f"_MEI{pid:08x}{suffix}"
    folder.mkdir()
    (folder / "base_library.zip").write_bytes(b"x" * 1000)
    if marker:
        (folder / BUNDLE_MARKER).write_text("ours\n")
    return folder


def alive(pid: int) -> bool:
    return pid == LIVE


def test_only_our_bundles_of_dead_bootloaders_are_removed(tmp_path: Path) -> None:
    dead_ours = bundle(tmp_path, DEAD)
    live_ours = bundle(tmp_path, LIVE, "def456")
    dead_other = bundle(tmp_path, DEAD, "zzz999", marker=False)  # another program's: never touched
    own_pid = bundle(tmp_path, os.getpid(), "own000")  # this process's (orbit frozen itself)
    lookalike = tmp_path / "_MEI0000abcdnotours"  # not the bootloader's pattern
    lookalike.mkdir()
    (lookalike / BUNDLE_MARKER).write_text("")
    link = tmp_path / f"_MEI{DEAD:08x}link01"
    link.symlink_to(dead_other)  # a symlink is never followed nor removed
    plain_file = tmp_path / f"_MEI{DEAD:08x}file01"
    plain_file.write_text("")

    assert stale_bundles(tmp_path, alive) == [dead_ours]
    assert sweep_stale_bundles(tmp_path, alive) == 1
    assert not dead_ours.exists()
    for kept in (live_ours, dead_other, own_pid, lookalike, link, plain_file):
        assert kept.exists() or kept.is_symlink(), kept
    assert sweep_stale_bundles(tmp_path, alive) == 0


def test_a_marker_that_is_a_symlink_does_not_count(tmp_path: Path) -> None:
    folder = bundle(tmp_path, DEAD, marker=False)
    (folder / BUNDLE_MARKER).symlink_to(tmp_path / "elsewhere")
    (tmp_path / "elsewhere").write_text("")
    assert stale_bundles(tmp_path, alive) == []


def test_a_missing_directory_is_nothing_to_sweep(tmp_path: Path) -> None:
    assert sweep_stale_bundles(tmp_path / "gone", alive) == 0
