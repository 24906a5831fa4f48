"""The sim's SQL database: osquery's tables in an in-memory SQLite, read-only to queries, errors in osquery's words.

Owns ``SimDatabase``. Each instance has its own connection holding the sim's tables with osquery's exact column
names and declared types (from the packaged osquery-tables.json). Static tables are filled from a ``SimIdentity`` and
``SimRuntime``; live tables (processes, uptime, time, interface_addresses, users) are refilled at the start of each
query that names them. Queries pass an authorizer modelled on osquery's allow-list minus everything that writes
(osquery lets users create tables and views; the sim does not), so nothing a query does can change the tables.
Errors raise ``QueryError`` carrying SQLite's message ("no such table: x", "near \\"x\\": syntax error", ...) and the
SQLite result code osquery's shell exits with.

Extension tables come from an attached ``ExternalTableSource`` (the extension manager): before each query the
database creates the tables registered extensions provide (with the column types of their routes), drops those of
extensions that went away (so a query on one fails with "no such table", as in osquery), lists them in
``osquery_registry`` with their extension's uuid, and fills the ones the query names with the extension's rows. An
extension that fails to answer contributes no rows to that query.
"""

from __future__ import annotations

import logging
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Protocol

from osquery_sim import live_rows
from osquery_sim.extension_registry import ExternalTable
from osquery_sim.identity import SimIdentity
from osquery_sim.table_rows import (
    DEFAULT_PLUGINS,
    OsqueryFlag,
    RawRow,
    RegistryPlugin,
    SimRuntime,
    flag_rows,
    kernel_info_rows,
    os_version_rows,
    osquery_info_rows,
    platform_info_rows,
    registry_rows,
    system_info_rows,
    time_rows,
    uptime_rows,
)
from osquery_sim.table_schemas import ColumnSpec, TableSchema, osquery_schemas
from osquery_sim.table_values import RawValue, SqlValue, cast_to_column, render_value

__all__ = [
    "DEFAULT_PLUGINS",
    "SQLITE_AUTH",
    "SQLITE_ERROR",
    "ExternalTableSource",
    "OsqueryFlag",
    "QueryError",
    "QueryOutcome",
    "RegistryPlugin",
    "SimDatabase",
    "SimRuntime",
    "StatementResult",
    "split_statements",
]

log = logging.getLogger(__name__)

SQLITE_ERROR = 1
SQLITE_AUTH = 23
TypedRow = dict[str, int | float | str | None]


class TableKind(Enum):
    STATIC = "static"
    LIVE = "live"


SIM_TABLES: Mapping[str, TableKind] = {
    "interface_addresses": TableKind.LIVE,
    "kernel_info": TableKind.STATIC,
    "os_version": TableKind.STATIC,
    "osquery_flags": TableKind.STATIC,
    "osquery_info": TableKind.STATIC,
    "osquery_registry": TableKind.STATIC,
    "platform_info": TableKind.STATIC,
    "processes": TableKind.LIVE,
    "system_info": TableKind.STATIC,
    "time": TableKind.LIVE,
    "uptime": TableKind.LIVE,
    "users": TableKind.LIVE,
}

# osquery's kAllowedSQLiteActionCodes without its writers (INSERT/UPDATE/DELETE, CREATE/DROP, TRANSACTION).
_ALLOWED_ACTIONS = frozenset(
    {sqlite3.SQLITE_READ, sqlite3.SQLITE_SELECT, sqlite3.SQLITE_FUNCTION, sqlite3.SQLITE_RECURSIVE}
)
# osquery's kAllowedSQLitePragmas that only read.
_ALLOWED_PRAGMAS = frozenset({"table_info", "table_xinfo", "function_list", "collation_list"})
_DATA_CHANGES = frozenset({sqlite3.SQLITE_INSERT, sqlite3.SQLITE_UPDATE, sqlite3.SQLITE_DELETE})


class ExternalTableSource(Protocol):
    """Where extension tables come from (the extension manager)."""

    def external_tables(self) -> Mapping[str, ExternalTable]: ...

    def generate(self, table: ExternalTable) -> list[dict[str, str]]: ...


def external_schema(table: ExternalTable) -> TableSchema:
    """An extension table's schema in osquery's type names (``UNSIGNED BIGINT`` → ``UNSIGNED_BIGINT``)."""
    columns = tuple(ColumnSpec(c.name, c.type.replace(" ", "_"), "") for c in table.columns)
    return TableSchema(table.name, columns, "extension")


_SQL_LITERALS = re.compile(r"'(?:[^']|'')*'|--[^\n]*|/\*.*?(?:\*/|$)", re.DOTALL)


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class QueryError(Exception):
    """A failed query: ``message`` is what osquery reports, ``code`` the SQLite result code (shell exit status)."""

    def __init__(self, message: str, code: int = SQLITE_ERROR) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


@dataclass(frozen=True)
class StatementResult:
    columns: tuple[str, ...]
    rows: tuple[tuple[SqlValue, ...], ...]


@dataclass(frozen=True)
class QueryOutcome:
    """The statements of one query text that ran, in order, and the error that stopped the rest (if any)."""

    results: tuple[StatementResult, ...]
    error: QueryError | None


def split_statements(sql: str) -> list[str]:
    """Split on the ``;`` that end complete statements (SQLite's own tokenizer decides), keeping a trailing rest."""
    statements: list[str] = []
    start = 0
    for index, char in enumerate(sql):
        if char == ";" and sqlite3.complete_statement(sql[start : index + 1]):
            statements.append(sql[start : index + 1])
            start = index + 1
    if sql[start:].strip():
        statements.append(sql[start:])
    return statements


class SimDatabase:
    """An in-memory SQLite with the sim's osquery tables; safe to share between threads."""

    def __init__(
        self,
        identity: SimIdentity,
        runtime: SimRuntime,
        *,
        flags: Iterable[OsqueryFlag] = (),
        plugins: Iterable[RegistryPlugin] = DEFAULT_PLUGINS,
        root: Path = Path("/"),
        clock: Callable[[], float] = time.time,
    ) -> None:
        schemas = osquery_schemas()
        self._schemas: dict[str, TableSchema] = {name: schemas[name] for name in SIM_TABLES}
        self._identity = identity
        self._root = root
        self._clock = clock
        self._lock = threading.RLock()
        self._trusted = False
        self._denial: tuple[str, int] | None = None
        self._mentions = {name: re.compile(rf"\b{name}\b", re.IGNORECASE) for name in SIM_TABLES}
        self._plugins = tuple(plugins)
        self._external_source: ExternalTableSource | None = None
        self._external: dict[str, ExternalTable] = {}
        self._external_schemas: dict[str, TableSchema] = {}
        self._external_mentions: dict[str, re.Pattern[str]] = {}
        # No statement cache: every statement is prepared (and authorized) afresh, so a query can never reuse a
        # statement prepared while the sim itself was refilling a table.
        self._conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False, cached_statements=0)
        with self._lock:
            for schema in self._schemas.values():
                columns = ", ".join(f'"{column.name}" {column.sql_type}' for column in schema.columns)
                self._conn.execute(f'CREATE TABLE "{schema.name}" ({columns})')
            self._conn.set_authorizer(self._authorize)
            self._fill("system_info", system_info_rows(identity))
            self._fill("os_version", os_version_rows(identity))
            self._fill("kernel_info", kernel_info_rows(identity))
            self._fill("platform_info", platform_info_rows(identity))
            self._fill("osquery_registry", registry_rows(sorted(SIM_TABLES), self._plugins))
            self._fill("osquery_flags", flag_rows(flags))
            self.update_runtime(runtime)

    # --- public API ------------------------------------------------------------------------------------------------

    def tables(self) -> list[str]:
        return sorted(self._schemas)

    def columns(self, table: str) -> tuple[str, ...]:
        return self._schemas[table].column_names

    def update_runtime(self, runtime: SimRuntime) -> None:
        """Refill osquery_info, e.g. after a new config changed config_hash."""
        with self._lock:
            self._runtime = runtime
            self._fill("osquery_info", osquery_info_rows(self._identity, runtime))

    def update_identity(self, identity: SimIdentity, runtime: SimRuntime) -> None:
        """Become another host (load mode shares one database between simulated hosts)."""
        with self._lock:
            self._identity = identity
            self._fill("system_info", system_info_rows(identity))
            self._fill("os_version", os_version_rows(identity))
            self._fill("kernel_info", kernel_info_rows(identity))
            self._fill("platform_info", platform_info_rows(identity))
            self._runtime = runtime
            self._fill("osquery_info", osquery_info_rows(identity, runtime))

    @property
    def identity(self) -> SimIdentity:
        return self._identity

    @property
    def runtime(self) -> SimRuntime:
        """What osquery_info was last filled from."""
        return self._runtime

    def attach_external_tables(self, source: ExternalTableSource | None) -> None:
        """Serve extension tables from ``source`` from the next query on (None detaches them all)."""
        with self._lock:
            self._external_source = source

    def set_flags(self, flags: Iterable[OsqueryFlag]) -> None:
        with self._lock:
            self._fill("osquery_flags", flag_rows(flags))

    def execute(self, sql: str) -> QueryOutcome:
        """Run every statement of ``sql`` in order, stopping at the first error (as osquery's shell does)."""
        sql = sql.split("\x00", 1)[0]  # osquery hands SQLite a C string
        results: list[StatementResult] = []
        with self._lock:
            self._sync_external(sql)
            self._refresh_live(sql)
            for statement in split_statements(sql):
                try:
                    result = self._run(statement)
                except QueryError as exc:
                    return QueryOutcome(tuple(results), exc)
                if result is not None:
                    results.append(result)
        return QueryOutcome(tuple(results), None)

    def query_typed(self, sql: str) -> list[TypedRow]:
        """Rows of all statements with SQLite's types (BLOBs as text); raises QueryError."""
        outcome = self.execute(sql)
        if outcome.error is not None:
            raise outcome.error
        rows: list[TypedRow] = []
        for result in outcome.results:
            for values in result.rows:
                row: TypedRow = {}
                for column, value in zip(result.columns, values, strict=True):
                    row[column] = value.decode("utf-8", errors="replace") if isinstance(value, bytes) else value
                rows.append(row)
        return rows

    def query(self, sql: str) -> list[dict[str, str]]:
        """Rows as osquery's string rows (distributed results, logs): every value a string, NULL as ""."""
        outcome = self.execute(sql)
        if outcome.error is not None:
            raise outcome.error
        return [
            {column: render_value(value) for column, value in zip(result.columns, values, strict=True)}
            for result in outcome.results
            for values in result.rows
        ]

    def sqlite_text(self, value: SqlValue) -> str:
        """``value`` as ``sqlite3_column_text`` renders it, which is what osquery's shell prints."""
        if isinstance(value, float):
            with self._lock:
                text = self._conn.execute("SELECT CAST(? AS TEXT)", (value,)).fetchone()[0]
            return text if isinstance(text, str) else ""
        return render_value(value)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # --- internals -------------------------------------------------------------------------------------------------

    def _run(self, statement: str) -> StatementResult | None:
        self._denial = None
        try:
            cursor = self._conn.execute(statement)
            if cursor.description is None:
                return None
            columns = tuple(str(item[0]) for item in cursor.description)
            rows = tuple(tuple(row) for row in cursor.fetchall())
        except sqlite3.Error as exc:
            code = getattr(exc, "sqlite_errorcode", None)
            if code == SQLITE_AUTH and self._denial is not None:
                raise QueryError(*self._denial) from None
            raise QueryError(str(exc), code if isinstance(code, int) else SQLITE_ERROR) from None
        return StatementResult(columns, rows)

    def _authorize(
        self, action: int, arg1: str | None, arg2: str | None, database: str | None, trigger: str | None
    ) -> int:
        if self._trusted or action in _ALLOWED_ACTIONS:
            return sqlite3.SQLITE_OK
        if action == sqlite3.SQLITE_PRAGMA and arg1 is not None and arg1.lower() in _ALLOWED_PRAGMAS:
            return sqlite3.SQLITE_OK
        if (
            self._denial is None
            and action in _DATA_CHANGES
            and arg1 is not None
            and (arg1.lower() in self._schemas or arg1 in self._external_schemas)
        ):
            # What SQLite says for osquery's tables, which are virtual tables without xUpdate.
            self._denial = (f"table {arg1.lower()} may not be modified", SQLITE_ERROR)
        return sqlite3.SQLITE_DENY

    def _refresh_live(self, sql: str) -> None:
        for name, kind in SIM_TABLES.items():
            if kind is TableKind.LIVE and self._mentions[name].search(sql):
                self._fill(name, self._live_rows(name))

    def _live_rows(self, name: str) -> list[RawRow]:
        now = self._clock()
        if name == "processes":
            return live_rows.process_rows()
        if name == "uptime":
            return uptime_rows(live_rows.uptime_seconds())
        if name == "time":
            return time_rows(now, live_rows.local_timezone(now))
        if name == "interface_addresses":
            return live_rows.interface_address_rows()
        if name == "users":
            return live_rows.user_rows(self._root)
        raise KeyError(name)

    def _sync_external(self, sql: str) -> None:
        source = self._external_source
        current = dict(source.external_tables()) if source is not None else {}
        if current != self._external:
            self._replace_external(current)
        if source is None or not current:
            return
        code = _SQL_LITERALS.sub(" ", sql)  # 'orbit_info' in a WHERE clause does not read the table
        for name, table in current.items():
            if not self._external_mentions[name].search(code):
                continue
            try:
                generated = source.generate(table)
            except Exception as exc:
                log.warning("event=extension_table_failed table=%s error=%s", name, exc)
                generated = []
            self._fill(name, [dict[str, RawValue](row) for row in generated])

    def _replace_external(self, current: dict[str, ExternalTable]) -> None:
        """Create, drop and re-list extension tables so they match ``current``."""
        self._trusted = True
        try:
            for name, table in self._external.items():
                if current.get(name) != table:
                    self._conn.execute(f"DROP TABLE IF EXISTS {_quoted(name)}")
                    self._external_schemas.pop(name, None)
                    self._external_mentions.pop(name, None)
            for name, table in current.items():
                if self._external.get(name) != table:
                    schema = external_schema(table)
                    columns = ", ".join(f"{_quoted(c.name)} {c.sql_type}" for c in schema.columns)
                    self._conn.execute(f"CREATE TABLE {_quoted(name)} ({columns})")
                    self._external_schemas[name] = schema
                    self._external_mentions[name] = re.compile(rf"(?<!\w){re.escape(name)}(?!\w)", re.IGNORECASE)
        finally:
            self._trusted = False
        self._external = current
        extension_plugins = [RegistryPlugin("table", t.name, owner_uuid=t.owner_uuid) for t in current.values()]
        self._fill("osquery_registry", registry_rows(sorted(SIM_TABLES), [*self._plugins, *extension_plugins]))

    def _fill(self, name: str, rows: list[RawRow]) -> None:
        schema = self._schemas.get(name) or self._external_schemas[name]
        values = [tuple(cast_to_column(row.get(column.name), column.type) for column in schema.columns) for row in rows]
        marks = ", ".join("?" for _ in schema.columns)
        self._trusted = True
        try:
            self._conn.execute("BEGIN")
            try:
                self._conn.execute(f'DELETE FROM "{name}"')
                self._conn.executemany(f'INSERT INTO "{name}" VALUES ({marks})', values)
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")
        finally:
            self._trusted = False
