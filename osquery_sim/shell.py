"""``osqueryd -S [--json] "SQL"``: run one query text against the sim's tables and print it as osquery's shell does.

Owns the shell's output formats. Like osquery's ``shell_exec``, all statements' rows are collected into one result
(the columns of the first statement that returned rows lead the table), printed once at the end — also when a
later statement failed — and the error goes to stderr as ``Error: <message>`` with the SQLite result code as exit
status (1 for most errors). ``--json`` prints osquery's ``jsonPrint``: ``[``, one compact object per line indented by
two spaces (keys sorted, every value a string, NULL as ""), ``]``. Without it, osquery's pretty table.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TextIO

from osquery_sim.tables import SimDatabase

ShellRow = dict[str, str]

# rapidjson's Writer escapes: the two-character forms it knows, \u00XX (upper-case hex) for other controls.
_JSON_ESCAPES = {
    **{code: f"\\u{code:04X}" for code in range(0x20)},
    0x08: "\\b",
    0x09: "\\t",
    0x0A: "\\n",
    0x0C: "\\f",
    0x0D: "\\r",
    0x22: '\\"',
    0x5C: "\\\\",
}


def json_string(text: str) -> str:
    return '"' + text.translate(_JSON_ESCAPES) + '"'


def json_row(row: ShellRow) -> str:
    """One row as rapidjson writes osquery's ``std::map`` row: compact, keys in byte order."""
    return "{" + ",".join(f"{json_string(key)}:{json_string(row[key])}" for key in sorted(row)) + "}"


def render_json(rows: Sequence[ShellRow]) -> str:
    return "[\n" + ",\n".join("  " + json_row(row) for row in rows) + "\n]\n"


def render_pretty(rows: Sequence[ShellRow], columns: Sequence[str]) -> str:
    """osquery's prettyPrint: +---+ rules, | separated cells padded to the widest value or column name."""
    if not rows:
        return ""
    lengths: dict[str, int] = {}
    for row in rows:
        for column, value in row.items():
            lengths[column] = max(lengths.get(column, 0), len(value))
    for column in rows[0]:
        lengths[column] = max(lengths[column], len(column))
    rule = "+" + "".join("-" * (lengths.get(column, len(column)) + 2) + "+" for column in columns) + "\n"
    header = "|" + "".join(f" {column.ljust(lengths.get(column, len(column)))} |" for column in columns) + "\n"
    lines = [rule, header, rule]
    for row in rows:
        cells = []
        for column in columns:
            if column not in row or column not in lengths:
                cells.append("| " + " " * (len(column) + 1))
            else:
                value = row[column]
                padding = lengths[column] - len(value)
                cells.append("| " + (value + " " * (padding + 1) if padding >= 0 else " "))
        lines.append("".join(cells) + "|\n")
    lines.append(rule)
    return "".join(lines)


def run_shell(sql: str, database: SimDatabase, *, json_output: bool, out: TextIO, err: TextIO) -> int:
    """Run ``sql`` as osquery's shell runs a query given on the command line; returns the exit status."""
    outcome = database.execute(sql)
    rows: list[ShellRow] = []
    columns: list[str] = []
    for result in outcome.results:
        if result.rows and not columns:
            columns = list(result.columns)
        for values in result.rows:
            rows.append(dict(zip(result.columns, (database.sqlite_text(value) for value in values), strict=True)))
    if json_output:
        out.write(render_json(rows))
    else:
        out.write(render_pretty(rows, columns))
    out.flush()
    if outcome.error is not None:
        err.write(f"Error: {outcome.error.message}\n")
        err.flush()
        return outcome.error.code or 1
    return 0
