"""The flare's redactor: known values wherever they appear, and secret-shaped text even when the value is unknown."""

from __future__ import annotations

from orbit.flare import Redactor


def test_secret_shaped_fields_are_redacted_even_with_values_nobody_told_us() -> None:
    redactor = Redactor()
    text = redactor.text(
        '{"enroll_secret": "someone-elses", "node_key": "k1", "hostname": "h"} token=abc password: hunter2 '
        "Authorization: Bearer eyJhbGciOi.x.y FLEET_DESKTOP_DEVICE_API_TOKEN=zzz"
    )
    for secret in ("someone-elses", '"k1"', "abc", "hunter2", "eyJhbGciOi", "zzz"):
        assert secret not in text, text
    assert '"hostname": "h"' in text  # ordinary fields stay


def test_known_values_are_replaced_everywhere_longest_first_and_tiny_values_are_ignored() -> None:
    redactor = Redactor()
    redactor.add("node-key", "abcdef123456")
    redactor.add("enroll-secret", "abcdef")  # a prefix of the other: the longer one must win
    redactor.add("noise", "ab")  # too short to be a secret worth shredding text for
    assert redactor.text("x abcdef123456 y abcdef z ab") == "x <redacted:node-key> y <redacted:enroll-secret> z ab"


def test_private_keys_are_cut_whole_even_when_truncated() -> None:
    text = Redactor().text("before\n-----BEGIN EC PRIVATE KEY-----\nMHcCAQEE\nAAAA\nafter the cut")
    assert text == "before\n<redacted:private-key>"
