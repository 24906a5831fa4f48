"""The distributor's OpenPGP key, loaded and checked once before anything is built: an armored secret key file,
its passphrase (from a file or the environment, never argv), the (sub)key that signs, its public key.

``load_signing_key`` refuses, with ``SigningKeyError`` (``orbitctl`` exits 2), a file that is not one secret
key, a revoked or expired key, a key without signing capability and a wrong or missing passphrase (checked by
signing a probe with gpg, so a bad passphrase is reported before a package is built).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from packager.signing.gpg_home import GpgHome, temporary_gpg_home
from packager.signing.openpgp_key import SignerChoice, SigningKeyError, choose_signer, parse_listing

MAX_KEY_BYTES = 1 << 20

__all__ = ["SigningKey", "SigningKeyError", "load_signing_key", "signing_home"]


@dataclass(frozen=True)
class SigningKey:
    key_file: Path
    choice: SignerChoice
    public_key: bytes = field(repr=False)  # armored, the primary key with its signing subkey
    passphrase: str | None = field(default=None, repr=False)

    @property
    def fingerprint(self) -> str:
        """The fingerprint of the (sub)key that signs."""
        return self.choice.signing_fingerprint

    def signature_time(self, source_date_epoch: int) -> int:
        return self.choice.signature_time(source_date_epoch)


def load_signing_key(key_file: Path, passphrase: str | None, now: int | None = None) -> SigningKey:
    try:
        size = key_file.stat().st_size
    except OSError as exc:
        raise SigningKeyError(f"--gpg-key {key_file}: {exc.strerror or exc}") from None
    if not key_file.is_file() or size > MAX_KEY_BYTES:
        raise SigningKeyError(f"--gpg-key {key_file}: not a key file of at most {MAX_KEY_BYTES} bytes")
    with temporary_gpg_home() as home:
        choice = choose_signer(
            parse_listing(home.show_keys(key_file)), int(time.time() if now is None else now), str(key_file)
        )
        home.import_key(key_file)
        home.sign(
            b"orbitctl signing probe\n",
            fingerprint=choice.signing_fingerprint,
            passphrase=passphrase,
            when=None,
            mode="detach",
        )
        public_key = home.export_public(choice.primary_fingerprint)
    return SigningKey(key_file, choice, public_key, passphrase)


@contextlib.contextmanager
def signing_home(key: SigningKey) -> Iterator[GpgHome]:
    """A temporary GnuPG home holding ``key``, for gpg's own signature formats (InRelease, Release.gpg)."""
    with temporary_gpg_home() as home:
        home.import_key(key.key_file)
        yield home
