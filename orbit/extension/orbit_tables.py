"""The table plugins orbit registers with osqueryd: ``orbit_info`` and ``fleetd_logs``, plus how any table plugin
answers osquery's ``call("table", <name>, {"action": ...})``.

A table plugin is a name, its columns (all reported to osquery as TEXT) and ``generate()``; the route osquery
receives at registration is one ``{"id": "column", "name", "type": "TEXT", "op": "0"}`` map per column. A row's
missing columns are sent as empty strings, extra keys are dropped, so osquery always sees the declared columns.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Protocol

from orbit.extension.log_ring import FLEETD_LOG_COLUMNS, RingBufferLogHandler
from orbit.extension.osquery_api import EXT_FAILED, EXT_SUCCESS, ExtensionResponse, ExtensionStatus

ORBIT_INFO_COLUMNS: tuple[str, ...] = (
    "version",
    "device_auth_token",
    "enrolled",
    "last_recorded_error",
    "orbit_channel",
    "osqueryd_channel",
    "desktop_channel",
    "desktop_version",
    "uptime",
    "scripts_enabled",
    "update_url",
)


class TablePlugin(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def columns(self) -> tuple[str, ...]: ...

    def generate(self) -> list[dict[str, str]]: ...


def table_route(table: TablePlugin) -> list[dict[str, str]]:
    """The route info osquery's ``TablePlugin::routeInfo`` sends: one column description per column."""
    return [{"id": "column", "name": column, "type": "TEXT", "op": "0"} for column in table.columns]


def shaped_rows(table: TablePlugin, rows: list[dict[str, str]]) -> tuple[dict[str, str], ...]:
    return tuple({column: str(row.get(column, "")) for column in table.columns} for row in rows)


def answer_table_call(table: TablePlugin, request: Mapping[str, str], uuid: int) -> ExtensionResponse:
    """The answer to one ``call`` for ``table`` (``generate`` may raise; the caller turns that into a status)."""
    action = request.get("action", "")
    if action == "generate":
        return ExtensionResponse(ExtensionStatus(EXT_SUCCESS, "OK", uuid), shaped_rows(table, table.generate()))
    if action == "columns":
        return ExtensionResponse(ExtensionStatus(EXT_SUCCESS, "OK", uuid), tuple(table_route(table)))
    return ExtensionResponse(ExtensionStatus(EXT_FAILED, f"Unknown table plugin action: {action}", uuid))


class OrbitInfoTable:
    """``orbit_info``: one row from ``provider`` (a mapping of column → value; missing columns are empty)."""

    name = "orbit_info"
    columns = ORBIT_INFO_COLUMNS

    def __init__(self, provider: Callable[[], Mapping[str, str]]) -> None:
        self._provider = provider

    def generate(self) -> list[dict[str, str]]:
        values = self._provider()
        return [{column: str(values.get(column, "")) for column in self.columns}]


class FleetdLogsTable:
    """``fleetd_logs``: the most recent log records orbit kept in memory, oldest first."""

    name = "fleetd_logs"
    columns = FLEETD_LOG_COLUMNS

    def __init__(self, buffer: RingBufferLogHandler) -> None:
        self._buffer = buffer

    def generate(self) -> list[dict[str, str]]:
        return self._buffer.rows()
