"""How osquery turns table values into SQLite values and query results back into strings.

Owns two conversions. Into SQLite: a table generator's value is cast by column type the way osquery's
``DynamicTableRow::get_column`` does (C ``strtol``/``strtod`` semantics, base 0, the whole text must parse; an empty
or unparsable number becomes NULL). Out of SQLite: ``render_value`` is osquery's ``castVariant`` (integers in decimal,
doubles with 15 significant digits and always a decimal point, NULL as the empty ``--nullvalue``).
"""

from __future__ import annotations

import re

from osquery_sim.table_schemas import DOUBLE_TYPES, INTEGER_TYPES

RawValue = str | int | float | None
SqlValue = str | int | float | bytes | None

_C_INTEGER = re.compile(r"[ \t\n\v\f\r]*([+-]?)(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)")
_C_DOUBLE = re.compile(
    r"[ \t\n\v\f\r]*[+-]?([0-9]+\.?[0-9]*([eE][+-]?[0-9]+)?|\.[0-9]+([eE][+-]?[0-9]+)?|inf|infinity|nan)", re.IGNORECASE
)
_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1


def parse_c_integer(text: str) -> int | None:
    """``strtoll(text, &end, 0)`` that must consume all of ``text`` and fit in 64 bits, else None."""
    match = _C_INTEGER.fullmatch(text)
    if match is None:
        return None
    sign, digits = match.groups()
    if digits[:2] in ("0x", "0X"):
        value = int(digits[2:], 16)
    elif len(digits) > 1 and digits[0] == "0":
        value = int(digits[1:], 8)
    else:
        value = int(digits)
    value = -value if sign == "-" else value
    return value if _INT64_MIN <= value <= _INT64_MAX else None


def parse_c_double(text: str) -> float | None:
    """``strtod`` that must consume all of ``text``, else None."""
    if _C_DOUBLE.fullmatch(text) is None:
        return None
    return float(text)


def cast_to_column(value: RawValue, column_type: str) -> RawValue:
    """The SQLite value osquery stores for ``value`` in a column of osquery type ``column_type``."""
    if value is None:
        return None
    if column_type in INTEGER_TYPES:
        if isinstance(value, bool):
            return int(value)
        if isinstance(value, int):
            return value
        if isinstance(value, float):
            return int(value)
        return parse_c_integer(value) if value else None
    if column_type in DOUBLE_TYPES:
        if isinstance(value, int | float):
            return float(value)
        return parse_c_double(value) if value else None
    if isinstance(value, float):
        return render_value(value)
    return str(value)


def render_double(value: float) -> str:
    """osquery's CastVisitor for doubles: ``std::setprecision(15)`` and a ``.0`` when no decimal point shows."""
    text = f"{value:.15g}"
    return text if "." in text else text + ".0"


def render_value(value: SqlValue) -> str:
    """A result value as osquery's string rows carry it (distributed results, result logs, host details)."""
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return render_double(value)
    return value
