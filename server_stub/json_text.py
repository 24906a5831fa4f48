"""Client JSON in, strict JSON out: bodies are decoded the way Fleet's Go server decodes them, never refused for a
bad character or an unrepresentable number, and everything the stub writes is RFC 8259 JSON.

Decoding (``decode_json``), like Go's ``encoding/json``:

* the body is UTF-8; every byte that is not part of a valid UTF-8 sequence becomes U+FFFD (one per byte, as Go's
  decoder does) instead of a refusal;
* a ``\\uXXXX`` escape of a lone surrogate (``"\\ud800"``) becomes U+FFFD, as in Go. Python's decoder keeps the lone
  surrogate, which no UTF-8 encoder accepts: SQLite, the log files and the JSON responses all failed on it;
* ``NaN``, ``Infinity`` and ``-Infinity`` (not JSON, but Python's decoder takes them), numbers beyond a double's
  range (``1e400``, which Python reads as infinity) and integers longer than Python's int conversion limit (4300
  digits) become ``null``. Why null: Fleet refuses the whole body, and for an osquery log batch that means osqueryd
  keeps the batch and retries it forever, with every later line of that host stuck behind it. A string ("NaN")
  would change the value's type under a reader's feet and pass for data. ``null`` is JSON's "no value", which is
  what a number that cannot be represented has: every strict reader accepts it, and every typed field read by
  ``json_fields`` treats it as absent.

Each such change is a *repair*; the caller counts them (``json_values_repaired`` in ``/metrics``).

Encoding: every ``json.dumps`` in the stub passes ``allow_nan=False`` (starlette's JSON responses do too), so a
non-finite number that slipped past decoding is an error where it is written, never a non-JSON token on disk.
"""

from __future__ import annotations

import codecs
import json
import math
import re
import sys
from dataclasses import dataclass

_GO_REPLACE = "fleet_stub.go_replace"
_SURROGATE = re.compile("[\ud800-\udfff]")
# a \u escape of a surrogate (paired or not): only then can the decoded value hold a lone surrogate
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89abcdefABCDEF]")
# int() refuses longer literals (CVE-2020-10735 limit; 4300 unless lowered by PYTHONINTMAXSTRDIGITS)
_INT_DIGITS_LIMIT = min(sys.get_int_max_str_digits() or 4300, 4300)


def _replace_each_byte(error: UnicodeError) -> tuple[str, int]:
    """One U+FFFD per invalid byte, as Go's ``utf8.DecodeRune`` loop produces (Python's "replace" merges some)."""
    if isinstance(error, UnicodeDecodeError):
        return "\ufffd" * (error.end - error.start), error.end
    raise error


codecs.register_error(_GO_REPLACE, _replace_each_byte)


@dataclass(frozen=True)
class DecodedJson:
    value: object
    repairs: int


class _Repairs:
    def __init__(self) -> None:
        self.count = 0

    def constant(self, _name: str) -> None:
        self.count += 1

    def number(self, text: str) -> float | None:
        value = float(text)
        if math.isfinite(value):
            return value
        self.count += 1
        return None

    def integer(self, text: str) -> int | None:
        if len(text) - text.startswith("-") > _INT_DIGITS_LIMIT:
            self.count += 1
            return None
        return int(text)


def _parse(text: str, *, long_integers: bool) -> tuple[object, int]:
    repairs = _Repairs()
    decoder = json.JSONDecoder(
        parse_float=repairs.number,
        parse_int=repairs.integer if long_integers else None,
        parse_constant=repairs.constant,
    )
    return decoder.decode(text), repairs.count


def decode_json(raw: bytes | str) -> DecodedJson:
    """Decode a client's JSON text; raises ``ValueError`` (or ``RecursionError``) only for text that is not JSON."""
    repairs = 0
    if isinstance(raw, str):
        text = raw
    else:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = raw.decode("utf-8", _GO_REPLACE)
            repairs += text.count("\ufffd") - raw.count("\ufffd".encode())
    try:  # integers parsed by the C scanner itself (fast); it fails only on one beyond int()'s digit limit
        value, parsed = _parse(text, long_integers=False)
    except ValueError:  # then again with a hook for integer literals (a second failure: not JSON)
        value, parsed = _parse(text, long_integers=True)
    repairs += parsed
    if isinstance(raw, str) or _SURROGATE_ESCAPE.search(text):
        value, replaced = replace_surrogates(value)
        repairs += replaced
    return DecodedJson(value, repairs)


def clean_text(text: str) -> str:
    """``text`` with every lone surrogate replaced by U+FFFD (valid pairs were combined by the decoder already)."""
    return _SURROGATE.sub("\ufffd", text)


def replace_surrogates(value: object) -> tuple[object, int]:
    """Replace lone surrogates in every string and key of a decoded value, in place; returns (value, strings fixed).

    Iterative, so a document as deep as the decoder accepts cannot exhaust the stack here.
    """
    if isinstance(value, str):
        fixed = clean_text(value)
        return fixed, int(fixed != value)
    changed = 0
    stack: list[object] = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            for index, item in enumerate(node):
                if isinstance(item, str):
                    fixed = clean_text(item)
                    if fixed != item:
                        node[index] = fixed
                        changed += 1
                elif isinstance(item, (list, dict)):
                    stack.append(item)
        elif isinstance(node, dict):
            if any(_SURROGATE.search(key) for key in node):
                items = list(node.items())
                node.clear()
                for key, item in items:
                    fixed_key = clean_text(key)
                    changed += fixed_key != key
                    node[fixed_key] = item
            for key, item in node.items():
                if isinstance(item, str):
                    fixed = clean_text(item)
                    if fixed != item:
                        node[key] = fixed
                        changed += 1
                elif isinstance(item, (list, dict)):
                    stack.append(item)
    return value, changed
