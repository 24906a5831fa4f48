"""The sim's extension manager: osquery's ``ExtensionManager`` Thrift service on ``--extensions_socket``.

Like osqueryd's ``TThreadedServer`` it runs on its own threads (one per connection), independent of the daemon's
event loop, and speaks the binary protocol over an unframed Unix stream socket. It serves ``ping``, ``call``,
``shutdown``, ``extensions``, ``options``, ``registerExtension``, ``deregisterExtension`` and ``query``
(``getQueryColumns`` answers that the sim does not support it); any other method gets Thrift's "Invalid method
name" exception, and bytes that are not a message end that connection only.

An extension registered here serves the ``Extension`` service on ``<extensions_socket>.<uuid>``. The sim calls it
there: ``call("table", <table>, {"action": "generate", "context": ...})`` whenever a query reads one of its tables
(``generate``; the database asks), and ``ping`` every ``--extensions_interval`` seconds from a watcher thread — an
extension whose socket is missing (after ``--extensions_timeout`` seconds of grace for a new one) or which does
not answer is deregistered, which drops its tables (osquery's ``ExtensionManagerWatcher``). When the manager stops,
each extension is asked to ``shutdown`` and the manager's and extensions' sockets are removed.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import re
import socket
import socketserver
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from osquery_sim.extension_registry import (
    Broadcast,
    ExtensionInfo,
    ExtensionRegistry,
    ExternalTable,
    RegistrationRefused,
)
from osquery_sim.thrift_wire import (
    CALL,
    EXCEPTION,
    INTERNAL_ERROR,
    INVALID_MESSAGE_TYPE,
    ONEWAY,
    REPLY,
    STRING_MAP,
    STRING_MAP_LIST,
    T_I32,
    T_I64,
    T_STRING,
    T_STRUCT,
    UNKNOWN_METHOD,
    Envelope,
    Field,
    Fields,
    MapOf,
    Pairs,
    PeerClosed,
    SocketSource,
    WireError,
    application_exception,
    encode_message,
    integer,
    read_message,
    string_map,
    string_map_list,
    substruct,
    text,
)

log = logging.getLogger(__name__)

EXT_SUCCESS = 0
EXT_FAILED = 1

QueryFunction = Callable[[str], list[dict[str, str]]]
OptionsFunction = Callable[[], Mapping[str, tuple[str, str, str]]]  # name → (value, default_value, type)


class ExtensionUnavailable(Exception):
    """An extension's socket is missing, refused, silent, or answered with something unusable."""


class ExternalTableError(Exception):
    """An extension answered a table call with a failure status."""


@dataclass(frozen=True)
class ManagerSettings:
    socket_path: Path
    interval: float = 3.0  # --extensions_interval: seconds between pings of each extension
    timeout: float = 3.0  # --extensions_timeout: grace for a new extension's socket to appear
    call_timeout: float = 5.0  # bound on one call to an extension
    idle_timeout: float = 30.0  # a client connection silent this long is closed


def _status(code: int, message: str, uuid: int = 0) -> list[Field]:
    return [(1, T_I32, code), (2, T_STRING, message), (3, T_I64, uuid)]


def _response(code: int, message: str, rows: list[dict[str, str]], uuid: int = 0) -> list[Field]:
    return [(1, T_STRUCT, _status(code, message, uuid)), (2, STRING_MAP_LIST, rows)]


def _broadcast(value: object) -> Broadcast:
    """``ExtensionRegistry`` (map<string, map<string, list<map<string,string>>>>) from decoded wire values."""
    registries: dict[str, dict[str, list[dict[str, str]]]] = {}
    if not isinstance(value, Pairs):
        return registries
    for registry_name, items in value:
        if not isinstance(registry_name, str) or not isinstance(items, Pairs):
            continue
        routes = registries.setdefault(registry_name, {})
        for item_name, route in items:
            if isinstance(item_name, str):
                routes[item_name] = string_map_list(route)
    return registries


_STALE_SOCKET = re.compile(r"\.\d+$")


def remove_stale_extension_sockets(manager_path: Path) -> None:
    """osquery's ``removeStalePaths``: every ``<manager>.<uuid>`` left behind by earlier extensions."""
    with contextlib.suppress(OSError):
        for candidate in manager_path.parent.glob(manager_path.name + ".*"):
            if _STALE_SOCKET.fullmatch(candidate.name[len(manager_path.name) :]) and candidate.is_socket():
                with contextlib.suppress(OSError):
                    candidate.unlink()


class _ThreadedUnixServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    block_on_close = False
    manager: ExtensionManager


class _ConnectionHandler(socketserver.BaseRequestHandler):
    server: _ThreadedUnixServer

    def handle(self) -> None:
        sock: socket.socket = self.request
        manager = self.server.manager
        sock.settimeout(manager.settings.idle_timeout)
        source = SocketSource(sock)
        while True:
            try:
                source.wait_for_message()
                envelope = read_message(source)
            except PeerClosed:
                return
            except (WireError, OSError) as exc:
                log.info("event=extension_client_dropped reason=%r", str(exc) or type(exc).__name__)
                return
            reply = manager.dispatch(envelope)
            if reply is None:
                continue
            try:
                sock.sendall(reply)
            except OSError:
                return


class ExtensionManager:
    def __init__(
        self,
        settings: ManagerSettings,
        registry: ExtensionRegistry,
        *,
        query: QueryFunction | None = None,
        options: OptionsFunction | None = None,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self._query = query
        self._options = options
        self._server: _ThreadedUnixServer | None = None
        self._threads: list[threading.Thread] = []
        self._closing = threading.Event()
        self._sequence = itertools.count(1)

    # --- life cycle -----------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Bind the manager socket and start serving and watching; raises OSError when the socket cannot be bound."""
        path = self.settings.socket_path
        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        remove_stale_extension_sockets(path)
        server = _ThreadedUnixServer(str(path), _ConnectionHandler)
        server.manager = self
        self._server = server
        self._threads = [
            threading.Thread(
                target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="ext-manager", daemon=True
            ),
            threading.Thread(target=self._watch, name="ext-watcher", daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        log.info("event=extension_manager_started path=%s", path)

    def close(self) -> None:
        """Stop serving, then ask every extension to shut down (osquery's order: the manager is gone first, so an
        extension cannot register again in between) and remove the sockets."""
        self._closing.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        with contextlib.suppress(OSError):
            self.settings.socket_path.unlink()
        for registration in self.registry.registrations():
            try:
                self._call_extension(registration.uuid, "shutdown", [], timeout=1.0)
            except ExtensionUnavailable as exc:
                log.debug("event=extension_shutdown_failed uuid=%d error=%s", registration.uuid, exc)
            self.registry.deregister(registration.uuid)
        for thread in self._threads:
            thread.join(5)
        remove_stale_extension_sockets(self.settings.socket_path)

    def extension_socket(self, uuid: int) -> Path:
        return Path(f"{self.settings.socket_path}.{uuid}")

    # --- what the database asks -----------------------------------------------------------------------------------

    def external_tables(self) -> Mapping[str, ExternalTable]:
        return self.registry.tables()

    def generate(self, table: ExternalTable) -> list[dict[str, str]]:
        """The rows of ``table`` from its extension; raises ExtensionUnavailable or ExternalTableError."""
        names = table.column_names
        context = {"constraints": [], "colsUsed": list(names), "colsUsedBitset": (1 << len(names)) - 1}
        request = {"action": "generate", "context": json.dumps(context, separators=(",", ":"))}
        reply = self._call_extension(
            table.owner_uuid,
            "call",
            [(1, T_STRING, "table"), (2, T_STRING, table.name), (3, STRING_MAP, request)],
            timeout=self.settings.call_timeout,
        )
        result = substruct(reply, 0)
        status = substruct(result, 1)
        if integer(status, 1) != EXT_SUCCESS:
            raise ExternalTableError(text(status, 2) or f"extension table {table.name} failed")
        return string_map_list(result.get(2))

    # --- the watcher ------------------------------------------------------------------------------------------------

    def _watch(self) -> None:
        while not self._closing.wait(self.settings.interval):
            self.check_extensions()

    def check_extensions(self) -> None:
        """Ping every registered extension once; deregister those that are gone."""
        now = time.monotonic()
        for registration in self.registry.registrations():
            path = self.extension_socket(registration.uuid)
            if not path.exists() and now - registration.registered_at < self.settings.timeout:
                continue  # a new extension may still be opening its socket
            try:
                reply = self._call_extension(registration.uuid, "ping", [], timeout=self.settings.call_timeout)
                status = substruct(reply, 0)
                healthy = integer(status, 1) == EXT_SUCCESS
            except ExtensionUnavailable as exc:
                log.debug("event=extension_ping_failed uuid=%d error=%s", registration.uuid, exc)
                healthy = False
            if not healthy and self.registry.deregister(registration.uuid) is not None:
                log.info(
                    "event=extension_gone uuid=%d name=%s tables=%s",
                    registration.uuid,
                    registration.info.name,
                    ",".join(t.name for t in registration.tables),
                )

    # --- calling an extension ---------------------------------------------------------------------------------------

    def _call_extension(self, uuid: int, method: str, args: list[Field], *, timeout: float) -> Fields:
        """One call on the extension's own socket; the reply struct (field 0 = return value)."""
        path = self.extension_socket(uuid)
        seqid = next(self._sequence) & 0x7FFFFFFF
        deadline = time.monotonic() + timeout
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(timeout)
                sock.connect(str(path))
                sock.sendall(encode_message(method, CALL, seqid, args))
                envelope = read_message(SocketSource(sock, deadline=deadline))
        except (OSError, WireError) as exc:
            raise ExtensionUnavailable(f"{method} on {path}: {exc}") from None
        if envelope.kind == EXCEPTION:
            raise ExtensionUnavailable(f"{method} on {path}: {text(envelope.fields, 1)}")
        if envelope.kind != REPLY or envelope.name != method or envelope.seqid != seqid:
            raise ExtensionUnavailable(f"{method} on {path}: unexpected reply {envelope.name!r} ({envelope.kind})")
        return envelope.fields

    # --- serving the manager API ------------------------------------------------------------------------------------

    def dispatch(self, envelope: Envelope) -> bytes | None:
        """The reply to one message (None for a oneway call)."""
        if envelope.kind not in (CALL, ONEWAY):
            error = application_exception(f"unexpected message type {envelope.kind}", INVALID_MESSAGE_TYPE)
            return encode_message(envelope.name, EXCEPTION, envelope.seqid, error)
        handler = self._handlers.get(envelope.name)
        if handler is None:
            error = application_exception(f"Invalid method name: '{envelope.name}'", UNKNOWN_METHOD)
            return encode_message(envelope.name, EXCEPTION, envelope.seqid, error)
        try:
            reply = encode_message(envelope.name, REPLY, envelope.seqid, handler(self, envelope.fields))
        except Exception as exc:
            log.exception("event=extension_manager_call_failed method=%s", envelope.name)
            error = application_exception(f"{envelope.name}: {exc}", INTERNAL_ERROR)
            reply = encode_message(envelope.name, EXCEPTION, envelope.seqid, error)
        return None if envelope.kind == ONEWAY else reply

    def _rpc_ping(self, _args: Fields) -> list[Field]:
        return [(0, T_STRUCT, _status(EXT_SUCCESS, "pong"))]

    def _rpc_shutdown(self, _args: Fields) -> list[Field]:
        return []  # "does not apply to managers"

    def _rpc_extensions(self, _args: Fields) -> list[Field]:
        listing = {
            uuid: [
                (1, T_STRING, info.name),
                (2, T_STRING, info.version),
                (3, T_STRING, info.sdk_version),
                (4, T_STRING, info.min_sdk_version),
            ]
            for uuid, info in self.registry.extensions().items()
        }
        return [(0, MapOf(T_I64, T_STRUCT), listing)]

    def _rpc_options(self, _args: Fields) -> list[Field]:
        options = self._options() if self._options is not None else {}
        listing = {
            name: [(1, T_STRING, value), (2, T_STRING, default), (3, T_STRING, kind)]
            for name, (value, default, kind) in options.items()
        }
        return [(0, MapOf(T_STRING, T_STRUCT), listing)]

    def _rpc_register(self, args: Fields) -> list[Field]:
        raw_info = substruct(args, 1)
        info = ExtensionInfo(text(raw_info, 1), text(raw_info, 2), text(raw_info, 3), text(raw_info, 4))
        try:
            registration = self.registry.register(info, _broadcast(args.get(2)))
        except RegistrationRefused as exc:
            log.warning("event=extension_refused name=%s reason=%r", info.name, exc.message)
            return [(0, T_STRUCT, _status(EXT_FAILED, exc.message))]
        log.info(
            "event=extension_registered uuid=%d name=%s version=%s sdk=%s tables=%s",
            registration.uuid,
            info.name,
            info.version,
            info.sdk_version,
            ",".join(t.name for t in registration.tables),
        )
        return [(0, T_STRUCT, _status(EXT_SUCCESS, "OK", registration.uuid))]

    def _rpc_deregister(self, args: Fields) -> list[Field]:
        uuid = integer(args, 1)
        removed = self.registry.deregister(uuid)
        if removed is None:
            return [(0, T_STRUCT, _status(EXT_FAILED, "No extension UUID registered"))]
        log.info("event=extension_deregistered uuid=%d name=%s", uuid, removed.info.name)
        return [(0, T_STRUCT, _status(EXT_SUCCESS, "", uuid))]

    def _rpc_query(self, args: Fields) -> list[Field]:
        if self._query is None:
            return [(0, T_STRUCT, _response(EXT_FAILED, "queries are not available", []))]
        try:
            rows = self._query(text(args, 1))
        except Exception as exc:
            return [(0, T_STRUCT, _response(EXT_FAILED, str(exc), []))]
        return [(0, T_STRUCT, _response(EXT_SUCCESS, "OK", rows))]

    def _rpc_query_columns(self, _args: Fields) -> list[Field]:
        return [(0, T_STRUCT, _response(EXT_FAILED, "getQueryColumns is not supported by osqueryd-sim", []))]

    def _rpc_call(self, args: Fields) -> list[Field]:
        """``call`` on the manager reaches the sim's own registry: table plugins can be generated by name."""
        registry, item, request = text(args, 1), text(args, 2), string_map(args.get(3))
        if registry == "table" and request.get("action") == "generate" and self._query is not None:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", item):
                return [(0, T_STRUCT, _response(EXT_FAILED, f"Cannot call registry item: {item}", []))]
            return self._rpc_query(Fields({1: f"SELECT * FROM {item}"}))
        return [(0, T_STRUCT, _response(EXT_FAILED, f"Cannot call registry item: {registry}/{item}", []))]

    _handlers: Mapping[str, Callable[[ExtensionManager, Fields], list[Field]]] = {
        "ping": _rpc_ping,
        "call": _rpc_call,
        "shutdown": _rpc_shutdown,
        "extensions": _rpc_extensions,
        "options": _rpc_options,
        "registerExtension": _rpc_register,
        "deregisterExtension": _rpc_deregister,
        "query": _rpc_query,
        "getQueryColumns": _rpc_query_columns,
    }
