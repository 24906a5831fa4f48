"""Parsing one flag value from text exactly as gflags does (``FlagValue::ParseFrom`` in gflags.cc).

- bool: ``1 t true y yes`` / ``0 f false n no``, any case; nothing else.
- string: taken verbatim (including surrounding spaces).
- integers: ``strtoll``/``strtoull`` semantics over the *whole* text: leading white space and a sign are fine,
  trailing characters (even spaces) are not; a leading ``0x`` means hex, a leading ``0`` does not mean octal; the
  value must fit the type. Unsigned types refuse a ``-`` after leading blanks.
- double: ``strtod`` over the whole text (decimal, hex floats, ``inf``, ``nan``); overflow is an error.

``parse_value`` returns None where gflags' ParseFrom returns false.
"""

from __future__ import annotations

import math
import re

from osquery_sim.cpp_defaults import FlagValue
from osquery_sim.flag_specs import FlagType

_TRUE = frozenset({"1", "t", "true", "y", "yes"})
_FALSE = frozenset({"0", "f", "false", "n", "no"})
_C_SPACE = " \t\n\v\f\r"
_DECIMAL_INT = re.compile(r"[ \t\n\v\f\r]*([+-]?)([0-9]+)")
_HEX_INT = re.compile(r"0[xX]([0-9a-fA-F]+)")
_DECIMAL_FLOAT = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_HEX_FLOAT = re.compile(r"([+-]?)0[xX]((?:[0-9a-fA-F]+\.?[0-9a-fA-F]*|\.[0-9a-fA-F]+)(?:[pP][+-]?[0-9]+)?)")
_SPECIAL_FLOAT = re.compile(r"([+-]?)(inf|infinity|nan(?:\([0-9A-Za-z_]*\))?)", re.IGNORECASE)

_RANGES: dict[FlagType, tuple[int, int]] = {
    FlagType.INT32: (-(2**31), 2**31 - 1),
    FlagType.UINT32: (0, 2**32 - 1),
    FlagType.INT64: (-(2**63), 2**63 - 1),
    FlagType.UINT64: (0, 2**64 - 1),
}


def parse_value(flag_type: FlagType, text: str) -> FlagValue | None:
    if flag_type is FlagType.BOOL:
        lowered = text.lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        return None
    if flag_type is FlagType.STRING:
        return text
    if text == "":  # empty text is only a value for strings
        return None
    if flag_type is FlagType.DOUBLE:
        return _strtod(text)
    return _integer(flag_type, text)


def _integer(flag_type: FlagType, text: str) -> int | None:
    hexadecimal = text.startswith(("0x", "0X"))  # decided before any blanks are skipped, as gflags does
    unsigned = flag_type in {FlagType.UINT32, FlagType.UINT64}
    if unsigned:
        text = text.lstrip(" ")
        if text.startswith("-"):
            return None
    if hexadecimal:
        match = _HEX_INT.fullmatch(text)
        if match is None:
            return None
        number = int(match.group(1), 16)
    else:
        match = _DECIMAL_INT.fullmatch(text)
        if match is None:
            return None
        number = int(match.group(2))
        if match.group(1) == "-":
            number = -number
    low, high = _RANGES[flag_type]
    if unsigned:
        if abs(number) > 2**64 - 1:  # strtoull's ERANGE
            return None
        number %= 2**64  # strtoull negates in unsigned arithmetic ("\t-1" is 2**64 - 1)
    elif not -(2**63) <= number <= 2**63 - 1:  # strtoll's ERANGE
        return None
    return number if low <= number <= high else None


def _strtod(text: str) -> float | None:
    body = text.lstrip(_C_SPACE)
    if _DECIMAL_FLOAT.fullmatch(body):
        number = float(body)
        if math.isinf(number):  # overflow: HUGE_VAL with ERANGE
            return None
        if number == 0.0 and any(digit in "123456789" for digit in re.split("[eE]", body)[0]):
            return None  # underflow to zero: ERANGE
        return number
    hex_match = _HEX_FLOAT.fullmatch(body)
    if hex_match is not None:
        mantissa = hex_match.group(2)
        if "p" not in mantissa.lower():
            mantissa += "p0"
        try:
            number = float.fromhex(hex_match.group(1) + "0x" + mantissa)
        except OverflowError:
            return None
        return number
    special = _SPECIAL_FLOAT.fullmatch(body)
    if special is not None:
        sign = -1.0 if special.group(1) == "-" else 1.0
        return sign * (math.nan if special.group(2).lower().startswith("nan") else math.inf)
    return None
