"""Safe extraction of ``.tar.gz`` targets: only plain files, directories and links that stay inside.

Every member is checked before anything is written (absolute names, ``..``, backslashes, devices, FIFOs, links that
could leave the destination, size and member-count bombs), then ``tarfile``'s ``data`` filter runs as a second
layer during extraction. Symlink targets must be relative and point downward (no ``..`` at all): a chain of such
links can never leave the directory, whatever order the members come in.
"""

from __future__ import annotations

import tarfile
from dataclasses import dataclass
from pathlib import Path

from tuf_updates.errors import InstallError

DEFAULT_MAX_TOTAL_BYTES = 4 * 1024**3
DEFAULT_MAX_MEMBERS = 100_000


class UnsafeArchiveError(InstallError):
    """The archive contains something we refuse to extract."""


@dataclass(frozen=True)
class ArchiveLimits:
    max_total_bytes: int = DEFAULT_MAX_TOTAL_BYTES
    max_members: int = DEFAULT_MAX_MEMBERS


def _check_name(name: str, what: str) -> str:
    if not name or "\x00" in name:
        raise UnsafeArchiveError(f"{what}: empty or NUL in name")
    if "\\" in name:
        raise UnsafeArchiveError(f"{what} {name!r}: backslash in name")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise UnsafeArchiveError(f"{what} {name!r}: absolute path")
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchiveError(f"{what} {name!r}: '..' in path")
    if not parts:
        return "."
    return "/".join(parts)


def check_member(member: tarfile.TarInfo, regular_files: set[str]) -> str:
    """Validate one member; returns its normalised name. ``regular_files`` collects names for hard links."""
    name = _check_name(member.name, "entry")
    if member.isdir():
        return name
    if member.isreg():
        regular_files.add(name)
        return name
    if member.issym():
        target = member.linkname
        if target.startswith("/") or "\\" in target or not target:
            raise UnsafeArchiveError(f"symlink {name!r} -> {target!r}: absolute or empty target")
        if ".." in target.split("/"):
            raise UnsafeArchiveError(f"symlink {name!r} -> {target!r}: links may only point downwards")
        return name
    if member.islnk():
        target = _check_name(member.linkname, f"hard link {name!r} target")
        if target not in regular_files:
            raise UnsafeArchiveError(f"hard link {name!r} -> {target!r}: not an earlier regular file")
        return name
    kind = "device" if member.ischr() or member.isblk() else "FIFO" if member.isfifo() else "special file"
    raise UnsafeArchiveError(f"entry {name!r}: {kind} not allowed")


def check_members(members: list[tarfile.TarInfo], limits: ArchiveLimits) -> None:
    if len(members) > limits.max_members:
        raise UnsafeArchiveError(f"archive has {len(members)} entries (limit {limits.max_members})")
    regular: set[str] = set()
    total = 0
    for member in members:
        check_member(member, regular)
        if member.isreg():
            total += member.size
            if total > limits.max_total_bytes:
                raise UnsafeArchiveError(f"archive expands beyond {limits.max_total_bytes} bytes")


def safe_extract(archive: Path, destination: Path, limits: ArchiveLimits | None = None) -> None:
    """Extract ``archive`` (gzip tar) into ``destination`` (created), refusing anything unsafe."""
    checked = limits or ArchiveLimits()
    destination.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = tar.getmembers()
            check_members(members, checked)
            tar.extractall(destination, members=members, filter="data")
    except (tarfile.TarError, EOFError) as exc:
        raise UnsafeArchiveError(f"cannot extract {archive.name}: {type(exc).__name__}: {exc}") from exc
