"""Is an installed executable still what the repository signed? (self-healing installs, issue 18)

The trusted facts come from the install record written when a verified download was installed
(``install_record.InstalledVersion``): for a plain target the signed length and hashes of the file itself; for an
archive target the length and SHA-256 of the extracted executable, measured inside the just-verified archive.

Hashing a 60 MB osqueryd costs ~0.1-0.3 s of CPU, so callers hash fully only when it matters (at start, after a
crash) and otherwise compare a ``Fingerprint`` (device, inode, size, mtime, ctime) with the one of the last full
check: a file rewritten, truncated, replaced or removed changes at least one of them (ctime cannot be set back by a
user-space tool, unlike mtime).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from safe_fs.moves import file_digest
from tuf_updates.install_record import InstalledVersion


@dataclass(frozen=True)
class ExpectedFile:
    """What the executed file must be: its length and one trusted digest."""

    length: int
    algorithm: str
    digest: str

    @classmethod
    def of_record(cls, record: InstalledVersion, *, archive: bool) -> ExpectedFile | None:
        """The executable's expected length and digest, or None when the record cannot tell (an archive recorded
        before executables were measured, or a version adopted from a package without hashes)."""
        if archive:
            if record.executable_sha256 is None or record.executable_length is None:
                return None
            return cls(record.executable_length, "sha256", record.executable_sha256)
        for algorithm in ("sha512", "sha256"):
            if algorithm in record.hashes:
                return cls(record.length, algorithm, record.hashes[algorithm])
        return None


@dataclass(frozen=True)
class Fingerprint:
    device: int
    inode: int
    size: int
    mtime_ns: int
    ctime_ns: int


def fingerprint(path: Path) -> Fingerprint | None:
    """The file's identity and change stamps (following links, as exec does), or None when it cannot be read."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    return Fingerprint(info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)


def problem_with(path: Path, expected: ExpectedFile) -> str | None:
    """Hash ``path`` and say what is wrong with it (``None``: it is exactly the trusted file).

    The answer is the log's and the outcome report's reason: ``missing``, ``size 1234 != 5678`` (found != signed),
    ``sha512 mismatch`` or ``not a regular file``.
    """
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return "missing"
    except OSError as exc:
        return f"unreadable: {exc.strerror or exc}"
    if not os.path.isfile(path):
        return "not a regular file"
    if info.st_size != expected.length:
        return f"size {info.st_size} != {expected.length}"
    try:
        digest = file_digest(path, expected.algorithm)
    except OSError as exc:
        return f"unreadable: {exc.strerror or exc}"
    if digest != expected.digest:
        return f"{expected.algorithm} mismatch"
    return None


__all__ = ["ExpectedFile", "Fingerprint", "fingerprint", "problem_with"]
