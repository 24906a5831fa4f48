"""Typed errors of the update client, and the translation of python-tuf's exceptions into them.

Callers catch ``UpdateError`` and keep running the installed binaries; the subclass and its ``kind`` say what went
wrong (a refused repository, the network, a missing target, the local disk, the metadata lock, an install).
"""

from __future__ import annotations

import errno
from enum import StrEnum

from tuf.api import exceptions as tuf_exceptions


class FailureKind(StrEnum):
    """What class of failure an ``UpdateError`` is; stable strings for reports and logs."""

    UNTRUSTED = "untrusted"  # bad signature, below threshold, malformed or mismatched metadata
    ROLLBACK = "rollback"  # a role older than the trusted one
    STALE = "stale"  # an older timestamp than the one already trusted (a lagging mirror or CDN)
    EXPIRED = "expired"  # freeze: metadata past its expiry
    TARGET_MISMATCH = "target_mismatch"  # downloaded bytes differ from the signed length or hashes
    OVERSIZED = "oversized"  # more bytes than signed or allowed (an endless-data attack)
    NETWORK = "network"
    SLOW_RETRIEVAL = "slow_retrieval"
    NOT_FOUND = "not_found"
    DISK_FULL = "disk_full"
    STORAGE = "storage"
    LOCKED = "locked"
    INSTALL = "install"
    HELPER = "helper"  # the update helper process could not be started, died or answered nonsense (ADR 0020)


class UpdateError(Exception):
    """Base of every error the update client raises; installed binaries are untouched when it is raised."""

    kind: FailureKind = FailureKind.UNTRUSTED

    def __init__(self, message: str, *, kind: FailureKind | None = None) -> None:
        super().__init__(message)
        if kind is not None:
            self.kind = kind


class RepositoryError(UpdateError):
    """The repository answered with metadata or a target that TUF refuses (attack, misconfiguration or freeze)."""


class MetadataExpiredError(RepositoryError):
    """Metadata is past its expiry by the local clock; ``clock_skew`` is local minus server time when known."""

    kind = FailureKind.EXPIRED

    def __init__(self, message: str, *, clock_skew: float | None = None) -> None:
        super().__init__(message)
        self.clock_skew = clock_skew


class NetworkError(UpdateError):
    """The repository could not be reached or answered with an HTTP error."""

    kind = FailureKind.NETWORK

    def __init__(self, message: str, *, status_code: int | None = None, kind: FailureKind | None = None) -> None:
        super().__init__(message, kind=kind)
        self.status_code = status_code


class TargetNotFoundError(UpdateError):
    """The signed metadata has no such target (wrong channel, platform or name)."""

    kind = FailureKind.NOT_FOUND


class LocalStorageError(UpdateError):
    """Writing to the local disk failed (``kind`` is ``disk_full`` for ENOSPC/EDQUOT)."""

    kind = FailureKind.STORAGE


class DirectoryLockedError(UpdateError):
    """Another process holds the metadata directory (or the install directory of a target)."""

    kind = FailureKind.LOCKED


class InstallError(UpdateError):
    """A verified target could not be installed (hostile archive, failed exec check, missing executable)."""

    kind = FailureKind.INSTALL


def storage_error(exc: OSError, what: str) -> LocalStorageError:
    """Wrap a local ``OSError``, telling a full disk apart from other failures."""
    full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
    kind = FailureKind.DISK_FULL if full else FailureKind.STORAGE
    reason = "disk full" if full else (exc.strerror or str(exc))
    return LocalStorageError(f"{what}: {reason}", kind=kind)


def translate(exc: BaseException, *, role: str | None = None, clock_skew: float | None = None) -> UpdateError:
    """Map a python-tuf (or OS) exception to ours; ``role`` names the metadata file involved when known."""
    where = f" ({role})" if role else ""
    if isinstance(exc, UpdateError):
        return exc
    if isinstance(exc, tuf_exceptions.ExpiredMetadataError):
        return MetadataExpiredError(f"metadata expired{where}: {exc}", clock_skew=clock_skew)
    if isinstance(exc, tuf_exceptions.BadVersionNumberError):
        # only an older *timestamp* is a lagging mirror; a newer timestamp naming an older snapshot is a rollback
        stale = role == "timestamp" and str(exc).startswith("New timestamp version")
        kind = FailureKind.STALE if stale else FailureKind.ROLLBACK
        label = "stale timestamp (lagging mirror?)" if stale else "rollback refused"
        return RepositoryError(f"{label}{where}: {exc}", kind=kind)
    if isinstance(exc, tuf_exceptions.LengthOrHashMismatchError):
        return RepositoryError(f"length or hash mismatch{where}: {exc}", kind=FailureKind.TARGET_MISMATCH)
    if isinstance(exc, tuf_exceptions.RepositoryError):
        return RepositoryError(f"untrusted metadata{where}: {exc}", kind=FailureKind.UNTRUSTED)
    if isinstance(exc, tuf_exceptions.DownloadLengthMismatchError):
        return RepositoryError(f"oversized download{where}: {exc}", kind=FailureKind.OVERSIZED)
    if isinstance(exc, tuf_exceptions.SlowRetrievalError):
        return NetworkError(f"slow retrieval{where}: {exc}", kind=FailureKind.SLOW_RETRIEVAL)
    if isinstance(exc, tuf_exceptions.DownloadHTTPError):
        return NetworkError(f"HTTP {exc.status_code}{where}: {exc}", status_code=exc.status_code)
    if isinstance(exc, tuf_exceptions.DownloadError):
        cause = exc.__cause__
        detail = f"{exc}: {cause}" if cause is not None else str(exc)
        return NetworkError(f"download failed{where}: {detail}")
    if isinstance(exc, OSError):
        return storage_error(exc, f"local storage{where}")
    return RepositoryError(f"unexpected failure{where}: {type(exc).__name__}: {exc}", kind=FailureKind.UNTRUSTED)
