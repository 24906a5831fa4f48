"""orbit's extension tables and how its extension answers osqueryd's calls (no sockets: messages in, messages out)."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import pytest

from orbit.extension import (
    ORBIT_INFO_COLUMNS,
    ExtensionServer,
    FleetdLogsTable,
    OrbitInfoTable,
    RingBufferLogHandler,
)
from orbit.extension import osquery_api as api
from orbit.extension.log_ring import utc_timestamp
from orbit.extension.orbit_tables import answer_table_call, table_route
from orbit.extension.thrift_codec import (
    ApplicationError,
    Message,
    MessageType,
    Struct,
    Writer,
    decode_message,
    encode_message,
)


def test_orbit_info_has_fleets_columns_and_fills_missing_ones() -> None:
    table = OrbitInfoTable(lambda: {"version": "1.40.0", "enrolled": "true", "not_a_column": "x"})
    assert table.name == "orbit_info" and table.columns == ORBIT_INFO_COLUMNS
    assert ORBIT_INFO_COLUMNS == (
        "version", "device_auth_token", "enrolled", "last_recorded_error", "orbit_channel", "osqueryd_channel",
        "desktop_channel", "desktop_version", "uptime", "scripts_enabled", "update_url",
    )  # fmt: skip
    (row,) = table.generate()
    assert row["version"] == "1.40.0" and row["enrolled"] == "true" and row["uptime"] == ""
    assert set(row) == set(ORBIT_INFO_COLUMNS)
    assert table_route(table)[0] == {"id": "column", "name": "version", "type": "TEXT", "op": "0"}
    assert len(table_route(table)) == len(ORBIT_INFO_COLUMNS)


def test_table_calls_generate_describe_or_refuse() -> None:
    table = OrbitInfoTable(lambda: {"version": "9"})
    generated = answer_table_call(table, {"action": "generate", "context": "{}"}, 12)
    assert generated.status == api.ExtensionStatus(0, "OK", 12) and generated.rows[0]["version"] == "9"
    columns = answer_table_call(table, {"action": "columns"}, 12)
    assert [row["name"] for row in columns.rows] == list(ORBIT_INFO_COLUMNS)
    refused = answer_table_call(table, {"action": "insert"}, 12)
    assert refused.status.code == api.EXT_FAILED and "insert" in refused.status.message and refused.rows == ()


def test_log_ring_keeps_the_newest_records_as_fleetd_logs_rows() -> None:
    ring = RingBufferLogHandler(capacity=3)
    logger = logging.getLogger("tests.orbit.log_ring")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(ring)
    try:
        for index in range(5):
            logger.info("event=tick n=%d", index)
        logger.warning("slow", extra={"host": "h1", "attempt": 2})
        try:
            raise ValueError("boom")
        except ValueError:
            logger.exception("failed")
        logger.error("explicit", extra={"error": "disk full"})
    finally:
        logger.removeHandler(ring)
    rows = FleetdLogsTable(ring).generate()
    assert [row["message"] for row in rows] == ["slow", "failed", "explicit"]  # capacity 3: the oldest fell off
    assert [row["level"] for row in rows] == ["warn", "error", "error"]
    assert json.loads(rows[0]["payload"]) == {"host": "h1", "attempt": 2} and rows[0]["error"] == ""
    assert rows[1]["error"] == "boom" and rows[1]["payload"] == "{}"
    assert rows[2]["error"] == "disk full" and rows[2]["payload"] == "{}"
    assert set(rows[0]) == {"time", "level", "message", "error", "payload"}


def test_log_times_are_utc_with_nanoseconds() -> None:
    assert utc_timestamp(0.5) == "1970-01-01 00:00:00.500000000"
    assert utc_timestamp(1_700_000_000.25) == "2023-11-14 22:13:20.250000000"
    assert utc_timestamp(1_700_000_000.9999999999) == "2023-11-14 22:13:21.000000000"


def _server(tmp_path: Path) -> ExtensionServer:
    failing = OrbitInfoTable(lambda: (_ for _ in ()).throw(RuntimeError("provider broke")))
    failing.name = "broken"  # type: ignore[misc]  # a second plugin with its own name
    return ExtensionServer(
        tmp_path / "osquery.em", [OrbitInfoTable(lambda: {"version": "7.7.7"}), failing], version="1.0"
    )


def _roundtrip(server: ExtensionServer, name: str, args: Writer, kind: MessageType = MessageType.CALL) -> Message:
    request, _ = decode_message(encode_message(name, kind, 5, args))
    reply = asyncio.run(server._dispatch(request))
    assert reply is not None
    message, used = decode_message(reply)
    assert used == len(reply) and message.seqid == 5 and message.name == name
    return message


def _result(message: Message) -> Struct:
    assert message.type is MessageType.REPLY
    result = message.body.fields[0]
    assert isinstance(result, Struct)
    return result


def test_extension_answers_ping_and_table_calls(tmp_path: Path) -> None:
    server = _server(tmp_path)
    assert api.ExtensionStatus.from_struct(_result(_roundtrip(server, "ping", api.no_args()))).code == 0
    generate = api.call_args("table", "orbit_info", {"action": "generate", "context": '{"constraints":[]}'})
    response = api.ExtensionResponse.from_struct(_result(_roundtrip(server, "call", generate)))
    assert response.status.ok and response.rows[0]["version"] == "7.7.7"
    for registry, item, message in (
        ("config", "orbit_info", "Unknown registry: config"),
        ("table", "nope", "Unknown registry item: nope"),
    ):
        refused = api.call_args(registry, item, {"action": "generate"})
        status = api.ExtensionResponse.from_struct(_result(_roundtrip(server, "call", refused))).status
        assert (status.code, status.message) == (api.EXT_FAILED, message)
    broken = api.call_args("table", "broken", {"action": "generate"})
    status = api.ExtensionResponse.from_struct(_result(_roundtrip(server, "call", broken))).status
    assert status.code == api.EXT_FAILED and "provider broke" in status.message


def test_extension_refuses_unknown_methods_and_takes_shutdown(tmp_path: Path) -> None:
    server = _server(tmp_path)
    unknown = _roundtrip(server, "registerExtension", api.no_args())
    assert unknown.type is MessageType.EXCEPTION
    error = ApplicationError.from_struct(unknown.body)
    assert error.kind == ApplicationError.UNKNOWN_METHOD and "registerExtension" in error.message
    shutdown = _roundtrip(server, "shutdown", api.no_args())
    assert shutdown.type is MessageType.REPLY and shutdown.body.fields == {}
    assert server._lost.is_set()


def test_duplicate_plugin_names_are_a_programming_error(tmp_path: Path) -> None:
    table = OrbitInfoTable(dict)
    with pytest.raises(ValueError, match="unique"):
        ExtensionServer(tmp_path / "em", [table, table])
