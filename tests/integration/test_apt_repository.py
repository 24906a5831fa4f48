"""The signed apt repository of ``orbitctl repo apt`` (issue 17, ADR 0016), verified by apt itself with a
private configuration (tests/support/private_apt.py): ``apt-get update`` and ``apt-get install --download-only``
succeed with ``signed-by=`` the repository's key, through InRelease and through Release + Release.gpg; they fail
with a tampered Release/InRelease, a tampered index or .deb, and another key. Rebuilding gives the same bytes."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from packager.formats import deb
from packager.signing.apt_repository import AptRepository, build_signed_apt_repository
from packager.signing.signing_key import SigningKey, load_signing_key
from tests.support.openpgp_keys import ThrowawayKey, make_test_keys
from tests.support.private_apt import PrivateApt, apt_or_skip
from tests.support.staged_package import EPOCH, make_staged

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, ThrowawayKey]:
    apt_or_skip()
    return make_test_keys(tmp_path_factory.mktemp("apt-keys"))


@pytest.fixture(scope="module")
def debs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    base = tmp_path_factory.mktemp("apt-debs")
    built = []
    for version in ("1.2.3", "1.2.4"):
        staged = dataclasses.replace(make_staged(base / version, "linux", version=version), source_date_epoch=EPOCH)
        outfile = base / deb.package_filename(staged)
        deb.build(staged, outfile)
        built.append(outfile)
    return built


@pytest.fixture(scope="module")
def signing_key(keys: dict[str, ThrowawayKey]) -> SigningKey:
    return load_signing_key(keys["rsa"].secret, keys["rsa"].passphrase)


def _repository(base: Path, debs: list[Path], key: SigningKey) -> AptRepository:
    return build_signed_apt_repository(base / "repo", debs, key, date_epoch=EPOCH)


def _copy_line(repository: AptRepository) -> str:
    """``copy:`` rather than ``file:``: apt uses file: archives in place, copy: fetches them into its cache (and
    checks their hashes there), as it would over http."""
    return repository.sources_line(url=f"copy:{repository.root}")


def _update(apt: PrivateApt, line: str) -> subprocess.CompletedProcess[str]:
    apt.sources(line)
    return apt.run("update")


def test_apt_verifies_the_repository_and_downloads_the_newest_deb(
    debs: list[Path], signing_key: SigningKey, tmp_path: Path
) -> None:
    host_lists = sorted(os.listdir("/var/lib/apt/lists")) if os.path.isdir("/var/lib/apt/lists") else []
    repository = _repository(tmp_path, debs, signing_key)
    release = (repository.root / "dists/stable/Release").read_text()
    assert "Date: Tue, 14 Nov 2023 22:13:20 UTC\n" in release and "main/binary-amd64/Packages.gz\n" in release
    assert (repository.root / "dists/stable/InRelease").read_text().startswith("-----BEGIN PGP SIGNED MESSAGE-----")
    apt = PrivateApt(tmp_path / "apt")
    updated = _update(apt, _copy_line(repository))
    assert updated.returncode == 0, updated.stdout + updated.stderr
    assert "InRelease" in updated.stdout and "W:" not in updated.stderr + updated.stdout
    fetched = apt.run("install", "--download-only", "-y", "fleet-osquery")
    assert fetched.returncode == 0, fetched.stdout + fetched.stderr
    downloaded = apt.archives / "fleet-osquery_1.2.4_amd64.deb"
    assert downloaded.read_bytes() == debs[1].read_bytes()
    pinned = apt.run("install", "--download-only", "-y", "fleet-osquery=1.2.3")
    assert pinned.returncode == 0, pinned.stdout + pinned.stderr
    assert (apt.archives / "fleet-osquery_1.2.3_amd64.deb").read_bytes() == debs[0].read_bytes()
    after = sorted(os.listdir("/var/lib/apt/lists")) if os.path.isdir("/var/lib/apt/lists") else []
    assert after == host_lists  # the host's apt state was not touched


def test_release_gpg_alone_verifies_too(debs: list[Path], signing_key: SigningKey, tmp_path: Path) -> None:
    repository = _repository(tmp_path, debs, signing_key)
    (repository.root / "dists/stable/InRelease").unlink()
    apt = PrivateApt(tmp_path / "apt")
    updated = _update(apt, repository.sources_line())
    assert updated.returncode == 0, updated.stdout + updated.stderr
    assert "Release.gpg" in updated.stdout


def _tamper(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


@pytest.mark.parametrize("signed", ["InRelease", "Release"])
def test_a_tampered_release_is_refused(debs: list[Path], signing_key: SigningKey, tmp_path: Path, signed: str) -> None:
    repository = _repository(tmp_path, debs, signing_key)
    dists = repository.root / "dists/stable"
    if signed == "Release":
        (dists / "InRelease").unlink()  # apt falls back to Release + Release.gpg
    # one byte of the signed text (a trailing space would not do for InRelease: the cleartext framework drops
    # trailing whitespace before hashing, RFC 9580 §7.2, and apt's parser ignores it too)
    _tamper(dists / signed, "Origin: orbitctl", "Origin: orbitctm")
    apt = PrivateApt(tmp_path / "apt")
    updated = _update(apt, repository.sources_line())
    output = updated.stdout + updated.stderr
    assert updated.returncode != 0, output
    assert "BADSIG" in output or "signatures were invalid" in output, output
    assert "is not signed" in output


def test_another_key_is_refused(
    debs: list[Path], signing_key: SigningKey, keys: dict[str, ThrowawayKey], tmp_path: Path
) -> None:
    repository = _repository(tmp_path, debs, signing_key)
    apt = PrivateApt(tmp_path / "apt")
    updated = _update(apt, repository.sources_line(keyring=keys["other"].public))
    output = updated.stdout + updated.stderr
    assert updated.returncode != 0 and "NO_PUBKEY" in output, output
    assert apt.run("install", "--download-only", "-y", "fleet-osquery").returncode != 0


def test_a_tampered_index_or_deb_is_refused(debs: list[Path], signing_key: SigningKey, tmp_path: Path) -> None:
    repository = _repository(tmp_path, debs, signing_key)
    pool = repository.root / "pool/main/f/fleet-osquery/fleet-osquery_1.2.4_amd64.deb"
    data = bytearray(pool.read_bytes())
    data[-50] ^= 0x01
    pool.write_bytes(bytes(data))
    apt = PrivateApt(tmp_path / "apt")
    assert _update(apt, _copy_line(repository)).returncode == 0
    fetched = apt.run("install", "--download-only", "-y", "fleet-osquery")
    assert fetched.returncode != 0 and "Hash Sum mismatch" in fetched.stdout + fetched.stderr

    for index in ("Packages", "Packages.gz"):
        (repository.root / "dists/stable/main/binary-amd64" / index).unlink()
    gz = repository.root / "dists/stable/main/binary-amd64/Packages"
    gz.write_text("Package: fleet-osquery\nVersion: 9.9.9\nArchitecture: amd64\nFilename: pool/x.deb\n")
    refused = _update(PrivateApt(tmp_path / "apt2"), repository.sources_line())
    output = refused.stdout + refused.stderr
    assert refused.returncode != 0 and ("Hash Sum mismatch" in output or "unexpected size" in output), output


def _tree(root: Path) -> dict[str, bytes]:
    return {str(path.relative_to(root)): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


def test_rebuilding_gives_the_same_bytes_and_replaces_the_repository(
    debs: list[Path], signing_key: SigningKey, keys: dict[str, ThrowawayKey], tmp_path: Path
) -> None:
    first = _tree(_repository(tmp_path / "one", debs, signing_key).root)
    second = _tree(_repository(tmp_path / "two", debs, signing_key).root)
    assert first == second
    ed25519 = load_signing_key(keys["ed25519"].secret, None)
    replaced = _repository(tmp_path / "one", debs[:1], ed25519)  # an earlier repository is replaced whole
    assert not (replaced.root / "pool/main/f/fleet-osquery/fleet-osquery_1.2.4_amd64.deb").exists()
    assert (replaced.root / "archive-keyring.asc").read_bytes() == ed25519.public_key


def _orbitctl(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "packager", "repo", "apt", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def test_orbitctl_repo_apt(debs: list[Path], keys: dict[str, ThrowawayKey], tmp_path: Path) -> None:
    key = keys["rsa"]
    assert key.passphrase is not None
    passphrase = tmp_path / "passphrase.txt"
    passphrase.write_text(key.passphrase + "\n")
    passphrase.chmod(0o600)
    args = ["--dir", str(tmp_path / "repo"), "--deb", str(debs[0]), "--deb", str(debs[1]), "--gpg-key", str(key.secret)]
    made = _orbitctl([*args, "--gpg-passphrase-file", str(passphrase)], {"SOURCE_DATE_EPOCH": str(EPOCH)})
    assert made.returncode == 0, made.stderr
    line = made.stdout.strip()
    assert line == f"deb [signed-by={tmp_path / 'repo/archive-keyring.asc'}] file:{tmp_path / 'repo'} stable main"
    apt = PrivateApt(tmp_path / "apt")
    assert _update(apt, line).returncode == 0
    refused = _orbitctl(args, {"ORBITCTL_GPG_PASSPHRASE": "wrong"})
    assert refused.returncode == 2 and "wrong passphrase" in refused.stderr
    missing = _orbitctl(args[:6], {})
    assert missing.returncode == 2 and "--gpg-key is required" in missing.stderr
    shutil.rmtree(tmp_path / "repo")
