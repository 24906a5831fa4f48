"""Verified agent binaries kept between ``orbitctl package`` runs (``--cache-dir``; off unless asked for).

An admin building the four installers, or the same one for several teams, fetches the same orbit and osqueryd
each time. With a cache, a target whose signed digest is already there is copied from it instead of downloaded —
and verified on the way, length and every signed hash, exactly as a download is: the cache is a copy of bytes the
TUF client once verified, never a source of trust. A file that no longer matches is removed and the target is
downloaded. Entries are named by the signed digest (sha512 when published, else sha256); the directory is 0700,
files 0600, written under a temporary name and renamed; the newest ``KEEP`` entries are kept.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
from pathlib import Path

from tuf_updates.parallel_hashes import ParallelHashes
from tuf_updates.target_info import TargetInfo

logger = logging.getLogger(__name__)

KEEP = 8
_READ_BYTES = 1024 * 1024


class TargetCache:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _entry(self, info: TargetInfo) -> Path:
        algorithm, digest = info.preferred_hash()
        if not digest.isalnum():  # a digest is hex: never let it name a path elsewhere
            raise ValueError(f"unexpected {algorithm} digest for {info.path}")
        return self.directory / f"{algorithm}-{digest}"

    def restore(self, info: TargetInfo, destination: Path) -> bool:
        """Copy the cached bytes of ``info`` to ``destination`` if they match its length and every signed hash;
        ``False`` (nothing written, a mismatching entry removed) otherwise."""
        entry = self._entry(info)
        partial = destination.with_name(f".{destination.name}.{secrets.token_hex(4)}.part")
        try:
            source = entry.open("rb")
        except FileNotFoundError:
            return False
        try:
            with source, partial.open("wb") as out, ParallelHashes(info.hashes, sink=out.write) as hashes:
                length = 0
                while chunk := source.read(_READ_BYTES):
                    length += len(chunk)
                    if length > info.length:
                        break
                    hashes.update(chunk)
                observed = hashes.hexdigests()
            if length != info.length or any(observed[name] != value for name, value in info.hashes.items()):
                logger.warning("cached target does not match its signed hashes, removed: %s", entry.name)
                entry.unlink(missing_ok=True)
                partial.unlink(missing_ok=True)
                return False
            os.replace(partial, destination)
        except OSError as exc:  # the cache is an optimisation: any trouble with it means a download
            logger.warning("cannot use the cached %s: %s", info.path, exc)
            partial.unlink(missing_ok=True)
            return False
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        with contextlib.suppress(OSError):
            os.utime(entry)  # most recently used
        return True

    def store(self, info: TargetInfo, downloaded: Path) -> None:
        """Keep a copy of a verified download (a hard link where possible); a failure only costs the next build a
        download."""
        entry = self._entry(info)
        try:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            partial = self.directory / f".{entry.name}.{secrets.token_hex(4)}.part"
            try:
                os.link(downloaded, partial)
            except OSError:
                shutil.copyfile(downloaded, partial)
            os.chmod(partial, 0o600)
            os.replace(partial, entry)
            self._prune()
        except OSError as exc:
            logger.warning("cannot keep %s in the cache %s: %s", info.path, self.directory, exc)

    def _prune(self) -> None:
        entries = [path for path in self.directory.iterdir() if path.is_file() and not path.name.startswith(".")]
        entries.sort(key=lambda path: path.stat().st_mtime, reverse=True)
        for stale in entries[KEEP:]:
            stale.unlink(missing_ok=True)
