"""``orbitctl mdm profile``: the fleetd configuration profile read back by plistlib (the shape Fleet's server
writes and Fleet's orbit reads) and, signed, verified by ``openssl cms -verify`` against a throw-away CA, with the
plist it extracts equal to the unsigned profile; one changed byte fails; the secret never reaches argv or output.
Run as a real process (the installed ``orbitctl``)."""

from __future__ import annotations

import os
import plistlib
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from packager.mdm.fleetd_profile import FleetdProfile, ProfileError, profile_plist
from tests.support.signing_identities import make_ca, make_developer_id_installer

SECRET = "enroll-secret-for-mdm-0123"
URL = "https://fleet.example.com"
EPOCH = "1700000000"


def orbitctl(*argv: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {key: value for key, value in os.environ.items() if not key.startswith("ORBITCTL_")}
    full_env.update(SOURCE_DATE_EPOCH=EPOCH, **(env or {}))
    executable = Path(sys.executable).with_name("orbitctl")
    return subprocess.run(
        [str(executable), *map(str, argv)], capture_output=True, text=True, env=full_env, timeout=120, check=False
    )


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    path = tmp_path / "secret.txt"
    path.write_text(SECRET + "\n")
    path.chmod(0o600)
    return path


def test_the_profile_carries_url_and_secret_in_fleets_shape(tmp_path: Path, secret_file: Path) -> None:
    out = tmp_path / "fleetd.mobileconfig"
    made = orbitctl(
        *("mdm", "profile", "--fleet-url", URL, "--enroll-secret-file", secret_file),
        *("--enable-scripts", "--organization", "Example Inc", "--outfile", out),
    )
    assert made.returncode == 0, made.stderr
    assert SECRET not in made.stdout + made.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o600  # it holds the secret
    profile = plistlib.loads(out.read_bytes())
    assert profile["PayloadType"] == "Configuration" and profile["PayloadIdentifier"] == "com.fleetdm.fleetd.config"
    assert profile["PayloadVersion"] == 1 and profile["PayloadOrganization"] == "Example Inc"
    (payload,) = profile["PayloadContent"]
    assert payload["PayloadType"] == payload["PayloadIdentifier"] == "com.fleetdm.fleetd.config"
    assert (payload["FleetURL"], payload["EnrollSecret"], payload["EnableScripts"]) == (URL, SECRET, True)
    assert payload["PayloadUUID"] != profile["PayloadUUID"]
    if shutil.which("plutil"):  # macOS CI: Apple's own linter
        assert subprocess.run(["plutil", "-lint", str(out)], check=False).returncode == 0


def test_the_secret_comes_from_the_environment_and_the_output_is_reproducible(tmp_path: Path) -> None:
    first, second = tmp_path / "a.mobileconfig", tmp_path / "b.mobileconfig"
    for out in (first, second):
        made = orbitctl("mdm", "profile", "--fleet-url", URL, "--outfile", out, env={"ORBITCTL_ENROLL_SECRET": SECRET})
        assert made.returncode == 0, made.stderr
    assert first.read_bytes() == second.read_bytes()
    assert plistlib.loads(first.read_bytes())["PayloadContent"][0]["EnrollSecret"] == SECRET


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (["--fleet-url", URL], {}, "enroll secret is required"),
        (["--fleet-url", "http://fleet.example.com"], {"ORBITCTL_ENROLL_SECRET": SECRET}, "must be an https:// URL"),
        (["--fleet-url", "https://"], {"ORBITCTL_ENROLL_SECRET": SECRET}, "must be an https:// URL"),
        (["--fleet-url", URL, "--enroll-secret-file", "missing.txt"], {}, "missing or empty"),
        (
            ["--fleet-url", URL, "--outfile", "no/such/dir/p.mobileconfig"],
            {"ORBITCTL_ENROLL_SECRET": SECRET},
            "does not",
        ),
        (["--fleet-url", URL, "--timestamp-url", "http://ts"], {"ORBITCTL_ENROLL_SECRET": SECRET}, "needs --sign-cert"),
    ],
)
def test_bad_input_exits_2_with_a_message(tmp_path: Path, argv: list[str], env: dict[str, str], message: str) -> None:
    made = subprocess.run(
        [str(Path(sys.executable).with_name("orbitctl")), "mdm", "profile", *argv],
        capture_output=True,
        text=True,
        env={**{k: v for k, v in os.environ.items() if not k.startswith("ORBITCTL_")}, **env},
        cwd=tmp_path,
        timeout=120,
        check=False,
    )
    assert made.returncode == 2, made
    assert message in made.stderr and SECRET not in made.stderr
    assert not list(tmp_path.glob("*.mobileconfig"))


def test_there_is_no_flag_that_takes_the_secret_in_argv(tmp_path: Path) -> None:
    made = orbitctl("mdm", "profile", "--fleet-url", URL, "--enroll-secret", SECRET, "--outfile", tmp_path / "p")
    assert made.returncode == 2 and "--enroll-secret is not accepted" in made.stderr
    assert SECRET not in made.stderr and not (tmp_path / "p").exists()


@pytest.mark.parametrize("secret", ["", " padded ", "line\nbreak", "x" * 5000])
def test_the_profile_refuses_secrets_that_cannot_be_right(secret: str) -> None:
    with pytest.raises(ProfileError) as caught:
        FleetdProfile(URL, secret)
    assert secret.strip() == "" or secret.strip() not in str(caught.value)


def test_a_secret_with_xml_characters_survives_the_round_trip() -> None:
    tricky = "a<b>&c'd\"e]]>"
    payload = plistlib.loads(profile_plist(FleetdProfile(URL, tricky)))["PayloadContent"][0]
    assert payload["EnrollSecret"] == tricky


def _openssl_cms_verify(signed: Path, ca: Path, out: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            *("openssl", "cms", "-verify", "-inform", "DER", "-in", str(signed), "-CAfile", str(ca)),
            *("-purpose", "any", "-ignore_critical", "-out", str(out)),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_signed_profile_verifies_against_the_ca_and_holds_the_same_plist(tmp_path: Path, secret_file: Path) -> None:
    ca = make_ca()
    leaf = make_developer_id_installer(ca)
    (tmp_path / "ca.pem").write_bytes(ca.cert_pem)
    identity = tmp_path / "identity.pem"
    identity.write_bytes(leaf.cert_pem + ca.cert_pem)
    (tmp_path / "key.pem").write_bytes(leaf.key_pem(b"key passphrase"))
    (tmp_path / "pass.txt").write_text("key passphrase\n")
    common = ("mdm", "profile", "--fleet-url", URL, "--enroll-secret-file", secret_file)
    plain, signed, again = tmp_path / "plain.mobileconfig", tmp_path / "signed.mobileconfig", tmp_path / "again"
    assert orbitctl(*common, "--outfile", plain).returncode == 0
    signing = ("--sign-certificate", identity, "--sign-key", tmp_path / "key.pem")
    for out in (signed, again):
        made = orbitctl(*common, *signing, "--sign-passphrase-file", tmp_path / "pass.txt", "--outfile", out)
        assert made.returncode == 0, made.stderr
    assert signed.read_bytes() == again.read_bytes()  # the signing time is SOURCE_DATE_EPOCH
    assert stat.S_IMODE(signed.stat().st_mode) == 0o600
    verified = _openssl_cms_verify(signed, tmp_path / "ca.pem", tmp_path / "extracted.plist")
    assert verified.returncode == 0 and "Verification successful" in verified.stderr, verified.stderr
    assert (tmp_path / "extracted.plist").read_bytes() == plain.read_bytes()
    printed = subprocess.run(
        ["openssl", "cms", "-cmsout", "-print", "-inform", "DER", "-in", str(signed), "-noout"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert "UTCTIME:Nov 14 22:13:20 2023 GMT" in printed  # signingTime = SOURCE_DATE_EPOCH
    # against another CA, and with one byte changed, it does not verify
    (tmp_path / "other.pem").write_bytes(make_ca("another CA").cert_pem)
    assert _openssl_cms_verify(signed, tmp_path / "other.pem", tmp_path / "x").returncode != 0
    data = bytearray(signed.read_bytes())
    data[data.index(URL.encode()) + 8] ^= 0x01  # inside the embedded plist
    (tmp_path / "tampered").write_bytes(bytes(data))
    assert _openssl_cms_verify(tmp_path / "tampered", tmp_path / "ca.pem", tmp_path / "y").returncode != 0


def test_a_wrong_passphrase_is_a_clear_error(tmp_path: Path, secret_file: Path) -> None:
    ca = make_ca()
    leaf = make_developer_id_installer(ca)
    (tmp_path / "cert.pem").write_bytes(leaf.cert_pem)
    (tmp_path / "key.pem").write_bytes(leaf.key_pem(b"right"))
    made = orbitctl(
        *("mdm", "profile", "--fleet-url", URL, "--enroll-secret-file", secret_file, "--outfile", tmp_path / "p"),
        *("--sign-certificate", tmp_path / "cert.pem", "--sign-key", tmp_path / "key.pem"),
        env={"ORBITCTL_SIGN_PASSPHRASE": "wrong"},
    )
    assert made.returncode == 2 and "wrong passphrase" in made.stderr
    assert not (tmp_path / "p").exists()
