"""``packager.signing.openpgp_key``: which (sub)key signs, decided from gpg's colon listing (pure), and the
signature time pinned to SOURCE_DATE_EPOCH but never before the key existed nor after it expires."""

from __future__ import annotations

import pytest

from packager.signing.openpgp_key import SigningKeyError, choose_signer, parse_listing

NOW = 1_800_000_000
PRIMARY = "A" * 40


def _record(
    kind: str, fingerprint: str, created: int, caps: str, expires: int | None = None, validity: str = "-"
) -> str:
    fields = [kind, validity, "255", "22", fingerprint[-16:], str(created), "" if expires is None else str(expires)]
    fields += ["", "-", "", "", caps, "", "", "#", "", "", "ed25519", "", "", "0", ""]
    return ":".join(fields) + f"\nfpr:::::::::{fingerprint}:\n"


def _listing(*subkeys: str, primary_caps: str = "scSC", kind: str = "sec", **primary: int) -> str:
    uid = "uid:-::::1::X::Test <t@example.invalid>::::::::::0:\n"
    return (
        _record(kind, PRIMARY, primary.get("created", 1000), primary_caps, primary.get("expires"))
        + uid
        + "".join(subkeys)
    )


def test_a_primary_key_that_signs_is_the_signer() -> None:
    choice = choose_signer(parse_listing(_listing()), NOW, "k.asc")
    assert (choice.primary_fingerprint, choice.signing_fingerprint, choice.created) == (PRIMARY, PRIMARY, 1000)


def test_the_newest_live_signing_subkey_wins() -> None:
    listing = _listing(
        _record("ssb", "B" * 40, 2000, "s"),
        _record("ssb", "C" * 40, 3000, "s", expires=NOW - 1),  # newest but expired
        _record("ssb", "D" * 40, 2500, "s"),
        _record("ssb", "E" * 40, 4000, "e"),  # newest, encryption only
        _record("ssb", "F" * 40, 2600, "s", validity="r"),  # revoked
        primary_caps="cSC",
    )
    assert choose_signer(parse_listing(listing), NOW, "k.asc").signing_fingerprint == "D" * 40


@pytest.mark.parametrize(
    ("listing", "message"),
    [
        ("", "holds no OpenPGP key"),
        (_listing() + _listing(), "holds 2 keys; give exactly one"),
        (_listing(kind="pub"), "holds only the public key"),
        (_listing(expires=NOW), f"the key {PRIMARY} expired on 2027-01-15 08:00:00 UTC"),
        (_listing(_record("ssb", "B" * 40, 2000, "e"), primary_caps="cEC"), "has no signing capability"),
        (_listing(_record("ssb", "B" * 40, 2000, "s", expires=5000), primary_caps="cSC"), "has expired (the last on"),
        (_listing(_record("ssb", "B" * 40, 2000, "s", validity="r"), primary_caps="cSC"), "has revoked"),
    ],
)
def test_keys_that_cannot_sign_are_refused_with_the_reason(listing: str, message: str) -> None:
    with pytest.raises(SigningKeyError) as caught:
        choose_signer(parse_listing(listing), NOW, "k.asc")
    assert message in str(caught.value)


def test_cert_only_names_what_the_key_can_do_and_how_to_fix_it() -> None:
    listing = _listing(_record("ssb", "B" * 40, 2000, "e"), primary_caps="cEC")
    with pytest.raises(SigningKeyError) as caught:
        choose_signer(parse_listing(listing), NOW, "k.asc")
    assert "can: certify, encrypt" in str(caught.value)
    assert f"gpg --quick-add-key {PRIMARY} ed25519 sign" in str(caught.value)


def test_signature_time_is_source_date_but_not_before_the_key_nor_after_expiry() -> None:
    choice = choose_signer(parse_listing(_listing(created=5000, expires=NOW + 100)), NOW, "k.asc")
    assert choice.signature_time(9000) == 9000
    assert choice.signature_time(10) == 5000
    with pytest.raises(SigningKeyError, match=r"expires on .* before the signature time"):
        choice.signature_time(NOW + 100)
