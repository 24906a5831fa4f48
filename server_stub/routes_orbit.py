"""Fleet's orbit endpoints (docs/reference/fleet-api.md §4): ping, enroll, config, device token, scripts; and ours
for staged rollouts (docs/adr/0017): update outcomes and the osqueryd restart acknowledgement.

Errors are shape B. Every 2xx answer carries the same ``X-Fleet-Capabilities`` (added by the wrapper), because
orbit replaces its view of the server's capabilities from every answer and restarts when it flips.
"""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from server_stub import device_tokens, hosts, osqueryd_restarts, scripts
from server_stub.api import Family, Handler, endpoint
from server_stub.errors import ApiError, bad_request, conflict, not_found, unauthorized
from server_stub.http_body import MIB, read_json_object
from server_stub.json_fields import JsonObject, optional_int, optional_str, required_str
from server_stub.json_response import JSONResponse
from server_stub.state import StubState
from server_stub.teams import (
    SecretNotFound,
    effective_agent_options,
    effective_notifications,
    team_for_secret,
)
from server_stub.update_outcomes import parse_outcomes, record_outcomes

log = logging.getLogger(__name__)

SCRIPT_RESULT_LIMIT = 5 * MIB


def authenticate(body: JsonObject, state: StubState) -> hosts.Host:
    key = optional_str(body, "orbit_node_key")
    host = hosts.host_by_orbit_node_key(state.conn, key)
    if host is None:
        raise unauthorized(
            "authentication error: invalid orbit node key" if key else "authentication error: missing orbit node key"
        )
    state.seen_times.note(host.id, state.clock())
    return host


async def ping(request: Request, state: StubState) -> Response:
    return Response(status_code=200)


async def enroll(request: Request, state: StubState) -> Response:
    body = await read_json_object(request)
    secret = optional_str(body, "enroll_secret")
    try:
        team_id = team_for_secret(state.conn, secret.strip())
    except SecretNotFound as exc:
        raise ApiError(401, f"enroll failed: {exc}", summary="Authentication failed") from None
    hardware_uuid = optional_str(body, "hardware_uuid").strip()
    if not hardware_uuid:
        raise bad_request("hardware_uuid is required")
    identifier = optional_str(body, "osquery_identifier").strip() or hardware_uuid
    details = {
        "uuid": hardware_uuid,
        "hardware_serial": optional_str(body, "hardware_serial"),
        "hostname": optional_str(body, "hostname"),
        "computer_name": optional_str(body, "computer_name") or optional_str(body, "hostname"),
        "platform": optional_str(body, "platform"),
        "platform_like": optional_str(body, "platform_like"),
        "hardware_model": optional_str(body, "hardware_model"),
    }
    host_id, key = hosts.enroll_orbit(state.conn, identifier, team_id, details, state.clock())
    log.info("event=orbit_enrolled host_id=%d team_id=%s", host_id, team_id)
    return JSONResponse({"orbit_node_key": key})


def orbit_config_for(state: StubState, host: hosts.Host) -> JsonObject:
    options = effective_agent_options(state.conn, host.team_id)
    answer: JsonObject = {}
    flags = options.get("command_line_flags")
    if isinstance(flags, dict) and flags:
        answer["command_line_startup_flags"] = flags
    channels = options.get("update_channels")
    clean = {k: v for k, v in channels.items() if isinstance(v, str) and v} if isinstance(channels, dict) else {}
    pins = state.rollouts.pins
    if not pins.empty:  # a rollout covering the host decides its target's channel (docs/adr/0017)
        clean.update(pins.pins_for(host.osquery_host_id, host.team_id))
    if clean:
        answer["update_channels"] = clean
    timeout = options.get("script_execution_timeout")
    if isinstance(timeout, int) and not isinstance(timeout, bool) and timeout > 0:
        answer["script_execution_timeout"] = timeout
    notifications = dict(effective_notifications(state.conn, host.team_id))
    pending = scripts.pending_ids(state.conn, host.id)
    if pending:
        notifications["pending_script_execution_ids"] = pending
    restart = osqueryd_restarts.pending_request(state.conn, host.id)
    if restart is not None:
        notifications["restart_osqueryd_request_id"] = restart
    answer["notifications"] = notifications
    return answer


async def config(request: Request, state: StubState) -> Response:
    body = await read_json_object(request)
    host = authenticate(body, state)
    return JSONResponse(orbit_config_for(state, host))


async def device_token(request: Request, state: StubState) -> Response:
    body = await read_json_object(request)
    host = authenticate(body, state)
    token = optional_str(body, "device_auth_token")
    problem = device_tokens.register(state.conn, host.id, token, state.clock())
    if problem is device_tokens.TokenProblem.CONFLICT:
        raise conflict(problem.value)
    if problem is not None:
        raise bad_request(problem.value)
    return JSONResponse({})


async def script_request(request: Request, state: StubState) -> Response:
    body = await read_json_object(request)
    host = authenticate(body, state)
    execution_id = required_str(body, "execution_id")
    found = scripts.get(state.conn, execution_id)
    if found is None or found.host_id != host.id:
        raise not_found(f"script execution {execution_id} not found for this host")
    return JSONResponse(found.to_json(host.team_id))


async def script_result(request: Request, state: StubState) -> Response:
    body = await read_json_object(request, SCRIPT_RESULT_LIMIT)
    host = authenticate(body, state)
    execution_id = required_str(body, "execution_id")
    exit_code = optional_int(body, "exit_code")  # any int64: -1/-2 are Fleet's timeout/disabled, Windows' are DWORDs
    if exit_code is None:
        raise bad_request("field 'exit_code' must be an integer")
    runtime = optional_int(body, "runtime", minimum=0) or 0  # seconds
    stored = scripts.record_result(
        state.conn, execution_id, host.id, optional_str(body, "output"), runtime, exit_code, state.clock()
    )
    if not stored:
        raise not_found(f"script execution {execution_id} not found for this host")
    log.info("event=script_result host_id=%d execution_id=%s exit_code=%d", host.id, execution_id, exit_code)
    return JSONResponse({})


async def update_outcomes(request: Request, state: StubState) -> Response:
    body = await read_json_object(request)
    host = authenticate(body, state)
    reports = parse_outcomes(body)
    recorded = record_outcomes(state.conn, host.id, reports, state.clock())
    if recorded.failures:
        state.rollouts.nudge()
    log.info(
        "event=update_outcomes host_id=%d received=%d new=%d failures=%d",
        host.id,
        len(reports),
        recorded.new,
        recorded.failures,
    )
    return JSONResponse({})


async def osqueryd_restart_result(request: Request, state: StubState) -> Response:
    body = await read_json_object(request)
    host = authenticate(body, state)
    request_id = required_str(body, "request_id")
    if len(request_id) > osqueryd_restarts.MAX_REQUEST_ID_LENGTH:
        raise bad_request(f"field 'request_id' is longer than {osqueryd_restarts.MAX_REQUEST_ID_LENGTH} characters")
    error = body.get("error")
    if error is not None and not isinstance(error, str):
        raise bad_request("field 'error' must be a string or null")
    known = osqueryd_restarts.acknowledge(state.conn, host.id, request_id, error, state.clock())
    log.info(
        "event=osqueryd_restart_result host_id=%d request_id=%r ok=%s known=%s",
        host.id,
        request_id,
        error is None,
        known,
    )
    return JSONResponse({})


def routes() -> list[Route]:
    def route(path: str, name: str, handler: Handler, methods: list[str]) -> Route:
        return Route("/api/fleet/orbit/" + path, endpoint(name, Family.ORBIT, handler), methods=methods)

    return [
        route("ping", "orbit_ping", ping, ["HEAD", "GET"]),
        route("enroll", "orbit_enroll", enroll, ["POST"]),
        route("config", "orbit_config", config, ["POST"]),
        route("device_token", "orbit_device_token", device_token, ["POST"]),
        route("scripts/request", "orbit_scripts_request", script_request, ["POST"]),
        route("scripts/result", "orbit_scripts_result", script_result, ["POST"]),
        route("update_outcomes", "orbit_update_outcomes", update_outcomes, ["POST"]),
        route("osqueryd_restart/result", "orbit_osqueryd_restart_result", osqueryd_restart_result, ["POST"]),
    ]
