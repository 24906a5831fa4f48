"""``packager.signing.apt_indexes``: control parsing, Packages stanzas and the Release file (pure)."""

from __future__ import annotations

import hashlib

import pytest

from packager.signing.apt_indexes import (
    AptIndexError,
    DebEntry,
    IndexFile,
    packages_indexes,
    parse_control,
    pool_path,
    release_text,
)

CONTROL = "Package: fleet-osquery\nVersion: 1.2.3\nArchitecture: amd64\nDescription: agent\n more text\n"


def _entry(version: str, architecture: str = "amd64") -> DebEntry:
    control = CONTROL.replace("1.2.3", version).replace("amd64", architecture).strip("\n")
    name = f"fleet-osquery_{version}_{architecture}.deb"
    return DebEntry(
        control,
        "fleet-osquery",
        version,
        architecture,
        pool_path("main", "fleet-osquery", name),
        10,
        "a" * 64,
        "b" * 32,
    )


def test_control_fields_and_continuations() -> None:
    fields = parse_control(CONTROL, "x.deb")
    assert fields["Description"] == "agent\n more text"
    assert pool_path("main", "libfoo", "f.deb") == "pool/main/libf/libfoo/f.deb"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("Package: a1\nVersion: 1\n", "no Architecture field"),
        (CONTROL + "SHA256: 00\n", "cannot hold the index field SHA256"),
        (CONTROL + "Package: again\n", "repeats the field Package"),
        (CONTROL + "not a field\n", "unusable line"),
    ],
)
def test_bad_control_files_are_refused(text: str, message: str) -> None:
    with pytest.raises(AptIndexError, match=message):
        parse_control(text, "x.deb")


def test_packages_index_per_architecture_with_all_packages_in_each() -> None:
    entries = [_entry("1.2.4"), _entry("1.2.3"), _entry("1.0", "all"), _entry("1.2.3", "arm64")]
    amd64, arm64 = packages_indexes(entries, "main", ["amd64", "arm64"])
    assert amd64.path == "main/binary-amd64/Packages"
    stanzas = amd64.content.decode().split("\n\n")
    assert [s.split("\n")[1] for s in stanzas] == ["Version: 1.0", "Version: 1.2.3", "Version: 1.2.4"]
    assert stanzas[0].endswith("Size: 10\nMD5sum: " + "b" * 32 + "\nSHA256: " + "a" * 64)
    assert arm64.content.decode().count("Package:") == 2
    with pytest.raises(AptIndexError, match=r"two \.deb files are fleet-osquery 1\.2\.3 amd64"):
        packages_indexes([_entry("1.2.3"), _entry("1.2.3")], "main", ["amd64"])


def test_release_lists_every_index_with_size_and_sha256() -> None:
    files = [IndexFile("main/binary-amd64/Packages", b"abc"), IndexFile("main/binary-amd64/Packages.gz", b"")]
    text = release_text(
        suite="stable", component="main", architectures=["amd64"], date_epoch=1_700_000_000, files=files
    )
    assert "Date: Tue, 14 Nov 2023 22:13:20 UTC\n" in text
    assert text.endswith(
        f"SHA256:\n {hashlib.sha256(b'abc').hexdigest()}                3 main/binary-amd64/Packages\n"
        f" {hashlib.sha256(b'').hexdigest()}                0 main/binary-amd64/Packages.gz\n"
    )
