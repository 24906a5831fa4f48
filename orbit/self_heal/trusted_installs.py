"""What each installed executable must be, remembered by orbit (``state/trusted-installs.json``, 0600, one rename).

The installer's own record (``.versions/<id>/target.json``) is found through the executed file's inode (plain
targets) or link (archives). A file replaced behind orbit's back (a restore from backup, an antivirus, a sloppy
copy) no longer leads there, and a removed one leads nowhere; this record, keyed by the target's path, still says
which version belongs there and what its signed length and hash are. It is written from signed sources only: an
install record (made from a verified download) or an update check that found the installed file equal to the
signed target.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from pathlib import Path

from safe_fs.atomic_write import SECRET_MODE, write_atomic
from tuf_updates.integrity import ExpectedFile

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrustedInstall:
    target_path: str  # orbit/linux/stable/orbit
    digest_id: str | None  # the installer's version directory, when the version is in the local store
    version: str | None
    expected: ExpectedFile

    def to_json(self) -> dict[str, object]:
        return {
            "digest_id": self.digest_id,
            "version": self.version,
            "length": self.expected.length,
            "algorithm": self.expected.algorithm,
            "digest": self.expected.digest,
        }

    @classmethod
    def from_json(cls, target_path: str, data: object) -> TrustedInstall | None:
        if not isinstance(data, dict):
            return None
        length, algorithm, digest = data.get("length"), data.get("algorithm"), data.get("digest")
        digest_id, version = data.get("digest_id"), data.get("version")
        if not isinstance(length, int) or isinstance(length, bool) or length < 0:
            return None
        if algorithm not in ("sha256", "sha512") or not isinstance(digest, str) or not digest:
            return None
        return cls(
            target_path,
            digest_id if isinstance(digest_id, str) and digest_id else None,
            version if isinstance(version, str) else None,
            ExpectedFile(length, str(algorithm), digest),
        )


class TrustedInstalls:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._entries = self._load()

    def _load(self) -> dict[str, TrustedInstall]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.error("event=trusted_installs_unreadable path=%s error=%s", self.path, exc)
            return {}
        entries = {}
        for target_path, item in (data if isinstance(data, dict) else {}).items():
            if (entry := TrustedInstall.from_json(str(target_path), item)) is not None:
                entries[entry.target_path] = entry
        return entries

    def get(self, target_path: str) -> TrustedInstall | None:
        with self._lock:
            return self._entries.get(target_path)

    def put(self, entry: TrustedInstall) -> None:
        with self._lock:
            if self._entries.get(entry.target_path) == entry:
                return
            self._entries[entry.target_path] = entry
            self.path.parent.mkdir(parents=True, exist_ok=True)
            data = {path: item.to_json() for path, item in sorted(self._entries.items())}
            write_atomic(self.path, json.dumps(data, indent=1), SECRET_MODE)


__all__ = ["TrustedInstall", "TrustedInstalls"]
