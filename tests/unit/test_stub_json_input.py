"""fleet-stub's input cores (issue 15): client JSON decoded like Fleet's Go server, integers range-checked, ids in
ASCII digits, and strict JSON wherever the stub writes JSON."""

from __future__ import annotations

import ast
import json
import time
from pathlib import Path

import pytest

from server_stub import device_tokens
from server_stub.agent_options import InvalidAgentOptions, validate_agent_options
from server_stub.declarative_config import ConfigFileError, load_config_file
from server_stub.int_ranges import INT64_MAX, IdOutOfRange, parse_id, parse_id_or_none
from server_stub.json_text import decode_json
from server_stub.live_queries import query_id_from_name
from server_stub.osquery_config import interval_options
from server_stub.policies import policy_id_from_name

STUB_SOURCES = sorted((Path(__file__).resolve().parents[2] / "server_stub").glob("*.py"))


def strict_loads(text: str) -> object:
    """An RFC 8259 reader: Python's json.loads without its NaN/Infinity extension."""

    def refuse(name: str) -> object:
        raise ValueError(f"not JSON: {name}")

    return json.loads(text, parse_constant=refuse)


# --- strings: U+FFFD like Go's encoding/json ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected", "repairs"),
    [
        (b'"\\ud800"', "\ufffd", 1),  # lone high surrogate escape
        (b'"\\udc00x"', "\ufffdx", 1),  # lone low surrogate escape
        (b'"\\ud800\\ud800\\udc00"', "\ufffd\U00010000", 1),  # a lone one, then a valid pair
        (b'"\\ud83d\\ude00"', "\U0001f600", 0),  # a valid pair is kept
        (b'"a\xffb"', "a\ufffdb", 1),  # an invalid byte
        (b'"\xed\xa0\x80"', "\ufffd" * 3, 3),  # a UTF-8-encoded surrogate: one U+FFFD per byte, as Go
        (b'"ab\xe2\x82"', "ab\ufffd\ufffd", 2),  # truncated: per byte too (Python's "replace" gives one)
        (b'"\xf4\x90\x80\x80"', "\ufffd" * 4, 4),  # beyond U+10FFFF
        (b'"\xef\xbf\xbd\xff"', "\ufffd\ufffd", 1),  # a U+FFFD sent as such is no repair
        ('"grüße"'.encode(), "grüße", 0),
    ],
)
def test_strings_are_made_valid_like_go_does(raw: bytes, expected: str, repairs: int) -> None:
    decoded = decode_json(raw)
    assert decoded.value == expected
    assert decoded.repairs == repairs
    expected.encode("utf-8")  # storable: no lone surrogate survives


def test_surrogates_are_replaced_in_keys_and_at_any_depth() -> None:
    raw = b'{"\\ud800k": [{"deep": ["\\udfff", 1, {"\\udbff": "\\ud800"}]}], "ok": "\\u00e9"}'
    decoded = decode_json(raw)
    assert decoded.value == {"\ufffdk": [{"deep": ["\ufffd", 1, {"\ufffd": "\ufffd"}]}], "ok": "é"}
    assert decoded.repairs == 4
    json.dumps(decoded.value, ensure_ascii=False).encode("utf-8")


def test_a_document_as_deep_as_the_decoder_takes_is_cleaned_without_recursion() -> None:
    depth = 900
    raw = ("[" * depth + '"\\ud800"' + "]" * depth).encode()
    value = decode_json(raw).value
    for _ in range(depth):
        assert isinstance(value, list)
        value = value[0]
    assert value == "\ufffd"


# --- numbers: null for what is not a representable number --------------------------------------------------


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e400", "-1e400", "1" * 4301, "-" + "9" * 5000])
def test_unrepresentable_numbers_become_null(literal: str) -> None:
    decoded = decode_json(f'{{"a": [{literal}, 1.5, 7]}}'.encode())
    assert decoded.value == {"a": [None, 1.5, 7]}
    assert decoded.repairs == 1
    strict_loads(json.dumps(decoded.value, allow_nan=False))


def test_big_integers_within_the_digit_limit_are_kept_exactly() -> None:
    big = int("9" * 4300)
    assert decode_json(f"[{big}, {2**64}]".encode()) == decode_json(f"[{big}, {2**64}]")
    assert decode_json(f"[{big}, {2**64}]".encode()).value == [big, 2**64]


def test_a_huge_number_is_cheap() -> None:
    started = time.perf_counter()
    decode_json(b"[" + b"7" * 1_000_000 + b"]")
    assert time.perf_counter() - started < 5  # a generous bound: int() of a million digits would take minutes


@pytest.mark.parametrize("raw", [b"", b"{", b'{"a": 01}', b"{'a': 1}", b'"\x01"', b"\xef\xbb\xbf{}", b"nan"])
def test_text_that_is_not_json_is_still_refused(raw: bytes) -> None:
    with pytest.raises(ValueError):
        decode_json(raw)


def test_nesting_beyond_the_decoder_is_a_clean_error() -> None:
    with pytest.raises((ValueError, RecursionError)):
        decode_json(b"[" * 100_000 + b"]" * 100_000)


# --- integers and ids ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "²", "٣", "１", "-1", "+1", " 1", "1 ", "1.0", "0x1", "1_000"])
def test_ids_are_ascii_digits_only(text: str) -> None:
    assert parse_id(text) is None


def test_ids_within_int64_and_beyond() -> None:
    assert parse_id("0") == 0
    assert parse_id("0007") == 7
    assert parse_id(str(INT64_MAX)) == INT64_MAX
    assert parse_id("0" * 50 + "42") == 42
    for beyond in (str(INT64_MAX + 1), "9" * 20, "9" * 100_000):
        with pytest.raises(IdOutOfRange):
            parse_id(beyond)
        assert parse_id_or_none(beyond) is None


def test_query_name_suffixes_that_do_not_parse_are_not_ours() -> None:
    for suffix in ("²", "٣", "99999999999999999999", "-1", ""):
        assert query_id_from_name(f"fleet_distributed_query_{suffix}") is None
        assert policy_id_from_name(f"fleet_policy_query_{suffix}") is None
    assert query_id_from_name("fleet_distributed_query_12") == 12
    assert policy_id_from_name(f"fleet_policy_query_{INT64_MAX}") == INT64_MAX


def test_interval_options_out_of_range_are_recorded_as_absent() -> None:
    config: dict[str, object] = {
        "options": {"distributed_interval": 2**70, "config_refresh": "²", "logger_tls_period": -5}
    }
    assert interval_options(config) == (0, 0, 0)
    config = {"options": {"distributed_interval": "00010", "config_tls_refresh": INT64_MAX, "logger_tls_period": 4}}
    assert interval_options(config) == (10, INT64_MAX, 4)


@pytest.mark.parametrize(
    "options",
    [
        {"config": {"options": {"distributed_interval": 2**63}}},
        {"config": {"options": {"x": -(2**63) - 1}}},
        {"command_line_flags": {"x": float("nan")}},
        {"config": {"schedule": {"q": {"interval": float("inf")}}}},
        {"overrides": {"platforms": {"linux": {"options": [float("-inf")]}}}},
    ],
)
def test_agent_options_refuse_numbers_the_stub_cannot_store(options: dict[str, object]) -> None:
    with pytest.raises(InvalidAgentOptions):
        validate_agent_options(options)


def test_agent_options_at_the_int64_edges_are_accepted() -> None:
    options = {"config": {"options": {"a": 2**63 - 1, "b": -(2**63), "c": 1.5, "d": True}}}
    assert validate_agent_options(options) == options


def test_config_files_with_nan_or_huge_integers_are_refused(tmp_path: Path) -> None:
    toml = tmp_path / "stub.toml"
    toml.write_text("[global]\nagent_options = { config = { options = { distributed_interval = nan } } }\n")
    with pytest.raises(ConfigFileError, match="NaN"):
        load_config_file(toml)
    toml.write_text(f"[global]\nagent_options = {{ config = {{ options = {{ x = {2**64} }} }} }}\n")
    with pytest.raises(ConfigFileError, match="out of range"):
        load_config_file(toml)
    as_json = tmp_path / "stub.json"
    as_json.write_text('{"global": {"agent_options": {"config": {"options": {"x": NaN}}}}}')
    assert load_config_file(as_json).global_agent_options == {"config": {"options": {"x": None}}}


def test_device_tokens_must_be_url_safe_to_the_last_character() -> None:
    assert device_tokens.validate_token_text("abc\n") is device_tokens.TokenProblem.NOT_URL_SAFE
    assert device_tokens.validate_token_text("abc") is None


# --- strict JSON out ------------------------------------------------------------------------------------------


def test_every_json_dumps_of_the_stub_refuses_nan() -> None:
    """Whatever the stub writes (DB columns, log files, server.json, CLI output) is RFC 8259 JSON."""
    offenders = []
    for path in STUB_SOURCES:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("dumps", "dump")
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "json"
            ):
                allow_nan = [k for k in node.keywords if k.arg == "allow_nan"]
                if not (
                    allow_nan and isinstance(allow_nan[0].value, ast.Constant) and allow_nan[0].value.value is False
                ):
                    offenders.append(f"{path.name}:{node.lineno}")
    assert STUB_SOURCES and offenders == []
