"""The verified view of the update repository: python-tuf's ``Updater`` with the root pinned by the package.

Every check builds a NEW ``Updater`` (python-tuf allows one refresh per instance) bootstrapped from the pinned root,
so trust always chains from what the installer shipped through the cached ``root_history``. The metadata directory
is locked against other processes for the duration of a check (``with client:``) or of each call.

Clock: python-tuf judges expiry by the local clock with no slack, and we keep it that way (accepting expired
metadata would widen a freeze attack). Instead each response's ``Date`` header is compared with the local clock;
beyond ``skew_threshold`` a warning is logged and an expiry error carries the measured skew, so an operator can
tell a frozen repository from a wrong host clock.

Errors surface as ``tuf_updates.errors.UpdateError`` subclasses; nothing here ever deletes trusted metadata.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import secrets
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import BinaryIO
from urllib.parse import unquote, urlsplit

import httpx
from tuf.api import exceptions as tuf_exceptions
from tuf.api.exceptions import LengthOrHashMismatchError
from tuf.api.exceptions import RepositoryError as RepositoryError_
from tuf.api.metadata import Metadata, Root, TargetFile
from tuf.ngclient import Updater, UpdaterConfig

from tuf_updates.directory_lock import DirectoryLock
from tuf_updates.errors import UpdateError, storage_error, translate
from tuf_updates.fetcher import DeadlinePolicy, HttpxFetcher, ServerDate
from tuf_updates.parallel_hashes import ParallelHashes
from tuf_updates.target_info import PREFERRED_HASHES, TargetInfo
from tuf_updates.targets import target_spec

__all__ = ["PREFERRED_HASHES", "TargetInfo", "UpdateClient", "to_tuf"]

logger = logging.getLogger(__name__)

DEFAULT_SKEW_THRESHOLD = timedelta(minutes=5)


def utc_now() -> datetime:
    return datetime.now(UTC)


def to_tuf(target: TargetInfo) -> TargetFile:
    return TargetFile(target.length, dict(target.hashes), target.path)


def clock_skew_seconds(sample: ServerDate | None) -> float | None:
    """Local minus server time in seconds (positive: the local clock is ahead), from one response."""
    if sample is None:
        return None
    return (sample.received_local - sample.server).total_seconds()


def role_of_url(url: str | None) -> str | None:
    """Which metadata role (or "target") a fetched URL was, for error messages and stale-mirror detection."""
    if url is None:
        return None
    name = unquote(urlsplit(url).path.rsplit("/", 1)[-1])
    if not name.endswith(".json"):
        return "target"
    stem = name.removesuffix(".json")
    head, _, rest = stem.partition(".")
    return rest if head.isdigit() and rest else stem


class UpdateClient:
    """Refresh, look up and download verified targets from the repository at ``base_url``.

    ``base_url`` is the repository root (e.g. ``https://fleet.example/tuf``): metadata at ``<base>/<role>.json``,
    targets at ``<base>/targets/<path>`` unless ``target_base_url`` says otherwise. ``bootstrap_root`` is the
    trusted root shipped with the package; ``None`` explicitly trusts ``metadata_dir/root.json`` instead (the
    conformance CLI's contract).
    """

    def __init__(
        self,
        metadata_dir: Path,
        base_url: str,
        *,
        bootstrap_root: bytes | None,
        http: httpx.Client,
        clock: Callable[[], datetime] = utc_now,
        target_base_url: str | None = None,
        deadline_policy: DeadlinePolicy | None = None,
        read_timeout: float = 30.0,
        lock_timeout: float = 10.0,
        skew_threshold: timedelta = DEFAULT_SKEW_THRESHOLD,
        config: UpdaterConfig | None = None,
    ) -> None:
        self.metadata_dir = metadata_dir
        base = base_url.rstrip("/")
        self._metadata_url = f"{base}/"
        self._target_url = target_base_url.rstrip("/") + "/" if target_base_url else f"{base}/targets/"
        self._bootstrap = bootstrap_root
        self._clock = clock
        self._skew_threshold = skew_threshold
        self._config = config or UpdaterConfig()
        self.fetcher = HttpxFetcher(http, read_timeout=read_timeout, policy=deadline_policy, wall_clock=clock)
        self._lock = DirectoryLock(metadata_dir, timeout=lock_timeout)
        self._updater: Updater | None = None

    # -- locking -------------------------------------------------------------------------------------------

    def __enter__(self) -> UpdateClient:
        self._lock.acquire()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._lock.release()

    # -- clock ---------------------------------------------------------------------------------------------

    def clock_skew(self) -> float | None:
        """Local minus server time (seconds) measured on the last response with a ``Date`` header."""
        return clock_skew_seconds(self.fetcher.last_server_date)

    def _check_skew(self) -> float | None:
        skew = self.clock_skew()
        if skew is not None and abs(skew) > self._skew_threshold.total_seconds():
            direction = "ahead of" if skew > 0 else "behind"
            logger.warning(
                "clock skew suspected: local clock %s the update server by %.0f s (threshold %.0f s); "
                "metadata expiry is judged by the local clock",
                direction,
                abs(skew),
                self._skew_threshold.total_seconds(),
            )
        return skew

    def _fail(self, exc: BaseException) -> UpdateError:
        error = translate(exc, role=role_of_url(self.fetcher.last_url), clock_skew=self._check_skew())
        logger.debug("update repository operation failed kind=%s error=%s", error.kind, error)  # callers report it
        return error

    # -- operations ----------------------------------------------------------------------------------------

    def refresh(self) -> None:
        """Load a fresh ``Updater`` from the pinned root and update root → timestamp → snapshot → targets."""
        with self._lock:
            self._updater = None
            self.fetcher.last_server_date = None  # measure the skew of this check, not of an earlier one
            try:
                self.metadata_dir.mkdir(parents=True, exist_ok=True)
                updater = Updater(
                    str(self.metadata_dir),
                    self._metadata_url,
                    target_base_url=self._target_url,
                    fetcher=self.fetcher,
                    config=self._config,
                    bootstrap=self._bootstrap,
                )
                updater.refresh()
            except Exception as exc:
                raise self._fail(exc) from exc
            self._check_skew()
            self._updater = updater

    def _refreshed(self) -> Updater:
        if self._updater is None:
            self.refresh()
        assert self._updater is not None
        return self._updater

    def lookup_path(self, target_path: str) -> TargetInfo | None:
        """The signed info of ``target_path`` (following delegations), or ``None`` when it is not published."""
        with self._lock:
            updater = self._refreshed()
            try:
                found = updater.get_targetinfo(target_path)
            except Exception as exc:
                raise self._fail(exc) from exc
        return TargetInfo.from_tuf(found) if found is not None else None

    def lookup(self, name: str, platform: str, channel: str) -> TargetInfo | None:
        """The signed info of Fleet's ``<name>/<platform>/<channel>/<file>``; bad names raise ``ValueError``."""
        return self.lookup_path(target_spec(name, platform, channel).path)

    def download(self, target: TargetInfo, staging_dir: Path) -> Path:
        """Download ``target`` into ``staging_dir/<file>``, verified against its signed length and hashes.

        The bytes go to a hidden partial file first and are renamed into place only once verified and synced, so
        an interrupted or failed download never leaves a file behind.
        """
        return self.download_to(target, staging_dir / target.file_name)

    def target_url(self, target: TargetInfo) -> str:
        """Where the repository serves ``target``: hash-prefixed file name under consistent snapshots."""
        root = Metadata[Root].from_file(str(self.metadata_dir / "root.json"))  # trusted: just refreshed
        directory, slash, name = target.path.rpartition("/")
        if root.signed.consistent_snapshot and self._config.prefix_targets_with_hash:
            name = f"{next(iter(target.hashes.values()))}.{name}"
        return f"{self._target_url}{directory}{slash}{name}"

    def _stream_verified(self, target: TargetInfo, partial: Path) -> None:
        """One pass over the network: write the bytes and hash them with every signed algorithm at once (a thread
        per algorithm: ``parallel_hashes``), then compare length and every signed hash before the caller may use
        the file."""
        received = 0
        with (
            _open_for_write(partial) as out,
            ParallelHashes(target.hashes, sink=out.write) as hashes,
            contextlib.closing(self.fetcher.open_target(self.target_url(target), target.length)) as stream,
        ):
            for chunk in stream:
                received += len(chunk)
                if received > target.length:
                    raise tuf_exceptions.DownloadLengthMismatchError(
                        f"Downloaded {received} bytes exceeding the maximum allowed length of {target.length}"
                    )
                hashes.update(chunk)
            observed = hashes.hexdigests()
        if received != target.length:
            raise LengthOrHashMismatchError(f"Length mismatch, observed {received}, expected {target.length}")
        for name, expected in target.hashes.items():
            if observed[name] != expected:
                raise LengthOrHashMismatchError(
                    f"Observed hash {observed[name]} does not match expected hash {expected}"
                )

    def download_to(self, target: TargetInfo, destination: Path, *, durable: bool = True) -> Path:
        """Download ``target`` to ``destination`` (verified, then renamed into place). ``durable=False`` skips the
        fsync before the rename (a benchmark's comparison with a raw stream; the agent always syncs)."""
        with self._lock:
            self._refreshed()
            partial = destination.with_name(f".{destination.name}.{secrets.token_hex(4)}.part")
            try:
                destination.parent.mkdir(parents=True, exist_ok=True)
                for stale in destination.parent.glob(f".{destination.name}.*.part"):  # left by a killed process
                    _remove_quietly(stale)
                if not target.hashes or not set(target.hashes) <= hashlib.algorithms_available:
                    raise RepositoryError_(f"{target.path} has no hash this client can verify")
                self._stream_verified(target, partial)
                if durable:
                    _fsync_file(partial)
                os.replace(partial, destination)
            except OSError as exc:
                _remove_quietly(partial)
                raise storage_error(exc, f"writing {target.path} to {destination.parent}") from exc
            except Exception as exc:
                _remove_quietly(partial)
                raise self._fail(exc) from exc
        logger.info("downloaded target=%s version=%s bytes=%d", target.path, target.version, target.length)
        return destination

    @staticmethod
    def is_cached(target: TargetInfo, path: Path) -> bool:
        """Whether ``path`` holds exactly the signed bytes of ``target``."""
        try:
            with path.open("rb") as existing:
                to_tuf(target).verify_length_and_hashes(existing)
        except (OSError, LengthOrHashMismatchError):
            return False
        return True


def _open_for_write(path: Path) -> BinaryIO:
    """The partial file of a download (a seam for disk-full tests)."""
    return path.open("wb")


def _fsync_file(path: Path) -> None:
    with path.open("rb+") as handle:
        os.fsync(handle.fileno())


def _remove_quietly(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
