"""Throw-away OpenPGP keys made by the real gpg in a temporary GNUPGHOME, exported as armored files (no key is
ever committed). The passphrase of the protected key reaches gpg on stdin, as in the code under test."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

PASSPHRASE = "correct horse battery staple"  # a throw-away test key's


@dataclass(frozen=True)
class ThrowawayKey:
    secret: Path  # armored secret key
    public: Path  # armored public key
    fingerprint: str  # the primary key's
    passphrase: str | None


# name → (primary algorithm, primary usage, expiry, subkey (algorithm, usage) or None, protected, faked time)
_SPECS: dict[str, tuple[str, str, str, tuple[str, str] | None, bool, str | None]] = {
    "rsa": ("rsa2048", "sign", "2y", None, True, None),
    "ed25519": ("ed25519", "sign", "never", None, False, None),
    "subkey": ("ed25519", "cert", "never", ("ed25519", "sign"), False, None),
    "other": ("ed25519", "sign", "never", None, False, None),
    "expired": ("ed25519", "sign", "1d", None, False, "20200101T000000"),
    "cert_only": ("ed25519", "cert", "never", ("cv25519", "encr"), False, None),
}


def gpg_or_skip() -> str:
    gpg = shutil.which("gpg")
    if gpg is None:
        if os.environ.get("CI"):
            pytest.fail("gpg is missing (build_scripts/apt-packages.txt: gnupg)")
        pytest.skip("gpg is not installed")
    return gpg


def make_test_keys(directory: Path) -> dict[str, ThrowawayKey]:
    gpg = gpg_or_skip()
    directory.mkdir(parents=True, exist_ok=True)
    home = Path(tempfile.mkdtemp(prefix="test-gnupg-"))
    env = {"GNUPGHOME": str(home), "PATH": os.environ["PATH"], "LC_ALL": "C"}

    def run(*args: str, passphrase: str = "") -> str:
        argv = [gpg, "--batch", "--no-tty", "--pinentry-mode", "loopback", "--passphrase-fd", "0", *args]
        result = subprocess.run(
            argv, input=passphrase, env=env, capture_output=True, text=True, timeout=120, check=False
        )
        assert result.returncode == 0, f"{args}: {result.stderr}"
        return result.stdout

    keys = {}
    try:
        for name, (algorithm, usage, expiry, subkey, protected, faked) in _SPECS.items():
            passphrase = PASSPHRASE if protected else ""
            when = ["--faked-system-time", faked] if faked else []
            uid = f"Test {name} <{name}@example.invalid>"
            run(*when, "--quick-gen-key", uid, algorithm, usage, expiry, passphrase=passphrase)
            listing = run("--with-colons", "--list-secret-keys", uid)
            fingerprint = next(line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:"))
            if subkey is not None:
                run("--quick-add-key", fingerprint, *subkey, "never", passphrase=passphrase)
            secret, public = directory / f"{name}.sec.asc", directory / f"{name}.pub.asc"
            secret.write_text(run("--armor", "--export-secret-keys", fingerprint, passphrase=passphrase))
            public.write_text(run("--armor", "--export", fingerprint))
            keys[name] = ThrowawayKey(secret, public, fingerprint, PASSPHRASE if protected else None)
    finally:
        subprocess.run(["gpgconf", "--kill", "gpg-agent"], env=env, capture_output=True, timeout=30, check=False)
        shutil.rmtree(home, ignore_errors=True)
    return keys
