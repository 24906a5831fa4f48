"""Hosts as lists and counts: the one set of read queries behind the admin REST API and the console (issue 20).

``GET /api/latest/fleet/hosts`` and the console's Hosts page parse the same parameters (Fleet's names:
``order_key``, ``order_direction``, ``page`` (from 0), ``per_page``, ``query``, ``status``, ``team_id``,
``platform``, plus exact ``orbit_version`` / ``osquery_version`` / ``fleet_desktop_version``) with
``parse_host_list_query`` and run ``list_page``. Sorting and paging walk an index (``hosts_by_<column>``, migration
2) and stop after the page; filters that no index serves (status, text) scan at most the hosts table. They run in
``database_reader``'s thread, and call no Python per row (see FAILING_SQL): the policy platform rule stays
``policies.platform_applies`` (applied to the few policy × platform pairs before the query), the online rule has a
SQL twin of ``hosts.is_online`` that a test holds to it.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum

from server_stub import hosts, policies
from server_stub.int_ranges import IdOutOfRange, parse_id
from server_stub.rollout_model import FAILED_OUTCOMES
from server_stub.version_changes import TARGET_COLUMNS, VersionChange

MAX_PER_PAGE = 10_000
MAX_SEARCH_CHARS = 256
MAX_PAGE = 1_000_000

# order_key → SQL expression; every plain column has an index (column, id), so ORDER BY … LIMIT reads one page
ORDER_KEYS: dict[str, str] = {
    "id": "h.id",
    "hostname": "h.hostname",
    "platform": "h.platform",
    "seen_time": "h.seen_time",
    "team_name": "t.name",
    "orbit_version": "h.orbit_version",
    "osquery_version": "h.osquery_version",
    "fleet_desktop_version": "h.desktop_version",
    "failing_policies_count": "failing_policies_count",
}
VERSION_FILTERS = {
    "orbit_version": "orbit_version",
    "osquery_version": "osquery_version",
    "fleet_desktop_version": "desktop_version",
}

# No Python function is called from these queries: one called per row takes the GIL for every row, and the agents'
# event loop, which shares that GIL, then waits behind the reader thread (a probe's p99 went from 60 to 400 ms).
# The failing count of host h, as policies.failing_count(policies.results_for_host(...)) counts it; which policy
# applies to which platform comes from policies.platform_applies through the ``applicable`` table (_applicable_cte).
FAILING_SQL = """(SELECT COUNT(*) FROM policy_results pr JOIN policies p ON p.id = pr.policy_id
    JOIN applicable a ON a.policy_id = pr.policy_id AND a.platform = h.platform
    WHERE pr.host_id = h.id AND pr.passes = 0 AND (p.team_id IS NULL OR p.team_id = h.team_id))"""
# hosts.is_online in SQL (tests/unit/test_console_cores.py checks the two agree); one parameter: now
_INTERVAL_SQL = """(CASE
    WHEN h.distributed_interval > 0 AND h.config_tls_refresh > 0 THEN MIN(h.distributed_interval, h.config_tls_refresh)
    WHEN h.distributed_interval > 0 THEN h.distributed_interval
    WHEN h.config_tls_refresh > 0 THEN h.config_tls_refresh
    ELSE MAX(h.logger_tls_period, 0) END)"""
ONLINE_SQL = f"(h.seen_time IS NOT NULL AND ? - h.seen_time <= {_INTERVAL_SQL} + {hosts.ONLINE_GRACE_SECONDS})"
_LOG_LINES_SQL = "(SELECT lines FROM log_counters c WHERE c.host_id = h.id AND c.log_type = '{kind}')"


class HostStatus(Enum):
    ONLINE = "online"
    OFFLINE = "offline"


class HostQueryError(ValueError):
    """A list parameter that cannot be used; the message names it (a 400 for the API, a 400 page for the console)."""


@dataclass(frozen=True)
class HostListQuery:
    order_key: str = "hostname"
    descending: bool = False
    page: int = 0
    per_page: int | None = None  # None: every host (the REST API without paging parameters)
    search: str = ""
    status: HostStatus | None = None
    team_id: int | None = None  # 0: hosts without a team (as Fleet's team_id=0)
    platform: str = ""
    versions: Mapping[str, str] = field(default_factory=dict)  # filter parameter → exact version

    def params(self, **changes: str | None) -> dict[str, str]:
        """This query as URL parameters (non-default ones only), with ``changes`` applied (None removes one)."""
        found: dict[str, str] = {}
        if self.order_key != "hostname":
            found["order_key"] = self.order_key
        if self.descending:
            found["order_direction"] = "desc"
        if self.page:
            found["page"] = str(self.page)
        if self.per_page is not None:
            found["per_page"] = str(self.per_page)
        if self.search:
            found["query"] = self.search
        if self.status is not None:
            found["status"] = self.status.value
        if self.team_id is not None:
            found["team_id"] = str(self.team_id)
        if self.platform:
            found["platform"] = self.platform
        found.update(self.versions)
        for key, value in changes.items():
            if value is None:
                found.pop(key, None)
            else:
                found[key] = value
        return found


def _number(params: Mapping[str, str], name: str, *, minimum: int, maximum: int) -> int | None:
    raw = params.get(name, "").strip()
    if not raw:
        return None
    try:
        value = parse_id(raw)
    except IdOutOfRange:
        value = maximum + 1
    if value is None:
        raise HostQueryError(f"{name} must be a whole number, not {raw[:40]!r}")
    if not minimum <= value <= maximum:
        raise HostQueryError(f"{name} must be from {minimum} to {maximum}")
    return value


def _text(params: Mapping[str, str], name: str, limit: int = MAX_SEARCH_CHARS) -> str:
    value = params.get(name, "").strip()
    if len(value) > limit:
        raise HostQueryError(f"{name} is longer than {limit} characters")
    if "\x00" in value:
        raise HostQueryError(f"{name} holds a NUL character")
    return value


def parse_host_list_query(
    params: Mapping[str, str], *, default_per_page: int | None = None, max_per_page: int = MAX_PER_PAGE
) -> HostListQuery:
    """The list parameters of a request; unknown parameters are ignored, bad values raise ``HostQueryError``."""
    order_key = params.get("order_key", "").strip() or "hostname"
    if order_key not in ORDER_KEYS:
        raise HostQueryError(f"order_key must be one of {', '.join(sorted(ORDER_KEYS))}")
    direction = params.get("order_direction", "").strip().lower() or "asc"
    if direction not in ("asc", "desc"):
        raise HostQueryError("order_direction must be asc or desc")
    status_text = params.get("status", "").strip().lower()
    status = None
    if status_text:
        try:
            status = HostStatus(status_text)
        except ValueError:
            raise HostQueryError("status must be online or offline") from None
    per_page = _number(params, "per_page", minimum=1, maximum=max_per_page)
    page = _number(params, "page", minimum=0, maximum=MAX_PAGE) or 0
    if per_page is None and (default_per_page is not None or "page" in params):
        per_page = default_per_page or 100
    versions = {name: value for name in VERSION_FILTERS if (value := _text(params, name, 128))}
    return HostListQuery(
        order_key=order_key,
        descending=direction == "desc",
        page=page,
        per_page=per_page,
        search=_text(params, "query"),
        status=status,
        team_id=_number(params, "team_id", minimum=0, maximum=2**63 - 1),
        platform=_text(params, "platform", 64),
        versions=versions,
    )


def _like_pattern(text: str) -> str:
    return "%" + re.sub(r"([\\%_])", r"\\\1", text) + "%"


def _where(query: HostListQuery, now: float) -> tuple[str, list[object]]:
    clauses: list[str] = []
    args: list[object] = []
    if query.search:
        pattern = _like_pattern(query.search)
        columns = ("h.hostname", "h.computer_name", "h.uuid", "h.osquery_host_id", "h.hardware_serial")
        clauses.append("(" + " OR ".join(f"{c} LIKE ? ESCAPE '\\'" for c in columns) + ")")
        args += [pattern] * len(columns)
    if query.status is not None:
        clauses.append(f"{ONLINE_SQL} = {1 if query.status is HostStatus.ONLINE else 0}")
        args.append(now)
    if query.team_id == 0:
        clauses.append("h.team_id IS NULL")
    elif query.team_id is not None:
        clauses.append("h.team_id = ?")
        args.append(query.team_id)
    if query.platform:
        clauses.append("h.platform = ?")
        args.append(query.platform)
    for name, value in query.versions.items():
        clauses.append(f"h.{VERSION_FILTERS[name]} = ?")
        args.append(value)
    return ("WHERE " + " AND ".join(clauses)) if clauses else "", args


@dataclass(frozen=True)
class LastOutcome:
    """A host's newest update outcome (``update_outcomes``, reported by orbit: docs/adr/0017)."""

    target: str
    version: str
    previous_version: str | None
    outcome: str  # confirmed, rolled_back, crash_loop, install_failed, repaired
    reason: str | None
    at: str  # RFC 3339, orbit's clock

    @property
    def failed(self) -> bool:
        return self.outcome in {str(o) for o in FAILED_OUTCOMES}

    def to_json(self) -> dict[str, object]:
        return {
            "target": self.target,
            "version": self.version,
            "previous_version": self.previous_version,
            "outcome": self.outcome,
            "reason": self.reason,
            "at": self.at,
        }


@dataclass(frozen=True)
class HostRow:
    host: hosts.Host
    online: bool
    team_name: str | None
    failing_policies: int
    result_lines: int
    status_lines: int
    last_change: VersionChange | None  # the newest version change of any target (not a first report)
    last_outcome: LastOutcome | None = None  # the newest update outcome orbit reported (issue 18's reports)

    @property
    def status(self) -> str:
        return HostStatus.ONLINE.value if self.online else HostStatus.OFFLINE.value


@dataclass(frozen=True)
class HostPage:
    query: HostListQuery
    rows: list[HostRow]
    total: int

    @property
    def pages(self) -> int:
        if self.query.per_page is None:
            return 1
        return max(1, -(-self.total // self.query.per_page))


def count_hosts(conn: sqlite3.Connection, query: HostListQuery, now: float) -> int:
    where, args = _where(query, now)
    needs_team = "t." in where
    join = "LEFT JOIN teams t ON t.id = h.team_id" if needs_team else ""
    return int(conn.execute(f"SELECT COUNT(*) FROM hosts h {join} {where}", args).fetchone()[0])


def _applicable_cte(conn: sqlite3.Connection) -> tuple[str, list[object]]:
    """``WITH applicable(policy_id, platform)``: every (policy, host platform present) pair where the policy applies,
    decided by ``policies.platform_applies`` — a few rows (policies × platforms), made before the query runs."""
    platforms_present = [str(r[0]) for r in conn.execute("SELECT DISTINCT platform FROM hosts")]
    pairs = [
        (policy.id, platform)
        for policy in policies.list_policies(conn)
        for platform in platforms_present
        if policies.platform_applies(policy.platform, platform)
    ]
    if not pairs:
        return "WITH applicable(policy_id, platform) AS (SELECT NULL, NULL WHERE 0) ", []
    values = ", ".join("(?, ?)" for _ in pairs)
    return f"WITH applicable(policy_id, platform) AS (VALUES {values}) ", [v for pair in pairs for v in pair]


def list_page(conn: sqlite3.Connection, query: HostListQuery, now: float) -> HostPage:
    where, args = _where(query, now)
    cte, cte_args = _applicable_cte(conn)
    args = [*cte_args, *args]
    direction = "DESC" if query.descending else "ASC"
    order = f"{ORDER_KEYS[query.order_key]} {direction}, h.id {direction}"
    columns = ", ".join(f"h.{c}" for c in hosts.HOST_COLUMNS)
    sql = cte + (
        f"SELECT {columns}, t.name AS team_name, {FAILING_SQL} AS failing_policies_count, "
        f"{_LOG_LINES_SQL.format(kind='result')} AS result_lines, "
        f"{_LOG_LINES_SQL.format(kind='status')} AS status_lines "
        f"FROM hosts h LEFT JOIN teams t ON t.id = h.team_id {where} ORDER BY {order}"
    )
    if query.per_page is not None:
        sql += " LIMIT ? OFFSET ?"
        args = [*args, query.per_page, query.page * query.per_page]
    found = conn.execute(sql, args).fetchall()
    ids = [int(r["id"]) for r in found]
    changes = last_changes(conn, ids)
    outcomes = last_outcomes(conn, ids)
    rows = []
    for r in found:
        host = hosts.host_from_row(r)
        rows.append(
            HostRow(
                host=host,
                online=hosts.host_status(host, now) == HostStatus.ONLINE.value,
                team_name=None if r["team_name"] is None else str(r["team_name"]),
                failing_policies=int(r["failing_policies_count"]),
                result_lines=int(r["result_lines"] or 0),
                status_lines=int(r["status_lines"] or 0),
                last_change=changes.get(host.id),
                last_outcome=outcomes.get(host.id),
            )
        )
    total = len(rows) if query.per_page is None else count_hosts(conn, query, now)
    return HostPage(query, rows, total)


def last_changes(conn: sqlite3.Connection, host_ids: list[int]) -> dict[int, VersionChange]:
    """Each host's newest version change (a version replacing another, not a first report)."""
    if not host_ids:
        return {}
    found: dict[int, VersionChange] = {}
    for start in range(0, len(host_ids), 500):
        chunk = host_ids[start : start + 500]
        marks = ", ".join("?" for _ in chunk)
        rows = conn.execute(
            f"""SELECT host_id, target, version, previous_version, seen_at FROM host_version_changes
                WHERE id IN (SELECT MAX(id) FROM host_version_changes
                             WHERE host_id IN ({marks}) AND previous_version != '' GROUP BY host_id)""",
            chunk,
        )
        for r in rows:
            found[int(r["host_id"])] = VersionChange(
                int(r["host_id"]), str(r["target"]), str(r["version"]), str(r["previous_version"]), float(r["seen_at"])
            )
    return found


def last_outcomes(conn: sqlite3.Connection, host_ids: list[int]) -> dict[int, LastOutcome]:
    """Each host's newest update outcome."""
    found: dict[int, LastOutcome] = {}
    for start in range(0, len(host_ids), 500):
        chunk = host_ids[start : start + 500]
        marks = ", ".join("?" for _ in chunk)
        rows = conn.execute(
            f"""SELECT host_id, target, version, previous_version, outcome, reason, at FROM update_outcomes
                WHERE id IN (SELECT MAX(id) FROM update_outcomes WHERE host_id IN ({marks}) GROUP BY host_id)""",
            chunk,
        )
        for r in rows:
            found[int(r["host_id"])] = LastOutcome(
                str(r["target"]),
                str(r["version"]),
                None if r["previous_version"] is None else str(r["previous_version"]),
                str(r["outcome"]),
                None if r["reason"] is None else str(r["reason"]),
                str(r["at"]),
            )
    return found


@dataclass(frozen=True)
class VersionCount:
    version: str  # "" when hosts have not reported one
    hosts: int


def _version_key(version: str) -> tuple[tuple[int, int | str], ...]:
    return tuple((0, int(part)) if part.isdigit() else (1, part) for part in re.split(r"[.\-+]", version))


def version_counts(conn: sqlite3.Connection) -> dict[str, list[VersionCount]]:
    """Per target (orbit, osqueryd, desktop): how many hosts run each version, newest version first, unknown last."""
    found: dict[str, list[VersionCount]] = {}
    for target, column in TARGET_COLUMNS.items():
        rows = conn.execute(f"SELECT {column} AS version, COUNT(*) AS n FROM hosts GROUP BY {column}").fetchall()
        counts = [VersionCount(str(r["version"]), int(r["n"])) for r in rows]
        known = sorted((c for c in counts if c.version), key=lambda c: _version_key(c.version), reverse=True)
        found[target] = known + [c for c in counts if not c.version]
    return found


def platforms(conn: sqlite3.Connection) -> list[str]:
    return [str(r[0]) for r in conn.execute("SELECT DISTINCT platform FROM hosts WHERE platform != '' ORDER BY 1")]
