"""The device token as orbit hands it over: a file whose path is in ``FLEET_DESKTOP_DEVICE_IDENTIFIER_PATH``.

orbit rotates the token hourly by rewriting the file (docs/reference/orbit-behaviour.md §5). ``TokenFile.read``
re-reads it and
remembers the file's identity (mtime, inode, size — an atomic rename with an unchanged mtime is still noticed);
``changed`` tells whether the file differs from what was last read. The token itself never goes to a log.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

MAX_TOKEN_BYTES = 4096

FileSignature = tuple[int, int, int]


class TokenUnavailableError(Exception):
    """The token file is missing, unreadable, empty or not a token."""


class TokenSource(Protocol):
    def read(self) -> str:
        """The current token (raises ``TokenUnavailableError``)."""
        ...

    def changed(self) -> bool:
        """Whether the token may differ from the one last read."""
        ...

    @property
    def cached(self) -> str | None:
        """The token from the last successful read, without touching the disk."""
        ...


def _signature(path: Path) -> FileSignature | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_ino, st.st_size)


def valid_token(text: str) -> bool:
    return bool(text) and len(text) <= 256 and text.isprintable() and not any(c in text for c in "/\\ ?#%")


class TokenFile:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._seen: FileSignature | None = None
        self._read_once = False
        self._cached: str | None = None

    @property
    def cached(self) -> str | None:
        return self._cached

    def read(self) -> str:
        self._seen = _signature(self.path)  # before reading: a replacement during the read shows up as a change
        self._read_once = True
        try:
            with open(self.path, "rb") as handle:
                raw = handle.read(MAX_TOKEN_BYTES + 1)
        except OSError as exc:
            raise TokenUnavailableError(f"cannot read the device token file {self.path}: {exc.strerror}") from None
        if len(raw) > MAX_TOKEN_BYTES:
            raise TokenUnavailableError(f"the device token file {self.path} is too large to be a token")
        try:
            token = raw.decode("utf-8").strip()
        except UnicodeDecodeError:
            raise TokenUnavailableError(f"the device token file {self.path} is not text") from None
        if not token:
            raise TokenUnavailableError(f"the device token file {self.path} is empty")
        if not valid_token(token):
            raise TokenUnavailableError(f"the device token file {self.path} does not hold a token")
        self._cached = token
        return token

    def changed(self) -> bool:
        if not self._read_once:
            return False  # nothing read yet: the first check reads it anyway
        return _signature(self.path) != self._seen


class StaticToken:
    """The token taken from the legacy ``FLEET_DESKTOP_DEVICE_URL`` (very old launchers): it never changes."""

    def __init__(self, token: str) -> None:
        self._token = token

    @property
    def cached(self) -> str | None:
        return self._token

    def read(self) -> str:
        return self._token

    def changed(self) -> bool:
        return False


class NoToken:
    """Permanent-error mode without a token path: nothing to read, nothing ever asked."""

    @property
    def cached(self) -> str | None:
        return None

    def read(self) -> str:
        raise TokenUnavailableError("no device token file is configured")

    def changed(self) -> bool:
        return False
