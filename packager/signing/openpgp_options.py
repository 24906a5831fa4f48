"""The OpenPGP flags shared by ``orbitctl package --type rpm`` and ``orbitctl repo apt``, and their validation
(pure apart from reading the passphrase file): ``--gpg-key FILE`` (an armored secret key) and the passphrase from
``--gpg-passphrase-file FILE`` or the ``ORBITCTL_GPG_PASSPHRASE`` variable — never from argv."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from safe_fs.secret_read import SecretFileError, read_secret_file

PASSPHRASE_ENV = "ORBITCTL_GPG_PASSPHRASE"  # noqa: S105 - the variable's name
MAX_PASSPHRASE_BYTES = 4096


class SigningOptionsError(ValueError):
    pass


@dataclass(frozen=True)
class OpenPgpOptions:
    key_file: Path
    passphrase: str | None = field(default=None, repr=False)


def add_openpgp_arguments(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--gpg-key", type=Path, metavar="FILE", help=f"armored OpenPGP secret key that signs {what}")
    parser.add_argument(
        "--gpg-passphrase-file",
        type=Path,
        metavar="FILE",
        help=f"the key's passphrase (or the {PASSPHRASE_ENV} variable; never on the command line)",
    )


def openpgp_options(args: argparse.Namespace, env: Mapping[str, str]) -> OpenPgpOptions | None:
    key_file: Path | None = getattr(args, "gpg_key", None)
    passphrase_file: Path | None = getattr(args, "gpg_passphrase_file", None)
    if key_file is None:
        if passphrase_file is not None:
            raise SigningOptionsError("--gpg-passphrase-file needs --gpg-key")
        return None
    if not key_file.is_file():
        raise SigningOptionsError(f"--gpg-key {key_file} is not a readable file")
    if passphrase_file is None:
        return OpenPgpOptions(key_file, env.get(PASSPHRASE_ENV) or None)
    try:
        passphrase = read_secret_file(passphrase_file, MAX_PASSPHRASE_BYTES)
    except SecretFileError as exc:
        raise SigningOptionsError(f"--gpg-passphrase-file {exc.path} {exc.reason}") from None
    if passphrase is None:
        raise SigningOptionsError(f"--gpg-passphrase-file {passphrase_file}: missing or empty")
    return OpenPgpOptions(key_file, passphrase)
