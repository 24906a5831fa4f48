"""Turning osquery table rows (from ``host_details`` at enroll, or from detail queries) into host columns.

The detail queries are the ones the stub sends through ``distributed/read`` to keep a host's record current,
named as Fleet names them (``fleet_detail_query_<name>``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

DETAIL_PREFIX = "fleet_detail_query_"


@dataclass(frozen=True)
class DetailQuery:
    name: str
    sql: str
    discovery: str = "SELECT 1"

    @property
    def query_name(self) -> str:
        return f"{DETAIL_PREFIX}{self.name}"


DETAIL_QUERIES: tuple[DetailQuery, ...] = (
    DetailQuery("system_info", "SELECT * FROM system_info LIMIT 1"),
    DetailQuery("os_version", "SELECT * FROM os_version LIMIT 1"),
    DetailQuery("osquery_info", "SELECT * FROM osquery_info LIMIT 1"),
    DetailQuery(
        "orbit_info",
        "SELECT * FROM orbit_info",
        "SELECT 1 FROM osquery_registry WHERE active = true AND registry = 'table' AND name = 'orbit_info'",
    ),
)

_BY_QUERY_NAME = {q.query_name: q.name for q in DETAIL_QUERIES}


def detail_table_for(query_name: str) -> str | None:
    return _BY_QUERY_NAME.get(query_name)


def details_from_system_info(row: Mapping[str, str]) -> dict[str, str]:
    return {
        "uuid": row.get("uuid", ""),
        "hardware_serial": row.get("hardware_serial", ""),
        "hardware_model": row.get("hardware_model", ""),
        "hostname": row.get("hostname", ""),
        "computer_name": row.get("computer_name", "") or row.get("hostname", ""),
    }


def details_from_os_version(row: Mapping[str, str]) -> dict[str, str]:
    name = row.get("name", "")
    version = row.get("version", "")
    return {
        "platform": row.get("platform", ""),
        "platform_like": row.get("platform_like", ""),
        "os_version": f"{name} {version}".strip(),
    }


def details_from_osquery_info(row: Mapping[str, str]) -> dict[str, str]:
    return {"osquery_version": row.get("version", "")}


def details_from_orbit_info(row: Mapping[str, str]) -> dict[str, str]:
    return {"orbit_version": row.get("version", ""), "desktop_version": row.get("desktop_version", "")}


_EXTRACTORS = {
    "system_info": details_from_system_info,
    "os_version": details_from_os_version,
    "osquery_info": details_from_osquery_info,
    "orbit_info": details_from_orbit_info,
}


def details_from_table(table: str, row: Mapping[str, str]) -> dict[str, str]:
    extractor = _EXTRACTORS.get(table)
    return extractor(row) if extractor else {}


def details_from_enroll(host_details: Mapping[str, Mapping[str, str]]) -> dict[str, str]:
    merged: dict[str, str] = {}
    for table in ("system_info", "os_version", "osquery_info"):
        row = host_details.get(table)
        if row:
            merged.update({k: v for k, v in details_from_table(table, row).items() if v})
    return merged


def osquery_identifier(mode: str, provided: str, host_details: Mapping[str, Mapping[str, str]]) -> str:
    """The identifier an osquery enrollment is matched on, by Fleet's ``osquery.host_identifier`` setting."""
    lookups = {
        "instance": ("osquery_info", "instance_id"),
        "uuid": ("osquery_info", "uuid"),
        "hostname": ("system_info", "hostname"),
    }
    if mode in lookups:
        table, column = lookups[mode]
        value = host_details.get(table, {}).get(column, "")
        if value:
            return value
    return provided
