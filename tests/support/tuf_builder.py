"""A small TUF repository builder for tests: python-tuf metadata signed with fresh ed25519 keys.

It publishes the layout a static host serves (``fleet-stub --tuf-repo`` or any web server): with
``consistent_snapshot`` every root as ``N.root.json``, ``N.snapshot.json``, ``N.targets.json`` and an unversioned
``timestamp.json``, targets under ``targets/<dir>/<hash>.<file>``; without it (Fleet's layout) also plain
``root.json``, ``snapshot.json``, ``targets.json`` and ``targets/<path>``. Plain-named copies are always written, so
both kinds of client find what they ask for. Helpers exist for the attacks the tests play: expiry, rollback,
below-threshold signatures, key rotation and raw file replacement.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

from securesystemslib.signer import CryptoSigner, Signer
from tuf.api.metadata import Metadata, MetaFile, Root, Signed, Snapshot, TargetFile, Targets, Timestamp
from tuf.api.serialization.json import JSONSerializer

ROLES = ("root", "timestamp", "snapshot", "targets")
_Role = TypeVar("_Role", Root, Timestamp, Snapshot, Targets)
DEFAULT_EXPIRY = {
    "root": timedelta(days=365),
    "targets": timedelta(days=90),
    "snapshot": timedelta(days=90),
    "timestamp": timedelta(days=14),
}


def _new_signer() -> Signer:
    return CryptoSigner.generate_ed25519()


class RepoBuilder:
    """A repository in ``directory`` (the folder to serve). Mutate, then ``publish()`` to sign and write."""

    def __init__(
        self,
        directory: Path,
        *,
        consistent_snapshot: bool = True,
        keys_per_role: int = 1,
        thresholds: dict[str, int] | None = None,
        now: datetime | None = None,
    ) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.consistent_snapshot = consistent_snapshot
        self.now = now or datetime.now(UTC).replace(microsecond=0)
        self.expiry = dict(DEFAULT_EXPIRY)
        self.signers: dict[str, list[Signer]] = {role: [_new_signer() for _ in range(keys_per_role)] for role in ROLES}
        root = Root(expires=self._expires("root"), consistent_snapshot=consistent_snapshot)
        for role in ROLES:
            for signer in self.signers[role]:
                root.add_key(signer.public_key, role)
            root.roles[role].threshold = (thresholds or {}).get(role, 1)
        self.root: Metadata[Root] = Metadata(root)
        self.targets: Metadata[Targets] = Metadata(Targets(expires=self._expires("targets")))
        self.snapshot: Metadata[Snapshot] = Metadata(Snapshot(expires=self._expires("snapshot")))
        self.timestamp: Metadata[Timestamp] = Metadata(Timestamp(expires=self._expires("timestamp")))
        self.published: dict[tuple[str, int], bytes] = {}  # every signed file ever written, for rollback attacks
        self._root_signers_for_next: list[Signer] = []
        self._write_root()
        self.publish()

    # -- building blocks -----------------------------------------------------------------------------------

    def _expires(self, role: str) -> datetime:
        return self.now + self.expiry[role]

    def _sign(self, metadata: Metadata[_Role], role: str, signers: Iterable[Signer] | None = None) -> bytes:
        metadata.signatures.clear()
        for signer in signers if signers is not None else self.signers[role]:
            metadata.sign(signer, append=True)
        data = metadata.to_bytes(JSONSerializer(compact=False))
        self.published[(role, metadata.signed.version)] = data
        return data

    def write(self, name: str, data: bytes) -> None:
        """Write raw bytes as a repository file (``name`` relative to the served folder)."""
        path = self.dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    def _write_root(self, signers: Iterable[Signer] | None = None) -> None:
        data = self._sign(self.root, "root", signers)
        self.write(f"{self.root.signed.version}.root.json", data)
        self.write("root.json", data)

    def root_bytes(self, version: int = 1) -> bytes:
        """The signed root of ``version`` (version 1 is what a package pins as its trusted root)."""
        return self.published[("root", version)]

    # -- targets -------------------------------------------------------------------------------------------

    def add_target(
        self, path: str, data: bytes, *, version: str | None = None, hash_algorithms: tuple[str, ...] = ("sha256",)
    ) -> TargetFile:
        """Add or replace a target and write its bytes under every name a client may ask for."""
        target = TargetFile.from_data(path, data, list(hash_algorithms))
        if version is not None:
            target.unrecognized_fields["custom"] = {"version": version}
        self.targets.signed.targets[path] = target
        self.write_target_bytes(path, data, target)
        return target

    def write_target_bytes(self, path: str, data: bytes, target: TargetFile | None = None) -> None:
        """Write ``data`` as the served bytes of ``path`` (all names), e.g. to tamper with a published target."""
        info = target or self.targets.signed.targets[path]
        directory, _, base = path.rpartition("/")
        prefix = f"targets/{directory}/" if directory else "targets/"
        self.write(f"targets/{path}", data)
        for digest in info.hashes.values():
            self.write(f"{prefix}{digest}.{base}", data)

    def remove_target(self, path: str) -> None:
        del self.targets.signed.targets[path]

    # -- publishing ----------------------------------------------------------------------------------------

    def publish(self, roles: Iterable[str] = ("targets", "snapshot", "timestamp"), *, bump: bool = True) -> None:
        """Bump, sign and write ``roles`` (in order targets → snapshot → timestamp), refreshing expiries."""
        wanted = set(roles)
        if "targets" in wanted:
            self._publish_targets(bump)
        if "snapshot" in wanted:
            self._publish_snapshot(bump)
        if "timestamp" in wanted:
            self._publish_timestamp(bump)

    def _published_once(self, role: str) -> bool:
        return any(name == role for name, _ in self.published)

    def _bump(self, signed: Signed, role: str, bump: bool) -> None:
        if bump and self._published_once(role):
            signed.version += 1
        signed.expires = self._expires(role)

    def _publish_targets(self, bump: bool) -> None:
        self._bump(self.targets.signed, "targets", bump)
        data = self._sign(self.targets, "targets")
        self.write(f"{self.targets.signed.version}.targets.json", data)
        self.write("targets.json", data)

    def _publish_snapshot(self, bump: bool) -> None:
        self.snapshot.signed.meta = {"targets.json": MetaFile(version=self.targets.signed.version)}
        self._bump(self.snapshot.signed, "snapshot", bump)
        data = self._sign(self.snapshot, "snapshot")
        self.write(f"{self.snapshot.signed.version}.snapshot.json", data)
        self.write("snapshot.json", data)

    def _publish_timestamp(self, bump: bool) -> None:
        self.timestamp.signed.snapshot_meta = MetaFile(version=self.snapshot.signed.version)
        self._bump(self.timestamp.signed, "timestamp", bump)
        self.write("timestamp.json", self._sign(self.timestamp, "timestamp"))

    def sign_with(self, role: str, signers: list[Signer]) -> None:
        """Re-sign the current version of a non-root role with exactly ``signers`` and rewrite its files."""
        if role == "timestamp":
            self.write("timestamp.json", self._sign(self.timestamp, role, signers))
            return
        if role == "targets":
            version, data = self.targets.signed.version, self._sign(self.targets, role, signers)
        else:
            version, data = self.snapshot.signed.version, self._sign(self.snapshot, role, signers)
        self.write(f"{version}.{role}.json", data)
        self.write(f"{role}.json", data)

    # -- root changes --------------------------------------------------------------------------------------

    def rotate_keys(self, role: str, *, count: int = 1) -> list[Signer]:
        """Replace ``role``'s keys in the root (takes effect with the next ``publish_root``)."""
        old = self.signers[role]
        if role == "root":
            self._root_signers_for_next = list(old)
        for signer in old:
            self.root.signed.revoke_key(signer.public_key.keyid, role)
        new = [_new_signer() for _ in range(count)]
        for signer in new:
            self.root.signed.add_key(signer.public_key, role)
        self.signers[role] = new
        return new

    def publish_root(self, *, signers: Iterable[Signer] | None = None) -> None:
        """Publish root N+1, signed by the previous root keys and the new ones (or by exactly ``signers``)."""
        self.root.signed.version += 1
        self.root.signed.expires = self._expires("root")
        if signers is None:
            chosen: list[Signer] = []
            for signer in [*self._root_signers_for_next, *self.signers["root"]]:
                if signer.public_key.keyid not in {s.public_key.keyid for s in chosen}:
                    chosen.append(signer)
            signers = chosen
        self._root_signers_for_next = []
        self._write_root(signers)

    def copy_root(self) -> Metadata[Root]:
        return copy.deepcopy(self.root)
