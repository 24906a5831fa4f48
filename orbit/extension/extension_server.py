"""orbit as an osquery extension: register table plugins with osqueryd's extension manager and answer its calls.

The life cycle, repeated until ``stop`` is set:

1. wait for the manager socket (``--extensions_socket``) to exist and answer ``ping`` (polling every ``poll`` s; a
   warning after ``socket_wait`` s, then keep waiting — osqueryd may be slow, restarting or updating);
2. ``registerExtension`` with a ``table`` registry (one route per plugin); a refusal such as "Duplicate extension
   registered" (osqueryd has not yet noticed our previous instance is gone) is retried after ``retry_delay`` s;
3. serve the ``Extension`` service on ``<extensions_socket>.<uuid>`` (``ping``, ``call``, ``shutdown``);
4. watch the manager: its socket vanishing or being replaced (a restarted osqueryd binds a new one), a failing
   ``extensions()`` call, our uuid missing from its answer, or a ``shutdown`` call all mean osqueryd lost us —
   close our socket and go back to 1.

On ``stop`` the extension deregisters (best effort, bounded) and removes its socket. Unlike osquery-go's server,
osqueryd going away never ends ``run``; orbit's supervisor restarts osqueryd and the tables come back by themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Sequence
from pathlib import Path
from typing import TypeVar

from orbit.extension.extension_client import ManagerClient
from orbit.extension.orbit_tables import TablePlugin, answer_table_call, table_route
from orbit.extension.osquery_api import (
    EXT_FAILED,
    EXT_SUCCESS,
    ExtensionInfo,
    ExtensionResponse,
    ExtensionStatus,
    PluginCall,
    response_result,
    status_result,
    void_result,
)
from orbit.extension.thrift_codec import (
    ApplicationError,
    Message,
    MessageType,
    ThriftProtocolError,
    Writer,
    encode_message,
)
from orbit.extension.thrift_socket import MessageStream, ThriftTransportError
from orbit.version import orbit_version

log = logging.getLogger(__name__)

DEFAULT_NAME = "com.fleetdm.orbit.osquery_extension.v1"
IDLE_CONNECTION_TIMEOUT = 30.0
STOP_DEREGISTER_TIMEOUT = 1.0

T = TypeVar("T")


def _socket_identity(path: Path) -> tuple[int, int, int] | None:
    """Which socket file is at ``path``: a restarted osqueryd unlinks and binds anew, often reusing the inode
    number, so the change time (set when the file is created) is part of the identity."""
    try:
        info = path.stat()
    except OSError:
        return None
    return (info.st_dev, info.st_ino, info.st_ctime_ns)


class ExtensionServer:
    def __init__(
        self,
        socket_path: Path,
        tables: Sequence[TablePlugin],
        *,
        name: str = DEFAULT_NAME,
        version: str = "",
        socket_wait: float = 60.0,
        poll: float = 0.2,
        ping_interval: float = 5.0,
        call_timeout: float = 5.0,
        retry_delay: float = 1.0,
    ) -> None:
        names = [table.name for table in tables]
        if len(set(names)) != len(names):
            raise ValueError(f"table plugin names must be unique: {names}")
        self.socket_path = socket_path
        self.tables = {table.name: table for table in tables}
        self.info = ExtensionInfo(name=name, version=version or orbit_version())
        self.socket_wait = socket_wait
        self.poll = poll
        self.ping_interval = ping_interval
        self.retry_delay = retry_delay
        self.manager = ManagerClient(socket_path, timeout=call_timeout)
        self._uuid: int | None = None
        self._stop = asyncio.Event()
        self._lost = asyncio.Event()

    @property
    def registered(self) -> bool:
        return self._uuid is not None

    @property
    def uuid(self) -> int | None:
        return self._uuid

    def extension_socket(self, uuid: int) -> Path:
        return Path(f"{self.socket_path}.{uuid}")

    # --- life cycle ---------------------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        self._stop = stop
        while not stop.is_set():
            if not await self._wait_for_manager():
                return
            uuid = await self._register()
            if uuid is None:
                await self._sleep(self.retry_delay)
                continue
            await self._serve(uuid)

    async def _wait_for_manager(self) -> bool:
        """True once the manager answers a ping; False when stopped first."""
        started = time.monotonic()
        warned = False
        while not self._stop.is_set():
            if self.socket_path.exists():
                try:
                    status = await self._unless_stopped(self.manager.ping())
                except (ThriftTransportError, ApplicationError) as exc:
                    log.debug("event=extension_manager_not_ready path=%s error=%s", self.socket_path, exc)
                else:
                    if status is not None:
                        return True
            if not warned and time.monotonic() - started >= self.socket_wait:
                log.warning(
                    "event=extension_socket_unavailable path=%s waited_s=%.0f (still waiting)",
                    self.socket_path,
                    self.socket_wait,
                )
                warned = True
            await self._sleep(self.poll)
        return False

    def _registry(self) -> dict[str, dict[str, list[dict[str, str]]]]:
        return {"table": {name: table_route(table) for name, table in self.tables.items()}}

    async def _register(self) -> int | None:
        try:
            status = await self._unless_stopped(self.manager.register(self.info, self._registry()))
        except (ThriftTransportError, ApplicationError) as exc:
            log.warning("event=extension_register_failed error=%s", exc)
            return None
        if status is None:
            return None
        if not status.ok:
            log.warning("event=extension_register_refused code=%d message=%r", status.code, status.message)
            return None
        log.info(
            "event=extension_registered name=%s uuid=%d tables=%s", self.info.name, status.uuid, ",".join(self.tables)
        )
        return status.uuid

    async def _serve(self, uuid: int) -> None:
        path = self.extension_socket(uuid)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        try:
            server = await asyncio.start_unix_server(self._handle_connection, path=str(path))
        except OSError as exc:
            log.error("event=extension_socket_failed path=%s error=%s", path, exc.strerror)
            await self._deregister(uuid)
            await self._sleep(self.retry_delay)
            return
        with contextlib.suppress(OSError):
            os.chmod(path, 0o600)
        manager_identity = _socket_identity(self.socket_path)
        self._lost.clear()
        self._uuid = uuid
        try:
            await self._watch_manager(uuid, manager_identity)
        finally:
            self._uuid = None
            server.close()
            with contextlib.suppress(OSError):
                path.unlink()
            if self._stop.is_set():
                await self._deregister(uuid)

    async def _watch_manager(self, uuid: int, manager_identity: tuple[int, int, int] | None) -> None:
        last_check = time.monotonic()
        while not self._stop.is_set():
            if self._lost.is_set():
                log.info("event=extension_manager_shutdown uuid=%d", uuid)
                return
            if _socket_identity(self.socket_path) != manager_identity:
                log.info("event=extension_manager_gone reason=socket_replaced_or_removed uuid=%d", uuid)
                return
            if time.monotonic() - last_check >= self.ping_interval:
                try:
                    listed = await self._unless_stopped(self.manager.extensions())
                except (ThriftTransportError, ApplicationError) as exc:
                    log.info("event=extension_manager_gone reason=unreachable uuid=%d error=%s", uuid, exc)
                    return
                if listed is not None and uuid not in listed:
                    log.info("event=extension_manager_gone reason=not_registered uuid=%d", uuid)
                    return
                last_check = time.monotonic()
            await self._sleep(self.poll, self._lost)

    async def _deregister(self, uuid: int) -> None:
        client = ManagerClient(self.socket_path, timeout=STOP_DEREGISTER_TIMEOUT)
        try:
            status = await client.deregister(uuid)
        except (ThriftTransportError, ApplicationError) as exc:
            log.debug("event=extension_deregister_failed uuid=%d error=%s", uuid, exc)
            return
        log.info("event=extension_deregistered uuid=%d code=%d", uuid, status.code)

    # --- serving osqueryd's calls ---------------------------------------------------------------------------------

    async def _handle_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        stream = MessageStream(reader, writer)
        try:
            while True:
                message = await asyncio.wait_for(stream.read(), IDLE_CONNECTION_TIMEOUT)
                if message is None:
                    return
                reply = await self._dispatch(message)
                if reply is not None:
                    await stream.send(reply)
        except (ThriftProtocolError, TimeoutError, OSError) as exc:
            log.debug("event=extension_connection_dropped error=%s", exc)
        finally:
            await stream.close()

    async def _dispatch(self, message: Message) -> bytes | None:
        if message.type not in (MessageType.CALL, MessageType.ONEWAY):
            error = ApplicationError(ApplicationError.INVALID_MESSAGE_TYPE, f"unexpected message type {message.type}")
            return self._exception(message, error)
        uuid = self._uuid or 0
        result: Writer
        if message.name == "ping":
            result = status_result(ExtensionStatus(EXT_SUCCESS, "OK", uuid))
        elif message.name == "call":
            result = response_result(await self._call(PluginCall.from_args(message.body), uuid))
        elif message.name == "shutdown":
            log.info("event=extension_shutdown_requested uuid=%d", uuid)
            self._lost.set()
            result = void_result()
        else:
            error = ApplicationError(ApplicationError.UNKNOWN_METHOD, f"Invalid method name: '{message.name}'")
            return self._exception(message, error)
        if message.type is MessageType.ONEWAY:
            return None
        return encode_message(message.name, MessageType.REPLY, message.seqid, result)

    @staticmethod
    def _exception(message: Message, error: ApplicationError) -> bytes:
        body = Writer()
        error.write(body)
        return encode_message(message.name, MessageType.EXCEPTION, message.seqid, body)

    async def _call(self, request: PluginCall, uuid: int) -> ExtensionResponse:
        if request.registry != "table":
            return ExtensionResponse(ExtensionStatus(EXT_FAILED, f"Unknown registry: {request.registry}", uuid))
        table = self.tables.get(request.item)
        if table is None:
            return ExtensionResponse(ExtensionStatus(EXT_FAILED, f"Unknown registry item: {request.item}", uuid))
        try:
            return await asyncio.to_thread(answer_table_call, table, request.request, uuid)
        except Exception as exc:
            log.exception("event=extension_table_failed table=%s", table.name)
            return ExtensionResponse(ExtensionStatus(EXT_FAILED, f"{table.name}: {exc}", uuid))

    # --- waiting that honours stop ------------------------------------------------------------------------------------

    async def _sleep(self, seconds: float, wake: asyncio.Event | None = None) -> None:
        waiters = [asyncio.ensure_future(self._stop.wait())]
        if wake is not None:
            waiters.append(asyncio.ensure_future(wake.wait()))
        try:
            await asyncio.wait(waiters, timeout=max(seconds, 0.0), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    async def _unless_stopped(self, work: Awaitable[T]) -> T | None:
        """``work``'s result, or None when ``stop`` was set first (``work`` is then cancelled)."""
        task = asyncio.ensure_future(work)
        stopper = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if task.done():
                return task.result()
            return None
        finally:
            stopper.cancel()
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
