"""``orbitctl package`` flags for X.509 signing of the .msi and the .pkg, and their validation.

The identity comes from files (``--sign-certificate``, ``--sign-key``) or, for the .pkg only and as fleetctl's
``--macos-devid-pem-content`` does, from the ``FLEETCTL_MACOS_DEVID_PEM_CONTENT`` variable (certificate and key in
one PEM text; the flags win when both are given). A key's passphrase comes from ``--sign-passphrase-file`` or the
``ORBITCTL_SIGN_PASSPHRASE`` variable — never from argv. Everything is loaded and checked here (passphrase, key
against certificate, validity now, key usage for the format), so a bad identity fails before the build.
"""

from __future__ import annotations

import argparse
import datetime
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

from packager.signing.x509_identity import Purpose, SigningIdentity, SigningIdentityError, check_usable, parse_identity
from safe_fs.secret_read import FileTooLargeError, SecretFileError, read_bounded, read_secret_file

PASSPHRASE_ENV: Final = "ORBITCTL_SIGN_PASSPHRASE"  # noqa: S105 - the variable's name
DEVID_PEM_ENV: Final = "FLEETCTL_MACOS_DEVID_PEM_CONTENT"
MAX_PEM_BYTES: Final = 1 << 20
MAX_PASSPHRASE_BYTES: Final = 4096
PURPOSES: Final = {"msi": Purpose.MSI, "pkg": Purpose.PKG, "profile": Purpose.PROFILE}


@dataclass(frozen=True)
class SigningOptions:
    identity: SigningIdentity = field(repr=False)
    timestamp_url: str | None  # msi and pkg: an RFC 3161 time-stamping authority


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("signing (msi: Authenticode; pkg: xar RSA + CMS signatures)")
    add = group.add_argument
    add("--sign-certificate", type=Path, help="PEM: the signing certificate first, then its chain (may hold the key)")
    add("--sign-key", type=Path, help="PEM private key, optionally encrypted (default: in --sign-certificate)")
    add("--sign-passphrase-file", type=Path, help=f"the key's passphrase (or the {PASSPHRASE_ENV} variable)")
    add("--timestamp-url", help="msi and pkg: RFC 3161 time-stamping server URL (the build is then not reproducible)")


def from_args(
    args: argparse.Namespace, env: Mapping[str, str], kind: str, now: datetime.datetime
) -> SigningOptions | None:
    """The checked signing options, None when nothing asks for signing; ``SigningIdentityError`` otherwise."""
    certificate: Path | None = args.sign_certificate
    devid_pem = env.get(DEVID_PEM_ENV, "").strip() if kind == "pkg" else ""
    if certificate is None and not devid_pem:
        for flag, value in (
            ("--sign-key", args.sign_key),
            ("--sign-passphrase-file", args.sign_passphrase_file),
            ("--timestamp-url", args.timestamp_url),
        ):
            if value is not None:
                raise SigningIdentityError(f"{flag} needs --sign-certificate")
        return None
    if kind not in PURPOSES:
        raise SigningIdentityError(
            f"--sign-certificate applies to msi and pkg (and orbitctl mdm profile) only, not {kind}"
        )
    if args.timestamp_url is not None:
        if kind not in ("msi", "pkg"):
            raise SigningIdentityError("--timestamp-url applies to msi and pkg only")
        _check_url(args.timestamp_url)
    passphrase = _passphrase(args.sign_passphrase_file, env)
    if certificate is None:
        data = devid_pem.encode()
        identity = parse_identity(data, data, passphrase, source=DEVID_PEM_ENV)
    else:
        key_path: Path = args.sign_key or certificate
        identity = parse_identity(
            _read_pem(certificate, "--sign-certificate"),
            _read_pem(key_path, "--sign-key" if args.sign_key else "--sign-certificate"),
            passphrase,
            source=str(certificate if args.sign_key is None else f"{certificate} + {key_path}"),
        )
    check_usable(identity, PURPOSES[kind], now)
    return SigningOptions(identity=identity, timestamp_url=args.timestamp_url)


def _read_pem(path: Path, flag: str) -> bytes:
    try:
        return read_bounded(path, MAX_PEM_BYTES)
    except FileTooLargeError:
        raise SigningIdentityError(f"{flag} {path} is larger than {MAX_PEM_BYTES} bytes") from None
    except OSError as exc:
        raise SigningIdentityError(f"{flag} {path} cannot be read: {exc.strerror or exc}") from None


def _passphrase(path: Path | None, env: Mapping[str, str]) -> bytes | None:
    from_env = env.get(PASSPHRASE_ENV) or None
    if path is None:
        return from_env.encode() if from_env else None
    if from_env:
        raise SigningIdentityError(f"--sign-passphrase-file and {PASSPHRASE_ENV} are mutually exclusive")
    try:
        text = read_secret_file(path, MAX_PASSPHRASE_BYTES)
    except SecretFileError as exc:
        raise SigningIdentityError(f"--sign-passphrase-file {exc.path} {exc.reason}") from None
    if text is None:
        raise SigningIdentityError(f"--sign-passphrase-file {path}: missing or empty")
    return text.encode()


def _check_url(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SigningIdentityError(f"--timestamp-url {url!r} must be an http:// or https:// URL")
