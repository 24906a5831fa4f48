"""The sim's extension registry and how extension tables appear in (and vanish from) its query database."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping

import pytest

from osquery_sim.extension_registry import (
    ExtensionInfo,
    ExtensionRegistry,
    ExternalColumn,
    ExternalTable,
    RegistrationRefused,
    route_columns,
    version_at_least,
)
from osquery_sim.identity import SimIdentity
from osquery_sim.tables import QueryError, SimDatabase, SimRuntime

ROUTE = [
    {"id": "column", "name": "version", "type": "TEXT", "op": "0"},
    {"id": "column", "name": "uptime", "type": "BIGINT", "op": "0"},
    {"id": "alias", "alias": "orbit_alias"},
]


def _registry(*reserved: str) -> ExtensionRegistry:
    uuids = itertools.count(100)
    return ExtensionRegistry(reserved or ("processes",), clock=lambda: 5.0, new_uuid=lambda: next(uuids))


def test_route_columns_follow_osquery_route_info() -> None:
    assert route_columns(ROUTE) == (ExternalColumn("version", "TEXT"), ExternalColumn("uptime", "BIGINT"))
    # Older SDKs send no "id"; odd types are read as TEXT; osquery's UNSIGNED_BIGINT spelling is accepted.
    assert route_columns([{"name": "a", "type": "weird"}, {"name": "b", "type": "unsigned_bigint"}]) == (
        ExternalColumn("a", "TEXT"),
        ExternalColumn("b", "UNSIGNED BIGINT"),
    )


@pytest.mark.parametrize(
    ("required", "version", "ok"),
    [("1.7.7", "", True), ("1.7.7", "1.7.7", True), ("1.7.7", "5.12.1", True), ("1.7.7", "1.7.6", False),
     ("1.7.7", "1.6", False), ("1.7.7", "1", True), ("1.7.7", "0.0.0", True), ("1.7.7", "1.8.0-12-gabc", True)],
)  # fmt: skip
def test_sdk_versions_compare_like_osquery(required: str, version: str, ok: bool) -> None:
    assert version_at_least(required, version) is ok


def test_registration_assigns_uuids_and_lists_tables() -> None:
    registry = _registry()
    first = registry.register(ExtensionInfo("ext.one", "1.0"), {"table": {"orbit_info": ROUTE}, "logger": {}})
    assert first.uuid == 100 and registry.extensions() == {100: ExtensionInfo("ext.one", "1.0")}
    assert registry.tables() == {"orbit_info": ExternalTable("orbit_info", 100, route_columns(ROUTE))}
    before = registry.generation
    assert registry.deregister(100) is not None and registry.tables() == {} and registry.generation > before
    assert registry.deregister(100) is None


@pytest.mark.parametrize(
    ("broadcast", "message"),
    [
        ({"table": {"processes": ROUTE}}, "Failed adding registry broadcast"),  # a table the sim has
        ({"table": {"Orbit_Info": ROUTE}}, "Failed adding registry broadcast"),  # taken by another extension
        ({"table": {"empty": []}}, "Failed adding registry broadcast"),  # no columns
        ({"table": {"fine": ROUTE}}, "Duplicate extension registered"),  # same name as the registered one
    ],
)
def test_refused_registrations(broadcast: Mapping[str, Mapping[str, list[dict[str, str]]]], message: str) -> None:
    registry = _registry()
    registry.register(ExtensionInfo("ext.one"), {"table": {"orbit_info": ROUTE}})
    name = "ext.one" if message.startswith("Duplicate") else "ext.two"
    with pytest.raises(RegistrationRefused) as refused:
        registry.register(ExtensionInfo(name), broadcast)
    assert refused.value.message == message
    assert list(registry.extensions()) == [100]


def test_an_old_sdk_is_refused() -> None:
    with pytest.raises(RegistrationRefused, match="Incompatible extension SDK version"):
        _registry().register(ExtensionInfo("old", sdk_version="1.5.0"), {})


class FakeExtensions:
    """An ExternalTableSource whose tables and rows the test controls."""

    def __init__(self) -> None:
        self.tables: dict[str, ExternalTable] = {}
        self.rows: dict[str, list[dict[str, str]]] = {}
        self.calls: list[str] = []
        self.failing = False

    def external_tables(self) -> Mapping[str, ExternalTable]:
        return dict(self.tables)

    def generate(self, table: ExternalTable) -> list[dict[str, str]]:
        self.calls.append(table.name)
        if self.failing:
            raise ConnectionError("extension went away")
        return self.rows.get(table.name, [])


@pytest.fixture
def database() -> Iterator[SimDatabase]:
    identity = SimIdentity(uuid="U", hostname="h", computer_name="h", local_hostname="h")
    db = SimDatabase(identity, SimRuntime(version="5.14.1+sim", instance_id="i", pid=1, start_time=1))
    yield db
    db.close()


def test_extension_tables_come_and_go_with_their_extension(database: SimDatabase) -> None:
    source = FakeExtensions()
    database.attach_external_tables(source)
    registry_sql = "SELECT name, owner_uuid, internal, active FROM osquery_registry WHERE name = 'orbit_info'"
    with pytest.raises(QueryError, match="no such table: orbit_info"):
        database.query("SELECT version FROM orbit_info")
    assert database.query(registry_sql) == []

    source.tables["orbit_info"] = ExternalTable("orbit_info", 4242, route_columns(ROUTE))
    source.rows["orbit_info"] = [{"version": "1.2.3", "uptime": "0x10", "ignored": "x"}, {"version": "2"}]
    assert database.query_typed("SELECT version, uptime FROM orbit_info ORDER BY version") == [
        {"version": "1.2.3", "uptime": 16},  # BIGINT column: cast like osquery (strtoll, base 0)
        {"version": "2", "uptime": None},  # a column the extension left out is NULL
    ]
    assert database.query(registry_sql) == [
        {"name": "orbit_info", "owner_uuid": "4242", "internal": "0", "active": "1"}
    ]
    assert source.calls == ["orbit_info"]  # the registry query above does not generate the table
    source.rows["orbit_info"] = [{"version": "live"}]
    assert database.query("SELECT version FROM orbit_info") == [{"version": "live"}]  # generated per query

    with pytest.raises(QueryError, match="may not be modified"):
        database.query("DELETE FROM orbit_info")

    source.failing = True
    assert database.query("SELECT version FROM orbit_info") == []  # a failing extension gives no rows

    source.tables.clear()
    with pytest.raises(QueryError, match="no such table: orbit_info"):
        database.query("SELECT version FROM orbit_info")
    assert database.query(registry_sql) == []
    assert database.query("SELECT COUNT(*) AS n FROM osquery_registry WHERE name = 'processes'") == [{"n": "1"}]


def test_detaching_the_source_drops_its_tables(database: SimDatabase) -> None:
    source = FakeExtensions()
    source.tables["fleetd_logs"] = ExternalTable("fleetd_logs", 7, (ExternalColumn("message", "TEXT"),))
    database.attach_external_tables(source)
    assert database.query("SELECT * FROM fleetd_logs") == []
    database.attach_external_tables(None)
    with pytest.raises(QueryError, match="no such table: fleetd_logs"):
        database.query("SELECT * FROM fleetd_logs")
