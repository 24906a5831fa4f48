"""The two Thrift binary-protocol codecs (orbit's and the sim's), each on its own and against hand-made bytes.

The golden bytes below are written from Thrift's binary protocol description, not produced by either codec, so a
shared misunderstanding cannot pass; the cross-checks then make each side decode what the other encodes.
"""

from __future__ import annotations

import asyncio
import struct

import pytest

from orbit.extension import osquery_api
from orbit.extension.thrift_codec import (
    ApplicationError,
    Incomplete,
    MapValue,
    MessageDecoder,
    MessageType,
    Struct,
    ThriftProtocolError,
    TType,
    Writer,
    as_string_map,
    as_string_map_list,
    decode_message,
    encode_message,
)
from orbit.extension.thrift_socket import MAX_MESSAGE_BYTES, MessageStream
from osquery_sim import thrift_wire as wire

# ping() as a strict CALL with seqid 7: version|type, name, seqid, empty args struct.
GOLDEN_PING = b"\x80\x01\x00\x01" + b"\x00\x00\x00\x04ping" + b"\x00\x00\x00\x07" + b"\x00"
# The reply: field 0 (STRUCT) = ExtensionStatus{1: i32 0, 2: "pong", 3: i64 42}.
GOLDEN_PING_REPLY = (
    b"\x80\x01\x00\x02"
    + b"\x00\x00\x00\x04ping"
    + b"\x00\x00\x00\x07"
    + b"\x0c\x00\x00"  # field 0, STRUCT
    + b"\x08\x00\x01\x00\x00\x00\x00"  # 1: i32 0
    + b"\x0b\x00\x02\x00\x00\x00\x04pong"  # 2: string "pong"
    + b"\x0a\x00\x03"
    + struct.pack(">q", 42)  # 3: i64 42
    + b"\x00"  # end of ExtensionStatus
    + b"\x00"  # end of the result struct
)
# call("table", "t", {"action": "generate"}) with seqid 1.
GOLDEN_CALL = (
    b"\x80\x01\x00\x01\x00\x00\x00\x04call\x00\x00\x00\x01"
    + b"\x0b\x00\x01\x00\x00\x00\x05table"
    + b"\x0b\x00\x02\x00\x00\x00\x01t"
    + b"\x0d\x00\x03\x0b\x0b\x00\x00\x00\x01"
    + b"\x00\x00\x00\x06action\x00\x00\x00\x08generate"
    + b"\x00"
)


def _orbit_rich_body() -> Writer:
    body = Writer()
    body.field(1, TType.BOOL)
    body.bool(True)
    body.field(2, TType.BYTE)
    body.byte(-5)
    body.field(3, TType.I16)
    body.i16(-300)
    body.field(4, TType.I32)
    body.i32(2**31 - 1)
    body.field(5, TType.I64)
    body.i64(-(2**63))
    body.field(6, TType.DOUBLE)
    body.double(2.5)
    body.field(7, TType.STRING)
    body.string("héllo")
    body.field(8, TType.LIST)
    body.string_map_list([{"a": "1"}, {}, {"b": "2", "c": ""}])
    body.field(9, TType.STRUCT)
    body.field(1, TType.MAP)
    body.map_begin(TType.I64, TType.STRING, 2)
    body.i64(1)
    body.string("one")
    body.i64(-2)
    body.string("minus two")
    body.stop()
    body.stop()
    return body


# --- orbit's codec --------------------------------------------------------------------------------------------------


def test_orbit_codec_writes_the_golden_bytes() -> None:
    assert encode_message("ping", MessageType.CALL, 7, osquery_api.no_args()) == GOLDEN_PING
    reply = osquery_api.status_result(osquery_api.ExtensionStatus(0, "pong", 42))
    assert encode_message("ping", MessageType.REPLY, 7, reply) == GOLDEN_PING_REPLY
    call = osquery_api.call_args("table", "t", {"action": "generate"})
    assert encode_message("call", MessageType.CALL, 1, call) == GOLDEN_CALL


def test_orbit_codec_round_trips_every_type() -> None:
    data = encode_message("probe", MessageType.ONEWAY, 123, _orbit_rich_body())
    message, used = decode_message(data + b"trailing")
    assert used == len(data)
    assert (message.name, message.type, message.seqid) == ("probe", MessageType.ONEWAY, 123)
    fields = message.body.fields
    assert fields[1] is True and fields[2] == -5 and fields[3] == -300
    assert fields[4] == 2**31 - 1 and fields[5] == -(2**63) and fields[6] == 2.5 and fields[7] == "héllo"
    assert as_string_map_list(fields[8]) == [{"a": "1"}, {}, {"b": "2", "c": ""}]
    nested = fields[9]
    assert isinstance(nested, Struct)
    assert nested.fields[1] == MapValue(((1, "one"), (-2, "minus two")))


def test_orbit_codec_reads_golden_reply_and_typed_structs() -> None:
    message, used = decode_message(GOLDEN_PING_REPLY)
    assert used == len(GOLDEN_PING_REPLY) and message.type is MessageType.REPLY
    result = message.body.fields[0]
    assert isinstance(result, Struct)
    assert osquery_api.ExtensionStatus.from_struct(result) == osquery_api.ExtensionStatus(0, "pong", 42)
    call, _ = decode_message(GOLDEN_CALL)
    assert osquery_api.PluginCall.from_args(call.body) == osquery_api.PluginCall("table", "t", {"action": "generate"})


def test_orbit_codec_round_trips_the_registration_and_a_response() -> None:
    info = osquery_api.ExtensionInfo("com.example.ext", "1.0", "5.0.0", "")
    registry = {"table": {"t1": [{"id": "column", "name": "c", "type": "TEXT", "op": "0"}], "t2": []}, "logger": {}}
    message, _ = decode_message(
        encode_message("registerExtension", MessageType.CALL, 3, osquery_api.register_args(info, registry))
    )
    raw_info = message.body.fields[1]
    assert isinstance(raw_info, Struct) and osquery_api.ExtensionInfo.from_struct(raw_info) == info
    registries = message.body.fields[2]
    assert isinstance(registries, MapValue)
    assert [name for name, _ in registries.items] == ["table", "logger"]
    tables = registries.items[0][1]
    assert isinstance(tables, MapValue)
    assert as_string_map_list(tables.items[0][1]) == [{"id": "column", "name": "c", "type": "TEXT", "op": "0"}]
    response = osquery_api.ExtensionResponse(osquery_api.ExtensionStatus(1, "nope", 9), ({"k": "v"},))
    decoded, _ = decode_message(encode_message("query", MessageType.REPLY, 1, osquery_api.response_result(response)))
    result = decoded.body.fields[0]
    assert isinstance(result, Struct) and osquery_api.ExtensionResponse.from_struct(result) == response


def test_orbit_codec_accepts_old_non_strict_headers() -> None:
    data = struct.pack(">i", 4) + b"ping" + b"\x01" + struct.pack(">i", 9) + b"\x00"
    message, used = decode_message(data)
    assert (message.name, message.type, message.seqid, used) == ("ping", MessageType.CALL, 9, len(data))


def test_orbit_codec_every_truncation_asks_for_more_bytes() -> None:
    data = encode_message("probe", MessageType.CALL, 1, _orbit_rich_body())
    for cut in range(len(data)):
        with pytest.raises(Incomplete):
            decode_message(data[:cut])


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x80\x02\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00", "bad protocol version"),
        (b"GET / HTTP/1.1\r\n\r\n", "method name length"),
        (b"\x80\x01\x00\x09\x00\x00\x00\x00\x00\x00\x00\x00\x00", "unknown message type"),
        (b"\x80\x01\x00\x01\xff\xff\xff\xfe", "negative string length"),
        (b"\x80\x01\x00\x01\x7f\xff\xff\xff", "exceeds the limit"),
        (b"\x80\x01\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00\x05\x00\x01", "unknown field type"),
        (b"\x80\x01\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00\x0f\x00\x01\x0b\xff\xff\xff\xff", "negative container"),
        (b"\x80\x01\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00\x0d\x00\x01\x0b\x0b\x7f\xff\xff\xff", "container size"),
        (b"\x80\x01\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00" + b"\x0c\x00\x01" * 40, "nested deeper"),
    ],
)
def test_orbit_codec_rejects_malformed_input_at_once(data: bytes, reason: str) -> None:
    with pytest.raises(ThriftProtocolError, match=reason):
        decode_message(data)


def test_orbit_codec_skips_mismatched_types_like_thrift() -> None:
    body = Writer()
    body.field(1, TType.STRING)
    body.string("not a number")
    body.field(2, TType.I32)
    body.i32(5)
    body.field(3, TType.MAP)
    body.map_begin(TType.STRING, TType.I32, 1)
    body.string("k")
    body.i32(1)
    body.stop()
    message, _ = decode_message(encode_message("x", MessageType.REPLY, 0, body))
    status = osquery_api.ExtensionStatus.from_struct(message.body)
    assert status == osquery_api.ExtensionStatus(0, "", 0)  # wrong types read as unset
    assert as_string_map(message.body.fields[3]) == {}


def test_orbit_application_error_round_trip() -> None:
    body = Writer()
    ApplicationError(ApplicationError.UNKNOWN_METHOD, "Invalid method name: 'nope'").write(body)
    message, _ = decode_message(encode_message("nope", MessageType.EXCEPTION, 2, body))
    error = ApplicationError.from_struct(message.body)
    assert (error.kind, error.message) == (ApplicationError.UNKNOWN_METHOD, "Invalid method name: 'nope'")


def _stream_read(chunks: list[bytes]) -> list[object]:
    """What MessageStream.read returns (or raises) for a peer that sends ``chunks`` and then closes."""

    async def run() -> list[object]:
        reader = asyncio.StreamReader()
        for chunk in chunks:
            reader.feed_data(chunk)
        reader.feed_eof()
        stream = MessageStream(reader, None)  # type: ignore[arg-type]  # reading only
        results: list[object] = []
        while True:
            try:
                message = await asyncio.wait_for(stream.read(), 5)
            except ThriftProtocolError as exc:
                results.append(exc)
                return results
            results.append(message)
            if message is None:
                return results

    return asyncio.run(run())


def test_orbit_stream_splits_unframed_messages_and_detects_truncation() -> None:
    two = GOLDEN_PING + GOLDEN_CALL
    results = _stream_read([two[:3], two[3:20], two[20:]])
    assert [getattr(r, "name", r) for r in results] == ["ping", "call", None]
    truncated = _stream_read([GOLDEN_CALL[:-4]])
    assert isinstance(truncated[0], ThriftProtocolError) and "closed inside a message" in str(truncated[0])


def test_orbit_decoder_fed_byte_by_byte_yields_each_message_once() -> None:
    decoder = MessageDecoder()
    stream = GOLDEN_PING + GOLDEN_CALL + GOLDEN_PING_REPLY
    names: list[str] = []
    for index in range(len(stream)):
        names.extend(message.name for message in decoder.feed(stream[index : index + 1]))
    assert names == ["ping", "call", "ping"] and decoder.buffered == 0
    with pytest.raises(ThriftProtocolError):
        MessageDecoder().feed(b"\x80\x01\x00\x01\x80\x00\x00\x00")


def test_orbit_stream_refuses_a_message_beyond_the_size_cap() -> None:
    # A list of a million 1 KiB strings is valid item by item but adds up to more than the cap.
    header = b"\x80\x01\x00\x01\x00\x00\x00\x01x\x00\x00\x00\x01" + b"\x0f\x00\x01\x0b" + struct.pack(">i", 1_000_000)
    item = struct.pack(">i", 1020) + b"a" * 1020
    chunk = item * 64
    results = _stream_read([header] + [chunk] * (MAX_MESSAGE_BYTES // len(chunk) + 2))
    assert isinstance(results[0], ThriftProtocolError) and "larger than" in str(results[0])


# --- the sim's codec ------------------------------------------------------------------------------------------------

SIM_RICH_FIELDS: list[wire.Field] = [
    (1, wire.T_BOOL, False),
    (2, wire.T_BYTE, 127),
    (3, wire.T_I16, -1),
    (4, wire.T_I32, -(2**31)),
    (5, wire.T_I64, 2**63 - 1),
    (6, wire.T_DOUBLE, -0.125),
    (7, wire.T_STRING, "ünïcode"),
    (8, wire.STRING_MAP_LIST, [{"x": "1", "y": "2"}]),
    (9, wire.T_STRUCT, [(1, wire.MapOf(wire.T_I64, wire.T_STRING), {7: "seven"}), (2, wire.T_STRING, None)]),
    (10, wire.ListOf(wire.T_I32), [1, 2, 3]),
]


def test_sim_codec_writes_the_golden_bytes() -> None:
    assert wire.encode_message("ping", wire.CALL, 7, []) == GOLDEN_PING
    status: list[wire.Field] = [(1, wire.T_I32, 0), (2, wire.T_STRING, "pong"), (3, wire.T_I64, 42)]
    assert wire.encode_message("ping", wire.REPLY, 7, [(0, wire.T_STRUCT, status)]) == GOLDEN_PING_REPLY
    call: list[wire.Field] = [
        (1, wire.T_STRING, "table"),
        (2, wire.T_STRING, "t"),
        (3, wire.STRING_MAP, {"action": "generate"}),
    ]
    assert wire.encode_message("call", wire.CALL, 1, call) == GOLDEN_CALL


def test_sim_codec_round_trips_every_type() -> None:
    data = wire.encode_message("probe", wire.ONEWAY, 5, SIM_RICH_FIELDS)
    source = wire.BytesSource(data + b"rest")
    envelope = wire.read_message(source)
    assert source.position == len(data)
    assert (envelope.name, envelope.kind, envelope.seqid) == ("probe", wire.ONEWAY, 5)
    fields = envelope.fields
    assert fields[1] is False and fields[2] == 127 and fields[3] == -1 and fields[4] == -(2**31)
    assert fields[5] == 2**63 - 1 and fields[6] == -0.125 and fields[7] == "ünïcode"
    assert wire.string_map_list(fields[8]) == [{"x": "1", "y": "2"}]
    nested = wire.substruct(fields, 9)
    assert list(nested) == [1]  # the None field was not written
    assert nested[1] == wire.Pairs([(7, "seven")])
    assert fields[10] == (1, 2, 3)


def test_sim_codec_reads_the_golden_call_and_non_strict_headers() -> None:
    envelope = wire.read_message(wire.BytesSource(GOLDEN_CALL))
    assert (envelope.name, envelope.kind, envelope.seqid) == ("call", wire.CALL, 1)
    assert wire.text(envelope.fields, 1) == "table" and wire.text(envelope.fields, 2) == "t"
    assert wire.string_map(envelope.fields.get(3)) == {"action": "generate"}
    old = struct.pack(">i", 4) + b"ping" + b"\x01" + struct.pack(">i", 3) + b"\x00"
    assert wire.read_message(wire.BytesSource(old)).name == "ping"


def test_sim_codec_every_truncation_is_reported_as_truncated() -> None:
    data = wire.encode_message("probe", wire.CALL, 1, SIM_RICH_FIELDS)
    for cut in range(len(data)):
        with pytest.raises(wire.TruncatedMessage, match="truncated"):
            wire.read_message(wire.BytesSource(data[:cut]))


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x80\x02\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00", "bad version word"),
        (b"GET / HTTP/1.1\r\n\r\n", "invalid method name size"),
        (b"\x80\x01\x00\x07\x00\x00\x00\x00\x00\x00\x00\x00\x00", "unknown message type"),
        (b"\x80\x01\x00\x01\xff\xff\xff\xfe", "invalid string size"),
        (b"\x80\x01\x00\x01\x7f\xff\xff\xff", "invalid string size"),
        (b"\x80\x01\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00\x05\x00\x01", "unknown type code"),
        (b"\x80\x01\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00\x0f\x00\x01\x0b\xff\xff\xff\xff", "container size"),
        (b"\x80\x01\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00\x0d\x00\x01\x0b\x0b\x7f\xff\xff\xff", "container size"),
        (b"\x80\x01\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00" + b"\x0c\x00\x01" * 40, "nesting deeper"),
    ],
)
def test_sim_codec_rejects_malformed_input_at_once(data: bytes, reason: str) -> None:
    with pytest.raises(wire.WireError, match=reason):
        wire.read_message(wire.BytesSource(data))


@pytest.mark.parametrize(
    ("kind", "value"),
    [
        (wire.T_STRING, 5),
        (wire.T_I32, "5"),
        (wire.T_I64, True),
        (wire.STRING_MAP, ["a"]),
        (wire.STRING_MAP_LIST, "rows"),
        (wire.T_DOUBLE, "1.0"),
    ],
)
def test_sim_codec_refuses_values_that_do_not_match_the_schema(kind: wire.Kind, value: object) -> None:
    with pytest.raises(TypeError):
        wire.encode_message("x", wire.REPLY, 0, [(1, kind, value)])


def test_sim_codec_application_exception_and_mismatched_types() -> None:
    data = wire.encode_message("nope", wire.EXCEPTION, 4, wire.application_exception("bad", wire.UNKNOWN_METHOD))
    fields = wire.read_message(wire.BytesSource(data)).fields
    assert (wire.text(fields, 1), wire.integer(fields, 2)) == ("bad", wire.UNKNOWN_METHOD)
    assert wire.integer(fields, 1) == 0 and wire.text(fields, 2) == ""  # wrong types read as unset


# --- the two codecs against each other ------------------------------------------------------------------------------


def test_the_sim_decodes_what_orbit_encodes() -> None:
    info = osquery_api.ExtensionInfo("ext", "2.0")
    route = [{"id": "column", "name": "version", "type": "TEXT", "op": "0"}]
    data = encode_message(
        "registerExtension", MessageType.CALL, 11, osquery_api.register_args(info, {"table": {"orbit_info": route}})
    )
    envelope = wire.read_message(wire.BytesSource(data))
    assert (envelope.name, envelope.kind, envelope.seqid) == ("registerExtension", wire.CALL, 11)
    raw_info = wire.substruct(envelope.fields, 1)
    assert [wire.text(raw_info, i) for i in (1, 2, 3, 4)] == ["ext", "2.0", "", ""]
    registries = envelope.fields[2]
    assert isinstance(registries, wire.Pairs) and registries[0][0] == "table"
    tables = registries[0][1]
    assert isinstance(tables, wire.Pairs) and tables[0][0] == "orbit_info"
    assert wire.string_map_list(tables[0][1]) == route


def test_orbit_decodes_what_the_sim_encodes() -> None:
    rows = [{"version": "1.2.3"}, {"version": ""}]
    status: list[wire.Field] = [(1, wire.T_I32, 0), (2, wire.T_STRING, "OK"), (3, wire.T_I64, 77)]
    result: list[wire.Field] = [(0, wire.T_STRUCT, [(1, wire.T_STRUCT, status), (2, wire.STRING_MAP_LIST, rows)])]
    message, _ = decode_message(wire.encode_message("call", wire.REPLY, 3, result))
    body = message.body.fields[0]
    assert isinstance(body, Struct)
    response = osquery_api.ExtensionResponse.from_struct(body)
    assert response.status == osquery_api.ExtensionStatus(0, "OK", 77) and list(response.rows) == rows
    listing: list[wire.Field] = [
        (0, wire.MapOf(wire.T_I64, wire.T_STRUCT), {77: [(1, wire.T_STRING, "ext"), (2, wire.T_STRING, "1")]})
    ]
    message, _ = decode_message(wire.encode_message("extensions", wire.REPLY, 4, listing))
    assert osquery_api.extension_list(message.body.fields[0]) == {77: osquery_api.ExtensionInfo("ext", "1")}
