"""osquery's flag default expressions, as written in its C++ source, turned into Python values.

The flag table (``data/osquery-flags.tsv``) keeps each default exactly as the ``FLAG(...)`` macro spells it:
``"hostname"``, ``true``, ``60 * 60``, ``OSQUERY_DB_HOME "osquery.db"``, ``LOG_LOCAL3 >> 3``, ``kEventTraceBufferSize``.
This module evaluates those expressions without any I/O: string literals and the path macros of osquery's
``osquery/utils/config/default_paths.h`` (per platform) are concatenated; integer expressions are evaluated over
literals and the few named constants osquery uses. Anything else falls back to the type's zero value and is reported
as unresolved, so the loader can list it.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Mapping
from dataclasses import dataclass

FlagValue = bool | int | float | str

# osquery/utils/config/default_paths.h. The last branch of that header (``#else``) is macOS.
HOME_PATHS: Mapping[str, Mapping[str, str]] = {
    "linux": {
        "OSQUERY_HOME": "/etc/osquery/",
        "OSQUERY_DB_HOME": "/var/osquery/",
        "OSQUERY_SOCKET": "/var/osquery/",
        "OSQUERY_PIDFILE": "/var/run/",
        "OSQUERY_LOG_HOME": "/var/log/osquery/",
        "OSQUERY_CERTS_HOME": "/opt/osquery/share/osquery/certs/",
    },
    "windows": {
        "OSQUERY_HOME": "\\Program Files\\osquery\\",
        "OSQUERY_DB_HOME": "\\Program Files\\osquery\\",
        "OSQUERY_SOCKET": "\\\\.\\pipe\\",
        "OSQUERY_PIDFILE": "\\Program Files\\osquery\\",
        "OSQUERY_LOG_HOME": "\\Program Files\\osquery\\log\\",
        "OSQUERY_CERTS_HOME": "\\Program Files\\osquery\\certs\\",
    },
    "freebsd": {
        "OSQUERY_HOME": "/var/db/osquery/",
        "OSQUERY_DB_HOME": "/var/db/osquery/",
        "OSQUERY_SOCKET": "/var/run/",
        "OSQUERY_PIDFILE": "/var/run/",
        "OSQUERY_LOG_HOME": "/var/log/osquery/",
        "OSQUERY_CERTS_HOME": "/etc/ssl/",
    },
    "darwin": {
        "OSQUERY_HOME": "/var/osquery/",
        "OSQUERY_DB_HOME": "/var/osquery/",
        "OSQUERY_SOCKET": "/var/osquery/",
        "OSQUERY_PIDFILE": "/var/osquery/",
        "OSQUERY_LOG_HOME": "/var/log/osquery/",
        "OSQUERY_CERTS_HOME": "/var/osquery/certs/",
    },
}

# Named integer constants that appear in default expressions: syslog's LOG_LOCAL3 (19 << 3) and the ETW session
# sizes of osquery/events/windows/etw/etw_krabs.h.
INT_CONSTANTS: Mapping[str, int] = {
    "LOG_LOCAL3": 19 << 3,
    "kEventTraceBufferSize": 256,
    "kEventTraceMinimumBuffers": 12,
    "kEventTraceMaximumBuffers": 48,
    "kEventTraceFlushTimer": 1,
}

_BOOL_WORDS: Mapping[str, bool] = {"true": True, "false": False}
_INT_TYPES = frozenset({"int32", "uint32", "int64", "uint64"})
_TOKEN = re.compile(r'\s*(?:"((?:[^"\\]|\\.)*)"|([A-Za-z_][A-Za-z0-9_]*))')
_FS_PATH_JOIN = re.compile(
    r'^\(fs::path\(([A-Za-z_][A-Za-z0-9_]*)\)\s*/\s*"([^"\\]*)"\)\.make_preferred\(\)\.string\(\)$'
)
_INT_SUFFIX = re.compile(r"\b(0[xX][0-9a-fA-F]+|[0-9]+)[uUlL]+\b")
_ESCAPES: Mapping[str, str] = {"n": "\n", "t": "\t", "r": "\r", "0": "\0", "\\": "\\", '"': '"', "'": "'"}


@dataclass(frozen=True)
class Resolved:
    """A default value, and whether it came from the expression (False: the type's zero value was used)."""

    value: FlagValue
    exact: bool


def platform_key(sys_platform: str) -> str:
    """The branch of default_paths.h that applies to a ``sys.platform`` value."""
    if sys_platform.startswith("linux"):
        return "linux"
    if sys_platform in {"win32", "cygwin"}:
        return "windows"
    if sys_platform.startswith("freebsd"):
        return "freebsd"
    return "darwin"


def zero_value(type_name: str) -> FlagValue:
    if type_name == "bool":
        return False
    if type_name in _INT_TYPES:
        return 0
    if type_name == "double":
        return 0.0
    return ""


def resolve_default(expression: str, type_name: str, platform: str = "linux") -> Resolved:
    """Evaluate a C++ default expression for a flag of gflags type ``type_name`` on ``platform``."""
    text = expression.strip()
    value: FlagValue | None
    if type_name == "bool":
        value = _BOOL_WORDS.get(text)
    elif type_name == "string":
        value = _string_expression(text, HOME_PATHS[platform])
    elif type_name in _INT_TYPES:
        value = _int_expression(text)
    elif type_name == "double":
        value = _double_expression(text)
    else:
        raise ValueError(f"unknown gflags type {type_name!r}")
    if value is None:
        return Resolved(zero_value(type_name), exact=False)
    return Resolved(value, exact=True)


def _unescape(literal: str) -> str:
    return re.sub(r"\\(.)", lambda match: _ESCAPES.get(match.group(1), match.group(1)), literal)


def _string_expression(text: str, macros: Mapping[str, str]) -> str | None:
    joined = _FS_PATH_JOIN.match(text)
    if joined is not None:
        home = macros.get(joined.group(1))
        return None if home is None else home + joined.group(2)
    parts: list[str] = []
    position = 0
    while position < len(text):
        token = _TOKEN.match(text, position)
        if token is None or token.end() == position:
            return None
        literal, name = token.group(1), token.group(2)
        if literal is not None:
            parts.append(_unescape(literal))
        elif name in macros:
            parts.append(macros[name])
        else:
            return None
        position = token.end()
        while position < len(text) and text[position].isspace():
            position += 1
    return "".join(parts) if parts else None


def _int_expression(text: str) -> int | None:
    try:
        tree = ast.parse(_INT_SUFFIX.sub(r"\1", text), mode="eval")
    except SyntaxError:
        return None
    return _evaluate(tree.body)


def _double_expression(text: str) -> float | None:
    try:
        return float(text.rstrip("fF"))
    except ValueError:
        whole = _int_expression(text)
        return None if whole is None else float(whole)


def _evaluate(node: ast.expr) -> int | None:
    """Integer arithmetic over literals and INT_CONSTANTS, with C's truncating division."""
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return node.value
    if isinstance(node, ast.Name):
        return INT_CONSTANTS.get(node.id)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        operand = _evaluate(node.operand)
        if operand is None:
            return None
        return -operand if isinstance(node.op, ast.USub) else operand
    if isinstance(node, ast.BinOp):
        left, right = _evaluate(node.left), _evaluate(node.right)
        if left is None or right is None:
            return None
        return _binary(node.op, left, right)
    return None


def _binary(op: ast.operator, left: int, right: int) -> int | None:
    if isinstance(op, ast.Add):
        return left + right
    if isinstance(op, ast.Sub):
        return left - right
    if isinstance(op, ast.Mult):
        return left * right
    if isinstance(op, ast.Div | ast.FloorDiv) and right != 0:
        quotient = abs(left) // abs(right)
        return quotient if (left >= 0) == (right >= 0) else -quotient
    if isinstance(op, ast.LShift) and right >= 0:
        return left << right
    if isinstance(op, ast.RShift) and right >= 0:
        return left >> right
    if isinstance(op, ast.BitOr):
        return left | right
    if isinstance(op, ast.BitAnd):
        return left & right
    return None
