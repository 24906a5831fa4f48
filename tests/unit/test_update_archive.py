"""Safe ``.tar.gz`` extraction against hostile archives: nothing is written outside, nothing special is created."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from tuf_updates.archive import ArchiveLimits, UnsafeArchiveError, safe_extract

Member = tuple[tarfile.TarInfo, bytes | None]


def _file(name: str, data: bytes = b"x", mode: int = 0o644) -> Member:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), mode
    return info, data


def _dir(name: str) -> Member:
    info = tarfile.TarInfo(name)
    info.type, info.mode = tarfile.DIRTYPE, 0o755
    return info, None


def _link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> Member:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, target, 0o755
    return info, None


def _special(name: str, kind: bytes) -> Member:
    info = tarfile.TarInfo(name)
    info.type = kind
    return info, None


def _archive(path: Path, members: list[Member]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


HOSTILE: dict[str, tuple[Callable[[], list[Member]], str]] = {
    "absolute path": (lambda: [_file("/tmp/evil")], "absolute path"),
    "dot-dot": (lambda: [_file("fleet-desktop/../../evil")], "'..'"),
    "dot-dot at the start": (lambda: [_file("../evil")], "'..'"),
    "windows drive": (lambda: [_file("C:/evil")], "absolute path"),
    "backslash": (lambda: [_file("fleet-desktop\\..\\evil")], "backslash"),
    "absolute symlink": (lambda: [_link("fleet-desktop/lib", "/etc")], "absolute"),
    "symlink upwards": (lambda: [_link("fleet-desktop/lib", "../../etc")], "downwards"),
    "symlink then write through it": (
        lambda: [_link("up", ".."), _file("up/evil")],
        "downwards",
    ),
    "hard link outside": (lambda: [_link("fleet-desktop/passwd", "/etc/passwd", tarfile.LNKTYPE)], "absolute"),
    "hard link to nothing earlier": (
        lambda: [_link("a", "b", tarfile.LNKTYPE), _file("b")],
        "not an earlier regular file",
    ),
    "character device": (lambda: [_special("fleet-desktop/tty", tarfile.CHRTYPE)], "device"),
    "block device": (lambda: [_special("fleet-desktop/sda", tarfile.BLKTYPE)], "device"),
    "fifo": (lambda: [_special("fleet-desktop/pipe", tarfile.FIFOTYPE)], "FIFO"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_archives_are_refused_before_writing(tmp_path: Path, case: str) -> None:
    build, message = HOSTILE[case]
    archive = _archive(tmp_path / "desktop.tar.gz", [_dir("fleet-desktop"), _file("fleet-desktop/ok"), *build()])
    destination = tmp_path / "out" / "dest"
    with pytest.raises(UnsafeArchiveError, match=message):
        safe_extract(archive, destination)
    written = [p for p in destination.rglob("*")] if destination.exists() else []
    assert written == []  # checked up front: not even the harmless members were extracted
    assert sorted(p.name for p in tmp_path.iterdir()) == ["desktop.tar.gz", "out"]


def test_size_and_member_bombs_are_refused(tmp_path: Path) -> None:
    big = _archive(tmp_path / "big.tar.gz", [_file("a", b"0" * 4096), _file("b", b"0" * 4096)])
    with pytest.raises(UnsafeArchiveError, match="expands beyond 6000 bytes"):
        safe_extract(big, tmp_path / "o1", ArchiveLimits(max_total_bytes=6000))
    many = _archive(tmp_path / "many.tar.gz", [_file(f"f{i}") for i in range(20)])
    with pytest.raises(UnsafeArchiveError, match="20 entries"):
        safe_extract(many, tmp_path / "o2", ArchiveLimits(max_members=10))


def test_not_an_archive(tmp_path: Path) -> None:
    junk = tmp_path / "desktop.tar.gz"
    junk.write_bytes(b"\x7fELF definitely not gzip")
    with pytest.raises(UnsafeArchiveError, match=r"cannot extract desktop\.tar\.gz"):
        safe_extract(junk, tmp_path / "out")


def test_a_normal_app_bundle_extracts_with_inner_links_and_modes(tmp_path: Path) -> None:
    archive = _archive(
        tmp_path / "desktop.app.tar.gz",
        [
            _dir("Fleet Desktop.app"),
            _dir("Fleet Desktop.app/Contents"),
            _dir("Fleet Desktop.app/Contents/MacOS"),
            _file("Fleet Desktop.app/Contents/MacOS/fleet-desktop", b"#!/bin/sh\n", mode=0o4755),
            _dir("Fleet Desktop.app/Contents/Frameworks/X.framework/Versions/A"),
            _file("Fleet Desktop.app/Contents/Frameworks/X.framework/Versions/A/X", b"lib"),
            _link("Fleet Desktop.app/Contents/Frameworks/X.framework/Versions/Current", "A"),
            _link("Fleet Desktop.app/Contents/Frameworks/X.framework/X", "Versions/Current/X"),
            _link(
                "Fleet Desktop.app/Contents/MacOS/again",
                "Fleet Desktop.app/Contents/MacOS/fleet-desktop",
                tarfile.LNKTYPE,
            ),
        ],
    )
    safe_extract(archive, tmp_path / "out")
    app = tmp_path / "out" / "Fleet Desktop.app"
    executable = app / "Contents/MacOS/fleet-desktop"
    assert executable.read_bytes() == b"#!/bin/sh\n"
    assert executable.stat().st_mode & 0o7777 == 0o755  # setuid dropped by the data filter, exec bits kept
    assert (app / "Contents/Frameworks/X.framework/X").read_bytes() == b"lib"
    assert (app / "Contents/MacOS/again").read_bytes() == b"#!/bin/sh\n"
