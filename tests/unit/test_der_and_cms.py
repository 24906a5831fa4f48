"""The DER encoder and the detached CMS signature of the .pkg (packager/signing/der.py, cms_signature.py): byte
values from X.690 / RFC 5652 examples, and the CMS read back by ``cryptography``'s own PKCS#7 loader and checked
with the public key (the integration test adds openssl and rcodesign)."""

from __future__ import annotations

import datetime
import hashlib

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.serialization import pkcs7

from packager.signing import cms_signature, der
from tests.support.signing_identities import make_ca, make_developer_id_installer

EPOCH = datetime.datetime(2024, 5, 6, 7, 8, 9, tzinfo=datetime.UTC)


@pytest.mark.parametrize(
    ("value", "encoded"),
    [(0, "020100"), (127, "02017f"), (128, "02020080"), (256, "02020100"), (-128, "020180"), (-129, "0202ff7f")],
)
def test_integers_take_the_fewest_bytes_that_keep_the_sign(value: int, encoded: str) -> None:
    assert der.integer(value).hex() == encoded


@pytest.mark.parametrize(
    ("dotted", "encoded"),
    [
        ("2.16.840.1.101.3.4.2.1", "0609608648016503040201"),  # sha256
        ("1.2.840.113549.1.7.2", "06092a864886f70d010702"),  # signedData
        ("1.2.840.113635.100.4.13", "06092a864886f76364040d"),
    ],
)
def test_object_identifiers(dotted: str, encoded: str) -> None:
    assert der.oid(dotted).hex() == encoded


@pytest.mark.parametrize("bad", ["", "1", "3.1", "1.40", "1.2.x", "1.-2"])
def test_bad_object_identifiers_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="object identifier"):
        der.oid(bad)


def test_long_lengths_use_the_long_form() -> None:
    assert der.length(127) == b"\x7f"
    assert der.length(128) == b"\x81\x80"
    assert der.length(0x1234) == b"\x82\x12\x34"
    assert der.octet_string(bytes(300))[:4] == b"\x04\x82\x01\x2c"


def test_times_are_utc_time_before_2050_and_generalized_after() -> None:
    assert der.time(EPOCH) == b"\x17\x0d240506070809Z"
    assert der.time(datetime.datetime(2050, 1, 1, tzinfo=datetime.UTC)) == b"\x18\x0f20500101000000Z"
    with pytest.raises(ValueError, match="time zone"):
        der.time(datetime.datetime(2024, 1, 1))


def test_set_of_is_sorted_and_implicit_keeps_the_content() -> None:
    assert der.set_of([b"\x02\x01\x02", b"\x02\x01\x01"]) == b"\x31\x06\x02\x01\x01\x02\x01\x02"
    assert der.implicit_constructed(0, der.set_of([der.null()])) == b"\xa0\x02\x05\x00"
    with pytest.raises(ValueError, match="constructed"):
        der.implicit_constructed(0, der.null())


@pytest.fixture(scope="module")
def signer_pair() -> tuple[cms_signature.CmsSigner, x509.Certificate]:
    ca = make_ca()
    leaf = make_developer_id_installer(ca)
    key = leaf.key
    assert isinstance(key, rsa.RSAPrivateKey)
    chain = tuple(cert.public_bytes(serialization.Encoding.DER) for cert in (leaf.certificate, ca.certificate))
    signer = cms_signature.CmsSigner(
        certificates=chain,
        signature_size=key.key_size // 8,
        sign=lambda data: key.sign(data, padding.PKCS1v15(), hashes.SHA256()),
    )
    return signer, leaf.certificate


def test_the_declared_size_is_the_size_written_and_the_bytes_repeat(
    signer_pair: tuple[cms_signature.CmsSigner, x509.Certificate],
) -> None:
    signer, _ = signer_pair
    message = hashlib.sha1(b"toc", usedforsecurity=False).digest()
    first = cms_signature.detached_signature(signer, message, EPOCH)
    assert len(first) == cms_signature.size(signer, EPOCH)
    assert cms_signature.detached_signature(signer, message, EPOCH) == first
    later = EPOCH + datetime.timedelta(seconds=1)
    assert cms_signature.detached_signature(signer, message, later) != first  # the signing time is signed


def test_the_signature_covers_the_attributes_that_hold_the_message_digest(
    signer_pair: tuple[cms_signature.CmsSigner, x509.Certificate],
) -> None:
    signer, leaf = signer_pair
    message = bytes(range(20))
    blob = cms_signature.detached_signature(signer, message, EPOCH)
    # cryptography's own (strict DER) PKCS#7 reader finds the embedded chain
    embedded = pkcs7.load_der_pkcs7_certificates(blob)
    assert leaf in embedded and len(embedded) == 2
    attributes = der.set_of(
        [
            der.sequence(der.oid(cms_signature.OID_CONTENT_TYPE), der.set_of([der.oid(cms_signature.OID_DATA)])),
            der.sequence(der.oid(cms_signature.OID_SIGNING_TIME), der.set_of([der.time(EPOCH)])),
            der.sequence(
                der.oid(cms_signature.OID_MESSAGE_DIGEST),
                der.set_of([der.octet_string(hashlib.sha256(message).digest())]),
            ),
        ]
    )
    # the attributes are in the blob under [0] IMPLICIT; the signature (last OCTET STRING) verifies over their SET
    assert der.implicit_constructed(0, attributes) in blob
    signature = blob[-signer.signature_size :]
    public_key = leaf.public_key()
    assert isinstance(public_key, rsa.RSAPublicKey)
    public_key.verify(signature, attributes, padding.PKCS1v15(), hashes.SHA256())


def test_a_signer_needs_a_certificate_and_the_signature_its_size() -> None:
    with pytest.raises(ValueError, match="certificate"):
        cms_signature.CmsSigner(certificates=(), signature_size=256, sign=lambda data: data)
    short = cms_signature.CmsSigner(certificates=(b"x",), signature_size=256, sign=lambda data: b"short")
    with pytest.raises(ValueError, match="expected 256"):
        cms_signature.detached_signature(short, b"m", EPOCH)
