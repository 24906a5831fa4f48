"""What the installer records beside each installed version: signed hashes, length, version, install time."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

TARGET_RECORD = "target.json"


@dataclass(frozen=True)
class InstalledVersion:
    """What is installed at a pointer: the signed hashes and version recorded at install time."""

    digest_id: str
    hashes: Mapping[str, str] = field(hash=False)
    length: int
    version: str | None
    installed_at: str | None
    # the executable as extracted from a verified archive (measured at install time; None in older records and for
    # versions adopted from a package), so an archive target's installed executable can be checked too
    executable_length: int | None = None
    executable_sha256: str | None = None

    def to_json(self) -> dict[str, object]:
        data: dict[str, object] = {
            "digest_id": self.digest_id,
            "hashes": dict(self.hashes),
            "length": self.length,
            "version": self.version,
            "installed_at": self.installed_at,
        }
        if self.executable_sha256 is not None:
            data["executable_length"] = self.executable_length
            data["executable_sha256"] = self.executable_sha256
        return data

    @classmethod
    def from_json(cls, data: object) -> InstalledVersion | None:
        if not isinstance(data, dict):
            return None
        hashes, digest_id, length = data.get("hashes"), data.get("digest_id"), data.get("length")
        version, installed_at = data.get("version"), data.get("installed_at")
        if not isinstance(hashes, dict) or not isinstance(digest_id, str) or not isinstance(length, int):
            return None
        exe_length, exe_sha256 = data.get("executable_length"), data.get("executable_sha256")
        measured = isinstance(exe_length, int) and not isinstance(exe_length, bool) and isinstance(exe_sha256, str)
        return cls(
            digest_id=digest_id,
            hashes=MappingProxyType({str(k): str(v) for k, v in hashes.items()}),
            length=length,
            version=version if isinstance(version, str) else None,
            installed_at=installed_at if isinstance(installed_at, str) else None,
            executable_length=exe_length if measured else None,
            executable_sha256=exe_sha256 if measured else None,
        )


def read_record(version_dir: Path) -> InstalledVersion | None:
    """The record of a version directory, or ``None`` when missing or unreadable (an incomplete version)."""
    try:
        return InstalledVersion.from_json(json.loads((version_dir / TARGET_RECORD).read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return None
