"""Bounded reads of the small files that hold secrets and identifiers (node key, enroll secret, device token).

A file that is far larger than any valid value is refused after reading ``limit + 1`` bytes: a corrupt or hostile
file never costs more memory than that, and the error says what is wrong without showing the content.
"""

from __future__ import annotations

from pathlib import Path


class FileTooLargeError(ValueError):
    pass


def read_bounded(path: Path, limit: int) -> bytes:
    """At most ``limit`` bytes of ``path``; ``FileTooLargeError`` when it holds more (OSError as it comes)."""
    with path.open("rb") as handle:
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise FileTooLargeError(f"{path} is larger than {limit} bytes")
    return data


class SecretFileError(ValueError):
    """A secret file that exists but cannot be used; ``reason`` says why, never showing the content."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path} {reason}")
        self.path = path
        self.reason = reason


def read_secret_file(path: Path, limit: int) -> str | None:
    """A secret file's UTF-8 text, stripped; None when the file is missing or blank; ``SecretFileError`` (with a
    message fit for the user) when it is unreadable, too large or not text."""
    try:
        data = read_bounded(path, limit)
    except FileNotFoundError:
        return None
    except FileTooLargeError:
        raise SecretFileError(path, f"is larger than {limit} bytes") from None
    except OSError as exc:
        raise SecretFileError(path, f"cannot be read: {exc.strerror or exc}") from None
    try:
        return data.decode("utf-8").strip() or None
    except UnicodeDecodeError:
        raise SecretFileError(path, "is not UTF-8 text") from None


def read_text_or_none(path: Path, limit: int = 64 * 1024) -> str | None:
    """The file's UTF-8 text with surrounding whitespace removed; ``None`` when it is missing or empty."""
    try:
        data = read_bounded(path, limit)
    except FileNotFoundError:
        return None
    return data.decode("utf-8").strip() or None
