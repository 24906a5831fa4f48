"""The admin REST API (Bearer admin token), mirroring Fleet's REST shapes (docs/contracts.md), and ``/metrics``."""

from __future__ import annotations

import hmac
import logging
from dataclasses import dataclass, replace

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from server_stub import (
    device_tokens,
    host_listing,
    hosts,
    live_queries,
    policies,
    scripts,
    teams,
    update_outcomes,
    version_changes,
)
from server_stub.agent_options import InvalidAgentOptions, validate_agent_options, validate_notifications
from server_stub.api import Family, Handler, endpoint
from server_stub.errors import ApiError, bad_request, not_found, unauthorized
from server_stub.file_sending import CachedFirstFileResponse
from server_stub.host_views import host_json, listed_hosts_body
from server_stub.http_body import read_json_object
from server_stub.int_ranges import INT64_MAX, IdOutOfRange, fits_int64, parse_id
from server_stub.json_fields import JsonObject, optional_int, optional_str, required_str
from server_stub.json_response import JSONResponse
from server_stub.log_sink import LOG_TYPES
from server_stub.metrics import Gauge
from server_stub.state import StubState

log = logging.getLogger(__name__)

ADMIN_VERSIONS = frozenset({"v1", "latest"})
RECENT_SECONDS = 3600.0
RECENT_LIMIT = 20
RECENT_OUTCOMES = 50


def require_admin(request: Request, state: StubState) -> None:
    version = request.path_params.get("version")
    if version is not None and version not in ADMIN_VERSIONS:
        raise not_found("unknown API version")
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), state.admin_token.encode()):
        raise unauthorized("authentication error: missing or invalid admin token")
    state.fresh_seen_times()


def _int_param(request: Request, name: str) -> int:
    """An id in the path: ASCII digits (else 404, as Fleet's ``{id:[0-9]+}`` routes) within int64 (else 400)."""
    raw = str(request.path_params.get(name, ""))
    try:
        value = parse_id(raw)
    except IdOutOfRange as exc:
        raise bad_request(f"invalid {name}: {exc}") from None
    if value is None:
        raise not_found(f"invalid {name}")
    return value


def int_param(request: Request, name: str) -> int:
    """``_int_param`` for the other admin route modules (routes_rollouts)."""
    return _int_param(request, name)


def _host(request: Request, state: StubState) -> hosts.Host:
    host = hosts.get_host(state.conn, _int_param(request, "host_id"))
    if host is None:
        raise not_found("host not found")
    return host


def _team(request: Request, state: StubState) -> teams.Team:
    team = teams.get_team(state.conn, _int_param(request, "team_id"))
    if team is None:
        raise not_found("team not found")
    return team


def _unprocessable(exc: Exception) -> ApiError:
    return ApiError(422, str(exc))


def team_json(state: StubState, team: teams.Team) -> JsonObject:
    return {
        "id": team.id,
        "name": team.name,
        "agent_options": team.agent_options,
        "orbit_notifications": team.orbit_notifications,
        "host_count": hosts.count_team_hosts(state.conn, team.id),
        "secrets": [{"secret": s.secret} for s in teams.list_secrets(state.conn, team.id)],
    }


# --- hosts ------------------------------------------------------------------------------------------------


def _list_query(request: Request) -> host_listing.HostListQuery:
    try:
        return host_listing.parse_host_list_query(request.query_params)
    except host_listing.HostQueryError as exc:
        raise bad_request(str(exc)) from None


async def list_hosts(request: Request, state: StubState) -> Response:
    """Fleet's list: every host by default; ``page``/``per_page``, ``order_key``, filters as host_listing says."""
    require_admin(request, state)
    query = _list_query(request)
    if query.per_page is None and request.query_params.get("order_key") is None:
        query = replace(query, order_key="id")  # without paging or an order: by id, as before
    body = await state.reader.run(listed_hosts_body, query, state.clock())
    return Response(body, media_type=JSONResponse.media_type)


async def count_hosts(request: Request, state: StubState) -> Response:
    require_admin(request, state)
    query = _list_query(request)
    return JSONResponse({"count": await state.reader.run(host_listing.count_hosts, query, state.clock())})


async def version_summary(request: Request, state: StubState) -> Response:
    """Hosts per version of each target (the console's Versions page)."""
    require_admin(request, state)
    counts = await state.reader.run(host_listing.version_counts)
    return JSONResponse(
        {"versions": {t: [{"version": c.version or None, "hosts": c.hosts} for c in v] for t, v in counts.items()}}
    )


async def host_versions(request: Request, state: StubState) -> Response:
    require_admin(request, state)
    host = _host(request, state)
    changes = await state.reader.run(version_changes.for_host, host.id)
    outcomes = await state.reader.run(update_outcomes.recent_outcomes, host.id, RECENT_OUTCOMES)
    installed = {target: getattr(host, column) or None for target, column in version_changes.TARGET_COLUMNS.items()}
    return JSONResponse(
        {
            "host_id": host.id,
            "installed": installed,
            "changes": [c.to_json() for c in changes],
            "outcomes": outcomes,
        }
    )


async def host_device_token(request: Request, state: StubState) -> Response:
    """The state of the host's Fleet Desktop token (valid/expired/none, until when): never the token itself."""
    require_admin(request, state)
    host = _host(request, state)
    token = await state.reader.run(device_tokens.token_state, host.id, state.clock())
    return JSONResponse({"host_id": host.id, "device_token": token.to_json()})


async def host_script_results(request: Request, state: StubState) -> Response:
    require_admin(request, state)
    host = _host(request, state)
    found = await state.reader.run(scripts.recent_for_host, host.id, RECENT_LIMIT)
    return JSONResponse({"host_id": host.id, "results": [s.to_json(host.team_id) for s in found]})


async def host_queries(request: Request, state: StubState) -> Response:
    require_admin(request, state)
    host = _host(request, state)
    found = await state.reader.run(live_queries.recent_for_host, host.id, RECENT_LIMIT)
    return JSONResponse({"host_id": host.id, "queries": [q.to_json() for q in found]})


async def host_query_result(request: Request, state: StubState) -> Response:
    require_admin(request, state)
    host = _host(request, state)
    found = await state.reader.run(live_queries.stored_query, host.id, _int_param(request, "query_id"))
    if found is None:
        raise not_found("live query not found")
    return JSONResponse({"query": found.to_json()})


async def get_host(request: Request, state: StubState) -> Response:
    require_admin(request, state)
    return JSONResponse({"host": host_json(state, _host(request, state), with_policies=True)})


async def delete_host(request: Request, state: StubState) -> Response:
    require_admin(request, state)
    host = _host(request, state)
    hosts.delete_host(state.conn, host.id)
    log.info("event=host_deleted host_id=%d", host.id)
    return JSONResponse({})


async def live_query(request: Request, state: StubState) -> Response:
    require_admin(request, state)
    host = _host(request, state)
    body = await read_json_object(request)
    sql = required_str(body, "query", error=ApiError(422, "query is required")).strip()
    if not sql:
        raise ApiError(422, "query is required")
    query_id = state.live.create(host.id, sql)
    timeout = state.settings.live_query_timeout
    outcome = await state.live.wait(query_id, timeout)
    if not outcome.answered:
        return JSONResponse(
            {
                "host_id": host.id,
                "query": sql,
                "status": "offline",
                "error": f"host did not respond within {timeout:g} seconds",
                "rows": [],
            }
        )
    return JSONResponse(
        {"host_id": host.id, "query": sql, "status": "online", "error": outcome.error, "rows": outcome.rows}
    )


async def host_logs(request: Request, state: StubState) -> Response:
    require_admin(request, state)
    host_id = _int_param(request, "host_id")
    log_type = str(request.path_params.get("log_type"))
    if log_type not in LOG_TYPES:
        raise not_found(f"unknown log type {log_type}")
    snapshot = state.logs.snapshot(host_id, log_type)
    if snapshot is None:
        return Response(b"", media_type="application/x-ndjson")
    # exactly the lines stored when the request came (the snapshot's length): the file keeps growing while it is sent
    path = state.logs.path_for(host_id, log_type)
    return CachedFirstFileResponse(path, stat_result=snapshot, media_type="application/x-ndjson")


# --- teams, agent options, secrets ---------------------------------------------------------------------------


async def list_teams(request: Request, state: StubState) -> Response:
    require_admin(request, state)
    return JSONResponse({"teams": [team_json(state, t) for t in teams.list_teams(state.conn)]})


async def create_team(request: Request, state: StubState) -> Response:
    require_admin(request, state)
    body = await read_json_object(request)
    name = required_str(body, "name").strip()
    if teams.find_team_by_name(state.conn, name) is not None:
        raise ApiError(409, f"a team named {name!r} already exists")
    team = teams.ensure_team(state.conn, name)
    return JSONResponse({"team": team_json(state, team)})


async def get_team(request: Request, state: StubState) -> Response:
    require_admin(request, state)
    return JSONResponse({"team": team_json(state, _team(request, state))})


async def patch_team(request: Request, state: StubState) -> Response:
    require_admin(request, state)
    team = _team(request, state)
    body = await read_json_object(request)
    try:
        if "orbit_notifications" in body:
            teams.set_team_notifications(state.conn, team.id, validate_notifications(body["orbit_notifications"]))
        if "agent_options" in body:
            value = body["agent_options"]
            teams.set_team_agent_options(state.conn, team.id, None if value is None else validate_agent_options(value))
    except InvalidAgentOptions as exc:
        raise _unprocessable(exc) from None
    updated = teams.get_team(state.conn, team.id)
    assert updated is not None
    return JSONResponse({"team": team_json(state, updated)})


async def delete_team(request: Request, state: StubState) -> Response:
    require_admin(request, state)
    teams.delete_team(state.conn, _team(request, state).id)
    return JSONResponse({})


async def team_agent_options(request: Request, state: StubState) -> Response:
    require_admin(request, state)
    team = _team(request, state)
    body = await read_json_object(request)
    try:
        options = validate_agent_options(body)
    except InvalidAgentOptions as exc:
        raise _unprocessable(exc) from None
    teams.set_team_agent_options(state.conn, team.id, options)
    updated = teams.get_team(state.conn, team.id)
    assert updated is not None
    return JSONResponse({"team": team_json(state, updated)})


def _secret_list(body: JsonObject) -> list[str]:
    raw = body.get("secrets")
    if not isinstance(raw, list):
        raise bad_request('\'secrets\' must be an array of {"secret": "..."}')
    found = []
    for item in raw:
        if not isinstance(item, dict) or not isinstance(item.get("secret"), str) or not item["secret"].strip():
            raise bad_request("each secret must be an object with a non-empty string 'secret'")
        found.append(item["secret"].strip())
    return found


async def team_secrets(request: Request, state: StubState) -> Response:
    require_admin(request, state)
    team = _team(request, state)
    if request.method == "PATCH":
        body = await read_json_object(request)
        try:
            teams.replace_secrets(state.conn, team.id, _secret_list(body), source="api", now=state.clock())
        except teams.SecretConflict as exc:
            raise ApiError(409, str(exc)) from None
    return JSONResponse({"secrets": [{"secret": s.secret} for s in teams.list_secrets(state.conn, team.id)]})


async def global_secrets(request: Request, state: StubState) -> Response:
    require_admin(request, state)
    if request.method == "POST":
        body = await read_json_object(request)
        spec = body.get("spec")
        if not isinstance(spec, dict):
            raise bad_request('body must be {"spec": {"secrets": [...]}}')
        try:
            teams.replace_secrets(state.conn, None, _secret_list(spec), source="api", now=state.clock())
        except teams.SecretConflict as exc:
            raise ApiError(409, str(exc)) from None
        return JSONResponse({})
    secrets = [{"secret": s.secret} for s in teams.list_secrets(state.conn, None)]
    return JSONResponse({"spec": {"secrets": secrets}})


async def global_config(request: Request, state: StubState) -> Response:
    require_admin(request, state)
    if request.method == "PATCH":
        body = await read_json_object(request)
        try:
            if "agent_options" in body:
                teams.set_global_agent_options(state.conn, validate_agent_options(body["agent_options"]))
            if "orbit_notifications" in body:
                teams.set_global_notifications(state.conn, validate_notifications(body["orbit_notifications"]))
        except InvalidAgentOptions as exc:
            raise _unprocessable(exc) from None
    return JSONResponse(
        {
            "org_info": {"org_name": state.settings.org_name},
            "agent_options": teams.global_agent_options(state.conn),
            "orbit_notifications": teams.global_notifications(state.conn),
        }
    )


# --- policies ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _PolicyFields:
    name: str
    query: str
    description: str
    resolution: str
    platform: str


def _policy_fields(body: JsonObject) -> _PolicyFields:
    name = optional_str(body, "name").strip()
    query = optional_str(body, "query").strip()
    if not name or not query:
        raise ApiError(422, "policy needs a non-empty 'name' and 'query'")
    platform = optional_str(body, "platform").strip()
    allowed = {"darwin", "windows", "linux", "chrome"}
    if platform and not {p.strip() for p in platform.split(",")} <= allowed:
        raise ApiError(422, "platform must be a comma-separated list of darwin, windows, linux, chrome")
    return _PolicyFields(name, query, optional_str(body, "description"), optional_str(body, "resolution"), platform)


async def list_policies(request: Request, state: StubState) -> Response:
    require_admin(request, state)
    team_id = _int_param(request, "team_id") if "team_id" in request.path_params else None
    found = [p.to_json() for p in policies.list_policies(state.conn) if p.team_id == team_id]
    return JSONResponse({"policies": found})


async def create_policy(request: Request, state: StubState) -> Response:
    require_admin(request, state)
    team_id = _team(request, state).id if "team_id" in request.path_params else None
    body = await read_json_object(request)
    try:
        policy = policies.upsert_policy(
            state.conn, **vars(_policy_fields(body)), team_id=team_id, source="api", now=state.clock()
        )
    except policies.PolicyNameTaken as exc:
        raise ApiError(409, str(exc)) from None
    return JSONResponse({"policy": policy.to_json()})


async def update_policy(request: Request, state: StubState) -> Response:
    require_admin(request, state)
    existing = policies.get_policy(state.conn, _int_param(request, "policy_id"))
    if existing is None:
        raise not_found("policy not found")
    body = await read_json_object(request)
    merged = {**existing.to_json(), **{k: v for k, v in body.items() if v is not None}}
    try:
        policy = policies.upsert_policy(
            state.conn,
            **vars(_policy_fields(merged)),
            team_id=existing.team_id,
            source="api",
            now=state.clock(),
            policy_id=existing.id,
        )
    except policies.PolicyNameTaken as exc:
        raise ApiError(409, str(exc)) from None
    return JSONResponse({"policy": policy.to_json()})


async def delete_policies(request: Request, state: StubState) -> Response:
    require_admin(request, state)
    body = await read_json_object(request)
    ids = body.get("ids")
    if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        raise bad_request("'ids' must be an array of policy ids")
    if not all(fits_int64(i) for i in ids):
        raise bad_request(f"'ids' must be policy ids (integers up to {INT64_MAX})")
    deleted = policies.delete_policies(state.conn, [int(i) for i in ids])
    return JSONResponse({"deleted": deleted})


# --- scripts and carves -----------------------------------------------------------------------------------


async def run_script(request: Request, state: StubState) -> Response:
    require_admin(request, state)
    body = await read_json_object(request)
    host_id = optional_int(body, "host_id", minimum=0)
    if host_id is None:
        raise ApiError(422, "host_id is required")
    host = hosts.get_host(state.conn, host_id)
    if host is None:
        raise not_found("host not found")
    contents = optional_str(body, "script_contents")
    if not contents.strip():
        raise ApiError(422, "script_contents is required")
    timeout = optional_int(body, "timeout")
    if timeout is not None and not 1 <= timeout <= 3600:
        raise ApiError(422, "timeout must be from 1 to 3600 seconds")
    execution = scripts.queue(state.conn, host.id, contents, timeout, state.clock())
    return JSONResponse({"host_id": host.id, "execution_id": execution.execution_id}, status_code=202)


async def script_result(request: Request, state: StubState) -> Response:
    require_admin(request, state)
    execution = scripts.get(state.conn, str(request.path_params["execution_id"]))
    if execution is None:
        raise not_found("script execution not found")
    host = hosts.get_host(state.conn, execution.host_id)
    return JSONResponse(execution.to_json(host.team_id if host else None))


async def list_carves(request: Request, state: StubState) -> Response:
    require_admin(request, state)
    return JSONResponse({"carves": [c.to_json() for c in state.carves.list()]})


# --- metrics ----------------------------------------------------------------------------------------------


async def metrics(request: Request, state: StubState) -> Response:
    require_admin(request, state)
    now = state.clock()
    gauges = [
        Gauge("hosts_enrolled", "Hosts known to the server.", hosts.count_hosts(state.conn)),
        Gauge(
            "hosts_seen_recently",
            "Hosts that checked in during the last hour.",
            hosts.count_hosts_seen_since(state.conn, now - RECENT_SECONDS),
        ),
        Gauge("live_queries_pending", "Live queries waiting for a host's answer.", state.live.pending_count()),
    ]
    totals = state.logs.totals()
    gauges += [Gauge(f"log_lines_stored_{k}", f"{k} log lines stored.", v) for k, v in totals.items()]
    return PlainTextResponse(await state.render_metrics(gauges), media_type="text/plain; version=0.0.4")


def routes() -> list[Route]:
    base = "/api/{version}/fleet"

    def route(path: str, name: str, handler: Handler, methods: list[str]) -> Route:
        return Route(path, endpoint(name, Family.ADMIN, handler), methods=methods)

    return [
        route(base + "/hosts", "admin_list_hosts", list_hosts, ["GET"]),
        route(base + "/hosts/count", "admin_count_hosts", count_hosts, ["GET"]),
        route(base + "/versions", "admin_versions", version_summary, ["GET"]),
        route(base + "/hosts/{host_id}", "admin_get_host", get_host, ["GET"]),
        route(base + "/hosts/{host_id}/versions", "admin_host_versions", host_versions, ["GET"]),
        route(base + "/hosts/{host_id}/device_token", "admin_host_device_token", host_device_token, ["GET"]),
        route(base + "/hosts/{host_id}/scripts/results", "admin_host_scripts", host_script_results, ["GET"]),
        route(base + "/hosts/{host_id}/queries", "admin_host_queries", host_queries, ["GET"]),
        route(base + "/hosts/{host_id}/queries/{query_id}", "admin_host_query", host_query_result, ["GET"]),
        route(base + "/hosts/{host_id}", "admin_delete_host", delete_host, ["DELETE"]),
        route(base + "/hosts/{host_id}/query", "admin_live_query", live_query, ["POST"]),
        route(base + "/hosts/{host_id}/logs/{log_type}", "admin_host_logs", host_logs, ["GET"]),
        route(base + "/teams", "admin_list_teams", list_teams, ["GET"]),
        route(base + "/teams", "admin_create_team", create_team, ["POST"]),
        route(base + "/teams/{team_id}", "admin_get_team", get_team, ["GET"]),
        route(base + "/teams/{team_id}", "admin_patch_team", patch_team, ["PATCH"]),
        route(base + "/teams/{team_id}", "admin_delete_team", delete_team, ["DELETE"]),
        route(base + "/teams/{team_id}/agent_options", "admin_team_agent_options", team_agent_options, ["POST"]),
        route(base + "/teams/{team_id}/secrets", "admin_team_secrets", team_secrets, ["GET", "PATCH"]),
        route(base + "/teams/{team_id}/policies", "admin_team_policies", list_policies, ["GET"]),
        route(base + "/teams/{team_id}/policies", "admin_create_team_policy", create_policy, ["POST"]),
        route(base + "/spec/enroll_secret", "admin_global_secrets", global_secrets, ["GET", "POST"]),
        route(base + "/config", "admin_config", global_config, ["GET", "PATCH"]),
        route(base + "/global/policies", "admin_global_policies", list_policies, ["GET"]),
        route(base + "/global/policies", "admin_create_policy", create_policy, ["POST"]),
        route(base + "/global/policies/delete", "admin_delete_policies", delete_policies, ["POST"]),
        route(base + "/global/policies/{policy_id}", "admin_update_policy", update_policy, ["PATCH"]),
        route(
            base + "/teams/{team_id}/policies/{policy_id}",
            "admin_update_team_policy",
            update_policy,
            ["PATCH"],
        ),
        route(base + "/scripts/run", "admin_run_script", run_script, ["POST"]),
        route(base + "/scripts/results/{execution_id}", "admin_script_result", script_result, ["GET"]),
        route(base + "/carves", "admin_list_carves", list_carves, ["GET"]),
        route("/metrics", "metrics", metrics, ["GET"]),
    ]
