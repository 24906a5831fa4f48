"""Authenticode signing of a built .msi with ``osslsigncode`` (Debian package osslsigncode; 2.5 in bookworm, 2.9 in
bookworm-backports — both tested with these arguments).

``osslsigncode sign -h sha256 -certs <chain> -key /dev/fd/N -time <SOURCE_DATE_EPOCH> [-ts <url>] -n <name>``:

- the key reaches osslsigncode as an in-memory file (``memfd_create``, passed as ``/dev/fd/N``; osslsigncode reads
  the key file more than once, so a pipe does not work). Where memfd is missing the key goes to a 0600 file in a
  private 0700 directory, removed at once. Neither the key nor its passphrase is ever in argv.
- ``-time`` pins the signingTime attribute: without a timestamp, two signatures of the same MSI with the same
  identity are byte-identical (RSA PKCS#1 v1.5 is deterministic). A timestamp (``-ts``, RFC 3161) holds the
  server's time, so a timestamped MSI is not reproducible.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Final

from packager.signing.signing_options import SigningOptions

TOOL_TIMEOUT_S: Final = 600


class AuthenticodeError(OSError):
    """osslsigncode is missing or failed."""


def sign_msi(unsigned: Path, signed: Path, options: SigningOptions, *, signing_time: int, description: str) -> None:
    tool = shutil.which("osslsigncode")
    if tool is None:
        raise AuthenticodeError("osslsigncode not found: install the Debian package osslsigncode to sign an MSI")
    chain = signed.parent / f".{signed.name}.chain.pem"
    chain.write_bytes(options.identity.chain_pem())
    try:
        with _key_file(options.identity.key_pem()) as (key_path, fds):
            argv = [tool, "sign", "-h", "sha256", "-certs", str(chain), "-key", key_path]
            argv += ["-time", str(signing_time), "-n", description]
            if options.timestamp_url:
                argv += ["-ts", options.timestamp_url]
            argv += ["-in", str(unsigned), "-out", str(signed)]
            try:
                result = subprocess.run(
                    argv, capture_output=True, text=True, timeout=TOOL_TIMEOUT_S, check=False, pass_fds=fds
                )
            except subprocess.TimeoutExpired:
                raise AuthenticodeError(f"osslsigncode did not finish within {TOOL_TIMEOUT_S} s") from None
    finally:
        chain.unlink(missing_ok=True)
    if result.returncode != 0 or not signed.is_file():
        output = (result.stderr + result.stdout).strip()[-2000:]
        raise AuthenticodeError(f"osslsigncode sign failed (exit {result.returncode}): {output}")


@contextlib.contextmanager
def _key_file(key_pem: bytes) -> Iterator[tuple[str, tuple[int, ...]]]:
    """A path osslsigncode can open (and re-read) holding the key: ``/dev/fd/N`` of a memfd, else a private file."""
    memfd_create = getattr(os, "memfd_create", None)
    if memfd_create is not None and Path("/dev/fd").is_dir():
        fd: int = memfd_create("orbitctl-signing-key", os.MFD_CLOEXEC)  # pass_fds hands it on
        try:
            os.write(fd, key_pem)
            os.lseek(fd, 0, os.SEEK_SET)
            yield f"/dev/fd/{fd}", (fd,)
        finally:
            os.close(fd)
        return
    with tempfile.TemporaryDirectory(prefix="orbitctl-key-") as private:  # 0700
        path = Path(private) / "key.pem"
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as out:
            out.write(key_pem)
        yield str(path), ()
