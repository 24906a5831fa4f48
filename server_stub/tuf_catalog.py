"""Which channels the served TUF repository publishes, read from the targets metadata clients would get.

The stub follows the chain a client follows — ``timestamp.json`` → its snapshot version → that snapshot's targets
version — reading ``N.snapshot.json`` / ``N.targets.json`` when published (consistent snapshots, ADR 0004) and the
plain names otherwise (Fleet's layout). Signatures are not checked: this is the admin's own repository, read to
catch a typo or an unpublished version before agents are pinned to it; the agents verify everything themselves.

Target paths are ``<target>/<platform>/<channel>/<file>``; the catalog maps target → channel → platforms.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

MAX_METADATA_BYTES = 32 * 1024 * 1024


class TufCatalogError(RuntimeError):
    pass


@dataclass(frozen=True)
class TufCatalog:
    channels: Mapping[str, Mapping[str, frozenset[str]]]  # target → channel → platforms

    def platforms(self, target: str, channel: str) -> frozenset[str]:
        return self.channels.get(target, {}).get(channel, frozenset())

    def has(self, target: str, channel: str) -> bool:
        return bool(self.platforms(target, channel))

    def channels_of(self, target: str) -> frozenset[str]:
        return frozenset(self.channels.get(target, {}))


def catalog_from_paths(paths: object) -> TufCatalog:
    """Pure: the catalog of an iterable of target paths (anything not shaped like Fleet's layout is skipped)."""
    found: dict[str, dict[str, set[str]]] = {}
    if not isinstance(paths, Mapping):
        return TufCatalog({})
    for path in paths:
        parts = str(path).split("/")
        if len(parts) != 4 or not all(parts):
            continue
        target, platform, channel, _file = parts
        found.setdefault(target, {}).setdefault(channel, set()).add(platform)
    return TufCatalog({t: {c: frozenset(p) for c, p in chans.items()} for t, chans in found.items()})


def _read_json(path: Path) -> dict[str, object]:
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_METADATA_BYTES + 1)
    except OSError as exc:
        raise TufCatalogError(f"cannot read {path.name}: {exc.strerror or exc}") from None
    if len(data) > MAX_METADATA_BYTES:
        raise TufCatalogError(f"{path.name} is larger than {MAX_METADATA_BYTES} bytes")
    try:
        value = json.loads(data)
    except ValueError as exc:
        raise TufCatalogError(f"{path.name} is not JSON: {exc}") from None
    if not isinstance(value, dict) or not isinstance(value.get("signed"), dict):
        raise TufCatalogError(f"{path.name} is not TUF metadata")
    signed: dict[str, object] = value["signed"]
    return signed


def _meta_version(signed: Mapping[str, object], name: str, holder: str) -> int | None:
    meta = signed.get("meta")
    entry = meta.get(name) if isinstance(meta, dict) else None
    version = entry.get("version") if isinstance(entry, dict) else None
    if version is None:
        return None
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise TufCatalogError(f"{holder} names no valid version of {name}")
    return version


def _versioned_or_plain(directory: Path, name: str, version: int | None) -> Path:
    if version is not None and (directory / f"{version}.{name}").is_file():
        return directory / f"{version}.{name}"
    return directory / name


def read_catalog(directory: Path) -> TufCatalog:
    """The catalog of the repository served from ``directory`` (``--tuf-repo``)."""
    targets_version: int | None = None
    if (directory / "timestamp.json").is_file():
        timestamp = _read_json(directory / "timestamp.json")
        snapshot_path = _versioned_or_plain(
            directory, "snapshot.json", _meta_version(timestamp, "snapshot.json", "timestamp.json")
        )
        if snapshot_path.is_file():
            targets_version = _meta_version(_read_json(snapshot_path), "targets.json", snapshot_path.name)
    targets_path = _versioned_or_plain(directory, "targets.json", targets_version)
    if not targets_path.is_file():
        raise TufCatalogError(f"no targets metadata in {directory} (is it REPO/repository of `orbitctl updates init`?)")
    return catalog_from_paths(_read_json(targets_path).get("targets"))
