"""osquery's table schemas as typed values, read from the packaged ``data/osquery-tables.json``.

Owns the mapping from osquery's column types (``TEXT``, ``INTEGER``, ``BIGINT``, ``UNSIGNED_BIGINT``, ``DOUBLE``,
``DATETIME``) to the SQL type osquery declares for a virtual table column, so the sim's tables carry osquery's exact
column names, order and declared types. The JSON is parsed once and validated at this boundary.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from types import MappingProxyType

# osquery's columnTypeName() (osquery/core/sql/column.cpp); DATETIME is a TEXT_TYPE alias in tools/codegen/gentable.py.
_SQL_TYPES: Mapping[str, str] = MappingProxyType(
    {
        "TEXT": "TEXT",
        "INTEGER": "INTEGER",
        "BIGINT": "BIGINT",
        "UNSIGNED_BIGINT": "UNSIGNED BIGINT",
        "DOUBLE": "DOUBLE",
        "DATETIME": "TEXT",
        "BLOB": "BLOB",
    }
)
INTEGER_TYPES = frozenset({"INTEGER", "BIGINT", "UNSIGNED_BIGINT"})
DOUBLE_TYPES = frozenset({"DOUBLE"})


@dataclass(frozen=True)
class ColumnSpec:
    name: str
    type: str
    description: str

    @property
    def sql_type(self) -> str:
        """The type osquery declares for this column in its virtual table's CREATE statement."""
        return _SQL_TYPES[self.type]


@dataclass(frozen=True)
class TableSchema:
    name: str
    columns: tuple[ColumnSpec, ...]
    spec: str

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(column.name for column in self.columns)


def _text(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a string")
    return value


def parse_schemas(document: object) -> dict[str, TableSchema]:
    """Validate the decoded osquery-tables.json document (table → {columns: [...], spec}) into schemas."""
    if not isinstance(document, dict):
        raise ValueError("table schemas must be a JSON object")
    schemas: dict[str, TableSchema] = {}
    for name, body in document.items():
        table = _text(name, "table name")
        if not isinstance(body, dict) or not isinstance(body.get("columns"), list):
            raise ValueError(f"table {table}: columns must be a list")
        columns: list[ColumnSpec] = []
        for item in body["columns"]:
            if not isinstance(item, dict):
                raise ValueError(f"table {table}: a column must be an object")
            column = ColumnSpec(
                name=_text(item.get("name"), f"{table} column name"),
                type=_text(item.get("type"), f"{table} column type"),
                description=_text(item.get("description", ""), f"{table} column description"),
            )
            if column.type not in _SQL_TYPES:
                raise ValueError(f"table {table}: unknown column type {column.type}")
            columns.append(column)
        schemas[table] = TableSchema(table, tuple(columns), _text(body.get("spec", ""), f"{table} spec"))
    return schemas


@functools.cache
def osquery_schemas() -> Mapping[str, TableSchema]:
    """All of osquery's table schemas, from the package data (read once per process)."""
    raw = resources.files("osquery_sim").joinpath("data/osquery-tables.json").read_text(encoding="utf-8")
    return MappingProxyType(parse_schemas(json.loads(raw)))
