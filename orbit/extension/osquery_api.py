"""osquery's extension API (``osquery/extensions/thrift/osquery.thrift``) as orbit uses it: names, ids, values.

Two services share one wire format. ``Extension`` (``ping``, ``call``, ``shutdown``) is what every extension serves
on ``<extensions_socket>.<uuid>`` and what osqueryd calls; ``ExtensionManager`` extends it with ``extensions``,
``options``, ``registerExtension``, ``deregisterExtension``, ``query`` and ``getQueryColumns`` and is served by
osqueryd on ``--extensions_socket``. A call's arguments are a struct with the IDL's field ids; a reply is a struct
whose field 0 holds the return value (absent for ``void``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from orbit.extension.thrift_codec import (
    MapValue,
    Struct,
    TType,
    Value,
    Writer,
    as_string_map,
    as_string_map_list,
    field_int,
    field_str,
    field_struct,
)

EXT_SUCCESS = 0
EXT_FAILED = 1
EXT_FATAL = 2

# ExtensionRegistry = map<registry, map<item, ExtensionPluginResponse (the route: list<map<string,string>>)>>
Registry = Mapping[str, Mapping[str, Sequence[Mapping[str, str]]]]


@dataclass(frozen=True)
class ExtensionStatus:
    """``struct ExtensionStatus {1:i32 code, 2:string message, 3:i64 uuid}``."""

    code: int
    message: str
    uuid: int = 0

    @property
    def ok(self) -> bool:
        return self.code == EXT_SUCCESS

    def write(self, writer: Writer) -> None:
        writer.field(1, TType.I32)
        writer.i32(self.code)
        writer.field(2, TType.STRING)
        writer.string(self.message)
        writer.field(3, TType.I64)
        writer.i64(self.uuid)
        writer.stop()

    @classmethod
    def from_struct(cls, body: Struct) -> ExtensionStatus:
        return cls(field_int(body, 1), field_str(body, 2), field_int(body, 3))


@dataclass(frozen=True)
class ExtensionResponse:
    """``struct ExtensionResponse {1:ExtensionStatus status, 2:list<map<string,string>> response}``."""

    status: ExtensionStatus
    rows: tuple[Mapping[str, str], ...] = ()

    def write(self, writer: Writer) -> None:
        writer.field(1, TType.STRUCT)
        self.status.write(writer)
        writer.field(2, TType.LIST)
        writer.string_map_list(self.rows)
        writer.stop()

    @classmethod
    def from_struct(cls, body: Struct) -> ExtensionResponse:
        status = ExtensionStatus.from_struct(field_struct(body, 1))
        return cls(status, tuple(as_string_map_list(body.fields.get(2))))


@dataclass(frozen=True)
class ExtensionInfo:
    """``struct InternalExtensionInfo {1:name, 2:version, 3:sdk_version, 4:min_sdk_version}`` (all strings)."""

    name: str
    version: str = ""
    sdk_version: str = ""
    min_sdk_version: str = ""

    def write(self, writer: Writer) -> None:
        for field_id, text in enumerate((self.name, self.version, self.sdk_version, self.min_sdk_version), start=1):
            writer.field(field_id, TType.STRING)
            writer.string(text)
        writer.stop()

    @classmethod
    def from_struct(cls, body: Struct) -> ExtensionInfo:
        return cls(field_str(body, 1), field_str(body, 2), field_str(body, 3), field_str(body, 4))


@dataclass(frozen=True)
class PluginCall:
    """The arguments of ``Extension.call(1:string registry, 2:string item, 3:map<string,string> request)``."""

    registry: str
    item: str
    request: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_args(cls, args: Struct) -> PluginCall:
        return cls(field_str(args, 1), field_str(args, 2), as_string_map(args.fields.get(3)))


# --- argument structs -------------------------------------------------------------------------------------------


def no_args() -> Writer:
    writer = Writer()
    writer.stop()
    return writer


def call_args(registry: str, item: str, request: Mapping[str, str]) -> Writer:
    writer = Writer()
    writer.field(1, TType.STRING)
    writer.string(registry)
    writer.field(2, TType.STRING)
    writer.string(item)
    writer.field(3, TType.MAP)
    writer.string_map(request)
    writer.stop()
    return writer


def register_args(info: ExtensionInfo, registry: Registry) -> Writer:
    writer = Writer()
    writer.field(1, TType.STRUCT)
    info.write(writer)
    writer.field(2, TType.MAP)
    writer.map_begin(TType.STRING, TType.MAP, len(registry))
    for registry_name, items in registry.items():
        writer.string(registry_name)
        writer.map_begin(TType.STRING, TType.LIST, len(items))
        for item_name, route in items.items():
            writer.string(item_name)
            writer.string_map_list(route)
    writer.stop()
    return writer


def uuid_args(uuid: int) -> Writer:
    writer = Writer()
    writer.field(1, TType.I64)
    writer.i64(uuid)
    writer.stop()
    return writer


def sql_args(sql: str) -> Writer:
    writer = Writer()
    writer.field(1, TType.STRING)
    writer.string(sql)
    writer.stop()
    return writer


# --- result structs (field 0 = success) ------------------------------------------------------------------------------


def status_result(status: ExtensionStatus) -> Writer:
    writer = Writer()
    writer.field(0, TType.STRUCT)
    status.write(writer)
    writer.stop()
    return writer


def response_result(response: ExtensionResponse) -> Writer:
    writer = Writer()
    writer.field(0, TType.STRUCT)
    response.write(writer)
    writer.stop()
    return writer


def void_result() -> Writer:
    return no_args()


def extension_list(value: Value | None) -> dict[int, ExtensionInfo]:
    """The return value of ``extensions()``: ``map<i64 uuid, InternalExtensionInfo>``."""
    if not isinstance(value, MapValue):
        return {}
    return {
        uuid: ExtensionInfo.from_struct(info)
        for uuid, info in value.items
        if isinstance(uuid, int) and not isinstance(uuid, bool) and isinstance(info, Struct)
    }


def option_values(value: Value | None) -> dict[str, str]:
    """The current values from ``options()``: ``map<string, InternalOptionInfo {1:value, 2:default_value, 3:type}>``."""
    if not isinstance(value, MapValue):
        return {}
    return {
        name: field_str(info, 1) for name, info in value.items if isinstance(name, str) and isinstance(info, Struct)
    }
