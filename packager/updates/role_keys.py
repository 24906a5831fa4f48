"""Role keys on disk: ed25519, PKCS#8 PEM encrypted with the role's passphrase, 0600, written atomically.

Passphrases come from ``ORBITCTL_<ROLE>_PASSPHRASE`` or, on a terminal, from a prompt; never from argv.
"""

from __future__ import annotations

import getpass
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from securesystemslib.signer import CryptoSigner, SSlibKey

from safe_fs.atomic_write import write_atomic

ROLES = ("root", "targets", "snapshot", "timestamp")
MIN_PASSPHRASE = 8


class KeyUnavailable(RuntimeError):
    """A key cannot be used: missing, unreadable, or the passphrase is wrong."""


@dataclass(frozen=True)
class RoleKey:
    role: str
    signer: CryptoSigner

    @property
    def public(self) -> SSlibKey:
        key = self.signer.public_key
        assert isinstance(key, SSlibKey)
        return key

    @property
    def keyid(self) -> str:
        return self.public.keyid


Prompt = Callable[[str], str]


def env_name(role: str) -> str:
    return f"ORBITCTL_{role.upper()}_PASSPHRASE"


def passphrase_for(role: str, env: Mapping[str, str], *, confirm: bool = False, prompt: Prompt | None = None) -> bytes:
    value = env.get(env_name(role))
    if value is None:
        if prompt is None and not sys.stdin.isatty():
            raise KeyUnavailable(f"no passphrase for the {role} key: set {env_name(role)} (or run on a terminal)")
        ask = prompt or getpass.getpass
        value = ask(f"Passphrase for the {role} key: ")
        if confirm and ask(f"Repeat the passphrase for the {role} key: ") != value:
            raise KeyUnavailable(f"the two passphrases for the {role} key differ")
    if len(value) < MIN_PASSPHRASE:
        raise KeyUnavailable(f"the {role} passphrase must be at least {MIN_PASSPHRASE} characters")
    return value.encode("utf-8")


def key_path(keys_dir: Path, role: str) -> Path:
    return keys_dir / f"{role}.key"


def generate(role: str) -> tuple[RoleKey, Ed25519PrivateKey]:
    private = Ed25519PrivateKey.generate()
    public = SSlibKey.from_crypto(private.public_key())
    return RoleKey(role, CryptoSigner(private, public)), private


def save(keys_dir: Path, role: str, private: Ed25519PrivateKey, passphrase: bytes, *, path: Path | None = None) -> Path:
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(passphrase),
    )
    target = path or key_path(keys_dir, role)
    keys_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    target.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(target, pem, 0o600)
    return target


def load(keys_dir: Path, role: str, passphrase: bytes) -> RoleKey:
    path = key_path(keys_dir, role)
    try:
        pem = path.read_bytes()
    except FileNotFoundError:
        raise KeyUnavailable(f"the {role} key is missing: {path}") from None
    except OSError as exc:
        raise KeyUnavailable(f"cannot read the {role} key {path}: {exc.strerror}") from None
    try:
        private = serialization.load_pem_private_key(pem, password=passphrase)
    except (ValueError, TypeError):
        raise KeyUnavailable(f"cannot decrypt the {role} key {path}: wrong passphrase or damaged key") from None
    if not isinstance(private, Ed25519PrivateKey):
        raise KeyUnavailable(f"the {role} key {path} is not an ed25519 key")
    return RoleKey(role, CryptoSigner(private, SSlibKey.from_crypto(private.public_key())))


def retire(keys_dir: Path, role: str, keyid: str) -> None:
    """Keep a replaced key apart (``keys/retired/``) instead of deleting it."""
    current = key_path(keys_dir, role)
    if current.is_file():
        retired = keys_dir / "retired"
        retired.mkdir(mode=0o700, exist_ok=True)
        os.replace(current, retired / f"{role}-{keyid[:16]}.key")
