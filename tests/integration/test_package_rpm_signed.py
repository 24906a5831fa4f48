"""The .rpm's OpenPGP signature (issue 17, ADR 0016), checked by RPM itself: ``rpm -K`` passes with the public
key imported into a private rpm database, fails without it, with another key, and after one payload byte
changes; re-signing with the same SOURCE_DATE_EPOCH gives the same bytes; ``orbitctl package`` refuses a wrong
or missing passphrase, an expired key and a key that cannot sign with exit 2 before fetching anything, and signs
end to end from a real TUF repository with the passphrase from the environment."""

from __future__ import annotations

import dataclasses
import datetime
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from packager.formats import rpm
from packager.signing.signing_key import SigningKey, load_signing_key
from tests.support.dpkg_root import run_tool
from tests.support.openpgp_keys import ThrowawayKey, make_test_keys
from tests.support.orbit_world import OrbitWorld
from tests.support.staged_package import EPOCH, make_staged

ORBITCTL = [sys.executable, "-m", "packager"]
pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, ThrowawayKey]:
    return make_test_keys(tmp_path_factory.mktemp("openpgp-keys"))


def _signed(base: Path, key: ThrowawayKey, epoch: int = EPOCH, name: str = "signed.rpm") -> tuple[Path, SigningKey]:
    staged = dataclasses.replace(make_staged(base / f"stage-{name}", "linux"), source_date_epoch=epoch)
    loaded = load_signing_key(key.secret, key.passphrase)
    outfile = base / name
    rpm.build(staged, outfile, loaded)
    return outfile, loaded


def _checksig(package: Path, database: Path, *imported: Path) -> subprocess.CompletedProcess[str]:
    database.mkdir(exist_ok=True)
    for public in imported:
        run_tool("rpm", "--dbpath", database, "--import", public)
    return run_tool("rpm", "--dbpath", database, "-Kv", package, check=False)


@pytest.mark.parametrize(("name", "tag"), [("rsa", "RSAHEADER"), ("ed25519", "DSAHEADER"), ("subkey", "DSAHEADER")])
def test_rpm_checksig_passes_only_with_the_imported_key(
    keys: dict[str, ThrowawayKey], tmp_path: Path, name: str, tag: str
) -> None:
    key = keys[name]
    package, loaded = _signed(tmp_path, key)
    algorithm = "RSA" if name == "rsa" else "EdDSA"
    short_id = loaded.fingerprint[-8:].lower()  # the signing (sub)key's
    trusted = _checksig(package, tmp_path / "db-trusted", key.public)
    assert trusted.returncode == 0, trusted.stdout + trusted.stderr
    assert f"Header V4 {algorithm}/SHA256 Signature, key ID {short_id}: OK" in trusted.stdout
    assert "Payload SHA256 digest: OK" in trusted.stdout
    # the signature is in the header tag rpm names after the algorithm family; the other one is absent
    other = "DSAHEADER" if tag == "RSAHEADER" else "RSAHEADER"
    shown = run_tool("rpm", "-qp", "--qf", f"%{{{tag}:pgpsig}}|%{{{other}:pgpsig}}", package).stdout
    when = datetime.datetime.fromtimestamp(loaded.signature_time(EPOCH), datetime.UTC).strftime("%a %b %e %H:%M:%S %Y")
    assert shown == f"{algorithm}/SHA256, {when}, Key ID {loaded.fingerprint[-16:].lower()}|(none)"

    untrusted = _checksig(package, tmp_path / "db-empty")
    assert untrusted.returncode != 0 and f"key ID {short_id}: NOKEY" in untrusted.stdout
    wrong = _checksig(package, tmp_path / "db-other", keys["other"].public)
    assert wrong.returncode != 0 and "NOKEY" in wrong.stdout

    tampered = tmp_path / "tampered.rpm"
    data = bytearray(package.read_bytes())
    data[-100] ^= 0x01  # one byte inside the compressed payload
    tampered.write_bytes(bytes(data))
    broken = _checksig(tampered, tmp_path / "db-trusted")
    assert broken.returncode != 0 and "Payload SHA256 digest: BAD" in broken.stdout, broken.stdout


def test_resigning_with_the_same_source_date_is_byte_identical(keys: dict[str, ThrowawayKey], tmp_path: Path) -> None:
    for name in ("rsa", "ed25519"):
        first, loaded = _signed(tmp_path, keys[name], name=f"{name}-1.rpm")
        second, _ = _signed(tmp_path, keys[name], name=f"{name}-2.rpm")
        assert first.read_bytes() == second.read_bytes(), name
        # the test keys are newer than EPOCH: the signature is dated at the key's creation, never before it
        assert loaded.signature_time(EPOCH) == loaded.choice.created > EPOCH
    later = loaded.choice.created + 86_400
    dated, loaded = _signed(tmp_path, keys["ed25519"], epoch=later, name="later.rpm")
    assert loaded.signature_time(later) == later
    assert dated.read_bytes() != first.read_bytes()  # the date is inside the signature (and the header)


def _package(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*ORBITCTL, "package", *args],
        env={**os.environ, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
        check=False,
    )


@pytest.mark.parametrize(
    ("name", "extra", "env", "message"),
    [
        ("rsa", [], {"ORBITCTL_GPG_PASSPHRASE": "not the passphrase"}, "wrong passphrase for the signing key"),
        ("rsa", ["--gpg-passphrase-file", "{tmp}/wrong.txt"], {}, "wrong passphrase for the signing key"),
        ("rsa", [], {}, "is protected by a passphrase: set ORBITCTL_GPG_PASSPHRASE"),
        ("expired", [], {}, "expired on 2020-01-02 00:00:00 UTC"),
        ("cert_only", [], {}, "has no signing capability (its secret keys can: certify, encrypt)"),
        ("public", [], {}, "holds only the public key"),
        ("ed25519", ["--type", "deb"], {}, "a .deb is verified through a signed apt repository"),
        ("ed25519", ["--gpg-passphrase-file", "{tmp}/none.txt"], {}, "missing or empty"),
    ],
)
def test_unusable_keys_exit_2_before_anything_is_fetched(
    keys: dict[str, ThrowawayKey], tmp_path: Path, name: str, extra: list[str], env: dict[str, str], message: str
) -> None:
    key_file = keys["rsa"].public if name == "public" else keys[name].secret
    (tmp_path / "wrong.txt").write_text("not the passphrase\n")
    extra = [arg.replace("{tmp}", str(tmp_path)) for arg in extra]
    kind = [] if "--type" in extra else ["--type", "rpm"]
    # nothing listens on port 9: a build that got past the key would fail with exit 1, not 2
    args = [*kind, *extra, "--update-url", "http://127.0.0.1:9", "--update-roots", "{}", "--gpg-key", str(key_file)]
    result = _package(args, {"ORBITCTL_GPG_PASSPHRASE": "", **env}, tmp_path)
    assert result.returncode == 2, result.stderr
    assert message in " ".join(result.stderr.split()), result.stderr
    assert "Traceback" not in result.stderr
    assert not list(tmp_path.glob("*.rpm"))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrbitWorld]:
    built = OrbitWorld(tmp_path_factory.mktemp("signed-rpm-world"))
    built.publish_orbit("1.4.2")
    built.publish_osqueryd("5.14.1")
    try:
        yield built
    finally:
        built.close()


def test_orbitctl_package_signs_the_rpm_end_to_end(
    world: OrbitWorld, keys: dict[str, ThrowawayKey], tmp_path: Path
) -> None:
    key = keys["rsa"]
    assert key.passphrase is not None
    outputs = []
    for name in ("one.rpm", "two.rpm"):
        outfile = tmp_path / name
        args = ["--type", "rpm", "--fleet-url", world.url, "--fleet-certificate", str(world.ca)]
        args += ["--update-url", world.tuf_url, "--update-tls-certificate", str(world.ca)]
        args += ["--update-roots", str(world.root_json), "--outfile", str(outfile), "--gpg-key", str(key.secret)]
        env = {"ORBITCTL_ENROLL_SECRET": "signed-secret", "SOURCE_DATE_EPOCH": str(EPOCH)}
        result = _package(args, {**env, "ORBITCTL_GPG_PASSPHRASE": key.passphrase}, tmp_path)
        assert result.returncode == 0, result.stderr
        outputs.append(outfile)
    checked = _checksig(outputs[0], tmp_path / "db", key.public)
    assert checked.returncode == 0 and "Signature, key ID" in checked.stdout and ": OK" in checked.stdout
    assert outputs[0].read_bytes() == outputs[1].read_bytes()
