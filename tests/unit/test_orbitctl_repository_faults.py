"""A failure in the middle of publishing leaves what clients read unchanged."""

from __future__ import annotations

import errno
import hashlib
from pathlib import Path

import pytest

from packager.updates import repository
from packager.updates.repository import Expiries, RepoPaths

PASSPHRASES = {role: f"{role}-passphrase".encode() for role in repository.TOP_ROLES}


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_disk_full_while_placing_targets_keeps_the_published_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = RepoPaths(tmp_path / "repo")
    now = repository.utcnow()
    repository.init(paths, PASSPHRASES, now, Expiries())
    source = tmp_path / "orbit"
    source.write_bytes(b"first")
    repository.add(
        paths,
        PASSPHRASES,
        now,
        Expiries(),
        source=source,
        name="orbit",
        platform="linux",
        version="1.0.0",
        channels=["stable"],
    )
    timestamp_before = _digest(paths.repository / "timestamp.json")
    plain_before = _digest(paths.targets / "orbit/linux/stable/orbit")
    calls = {"n": 0}
    real = repository._place_target

    def fail_on_third(source: Path, destination: Path) -> None:
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(source, destination)

    monkeypatch.setattr(repository, "_place_target", fail_on_third)
    source.write_bytes(b"second")
    with pytest.raises(OSError, match="No space left"):
        repository.add(
            paths,
            PASSPHRASES,
            now,
            Expiries(),
            source=source,
            name="orbit",
            platform="linux",
            version="1.0.1",
            channels=["stable"],
        )
    assert _digest(paths.repository / "timestamp.json") == timestamp_before
    assert _digest(paths.targets / "orbit/linux/stable/orbit") == plain_before
    assert not list(paths.targets.glob(".staging-*"))
    assert repository.load_state(paths).targets.signed.version == 2
