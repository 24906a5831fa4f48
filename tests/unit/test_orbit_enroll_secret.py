"""Where the enroll secret comes from: flag, file, keystore; the file moves into the keystore only when verified."""

from __future__ import annotations

from pathlib import Path

import pytest

from orbit.fleet.enroll_secret import (
    MAX_SECRET_BYTES,
    EnrollSecretError,
    KeyringKeystore,
    SecretSource,
    default_keystore,
    resolve_enroll_secret,
)

SECRET = "s3cr3t-from-file-9f8e7d"


class FakeKeystore:
    name = "fake"

    def __init__(self, stored: str | None = None, *, echo: str | None = None, fail_put: bool = False) -> None:
        self.stored = stored
        self.echo = echo  # when set, get() returns this after a put (a keystore that lies)
        self.fail_put = fail_put
        self.calls: list[str] = []

    def get(self) -> str | None:
        self.calls.append("get")
        if self.echo is not None and "put" in self.calls:
            return self.echo
        return self.stored

    def put(self, secret: str) -> None:
        self.calls.append("put")
        if self.fail_put:
            raise EnrollSecretError("cannot store the enroll secret in the keystore: locked")
        self.stored = secret


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    path = tmp_path / "secret.txt"
    path.write_text(f"  {SECRET}\n\n")
    return path


def test_the_flag_wins_over_file_and_keystore(secret_file: Path) -> None:
    keystore = FakeKeystore("from-keystore")
    assert resolve_enroll_secret("from-flag", secret_file, keystore=keystore) == SecretSource(
        "from-flag", "flag-or-env"
    )
    assert keystore.calls == [] and secret_file.exists()


def test_the_file_is_trimmed_and_kept_without_a_keystore(secret_file: Path) -> None:
    assert resolve_enroll_secret(None, secret_file, keystore=None) == SecretSource(SECRET, "file")
    assert resolve_enroll_secret("", secret_file, keystore=None) == SecretSource(SECRET, "file")
    assert secret_file.exists()  # Linux: the file is where the secret lives


def test_the_file_moves_into_the_keystore_verified_then_deleted(secret_file: Path) -> None:
    keystore = FakeKeystore("an older secret")
    assert resolve_enroll_secret(None, secret_file, keystore=keystore) == SecretSource(SECRET, "keystore")
    assert keystore.calls == ["get", "put", "get"]  # stored, then read back before the file goes
    assert keystore.stored == SECRET and not secret_file.exists()
    # next start: no file, the keystore answers
    assert resolve_enroll_secret(None, secret_file, keystore=keystore) == SecretSource(SECRET, "keystore")


def test_a_keystore_already_holding_the_secret_is_not_written(secret_file: Path) -> None:
    keystore = FakeKeystore(SECRET)
    assert resolve_enroll_secret(None, secret_file, keystore=keystore) == SecretSource(SECRET, "keystore")
    assert "put" not in keystore.calls and not secret_file.exists()


def test_a_keystore_that_does_not_read_back_keeps_the_file(secret_file: Path) -> None:
    keystore = FakeKeystore(None, echo="something else")
    with pytest.raises(EnrollSecretError, match="keeping the file") as caught:
        resolve_enroll_secret(None, secret_file, keystore=keystore)
    assert SECRET not in str(caught.value)
    assert secret_file.read_text().strip() == SECRET


def test_a_keystore_that_refuses_the_secret_keeps_the_file(secret_file: Path) -> None:
    with pytest.raises(EnrollSecretError, match="cannot store") as caught:
        resolve_enroll_secret(None, secret_file, keystore=FakeKeystore(None, fail_put=True))
    assert SECRET not in str(caught.value) and secret_file.exists()


def test_no_file_but_a_keystore_secret_is_fine(tmp_path: Path) -> None:
    missing = tmp_path / "secret.txt"
    assert resolve_enroll_secret(None, missing, keystore=FakeKeystore("kept")) == SecretSource("kept", "keystore")
    assert resolve_enroll_secret(None, None, keystore=FakeKeystore("kept")) == SecretSource("kept", "keystore")


def test_nothing_anywhere_is_no_secret(tmp_path: Path) -> None:
    assert resolve_enroll_secret(None, tmp_path / "absent", keystore=FakeKeystore()) == SecretSource(None, "none")
    assert resolve_enroll_secret(None, tmp_path / "absent", keystore=None) == SecretSource(None, "none")
    assert resolve_enroll_secret(None, None, keystore=None) == SecretSource(None, "none")


def test_a_blank_file_is_no_secret_and_does_not_reach_the_keystore(tmp_path: Path) -> None:
    blank = tmp_path / "secret.txt"
    blank.write_text(" \n\t\n")
    keystore = FakeKeystore()
    assert resolve_enroll_secret(None, blank, keystore=keystore) == SecretSource(None, "none")
    assert "put" not in keystore.calls


def test_there_is_no_keystore_on_linux_or_when_disabled() -> None:
    assert default_keystore("linux", False) is None
    assert default_keystore("macos", True) is None
    assert default_keystore("windows", True) is None
    assert isinstance(default_keystore("macos", False), KeyringKeystore)
    assert isinstance(default_keystore("windows", False), KeyringKeystore)


def test_an_oversize_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "secret.txt"
    path.write_text(SECRET + "x" * MAX_SECRET_BYTES)
    with pytest.raises(EnrollSecretError, match=f"larger than {MAX_SECRET_BYTES} bytes") as caught:
        resolve_enroll_secret(None, path, keystore=None)
    assert str(path) in str(caught.value) and SECRET not in str(caught.value)


def test_a_non_utf8_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "secret.txt"
    path.write_bytes(SECRET.encode() + b"\xff\xfe")
    keystore = FakeKeystore()
    with pytest.raises(EnrollSecretError, match="is not UTF-8 text") as caught:
        resolve_enroll_secret(None, path, keystore=keystore)
    assert SECRET not in str(caught.value) and keystore.calls == [] and path.exists()


def test_an_unreadable_file_is_a_clear_error(tmp_path: Path) -> None:
    directory = tmp_path / "secret.txt"
    directory.mkdir()
    with pytest.raises(EnrollSecretError, match=r"the enroll secret file .* cannot be read"):
        resolve_enroll_secret(None, directory, keystore=None)
