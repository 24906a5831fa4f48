"""Typed access to decoded JSON request bodies: every field is checked here, at the boundary.

Unknown fields are ignored (agents send more than we read); a known field of the wrong type is a clean 400, and so is
an integer outside the field's range (int64 unless the field says less): Fleet's Go decoder refuses those too, and a
Python int beyond int64 cannot be stored in SQLite.
"""

from __future__ import annotations

from collections.abc import Mapping

from server_stub.errors import ApiError, bad_request
from server_stub.int_ranges import INT64_MAX, INT64_MIN

JsonObject = dict[str, object]


def as_object(value: object, what: str) -> JsonObject:
    if not isinstance(value, dict):
        raise bad_request(f"{what} must be a JSON object")
    return {str(k): v for k, v in value.items()}


def optional_str(body: Mapping[str, object], key: str, default: str = "") -> str:
    value = body.get(key, default)
    if value is None:
        return default
    if not isinstance(value, str):
        raise bad_request(f"field {key!r} must be a string")
    return value


def required_str(body: Mapping[str, object], key: str, *, error: ApiError | None = None) -> str:
    value = body.get(key)
    if not isinstance(value, str) or value == "":
        if error is not None:
            raise error
        raise bad_request(f"field {key!r} must be a non-empty string")
    return value


def _in_range(key: str, value: int, minimum: int, maximum: int) -> int:
    if not minimum <= value <= maximum:
        raise bad_request(f"field {key!r} is out of range ({minimum}..{maximum})")
    return value


def required_int(body: Mapping[str, object], key: str, *, minimum: int = INT64_MIN, maximum: int = INT64_MAX) -> int:
    value = body.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad_request(f"field {key!r} must be an integer")
    return _in_range(key, value, minimum, maximum)


def optional_int(
    body: Mapping[str, object], key: str, *, minimum: int = INT64_MIN, maximum: int = INT64_MAX
) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad_request(f"field {key!r} must be an integer")
    return _in_range(key, value, minimum, maximum)


def optional_object(body: Mapping[str, object], key: str) -> JsonObject:
    value = body.get(key)
    if value is None:
        return {}
    return as_object(value, f"field {key!r}")


def string_map(value: object) -> dict[str, str]:
    """An osquery row or table object: values are rendered as strings, as osquery sends them."""
    if not isinstance(value, dict):
        return {}
    row: dict[str, str] = {}
    for key, item in value.items():
        if isinstance(item, str):
            row[str(key)] = item
        elif item is None:
            row[str(key)] = ""
        elif isinstance(item, bool):
            row[str(key)] = "1" if item else "0"
        elif isinstance(item, (int, float)):
            row[str(key)] = str(item)
    return row
