"""``orbitctl package`` signing flags: the identity (certificate chain + key, passphrase from a file or the
environment, fleetctl's FLEETCTL_MACOS_DEVID_PEM_CONTENT for pkg) is loaded and checked before any build, and each
unusable identity fails with a clear message and exit status 2."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from packager.package import cli as package_cli
from packager.package.package_options import PackageOptions, PackageOptionsError, add_parser, validate
from packager.signing.signing_options import DEVID_PEM_ENV, PASSPHRASE_ENV
from packager.signing.x509_identity import APPLE_PACKAGE_SIGNING_EKU
from tests.support.signing_identities import (
    DAY,
    NOW,
    make_ca,
    make_code_signing,
    make_developer_id_installer,
    make_leaf,
    write_identity,
)

PASSPHRASE = b"correct horse battery staple"
CA = make_ca()


def parse(*argv: str) -> argparse.Namespace:
    top = argparse.ArgumentParser()
    add_parser(top.add_subparsers(dest="command"))
    return top.parse_args(["package", "--update-roots", "{}", *argv])


def options(*argv: str | Path, env: dict[str, str] | None = None) -> PackageOptions:
    return validate(parse(*(str(arg) for arg in argv)), env or {}, now=NOW)


@pytest.fixture(scope="module")
def msi_identity(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return write_identity(tmp_path_factory.mktemp("msi-id"), make_code_signing(CA), CA, passphrase=PASSPHRASE)


def test_an_encrypted_key_with_its_passphrase_from_a_file_or_the_environment_loads(
    msi_identity: tuple[Path, Path], tmp_path: Path
) -> None:
    cert, key = msi_identity
    secret = tmp_path / "passphrase"
    secret.write_bytes(PASSPHRASE + b"\n")
    by_file = options("--type", "msi", "--sign-certificate", cert, "--sign-key", key, "--sign-passphrase-file", secret)
    by_env = options(
        "--type", "msi", "--sign-certificate", cert, "--sign-key", key, env={PASSPHRASE_ENV: PASSPHRASE.decode()}
    )
    for parsed in (by_file, by_env):
        assert parsed.signing is not None
        assert parsed.signing.identity.certificate.subject.rfc4514_string() == "CN=orbitctl test code signing"
        assert len(parsed.signing.identity.chain) == 2
        assert PASSPHRASE.decode() not in repr(parsed) + repr(parsed.signing)


def test_no_signing_flags_means_no_signing() -> None:
    assert options("--type", "msi").signing is None
    assert options("--type", "msi", env={DEVID_PEM_ENV: "ignored for msi"}).signing is None


def test_certificate_and_key_in_one_file(tmp_path: Path) -> None:
    leaf = make_code_signing(CA)
    combined = tmp_path / "identity.pem"
    combined.write_bytes(leaf.cert_pem + leaf.key_pem() + CA.cert_pem)
    parsed = options("--type", "msi", "--sign-certificate", combined)
    assert parsed.signing is not None and len(parsed.signing.identity.chain) == 2


def test_fleetctl_devid_pem_content_signs_the_pkg() -> None:
    leaf = make_developer_id_installer(CA)
    parsed = options("--type", "pkg", env={DEVID_PEM_ENV: (leaf.cert_pem + leaf.key_pem()).decode()})
    assert parsed.signing is not None
    assert "Developer ID Installer" in parsed.signing.identity.certificate.subject.rfc4514_string()


def _fails(message: str, *argv: str | Path, env: dict[str, str] | None = None) -> None:
    with pytest.raises(PackageOptionsError, match=message):
        options(*argv, env=env)


def test_wrong_or_missing_passphrase(msi_identity: tuple[Path, Path]) -> None:
    cert, key = msi_identity
    argv = ("--type", "msi", "--sign-certificate", cert, "--sign-key", key)
    _fails("wrong passphrase", *argv, env={PASSPHRASE_ENV: "not it"})
    _fails("encrypted and no passphrase", *argv)


def test_expired_and_not_yet_valid_certificates(tmp_path: Path) -> None:
    expired = make_leaf(CA, "expired", not_before=NOW - 30 * DAY, not_after=NOW - DAY)
    cert, key = write_identity(tmp_path / "a", expired, CA)
    _fails(r"certificate 'CN=expired' expired", "--type", "msi", "--sign-certificate", cert, "--sign-key", key)
    future = make_leaf(CA, "future", not_before=NOW + DAY, not_after=NOW + 30 * DAY)
    cert, key = write_identity(tmp_path / "b", future, CA)
    _fails(r"certificate 'CN=future' is not yet valid", "--type", "msi", "--sign-certificate", cert, "--sign-key", key)


def test_key_not_matching_the_certificate(tmp_path: Path) -> None:
    cert, _ = write_identity(tmp_path / "a", make_code_signing(CA), CA)
    _, other_key = write_identity(tmp_path / "b", make_code_signing(CA), CA)
    _fails("does not match the certificate", "--type", "msi", "--sign-certificate", cert, "--sign-key", other_key)


def test_msi_needs_the_code_signing_eku_and_pkg_an_rsa_installer_certificate(tmp_path: Path) -> None:
    installer_cert, installer_key = write_identity(tmp_path / "a", make_developer_id_installer(CA), CA)
    msi_argv = ("--type", "msi", "--sign-certificate", installer_cert, "--sign-key", installer_key)
    _fails("no code-signing extended key usage", *msi_argv)
    code_cert, code_key = write_identity(tmp_path / "b", make_code_signing(CA), CA)
    _fails("Apple package signing", "--type", "pkg", "--sign-certificate", code_cert, "--sign-key", code_key)
    ecdsa = make_developer_id_installer_ec(tmp_path)
    _fails("needs an RSA key", "--type", "pkg", "--sign-certificate", ecdsa[0], "--sign-key", ecdsa[1])


def make_developer_id_installer_ec(tmp_path: Path) -> tuple[Path, Path]:
    leaf = make_leaf(CA, "ec installer", ekus=(APPLE_PACKAGE_SIGNING_EKU,), key=ec.generate_private_key(ec.SECP256R1()))
    return write_identity(tmp_path / "ec", leaf, CA)


def test_flag_combinations(msi_identity: tuple[Path, Path], tmp_path: Path) -> None:
    cert, key = msi_identity
    _fails("applies to msi and pkg", "--type", "deb", "--sign-certificate", cert)
    _fails("--sign-key needs --sign-certificate", "--type", "msi", "--sign-key", key)
    _fails("--timestamp-url needs --sign-certificate", "--type", "msi", "--timestamp-url", "http://tsa.example")
    pkg_cert, pkg_key = write_identity(tmp_path, make_developer_id_installer(CA), CA)
    pkg_argv = ("--type", "pkg", "--sign-certificate", pkg_cert, "--sign-key", pkg_key)
    assert options(*pkg_argv, "--timestamp-url", "https://tsa.example/tsa").signing is not None
    env = {PASSPHRASE_ENV: PASSPHRASE.decode()}
    argv = ("--type", "msi", "--sign-certificate", cert, "--sign-key", key)
    _fails("must be an http", *argv, "--timestamp-url", "ftp://tsa.example", env=env)
    assert options(*argv, "--timestamp-url", "http://127.0.0.1:8080/tsa", env=env).signing is not None
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    _fails("missing or empty", *argv, "--sign-passphrase-file", empty)
    _fails("mutually exclusive", *argv, "--sign-passphrase-file", empty, env=env)
    _fails("cannot be read", "--type", "msi", "--sign-certificate", tmp_path / "absent.pem")


def test_the_cli_exits_2_for_an_unusable_identity(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    expired = make_leaf(CA, "expired", not_before=NOW - 30 * DAY, not_after=NOW - DAY)
    cert, key = write_identity(tmp_path, expired, CA)
    assert package_cli.run(parse("--type", "msi", "--sign-certificate", str(cert), "--sign-key", str(key))) == 2
    assert "expired" in capsys.readouterr().err
