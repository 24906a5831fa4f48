"""Where the enroll secret comes from (docs/reference/orbit-behaviour.md §2.6), and the OS keystore behind an interface.

Precedence: ``--enroll-secret``/``ORBIT_ENROLL_SECRET``, then ``--enroll-secret-path`` (trimmed). On macOS and
Windows, unless ``--disable-keystore``, a secret read from the file is stored in the keystore (Keychain / Credential
Manager via ``keyring``), read back to verify, and only then is the file deleted; later starts read it from there.
Linux has no keystore. The secret itself never reaches a log line, argv or an exception message.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from safe_fs.secret_read import SecretFileError, read_secret_file

log = logging.getLogger(__name__)

KEYSTORE_SERVICE = "com.fleetdm.fleetd.enroll.secret"
KEYSTORE_ACCOUNT = "fleetd"
MAX_SECRET_BYTES = 4096


class EnrollSecretError(RuntimeError):
    pass


class Keystore(Protocol):
    name: str

    def get(self) -> str | None: ...

    def put(self, secret: str) -> None: ...


class KeyringKeystore:
    """The OS keystore through ``keyring`` (macOS Keychain, Windows Credential Manager)."""

    name = "keyring"

    def get(self) -> str | None:
        import keyring  # noqa: PLC0415 - only on macOS/Windows, and keyring's backend discovery is slow
        from keyring.errors import KeyringError  # noqa: PLC0415

        try:
            return keyring.get_password(KEYSTORE_SERVICE, KEYSTORE_ACCOUNT)
        except KeyringError as exc:
            raise EnrollSecretError(f"cannot read the enroll secret from the keystore: {exc}") from None

    def put(self, secret: str) -> None:
        import keyring  # noqa: PLC0415
        from keyring.errors import KeyringError  # noqa: PLC0415

        try:
            keyring.set_password(KEYSTORE_SERVICE, KEYSTORE_ACCOUNT, secret)
        except KeyringError as exc:
            raise EnrollSecretError(f"cannot store the enroll secret in the keystore: {exc}") from None


@dataclass(frozen=True)
class SecretSource:
    secret: str | None
    origin: str  # flag-or-env | file | keystore | none


def _read_secret_file(path: Path) -> str | None:
    try:
        return read_secret_file(path, MAX_SECRET_BYTES)
    except SecretFileError as exc:
        raise EnrollSecretError(f"the enroll secret file {exc.path} {exc.reason}") from None


def resolve_enroll_secret(
    flag_secret: str | None, secret_path: Path | None, *, keystore: Keystore | None
) -> SecretSource:
    """The secret to enroll with; ``keystore`` is None on Linux or with ``--disable-keystore``."""
    if flag_secret and flag_secret.strip():
        return SecretSource(flag_secret.strip(), "flag-or-env")
    from_file = _read_secret_file(secret_path) if secret_path is not None else None
    if keystore is None:
        return SecretSource(from_file, "file" if from_file else "none")
    if from_file is not None and secret_path is not None:
        stored = keystore.get()
        if stored != from_file:
            keystore.put(from_file)
            if keystore.get() != from_file:
                raise EnrollSecretError("the keystore did not return the enroll secret just stored; keeping the file")
            log.info("event=enroll_secret_moved keystore=%s", keystore.name)
        with contextlib.suppress(FileNotFoundError):
            secret_path.unlink()
        return SecretSource(from_file, "keystore")
    stored = keystore.get()
    return SecretSource(stored, "keystore" if stored else "none")


def default_keystore(platform: str, disabled: bool) -> Keystore | None:
    if disabled or platform not in ("macos", "windows"):
        return None
    return KeyringKeystore()
