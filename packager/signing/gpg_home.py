"""A private, temporary GnuPG home: the key file is listed and imported there, never into the user's keyring, and
the home (with its gpg-agent) is gone when the block ends.

Secrets: the passphrase reaches gpg on its standard input (``--pinentry-mode loopback --passphrase-fd 0``),
never in argv or a file. Outputs are written to fresh paths inside the home and then read back: gpg running as
root deletes its ``--output`` file when signing fails, so it must never be pointed at an existing path.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from packager.signing.openpgp_key import SigningKeyError

TIMEOUT = 60.0
# gpg-error codes (the low 16 bits of a FAILURE status code)
_BAD_PASSPHRASE = 11
_NO_PASSPHRASE = 177  # GPG_ERR_NO_PASSPHRASE


class GpgError(RuntimeError):
    """gpg is missing or failed for a reason that is not the key's (the message carries gpg's words)."""


class GpgHome:
    def __init__(self, directory: Path, gpg: str) -> None:
        self.directory = directory
        self._gpg = gpg
        self._count = 0

    def run(self, *args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
        env = {"GNUPGHOME": str(self.directory), "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"}
        argv = [self._gpg, "--batch", "--no-tty", "--no-options", "--status-fd", "1", *args]
        try:
            return subprocess.run(argv, input=stdin, env=env, capture_output=True, timeout=TIMEOUT, check=False)
        except subprocess.TimeoutExpired:
            raise GpgError(f"gpg {args[-1] if args else ''} did not finish in {TIMEOUT:.0f} s") from None

    def show_keys(self, key_file: Path) -> str:
        """``--with-colons --show-keys``: what the file holds, without importing it."""
        result = self.run("--with-colons", "--fixed-list-mode", "--show-keys", str(key_file))
        if result.returncode != 0:
            raise SigningKeyError(f"{key_file} is not an OpenPGP key file: {_words(result.stderr)}")
        return result.stdout.decode("utf-8", "replace")

    def import_key(self, key_file: Path) -> None:
        result = self.run("--import", str(key_file))
        if result.returncode != 0:
            raise SigningKeyError(f"gpg cannot import {key_file}: {_words(result.stderr)}")

    def sign(self, data: bytes, *, fingerprint: str, passphrase: str | None, when: int | None, mode: str) -> bytes:
        """``mode``: ``clearsign`` (InRelease) or ``detach`` (armored detached signature, Release.gpg).
        ``when``: the signature creation time (gpg's clock frozen there), or now."""
        self._count += 1
        work = self.directory / f"sign-{self._count}"
        work.mkdir(mode=0o700)
        source, output = work / "input", work / "output"
        source.write_bytes(data)
        args = ["--pinentry-mode", "loopback", "--passphrase-fd", "0", "--local-user", f"{fingerprint}!"]
        args += ["--digest-algo", "SHA256", "--output", str(output)]
        if when is not None:
            args += ["--faked-system-time", f"{when}!"]
        args += ["--clearsign"] if mode == "clearsign" else ["--armor", "--detach-sign"]
        result = self.run(*args, str(source), stdin=(passphrase or "").encode())
        if result.returncode != 0:
            raise _sign_failure(result, fingerprint, passphrase is not None)
        signed = output.read_bytes()
        shutil.rmtree(work)
        return signed

    def export_public(self, fingerprint: str) -> bytes:
        result = self.run("--armor", "--export-options", "export-minimal", "--export", fingerprint)
        if result.returncode != 0 or b"BEGIN PGP PUBLIC KEY BLOCK" not in result.stdout:
            raise GpgError(f"gpg cannot export the public key {fingerprint}: {_words(result.stderr)}")
        return _without_status(result.stdout)


@contextlib.contextmanager
def temporary_gpg_home() -> Iterator[GpgHome]:
    gpg = shutil.which("gpg")
    if gpg is None:
        raise GpgError("gpg (GnuPG 2) is needed for OpenPGP signing: install gnupg")
    directory = Path(tempfile.mkdtemp(prefix="orbitctl-gnupg-"))  # 0700
    try:
        yield GpgHome(directory, gpg)
    finally:
        gpgconf = shutil.which("gpgconf")
        if gpgconf is not None:  # the agent this home started, and only it
            env = {"GNUPGHOME": str(directory), "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
            subprocess.run([gpgconf, "--kill", "gpg-agent"], env=env, capture_output=True, timeout=TIMEOUT, check=False)
        shutil.rmtree(directory, ignore_errors=True)


def _sign_failure(result: subprocess.CompletedProcess[bytes], fingerprint: str, had_passphrase: bool) -> Exception:
    codes = [
        int(line.split()[3]) & 0xFFFF
        for line in result.stdout.decode("utf-8", "replace").splitlines()
        if line.startswith("[GNUPG:] FAILURE ") and len(line.split()) > 3 and line.split()[3].isdigit()
    ]
    if _BAD_PASSPHRASE in codes or _NO_PASSPHRASE in codes:
        if had_passphrase:
            return SigningKeyError(f"wrong passphrase for the signing key {fingerprint}")
        return SigningKeyError(
            f"the signing key {fingerprint} is protected by a passphrase: set ORBITCTL_GPG_PASSPHRASE or give "
            "--gpg-passphrase-file"
        )
    return GpgError(f"gpg cannot sign with {fingerprint}: {_words(result.stderr)}")


def _words(stderr: bytes) -> str:
    noise = ("keybox '", "trustdb created")  # a new home's first-run notes
    text = stderr.decode("utf-8", "replace")
    lines = [line.strip() for line in text.splitlines() if line.strip() and not any(n in line for n in noise)]
    return "; ".join(lines[-3:]) or "no message"


def _without_status(stdout: bytes) -> bytes:
    return b"".join(line for line in stdout.splitlines(keepends=True) if not line.startswith(b"[GNUPG:] "))
