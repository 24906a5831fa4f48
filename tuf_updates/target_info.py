"""A target as the repository signed it (path, length, hashes, ``custom.version``), as a plain value.

Kept apart from ``repository_client`` (python-tuf, cryptography: ≈ 13 MiB resident once imported) so a process that
only compares, installs or reports targets — orbit's daemon, whose checks run in a helper process (ADR 0020) — never
loads the TUF stack.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Protocol

PREFERRED_HASHES = ("sha512", "sha256")  # Fleet's order: sha512 when published, else sha256


class SignedTarget(Protocol):
    """What ``TargetInfo.from_tuf`` reads of python-tuf's ``TargetFile``."""

    @property
    def path(self) -> str: ...

    @property
    def length(self) -> int: ...

    @property
    def hashes(self) -> dict[str, str]: ...

    @property
    def custom(self) -> object: ...


@dataclass(frozen=True)
class TargetInfo:
    """A target as signed by the repository: path, length, hashes and ``custom.version``."""

    path: str
    length: int
    hashes: Mapping[str, str] = field(hash=False)
    version: str | None = None

    @classmethod
    def from_tuf(cls, target: SignedTarget) -> TargetInfo:
        custom: object = target.custom
        version = custom.get("version") if isinstance(custom, dict) else None
        return cls(
            path=target.path,
            length=target.length,
            hashes=MappingProxyType(dict(target.hashes)),
            version=version if isinstance(version, str) else None,
        )

    @property
    def file_name(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    def preferred_hash(self) -> tuple[str, str]:
        """``(algorithm, hex digest)``: sha512 if published, else sha256, else the first listed."""
        for algorithm in PREFERRED_HASHES:
            if algorithm in self.hashes:
                return algorithm, self.hashes[algorithm]
        algorithm = next(iter(self.hashes))
        return algorithm, self.hashes[algorithm]

    def to_json(self) -> dict[str, object]:
        return {"path": self.path, "length": self.length, "hashes": dict(self.hashes), "version": self.version}

    @classmethod
    def from_json(cls, data: object) -> TargetInfo:
        """The inverse of ``to_json``; ``ValueError`` on anything else (the helper's answers are checked)."""
        if not isinstance(data, dict):
            raise ValueError("a target must be a JSON object")
        path, length, hashes, version = data.get("path"), data.get("length"), data.get("hashes"), data.get("version")
        if not isinstance(path, str) or not path:
            raise ValueError("a target needs a path")
        if not isinstance(length, int) or isinstance(length, bool) or length < 0:
            raise ValueError("a target needs a length >= 0")
        if not isinstance(hashes, dict) or not hashes:
            raise ValueError("a target needs hashes")
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in hashes.items()):
            raise ValueError("target hashes must map names to hex strings")
        if version is not None and not isinstance(version, str):
            raise ValueError("a target's version must be a string")
        return cls(path, length, MappingProxyType(dict(hashes)), version)
