"""The osquery TLS remote API (docs/reference/fleet-api.md §3), served on ``/api/osquery/*`` and ``/api/v1/osquery/*``.

osqueryd judges every answer by its body, never by the status code, so every failure here is shape A with a
string ``error`` (and ``node_invalid: true`` exactly when the node must enroll again).
"""

from __future__ import annotations

import base64
import binascii
import logging

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from server_stub import hosts, policies
from server_stub.api import Family, endpoint
from server_stub.carve_upload import read_carve_block
from server_stub.carves import CarveError
from server_stub.distributed_plan import details_due, plan, policies_due
from server_stub.errors import ApiError, bad_request, unauthorized
from server_stub.host_details import (
    detail_table_for,
    details_from_enroll,
    details_from_table,
    osquery_identifier,
)
from server_stub.http_body import DISTRIBUTED_WRITE_LIMIT, LOG_LIMIT, read_json_object
from server_stub.int_ranges import INT64_MAX, fits_int64, is_ascii_digits
from server_stub.json_fields import (
    JsonObject,
    optional_object,
    optional_str,
    required_int,
    required_str,
    string_map,
)
from server_stub.json_response import JSONResponse
from server_stub.live_queries import query_id_from_name
from server_stub.log_sink import LOG_TYPES, LogWriteError
from server_stub.osquery_config import config_for_host, interval_options
from server_stub.state import StubState
from server_stub.teams import SecretNotFound, effective_agent_options, team_for_secret

log = logging.getLogger(__name__)

DETAIL_RETRY_SECONDS = 60.0
ORBIT_INFO_WAIT_SECONDS = 3600.0  # after that, a host whose orbit serves no orbit_info waits for the detail interval


def node_key_of(request: Request, body: JsonObject) -> str:
    value = body.get("node_key")
    key = value if isinstance(value, str) else ""
    if not key:
        scheme, _, credential = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "nodekey":
            key = credential.strip()
    return key


def authenticate(request: Request, body: JsonObject, state: StubState) -> hosts.Host:
    key = node_key_of(request, body)
    if not key:
        raise unauthorized("authentication error: missing node key", node_invalid=True)
    host = hosts.host_by_node_key(state.conn, key)
    if host is None:
        raise unauthorized("authentication error: invalid node key", node_invalid=True)
    state.seen_times.note(host.id, state.clock())
    return host


def _tables(host_details: JsonObject) -> dict[str, dict[str, str]]:
    return {name: string_map(row) for name, row in host_details.items() if isinstance(row, dict)}


async def enroll(request: Request, state: StubState) -> Response:
    body = await read_json_object(request)
    secret = optional_str(body, "enroll_secret") or request.query_params.get("enroll_secret", "")
    try:
        team_id = team_for_secret(state.conn, secret.strip())
    except SecretNotFound as exc:
        raise unauthorized(f"enroll failed: {exc}", node_invalid=True) from None
    tables = _tables(optional_object(body, "host_details"))
    provided = optional_str(body, "host_identifier")
    identifier = osquery_identifier(state.settings.osquery_host_identifier, provided, tables)
    if not identifier:
        raise unauthorized("enroll failed: missing host identifier", node_invalid=True)
    host_id, key = hosts.enroll_osquery(state.conn, identifier, team_id, details_from_enroll(tables), state.clock())
    log.info("event=osquery_enrolled host_id=%d team_id=%s", host_id, team_id)
    return JSONResponse({"node_key": key})


async def config(request: Request, state: StubState) -> Response:
    body = await read_json_object(request, allow_empty=True)
    host = authenticate(request, body, state)
    options = effective_agent_options(state.conn, host.team_id)
    served = config_for_host(options, host.platform)
    distributed, refresh, logger = interval_options(served)
    if (distributed, refresh, logger) != (
        host.distributed_interval,
        host.config_tls_refresh,
        host.logger_tls_period,
    ):
        hosts.record_intervals(state.conn, host.id, distributed, refresh, logger)
    return JSONResponse(served)


async def log_batch(request: Request, state: StubState) -> Response:
    body = await read_json_object(request, LOG_LIMIT)
    host = authenticate(request, body, state)
    log_type = optional_str(body, "log_type")
    if log_type not in LOG_TYPES:
        # Fleet answers 500; osqueryd reads only the body, so a 400 changes nothing for it (never a 5xx for input)
        raise bad_request(f"unknown log type: {log_type}")
    data = body.get("data", [])
    if data is None:
        data = []
    if not isinstance(data, list):
        raise bad_request("field 'data' must be an array")
    items = [item for item in data if isinstance(item, dict)]
    if len(items) != len(data):
        state.metrics.count("log_items_dropped", len(data) - len(items))
    try:
        stored = state.logs.append(host.id, log_type, items)
    except LogWriteError as exc:
        log.error("event=log_write_failed host_id=%d log_type=%s error=%s", host.id, log_type, exc)
        raise ApiError(413, f"error writing {log_type} logs: {exc}") from None
    if stored < len(items):  # a line that cannot be written as strict JSON costs that line, never the batch
        state.metrics.count("log_items_dropped", len(items) - stored)
    state.metrics.count(f"log_lines_{log_type}", stored)
    return JSONResponse({})


async def distributed_read(request: Request, state: StubState) -> Response:
    body = await read_json_object(request, allow_empty=True)
    host = authenticate(request, body, state)
    now = state.clock()
    settings = state.settings
    known = bool(host.hostname and host.platform)
    # orbit enrolled, but its orbit_info row (served by orbit's osquery extension, which registers a moment after
    # osqueryd starts) has not come yet: ask again every minute for a while, not only after the detail interval
    orbit_pending = (
        host.orbit_enrolled_at is not None
        and not host.orbit_version
        and now - host.orbit_enrolled_at < ORBIT_INFO_WAIT_SECONDS
    )
    send_details = details_due(host.detail_updated_at, now, settings.detail_update_interval) or (
        (not known or orbit_pending) and details_due(host.detail_updated_at, now, DETAIL_RETRY_SECONDS)
    )
    host_policies = policies.policies_for_host(state.conn, host.team_id, host.platform)
    send_policies = bool(host_policies) and policies_due(
        host.policy_updated_at, policies.newest_change(host_policies), now, settings.policy_update_interval
    )
    decided = plan(
        live=state.live.take_pending(host.id),
        send_details=send_details,
        policies=host_policies if send_policies else [],
        details_known=known,
    )
    stamps: dict[str, float | None] = {}
    if send_details:
        stamps["detail_updated_at"] = now
    if send_policies:
        stamps["policy_updated_at"] = now
    if stamps:
        hosts.set_timestamps(state.conn, host.id, **stamps)
    return JSONResponse(decided.to_json())


def _status_code(value: object, name: str) -> int:
    """A query's status: an integer, or (older osquery) its decimal string in ASCII digits; int64 like Fleet's."""
    if value is None:
        return 0
    if isinstance(value, bool):
        raise bad_request(f"status of {name!r} must be an integer")
    if isinstance(value, str):
        text = value.strip()
        digits = text.removeprefix("-")
        if not is_ascii_digits(digits):
            raise bad_request(f"status of {name!r} must be an integer")
        significant = digits.lstrip("0") or "0"
        if len(significant) > len(str(INT64_MAX)):  # int() of a huge literal is slow, beyond 4300 digits an error
            raise bad_request(f"status of {name!r} is out of range")
        value = -int(significant) if text.startswith("-") else int(significant)
    if isinstance(value, int):
        if not fits_int64(value):
            raise bad_request(f"status of {name!r} is out of range")
        return value
    raise bad_request(f"status of {name!r} must be an integer")


async def distributed_write(request: Request, state: StubState) -> Response:
    body = await read_json_object(request, DISTRIBUTED_WRITE_LIMIT)
    host = authenticate(request, body, state)
    results = optional_object(body, "queries")
    statuses = optional_object(body, "statuses")
    messages = optional_object(body, "messages")
    now = state.clock()
    parsed_statuses = {name: _status_code(statuses.get(name), name) for name in results}
    for name, raw_rows in results.items():
        rows = [string_map(r) for r in raw_rows if isinstance(r, dict)] if isinstance(raw_rows, list) else []
        status = parsed_statuses[name]
        message = messages.get(name)
        error = None if status == 0 else (message if isinstance(message, str) and message else f"status {status}")
        live_id = query_id_from_name(name)
        if live_id is not None:
            state.live.complete(host.id, live_id, rows, error)
            continue
        policy_id = policies.policy_id_from_name(name)
        if policy_id is not None:
            passes = None if status != 0 else bool(rows)
            policies.record_result(state.conn, host.id, policy_id, passes, now)
            continue
        table = detail_table_for(name)
        if table is not None and status == 0 and rows:
            hosts.update_details(state.conn, host.id, details_from_table(table, rows[0]), now)
    return JSONResponse({})


async def carve_begin(request: Request, state: StubState) -> Response:
    body = await read_json_object(request)
    host = authenticate(request, body, state)
    try:
        carve = state.carves.begin(
            host.id,
            carve_id=optional_str(body, "carve_id"),
            request_id=optional_str(body, "request_id"),
            block_count=required_int(body, "block_count"),
            block_size=required_int(body, "block_size"),
            carve_size=required_int(body, "carve_size"),
            now=state.clock(),
        )
    except CarveError as exc:
        raise ApiError(exc.status, str(exc)) from None
    log.info("event=carve_begin host_id=%d session=%s size=%d", host.id, carve.session_id, carve.carve_size)
    return JSONResponse({"session_id": carve.session_id, "success": True})


async def carve_block(request: Request, state: StubState) -> Response:
    body = await read_carve_block(request, state.carves)  # the session is checked before the data is held
    session_id = required_str(body, "session_id")
    request_id = optional_str(body, "request_id")
    block_id = required_int(body, "block_id")
    encoded = required_str(body, "data", error=bad_request("field 'data' must be a base64 string"))
    try:
        data = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise bad_request("validate carve block: data is not valid base64") from None
    try:
        state.carves.add_block(session_id, request_id, block_id, data, state.clock())
    except CarveError as exc:
        raise ApiError(exc.status, str(exc)) from None
    return JSONResponse({"success": True})


_OSQUERY_ROUTES = (
    ("enroll", enroll),
    ("config", config),
    ("log", log_batch),
    ("distributed/read", distributed_read),
    ("distributed/write", distributed_write),
    ("carve/begin", carve_begin),
    ("carve/block", carve_block),
)


def routes() -> list[Route]:
    found: list[Route] = []
    for suffix, handler in _OSQUERY_ROUTES:
        name = "osquery_" + suffix.replace("/", "_")
        wrapped = endpoint(name, Family.OSQUERY, handler)
        for prefix in ("/api/osquery/", "/api/v1/osquery/"):
            found.append(Route(prefix + suffix, wrapped, methods=["POST"]))
    return found
