"""carve/block bodies are scanned as they arrive: what json.loads would give, with the session checked first."""

from __future__ import annotations

import json
import random

import pytest

from server_stub.carve_upload import HEAD_LIMIT, UNPROVEN_DATA_LIMIT, CarveBodyScanner, data_limit
from server_stub.errors import ApiError
from server_stub.json_fields import JsonObject

BODIES = [
    b'{"block_id": 0, "session_id": "9b6f", "request_id": "fleet_distributed_query_7", "data": "QUJDRA=="}',
    b'{"block_id":12,"session_id":"s","request_id":"r\\"q","data":"QU\\/+Qg=="}',  # ptree writes '/' as '\\/'
    b' {\n "data" : "" , "x": [1, {"a": "},"}], "n": -1.5e3, "t": true, "z": null, "k": "\xc3\xa9"}\n',
    b"{}",
]


def scan(body: bytes, piece: int, cap: int = 1 << 30) -> tuple[JsonObject, list[JsonObject]]:
    seen: list[JsonObject] = []

    def on_data(members: JsonObject) -> int:
        seen.append(members)
        return cap

    scanner = CarveBodyScanner(on_data)
    for start in range(0, len(body), piece):
        scanner.feed(body[start : start + piece])
    return scanner.finish(), seen


@pytest.mark.parametrize("body", BODIES)
def test_same_object_as_json_loads_however_the_body_is_split(body: bytes) -> None:
    for piece in (1, 2, 3, 5, 16, len(body)):
        assert scan(body, piece)[0] == json.loads(body)


def test_the_session_is_seen_before_any_data_is_held() -> None:
    body = b'{"block_id": 3, "session_id": "abc", "request_id": "q1", "data": "' + b"A" * 4096 + b'"}'
    held: list[int] = []

    class Refused(Exception):
        pass

    def on_data(members: JsonObject) -> int:
        held.append(len(members))
        raise Refused

    scanner = CarveBodyScanner(on_data)
    with pytest.raises(Refused):
        for start in range(0, len(body), 7):
            scanner.feed(body[start : start + 7])
    assert held == [3]
    assert start < 80  # refused as soon as "data" began, not after its 4 KiB arrived
    _result, seen = scan(body, 64)
    assert seen == [{"block_id": 3, "session_id": "abc", "request_id": "q1"}]


def test_data_past_the_session_limit_is_refused_while_it_arrives() -> None:
    body = b'{"session_id": "s", "data": "' + b"A" * 1000 + b'"}'
    with pytest.raises(ApiError, match="block exceeds block_size") as caught:
        scan(body, 100, cap=500)
    assert caught.value.status == 400


def test_data_before_the_session_is_held_to_the_unauthenticated_limit() -> None:
    small = b'{"data": "QUJD", "session_id": "s", "block_id": 0}'
    assert scan(small, 4, cap=UNPROVEN_DATA_LIMIT)[0]["data"] == "QUJD"
    big = b'{"data": "' + b"A" * (UNPROVEN_DATA_LIMIT + 1) + b'", "session_id": "s"}'
    with pytest.raises(ApiError, match="must come after session_id") as caught:
        scan(big, 65536, cap=UNPROVEN_DATA_LIMIT)
    assert caught.value.status == 413


def test_json_outside_the_data_is_small() -> None:
    body = b'{"padding": "' + b"x" * HEAD_LIMIT + b'", "data": ""}'
    with pytest.raises(ApiError) as caught:
        scan(body, 1024)
    assert caught.value.status == 413


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "Expected JSON Body"),
        (b"  \n", "Expected JSON Body"),
        (b"[1]", "body must be a JSON object"),
        (b'{"a": 1', "not a complete JSON object"),
        (b'{"a": 1}x', "extra data"),
        (b'{"data": "abc', "unterminated string"),
        (b'{"a" 1}', "expected ':'"),
        (b'{"a": 1,}', "member name in double quotes"),
        (b'{"a": tru}', "json decoder error"),
        (b'{"a": 12x}', "expected ',' or '}'"),
        (b'{"data": "\\q"}', "json decoder error"),
    ],
)
def test_malformed_bodies_are_400(body: bytes, message: str) -> None:
    for piece in (1, max(1, len(body))):
        with pytest.raises(ApiError, match=message) as caught:
            scan(body, piece)
        assert caught.value.status == 400


def test_random_splits_of_a_real_sized_block() -> None:
    rng = random.Random(7)
    data = "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/") for _ in range(20000))
    body = json.dumps({"block_id": 1, "session_id": "s", "request_id": "r", "data": data}).encode()
    scanner = CarveBodyScanner(lambda _members: data_limit(15000))
    position = 0
    while position < len(body):
        step = rng.randint(1, 4096)
        scanner.feed(body[position : position + step])
        position += step
    assert scanner.finish()["data"] == data


def test_the_data_limit_allows_every_slash_escaped() -> None:
    assert data_limit(3) == 2 * 4 + 16
    assert data_limit(2_000_000) >= len(json.dumps("/" * 2_666_668))
