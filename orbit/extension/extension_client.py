"""A client of osqueryd's extension manager (the ``ExtensionManager`` service on ``--extensions_socket``).

Each method is one round trip on a fresh connection with a timeout. Transport failures raise
``ThriftTransportError``; a Thrift exception from the manager raises ``ApplicationError``; a status with a non-zero
code is returned as is (the caller decides — e.g. "Duplicate extension registered" is worth retrying).
"""

from __future__ import annotations

from pathlib import Path

from orbit.extension.osquery_api import (
    ExtensionInfo,
    ExtensionResponse,
    ExtensionStatus,
    Registry,
    call_args,
    extension_list,
    no_args,
    option_values,
    register_args,
    sql_args,
    uuid_args,
)
from orbit.extension.thrift_codec import Struct, Value, Writer
from orbit.extension.thrift_socket import call

DEFAULT_TIMEOUT = 5.0


def _struct(value: Value | None) -> Struct:
    return value if isinstance(value, Struct) else Struct()


class ManagerClient:
    def __init__(self, socket_path: Path, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.socket_path = socket_path
        self.timeout = timeout

    async def _call(self, method: str, args: Writer) -> Value | None:
        return await call(self.socket_path, method, args, timeout=self.timeout)

    async def ping(self) -> ExtensionStatus:
        return ExtensionStatus.from_struct(_struct(await self._call("ping", no_args())))

    async def extensions(self) -> dict[int, ExtensionInfo]:
        return extension_list(await self._call("extensions", no_args()))

    async def options(self) -> dict[str, str]:
        return option_values(await self._call("options", no_args()))

    async def register(self, info: ExtensionInfo, registry: Registry) -> ExtensionStatus:
        return ExtensionStatus.from_struct(
            _struct(await self._call("registerExtension", register_args(info, registry)))
        )

    async def deregister(self, uuid: int) -> ExtensionStatus:
        return ExtensionStatus.from_struct(_struct(await self._call("deregisterExtension", uuid_args(uuid))))

    async def query(self, sql: str) -> ExtensionResponse:
        return ExtensionResponse.from_struct(_struct(await self._call("query", sql_args(sql))))

    async def get_query_columns(self, sql: str) -> ExtensionResponse:
        return ExtensionResponse.from_struct(_struct(await self._call("getQueryColumns", sql_args(sql))))

    async def call(self, registry: str, item: str, request: dict[str, str]) -> ExtensionResponse:
        """``Extension.call`` on the manager itself (osqueryd's own registry plugins)."""
        return ExtensionResponse.from_struct(_struct(await self._call("call", call_args(registry, item, request))))
