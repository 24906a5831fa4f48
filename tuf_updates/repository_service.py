"""The helper's side of ``helper_protocol``: an ``UpdateClient`` served over stdin/stdout for one check.

Run by the agent's own executable (``orbit update-helper``; ADR 0020). Reads one request line at a time and answers
it; log records go out as ``log`` lines so they land in the agent's log. It holds the metadata directory's lock
from ``open`` until it exits, and exits at ``close``, at the end of its input, or on a line it cannot read.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import BinaryIO

from tuf_updates.errors import FailureKind, UpdateError
from tuf_updates.helper_protocol import HelperConfig, ProtocolError, decode, encode, error_to_wire
from tuf_updates.http_client import TlsOptions, build_http_client
from tuf_updates.repository_client import UpdateClient
from tuf_updates.target_info import TargetInfo

logger = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_PROTOCOL = 2


class _Channel:
    """The answer stream, shared by the answers and the log handler (one line at a time)."""

    def __init__(self, writer: BinaryIO) -> None:
        self._writer = writer
        self._lock = threading.Lock()

    def send(self, message: dict[str, object]) -> None:
        line = encode(message)
        with self._lock:
            self._writer.write(line)
            self._writer.flush()


class _LogLines(logging.Handler):
    def __init__(self, channel: _Channel) -> None:
        super().__init__(logging.DEBUG)
        self._channel = channel

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            if record.exc_info:
                message = f"{message}\n{logging.Formatter().formatException(record.exc_info)}"
            self._channel.send({"log": {"level": record.levelno, "logger": record.name, "message": message}})
        except Exception:
            self.handleError(record)


def _client(config: HelperConfig) -> UpdateClient:
    tls = TlsOptions(config.root_ca, config.client_cert, config.client_key, config.insecure)
    http = build_http_client(tls, user_agent=config.user_agent)
    return UpdateClient(
        config.metadata_dir,
        config.base_url,
        bootstrap_root=config.bootstrap_root,
        http=http,
        lock_timeout=config.lock_timeout,
    )


def _open(config: HelperConfig) -> UpdateClient:
    try:
        return _client(config)
    except (OSError, ValueError) as exc:  # an unreadable CA or client certificate, a key without its certificate
        raise UpdateError(f"cannot set up the update client: {exc}", kind=FailureKind.NETWORK) from exc


def _string(message: dict[str, object], name: str) -> str:
    value = message.get(name)
    if not isinstance(value, str) or not value:
        raise ProtocolError(f"{message.get('op')} needs {name}")
    return value


def _answer(client: UpdateClient, message: dict[str, object]) -> object:
    op = message.get("op")
    if op == "refresh":
        client.refresh()
        return None
    if op == "lookup":
        found = client.lookup_path(_string(message, "path"))
        return found.to_json() if found is not None else None
    if op == "download":
        try:
            target = TargetInfo.from_json(message.get("target"))
        except ValueError as exc:
            raise ProtocolError(str(exc)) from None
        return str(client.download(target, Path(_string(message, "staging_dir"))))
    raise ProtocolError(f"unknown operation {op!r}")


def serve(reader: BinaryIO, writer: BinaryIO, *, log_level: int = logging.INFO) -> int:
    """Answer requests from ``reader`` on ``writer`` until ``close`` or the end of input; the exit status. The
    log level is the agent's (``log_level`` of ``open``) once opened."""
    channel = _Channel(writer)
    root = logging.getLogger()
    root.handlers[:] = [_LogLines(channel)]
    root.setLevel(log_level)
    client: UpdateClient | None = None
    try:
        while line := reader.readline():
            try:
                message = decode(line)
                op = message.get("op")
                if op == "close":
                    channel.send({"ok": True, "result": None})
                    return EXIT_OK
                if client is None:
                    if op != "open":
                        raise ProtocolError("the first request must be open")
                    opened = _open(HelperConfig.from_json(message.get("config")))
                    level = message.get("log_level")
                    if isinstance(level, int) and not isinstance(level, bool):
                        root.setLevel(level)
                    opened.__enter__()  # the metadata lock, held until the helper exits
                    client = opened
                    channel.send({"ok": True, "result": None})
                    continue
                result = _answer(client, message)
            except ProtocolError as exc:
                channel.send({"ok": False, "protocol_error": str(exc)})
                return EXIT_PROTOCOL
            except UpdateError as exc:
                skew = client.clock_skew() if client is not None else None
                channel.send({"ok": False, "error": error_to_wire(exc), "clock_skew": skew})
                continue
            channel.send({"ok": True, "result": result, "clock_skew": client.clock_skew()})
        return EXIT_OK
    finally:
        if client is not None:
            client.__exit__(None, None, None)
