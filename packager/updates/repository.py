"""The TUF repository on disk and the four operations on it: init, add, timestamp, rotate (plus reading the root).

Layout (``consistent_snapshot: true``, docs/adr/0004): ``repository/N.root.json`` for every root version,
``N.targets.json``, ``N.snapshot.json``, the only unversioned file ``timestamp.json`` (plus convenience copies
``root.json``, ``targets.json``, ``snapshot.json``), and ``targets/<name>/<platform>/<channel>/`` holding each
file under its sha256 and sha512 prefixed names (what consistent-snapshot clients fetch) and its plain name (what
Fleet-layout tools expect), hard-linked.

Every operation validates its inputs and loads every key it needs before it writes anything; then it writes
target files first, versioned metadata next and ``timestamp.json`` last, each atomically — so a failure at any
point leaves a repository that clients read exactly as before.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import BinaryIO

from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import Metadata, MetaFile, Root, Snapshot, TargetFile, Targets, Timestamp
from tuf.api.serialization.json import JSONSerializer

from packager.updates import role_keys
from packager.updates.target_names import target_path
from safe_fs.atomic_write import PUBLIC_MODE, fsync_dir, write_atomic
from safe_fs.file_lock import try_lock, unlock

log = logging.getLogger(__name__)

TOP_ROLES = ("root", "targets", "snapshot", "timestamp")
HASHES = ["sha256", "sha512"]
_ROOT_FILE = re.compile(r"^(\d+)\.root\.json$")
_VERSIONED = re.compile(r"^(\d+)\.(targets|snapshot)\.json$")
VERSION_PATTERN = re.compile(r"^\d+\.\d+\.\d+([.-][0-9A-Za-z.+-]+)?$")


class RepositoryError(RuntimeError):
    """A clear, user-facing reason why the repository was not changed."""


@dataclass(frozen=True)
class Expiries:
    root: timedelta = timedelta(days=365)
    targets: timedelta = timedelta(days=90)
    snapshot: timedelta = timedelta(days=90)
    timestamp: timedelta = timedelta(days=14)

    def of(self, role: str) -> timedelta:
        value: timedelta = getattr(self, role)
        return value


@dataclass(frozen=True)
class RepoPaths:
    base: Path

    @property
    def keys(self) -> Path:
        return self.base / "keys"

    @property
    def repository(self) -> Path:
        return self.base / "repository"

    @property
    def targets(self) -> Path:
        return self.repository / "targets"

    @property
    def staging(self) -> Path:
        """Private copies being published: beside ``repository/`` (the served tree), on its file system."""
        return self.base / ".staging"


@dataclass
class RepoState:
    root: Metadata[Root]
    targets: Metadata[Targets]
    snapshot: Metadata[Snapshot]
    timestamp: Metadata[Timestamp]


@dataclass
class Publication:
    """Everything one operation writes, in the order it must be written."""

    target_files: list[tuple[Path, Path]] = field(default_factory=list)  # (source, destination)
    metadata: list[tuple[str, bytes]] = field(default_factory=list)  # versioned files, then copies
    timestamp: bytes | None = None
    plain_files: list[tuple[Path, Path]] = field(default_factory=list)  # Fleet-layout copies, written last


def _serialize(metadata: Metadata[Root] | Metadata[Targets] | Metadata[Snapshot] | Metadata[Timestamp]) -> bytes:
    return metadata.to_bytes(JSONSerializer(compact=False))


def _expiry(now: datetime, lifetime: timedelta) -> datetime:
    return (now + lifetime).replace(microsecond=0)


@contextlib.contextmanager
def locked(paths: RepoPaths) -> Iterator[None]:
    """One writer at a time."""
    paths.base.mkdir(parents=True, exist_ok=True)
    with (paths.base / ".lock").open("a") as handle:
        if not try_lock(handle.fileno()):
            raise RepositoryError(f"another orbitctl is changing {paths.base}; try again when it is done")
        try:
            yield
        finally:
            unlock(handle.fileno())


def _latest(directory: Path, pattern: re.Pattern[str], role: str | None = None) -> Path | None:
    best: tuple[int, Path] | None = None
    if not directory.is_dir():
        return None
    for entry in directory.iterdir():
        match = pattern.match(entry.name)
        if match and (role is None or match.group(2) == role):
            version = int(match.group(1))
            if best is None or version > best[0]:
                best = (version, entry)
    return None if best is None else best[1]


def load_state(paths: RepoPaths) -> RepoState:
    repo = paths.repository
    root_file = _latest(repo, _ROOT_FILE)
    targets_file = _latest(repo, _VERSIONED, "targets")
    snapshot_file = _latest(repo, _VERSIONED, "snapshot")
    timestamp_file = repo / "timestamp.json"
    if root_file is None or targets_file is None or snapshot_file is None or not timestamp_file.is_file():
        raise RepositoryError(f"{paths.base} is not an initialized repository (run `orbitctl updates init` first)")
    try:
        return RepoState(
            root=Metadata[Root].from_file(str(root_file)),
            targets=Metadata[Targets].from_file(str(targets_file)),
            snapshot=Metadata[Snapshot].from_file(str(snapshot_file)),
            timestamp=Metadata[Timestamp].from_file(str(timestamp_file)),
        )
    except Exception as exc:
        raise RepositoryError(f"cannot read the repository metadata: {exc}") from exc


def _sign(
    metadata: Metadata[Root] | Metadata[Targets] | Metadata[Snapshot] | Metadata[Timestamp], *signers: CryptoSigner
) -> None:
    metadata.signatures.clear()
    for signer in signers:
        metadata.sign(signer, append=True)


def _meta_file(data: bytes, version: int) -> MetaFile:
    return MetaFile(
        version=version,
        length=len(data),
        hashes={"sha256": hashlib.sha256(data).hexdigest(), "sha512": hashlib.sha512(data).hexdigest()},
    )


def publish(paths: RepoPaths, publication: Publication) -> None:
    """Write in an order that keeps the repository consistent for clients at every moment."""
    for source, destination in publication.target_files:
        _place_target(source, destination)
    for name, data in publication.metadata:
        _write_public(paths.repository / name, data)
    if publication.timestamp is not None:
        _write_public(paths.repository / "timestamp.json", publication.timestamp)
    for source, destination in publication.plain_files:
        _place_target(source, destination)


def sweep_leftovers(paths: RepoPaths) -> int:
    """Remove what a killed ``orbitctl updates`` left: staged copies, and hidden temporaries inside the served tree
    (published files never start with a dot). Called with the repository lock held. Returns how many went."""
    removed = 0
    candidates = [*paths.staging.glob(".staging-*"), *paths.targets.glob(".staging-*")]  # the latter: older orbitctl
    if paths.targets.is_dir():
        candidates += [p for p in paths.targets.rglob(".*") if p.is_file()]
    if paths.repository.is_dir():
        candidates += [p for p in paths.repository.glob(".*.tmp") if p.is_file()]
    for path in dict.fromkeys(candidates):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed += 1
    if removed:
        log.warning("removed %d leftover file(s) of an interrupted orbitctl run under %s", removed, paths.base)
    return removed


def _stage_copy(source: Path, directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".staging-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as out, source.open("rb") as src:
            shutil.copyfileobj(src, out, 1 << 20)
            out.flush()
            os.fsync(out.fileno())
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return Path(tmp)


def _place_target(source: Path, destination: Path) -> None:
    destination.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{destination.name}.", dir=destination.parent)
    os.close(fd)
    try:
        try:
            os.unlink(tmp)
            os.link(source, tmp)
        except OSError:
            shutil.copyfile(source, tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, destination)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(destination.parent)


def _chain_from_targets(
    state: RepoState, keys: Mapping[str, role_keys.RoleKey], now: datetime, expiries: Expiries, publication: Publication
) -> None:
    """Re-sign targets (bumped), then snapshot and timestamp pointing at it."""
    state.targets.signed.version += 1
    state.targets.signed.expires = _expiry(now, expiries.targets)
    _sign(state.targets, keys["targets"].signer)
    targets_bytes = _serialize(state.targets)
    publication.metadata.append((f"{state.targets.signed.version}.targets.json", targets_bytes))
    _chain_from_snapshot(state, keys, now, expiries, publication, targets_bytes)
    publication.metadata.append(("targets.json", targets_bytes))


def _chain_from_snapshot(
    state: RepoState,
    keys: Mapping[str, role_keys.RoleKey],
    now: datetime,
    expiries: Expiries,
    publication: Publication,
    targets_bytes: bytes | None = None,
) -> None:
    if targets_bytes is None:
        targets_bytes = _serialize(state.targets)
    state.snapshot.signed.version += 1
    state.snapshot.signed.expires = _expiry(now, expiries.snapshot)
    state.snapshot.signed.meta["targets.json"] = _meta_file(targets_bytes, state.targets.signed.version)
    _sign(state.snapshot, keys["snapshot"].signer)
    snapshot_bytes = _serialize(state.snapshot)
    publication.metadata.append((f"{state.snapshot.signed.version}.snapshot.json", snapshot_bytes))
    publication.metadata.append(("snapshot.json", snapshot_bytes))
    _chain_timestamp(state, keys, now, expiries, publication, snapshot_bytes)


def _chain_timestamp(
    state: RepoState,
    keys: Mapping[str, role_keys.RoleKey],
    now: datetime,
    expiries: Expiries,
    publication: Publication,
    snapshot_bytes: bytes | None = None,
) -> None:
    if snapshot_bytes is None:
        snapshot_bytes = _serialize(state.snapshot)
    state.timestamp.signed.version += 1
    state.timestamp.signed.expires = _expiry(now, expiries.timestamp)
    state.timestamp.signed.snapshot_meta = _meta_file(snapshot_bytes, state.snapshot.signed.version)
    _sign(state.timestamp, keys["timestamp"].signer)
    publication.timestamp = _serialize(state.timestamp)


# --- operations ---------------------------------------------------------------------------------------------


def init(paths: RepoPaths, passphrases: Mapping[str, bytes], now: datetime, expiries: Expiries) -> dict[str, str]:
    """Create keys for the four roles and sign version 1 of every role; returns role → key id."""
    if paths.repository.exists() and any(paths.repository.iterdir()):
        raise RepositoryError(f"{paths.repository} already exists and is not empty; refusing to overwrite it")
    if paths.keys.exists() and any(paths.keys.glob("*.key")):
        raise RepositoryError(f"{paths.keys} already holds keys; refusing to overwrite them")
    generated = {role: role_keys.generate(role) for role in TOP_ROLES}
    keys = {role: pair[0] for role, pair in generated.items()}
    root = Metadata(Root(expires=_expiry(now, expiries.root), consistent_snapshot=True))
    for role, key in keys.items():
        root.signed.add_key(key.public, role)
    targets = Metadata(Targets(expires=_expiry(now, expiries.targets)))
    snapshot = Metadata(Snapshot(expires=_expiry(now, expiries.snapshot)))
    timestamp = Metadata(Timestamp(expires=_expiry(now, expiries.timestamp)))
    state = RepoState(root, targets, snapshot, timestamp)
    _sign(root, keys["root"].signer)
    _sign(targets, keys["targets"].signer)
    root_bytes, targets_bytes = _serialize(root), _serialize(targets)
    publication = Publication(metadata=[("1.root.json", root_bytes), ("1.targets.json", targets_bytes)])
    snapshot.signed.version, timestamp.signed.version = 0, 0  # the chain bumps them to 1
    _chain_from_snapshot(state, keys, now, expiries, publication, targets_bytes)
    publication.metadata += [("root.json", root_bytes), ("targets.json", targets_bytes)]
    paths.targets.mkdir(parents=True, exist_ok=True)
    for role, (_, private) in generated.items():
        role_keys.save(paths.keys, role, private, passphrases[role])
    publish(paths, publication)
    return {role: key.keyid for role, key in keys.items()}


def _load_keys(
    paths: RepoPaths, state: RepoState, roles: tuple[str, ...], passphrases: Mapping[str, bytes]
) -> dict[str, role_keys.RoleKey]:
    keys = {role: role_keys.load(paths.keys, role, passphrases[role]) for role in roles}
    for role, key in keys.items():
        if key.keyid not in state.root.signed.roles[role].keyids:
            raise RepositoryError(f"keys/{role}.key is not a key the current root trusts for the {role} role")
    return keys


def _file_hashes(handle: BinaryIO) -> tuple[int, dict[str, str]]:
    digests = {name: hashlib.new(name) for name in HASHES}
    size = 0
    for chunk in iter(lambda: handle.read(1 << 20), b""):
        size += len(chunk)
        for digest in digests.values():
            digest.update(chunk)
    return size, {name: digest.hexdigest() for name, digest in digests.items()}


def add(
    paths: RepoPaths,
    passphrases: Mapping[str, bytes],
    now: datetime,
    expiries: Expiries,
    *,
    source: Path,
    name: str,
    platform: str,
    version: str,
    channels: list[str],
) -> list[str]:
    """Publish ``source`` for (name, platform) under its exact version and every channel; returns target paths."""
    if not VERSION_PATTERN.match(version):
        raise RepositoryError(f"invalid version {version!r}: expected X.Y.Z")
    if not source.is_file():
        raise RepositoryError(f"target file not found: {source}")
    all_channels = list(dict.fromkeys([version, *channels]))
    paths_to_publish = [target_path(name, platform, channel) for channel in all_channels]
    state = load_state(paths)
    keys = _load_keys(paths, state, ("targets", "snapshot", "timestamp"), passphrases)
    # A private copy, hashed after copying: what clients get is exactly what was hashed and signed, even if the
    # source file changes meanwhile or later (published files are hard links of this copy).
    sweep_leftovers(paths)
    staged = _stage_copy(source, paths.staging)
    try:
        with staged.open("rb") as handle:
            length, hashes = _file_hashes(handle)
        exact = state.targets.signed.targets.get(paths_to_publish[0])
        if exact is not None and exact.hashes != hashes:
            raise RepositoryError(
                f"{name} {version} for {platform} is already published with different content; "
                "publish a new version instead of replacing one"
            )
        publication = Publication()
        for path in paths_to_publish:
            target = TargetFile(
                length=length, hashes=dict(hashes), path=path, unrecognized_fields={"custom": {"version": version}}
            )
            state.targets.signed.targets[path] = target
            directory, file_name = path.rsplit("/", 1)
            for digest in hashes.values():
                publication.target_files.append((staged, paths.targets / directory / f"{digest}.{file_name}"))
            publication.plain_files.append((staged, paths.targets / path))
        _chain_from_targets(state, keys, now, expiries, publication)
        publish(paths, publication)
    finally:
        with contextlib.suppress(FileNotFoundError):
            staged.unlink()
    return paths_to_publish


def refresh_timestamp(paths: RepoPaths, passphrases: Mapping[str, bytes], now: datetime, expiries: Expiries) -> int:
    """Re-sign timestamp.json with a bumped version and a fresh expiry (for cron); returns the new version."""
    state = load_state(paths)
    keys = _load_keys(paths, state, ("timestamp",), passphrases)
    publication = Publication()
    _chain_timestamp(state, keys, now, expiries, publication)
    publish(paths, publication)
    return state.timestamp.signed.version


def rotate(
    paths: RepoPaths, role: str, passphrases: Mapping[str, bytes], now: datetime, expiries: Expiries
) -> tuple[str, str]:
    """Replace ``role``'s key; publishes a new root signed by the old and new root keys; returns (old, new) ids."""
    if role not in TOP_ROLES:
        raise RepositoryError(f"unknown role {role!r}: expected one of {', '.join(TOP_ROLES)}")
    state = load_state(paths)
    needed = {
        "root",
        *{
            "targets": ("targets", "snapshot", "timestamp"),
            "snapshot": ("snapshot", "timestamp"),
            "timestamp": ("timestamp",),
            "root": (),
        }[role],
    }
    keys = _load_keys(paths, state, tuple(sorted(needed)), passphrases)
    old_root_key = keys["root"]
    new_key, new_private = role_keys.generate(role)
    old_keyid = keys[role].keyid
    root = state.root
    root.signed.revoke_key(old_keyid, role)
    root.signed.add_key(new_key.public, role)
    root.signed.version += 1
    root.signed.expires = _expiry(now, expiries.root)
    keys[role] = new_key
    _sign(root, old_root_key.signer, *([new_key.signer] if role == "root" else []))
    root_bytes = _serialize(root)
    publication = Publication(metadata=[(f"{root.signed.version}.root.json", root_bytes)])
    if role == "targets":
        _chain_from_targets(state, keys, now, expiries, publication)
    elif role == "snapshot":
        _chain_from_snapshot(state, keys, now, expiries, publication)
    elif role == "timestamp":
        _chain_timestamp(state, keys, now, expiries, publication)
    publication.metadata.append(("root.json", root_bytes))
    new_path = role_keys.key_path(paths.keys, role).with_suffix(".key.new")
    role_keys.save(paths.keys, role, new_private, passphrases[role], path=new_path)
    publish(paths, publication)
    role_keys.retire(paths.keys, role, old_keyid)
    os.replace(new_path, role_keys.key_path(paths.keys, role))
    return old_keyid, new_key.keyid


def current_root(paths: RepoPaths) -> bytes:
    latest = _latest(paths.repository, _ROOT_FILE)
    if latest is None:
        raise RepositoryError(f"{paths.base} has no root metadata (run `orbitctl updates init` first)")
    return latest.read_bytes()


def utcnow() -> datetime:
    return datetime.now(UTC)


def _write_public(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, data, PUBLIC_MODE)
