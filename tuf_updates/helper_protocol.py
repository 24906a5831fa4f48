"""The line protocol between a long-running agent and its short-lived update helper process (ADR 0020).

Why a helper: python-tuf with cryptography and securesystemslib costs ≈ 13 MiB resident once imported and never
gives it back, for work done once every 15 minutes. The agent keeps the decisions (which targets, retry limits,
quarantine, installing); the helper, started per check, does what needs the TUF stack — refresh, look up, download
and verify — and exits.

One JSON object per line, UTF-8, each way. The agent sends ``{"op": …, …}``; the helper answers each with
``{"ok": true, "result": …, "clock_skew": …}`` or ``{"ok": false, "error": {…}, "clock_skew": …}``, and may send
``{"log": {"level": …, "logger": …, "message": …}}`` lines before an answer (its log records, which the agent logs
as its own). Operations: ``open`` (first, with the configuration; takes the metadata directory's lock),
``refresh``, ``lookup`` (``path``), ``download`` (``target``, ``staging_dir``), ``close``. The helper also ends
when its input ends (the agent went away). Everything here is pure: encoding, decoding and the error codec.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from pathlib import Path

from tuf_updates.errors import (
    DirectoryLockedError,
    FailureKind,
    InstallError,
    LocalStorageError,
    MetadataExpiredError,
    NetworkError,
    RepositoryError,
    TargetNotFoundError,
    UpdateError,
)

MAX_LINE_BYTES = 1024 * 1024  # a configuration carries a root (a few KiB); anything near this is not ours
UPDATE_HELPER_COMMAND = "update-helper"  # the subcommand an agent's executable answers as the helper

_ERROR_TYPES: dict[str, type[UpdateError]] = {
    cls.__name__: cls
    for cls in (
        UpdateError,
        RepositoryError,
        MetadataExpiredError,
        NetworkError,
        TargetNotFoundError,
        LocalStorageError,
        DirectoryLockedError,
        InstallError,
    )
}


class ProtocolError(ValueError):
    """A line that is not a message of this protocol."""


def encode(message: dict[str, object]) -> bytes:
    return json.dumps(message, separators=(",", ":"), allow_nan=False).encode("utf-8") + b"\n"


def decode(line: bytes) -> dict[str, object]:
    if len(line) > MAX_LINE_BYTES:
        raise ProtocolError(f"a line of {len(line)} bytes (at most {MAX_LINE_BYTES})")
    try:
        message = json.loads(line)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"not JSON: {exc}") from None
    if not isinstance(message, dict):
        raise ProtocolError("a message must be a JSON object")
    return message


def error_to_wire(exc: UpdateError) -> dict[str, object]:
    wire: dict[str, object] = {"type": type(exc).__name__, "kind": str(exc.kind), "message": str(exc)}
    if isinstance(exc, NetworkError) and exc.status_code is not None:
        wire["status_code"] = exc.status_code
    if isinstance(exc, MetadataExpiredError) and exc.clock_skew is not None:
        wire["clock_skew"] = exc.clock_skew
    return wire


def error_from_wire(wire: object) -> UpdateError:
    """The helper's error as the same ``UpdateError`` subclass and kind; anything malformed is a protocol error."""
    if not isinstance(wire, dict):
        raise ProtocolError("an error must be a JSON object")
    cls = _ERROR_TYPES.get(str(wire.get("type")))
    message = wire.get("message")
    try:
        kind = FailureKind(str(wire.get("kind")))
    except ValueError:
        raise ProtocolError(f"unknown failure kind {wire.get('kind')!r}") from None
    if cls is None or not isinstance(message, str):
        raise ProtocolError(f"unknown error {wire.get('type')!r}")
    if cls is MetadataExpiredError:
        skew = wire.get("clock_skew")
        return MetadataExpiredError(message, clock_skew=float(skew) if isinstance(skew, int | float) else None)
    if cls is NetworkError:
        status = wire.get("status_code")
        return NetworkError(message, status_code=status if isinstance(status, int) else None, kind=kind)
    return cls(message, kind=kind)


@dataclass(frozen=True)
class HelperConfig:
    """What the helper needs to build the same ``UpdateClient`` the agent would: where, whom to trust, how."""

    metadata_dir: Path
    base_url: str
    bootstrap_root: bytes | None
    user_agent: str
    root_ca: Path | None = None
    client_cert: Path | None = None
    client_key: Path | None = None
    insecure: bool = False
    lock_timeout: float = 10.0

    def to_json(self) -> dict[str, object]:
        def text(path: Path | None) -> str | None:
            return str(path) if path is not None else None

        root = base64.b64encode(self.bootstrap_root).decode("ascii") if self.bootstrap_root is not None else None
        return {
            "metadata_dir": str(self.metadata_dir),
            "base_url": self.base_url,
            "bootstrap_root": root,
            "user_agent": self.user_agent,
            "root_ca": text(self.root_ca),
            "client_cert": text(self.client_cert),
            "client_key": text(self.client_key),
            "insecure": self.insecure,
            "lock_timeout": self.lock_timeout,
        }

    @classmethod
    def from_json(cls, data: object) -> HelperConfig:
        if not isinstance(data, dict):
            raise ProtocolError("the configuration must be a JSON object")

        def required(name: str) -> str:
            value = data.get(name)
            if not isinstance(value, str) or not value:
                raise ProtocolError(f"the configuration needs {name}")
            return value

        def optional_path(name: str) -> Path | None:
            value = data.get(name)
            if value is None:
                return None
            if not isinstance(value, str) or not value:
                raise ProtocolError(f"{name} must be a path")
            return Path(value)

        root_text = data.get("bootstrap_root")
        if root_text is None:
            root = None
        elif isinstance(root_text, str):
            try:
                root = base64.b64decode(root_text, validate=True)
            except binascii.Error:
                raise ProtocolError("bootstrap_root is not base64") from None
        else:
            raise ProtocolError("bootstrap_root must be base64 text")
        lock_timeout = data.get("lock_timeout", 10.0)
        if not isinstance(lock_timeout, int | float) or isinstance(lock_timeout, bool) or lock_timeout < 0:
            raise ProtocolError("lock_timeout must be a number of seconds")
        insecure = data.get("insecure", False)
        if not isinstance(insecure, bool):
            raise ProtocolError("insecure must be true or false")
        return cls(
            metadata_dir=Path(required("metadata_dir")),
            base_url=required("base_url"),
            bootstrap_root=root,
            user_agent=required("user_agent"),
            root_ca=optional_path("root_ca"),
            client_cert=optional_path("client_cert"),
            client_key=optional_path("client_key"),
            insecure=insecure,
            lock_timeout=float(lock_timeout),
        )
