"""JSON views of a host, in the shape of Fleet's REST API (admin and device endpoints share them)."""

from __future__ import annotations

import json
import sqlite3

from server_stub import host_listing, hosts, policies
from server_stub.host_listing import HostListQuery, HostRow
from server_stub.json_fields import JsonObject
from server_stub.log_sink import LogCounts
from server_stub.rfc3339 import iso_time
from server_stub.state import StubState


def policy_json(result: policies.PolicyResult) -> JsonObject:
    view = result.policy.to_json()
    view["response"] = result.response
    return view


def host_view(host: hosts.Host, now: float, counts: LogCounts) -> JsonObject:
    """A host in Fleet's REST shape, from values read beforehand (any thread may build it)."""
    return {
        "id": host.id,
        "uuid": host.uuid or host.osquery_host_id,
        "osquery_host_id": host.osquery_host_id,
        "hostname": host.hostname,
        "computer_name": host.computer_name or host.hostname,
        "display_name": host.computer_name or host.hostname,
        "platform": host.platform,
        "platform_like": host.platform_like,
        "os_version": host.os_version,
        "osquery_version": host.osquery_version,
        "orbit_version": host.orbit_version or None,
        "fleet_desktop_version": host.desktop_version or None,
        "hardware_serial": host.hardware_serial,
        "hardware_model": host.hardware_model,
        "status": hosts.host_status(host, now),
        "seen_time": iso_time(host.seen_time),
        "created_at": iso_time(host.created_at),
        "last_enrolled_at": iso_time(host.osquery_enrolled_at or host.orbit_enrolled_at),
        "detail_updated_at": iso_time(host.detail_updated_at),
        "team_id": host.team_id,
        "distributed_interval": host.distributed_interval,
        "config_tls_refresh": host.config_tls_refresh,
        "logger_tls_period": host.logger_tls_period,
        "log_counts": {"result": counts.result, "status": counts.status},
    }


def listed_host_json(row: HostRow, now: float) -> JsonObject:
    """A row of ``GET /hosts``: the host, its team's name and its failing policies (Fleet's ``issues``)."""
    view = host_view(row.host, now, LogCounts(result=row.result_lines, status=row.status_lines))
    view["team_name"] = row.team_name
    view["issues"] = {"failing_policies_count": row.failing_policies, "total_issues_count": row.failing_policies}
    change = row.last_change
    view["last_version_change"] = None if change is None else change.to_json()
    outcome = row.last_outcome
    view["last_update_outcome"] = None if outcome is None else outcome.to_json()
    return view


def host_json(state: StubState, host: hosts.Host, *, with_policies: bool = False) -> JsonObject:
    view = host_view(host, state.clock(), state.logs.counts(host.id))
    if with_policies:
        results = policies.results_for_host(state.conn, host.id, host.team_id, host.platform)
        view["policies"] = [policy_json(r) for r in results]
        view["issues"] = {"failing_policies_count": policies.failing_count(results)}
    return view


def listed_hosts_body(conn: sqlite3.Connection, query: HostListQuery, now: float) -> bytes:
    """The whole ``GET /hosts`` answer, read and encoded in the caller's thread (the database reader's).

    Encoded a host at a time: one ``json.dumps`` of 10 000 hosts (8 MB) would hold the GIL for its whole run, and the
    agents' event loop with it; between rows the interpreter can switch to the loop."""
    found = host_listing.list_page(conn, query, now)
    rows = [
        json.dumps(listed_host_json(row, now), ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        for row in found.rows
    ]
    return ('{"hosts":[' + ",".join(rows) + "]}").encode("utf-8")
