"""Which key of an armored OpenPGP secret key file signs, decided from ``gpg --with-colons --show-keys`` output
(pure: the listing and the time come in as values).

Rules (those of gpg's own signer choice, stated so the user gets a precise refusal): the file holds exactly one
primary key and its secret part; the primary key is neither revoked nor expired; the signer is the newest
signing-capable (``s``) secret (sub)key that is neither revoked nor expired. The signature time is pinned to
``SOURCE_DATE_EPOCH`` for reproducible output, but never earlier than the signing key's creation: a signature that
predates its key is invalid for RFC 9580 verifiers such as rpm-sequoia.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

CAPABILITY_NAMES = {"s": "sign", "c": "certify", "e": "encrypt", "a": "authenticate"}


class SigningKeyError(ValueError):
    """The key cannot sign; the message says why and what to do."""


@dataclass(frozen=True)
class ListedKey:
    """One primary key or subkey of the listing."""

    fingerprint: str
    secret: bool
    primary: bool
    algorithm: int
    created: int
    expires: int | None
    capabilities: str  # the key's own usage, lowercase letters of CAPABILITY_NAMES
    revoked: bool


@dataclass(frozen=True)
class SignerChoice:
    primary_fingerprint: str
    signing_fingerprint: str  # the primary key's or a subkey's
    created: int
    expires: int | None

    def signature_time(self, source_date_epoch: int) -> int:
        """The signature's creation time: ``SOURCE_DATE_EPOCH``, not before the key existed, before it expires."""
        when = max(source_date_epoch, self.created)
        if self.expires is not None and when >= self.expires:
            raise SigningKeyError(
                f"the signing key {self.signing_fingerprint} expires on {_date(self.expires)}, before the "
                f"signature time {_date(when)} (SOURCE_DATE_EPOCH)"
            )
        return when


def parse_listing(colons: str) -> tuple[ListedKey, ...]:
    """The sec/ssb/pub/sub records of ``gpg --with-colons`` with the fingerprint that follows each one."""
    keys: list[ListedKey] = []
    pending: list[str] | None = None
    for line in colons.splitlines():
        fields = line.split(":")
        if fields[0] in ("sec", "ssb", "pub", "sub"):
            pending = fields
        elif fields[0] == "fpr" and pending is not None and len(pending) > 11 and len(fields) > 9:
            keys.append(
                ListedKey(
                    fingerprint=fields[9].upper(),
                    secret=pending[0] in ("sec", "ssb"),
                    primary=pending[0] in ("sec", "pub"),
                    algorithm=int(pending[3] or 0),
                    created=int(pending[5] or 0),
                    expires=int(pending[6]) if pending[6] else None,
                    capabilities="".join(c for c in pending[11] if c.islower()),
                    revoked=pending[1] == "r",
                )
            )
            pending = None
    return tuple(keys)


def choose_signer(keys: tuple[ListedKey, ...], now: int, source: str) -> SignerChoice:
    """The (sub)key that signs, or ``SigningKeyError`` naming the problem; ``source`` names the file."""
    primaries = [key for key in keys if key.primary]
    if not primaries:
        raise SigningKeyError(f"{source} holds no OpenPGP key (expected an armored secret key)")
    if len(primaries) > 1:
        raise SigningKeyError(f"{source} holds {len(primaries)} keys; give exactly one")
    primary = primaries[0]
    if not primary.secret:
        raise SigningKeyError(
            f"{source} holds only the public key {primary.fingerprint}; give the secret key "
            "(gpg --armor --export-secret-keys FINGERPRINT)"
        )
    if primary.revoked:
        raise SigningKeyError(f"the key {primary.fingerprint} is revoked")
    if _expired(primary, now):
        raise SigningKeyError(f"the key {primary.fingerprint} expired on {_date(primary.expires)}")
    capable = [key for key in keys if "s" in key.capabilities and key.secret]
    if not capable:
        usable = sorted({CAPABILITY_NAMES.get(c, c) for key in keys if key.secret for c in key.capabilities})
        raise SigningKeyError(
            f"the key {primary.fingerprint} has no signing capability (its secret keys can: "
            f"{', '.join(usable) or 'nothing'}); add a signing subkey: gpg --quick-add-key "
            f"{primary.fingerprint} ed25519 sign"
        )
    alive = [key for key in capable if not key.revoked and not _expired(key, now)]
    if not alive:
        ends = max((key.expires for key in capable if key.expires is not None), default=None)
        reason = f"expired (the last on {_date(ends)})" if ends is not None else "revoked"
        raise SigningKeyError(f"every signing key of {primary.fingerprint} has {reason}")
    signer = max(alive, key=lambda key: (key.created, not key.primary))
    return SignerChoice(primary.fingerprint, signer.fingerprint, signer.created, signer.expires)


def _expired(key: ListedKey, now: int) -> bool:
    return key.expires is not None and key.expires <= now


def _date(epoch: int | None) -> str:
    assert epoch is not None
    return datetime.datetime.fromtimestamp(epoch, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
