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


def read_text_or_none(path: Path, limit: int = 64 * 1024) -> str | None:
    """The file's UTF-8 text with surrounding whitespace removed; ``None`` when it is missing or empty."""
    try:
        data = read_bounded(path, limit)
    except FileNotFoundError:
        return None
    return data.decode("utf-8").strip() or None
