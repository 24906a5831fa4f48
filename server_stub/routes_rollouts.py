"""Admin REST for staged rollouts and osqueryd restarts (Bearer admin token, Fleet's shapes; docs/adr/0017).

* ``GET  /api/{v}/fleet/rollouts`` → ``{"rollouts": [ROLLOUT, …]}`` (without events)
* ``POST /api/{v}/fleet/rollouts`` (rollout_spec's body) → ``{"rollout": ROLLOUT}``
* ``GET  /api/{v}/fleet/rollouts/{id}`` → ``{"rollout": ROLLOUT}`` (with its recent events)
* ``POST /api/{v}/fleet/rollouts/{id}/pause|resume|abort`` → ``{"rollout": ROLLOUT}``
* ``POST /api/{v}/fleet/hosts/{id}/restart_osqueryd``, ``POST /api/{v}/fleet/teams/{id}/restart_osqueryd`` (team 0:
  the hosts without a team) → ``{"request_id": "…", "host_count": N}``
* ``GET  /api/{v}/fleet/osqueryd_restarts/{request_id}`` → ``{"request_id", "hosts": [{host_id, state, error, …}]}``

ROLLOUT is ``rollout_status.RolloutStatus.to_json()``: the same view the console renders.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from server_stub import hosts, osqueryd_restarts, teams
from server_stub.api import Family, Handler, endpoint
from server_stub.errors import ApiError, not_found
from server_stub.http_body import read_json_object
from server_stub.json_response import JSONResponse
from server_stub.rollout_rules import AdminAction
from server_stub.rollout_spec import InvalidRollout, parse_request, parse_team_ids
from server_stub.rollout_status import rollout_status, rollout_statuses
from server_stub.rollouts import RolloutRefused
from server_stub.routes_admin import int_param, require_admin
from server_stub.state import StubState

NO_TEAM = 0


def _status_json(state: StubState, rollout_id: int) -> Response:
    status = rollout_status(state.conn, rollout_id, state.clock())
    if status is None:
        raise not_found(f"rollout {rollout_id} not found")
    return JSONResponse({"rollout": status.to_json()})


async def list_rollouts(request: Request, state: StubState) -> Response:
    require_admin(request, state)
    statuses = rollout_statuses(state.conn, state.clock())
    return JSONResponse({"rollouts": [s.to_json() for s in statuses]})


async def create_rollout(request: Request, state: StubState) -> Response:
    require_admin(request, state)
    body = await read_json_object(request)
    try:
        parsed = parse_request(body, frozenset({"team_ids"}))
        team_ids = parse_team_ids(body.get("team_ids"))
        rollout = state.rollouts.create(parsed, team_ids, state.clock())
    except InvalidRollout as exc:
        raise ApiError(exc.status, str(exc)) from None
    except RolloutRefused as exc:
        raise ApiError(exc.status, str(exc)) from None
    return _status_json(state, rollout.id)


async def get_rollout(request: Request, state: StubState) -> Response:
    require_admin(request, state)
    return _status_json(state, int_param(request, "rollout_id"))


def _transition(action: AdminAction) -> Handler:
    async def handler(request: Request, state: StubState) -> Response:
        require_admin(request, state)
        rollout_id = int_param(request, "rollout_id")
        try:
            state.rollouts.transition(rollout_id, action, state.clock())
        except RolloutRefused as exc:
            raise ApiError(exc.status, str(exc)) from None
        return _status_json(state, rollout_id)

    return handler


async def restart_host_osqueryd(request: Request, state: StubState) -> Response:
    require_admin(request, state)
    host = hosts.get_host(state.conn, int_param(request, "host_id"))
    if host is None:
        raise not_found("host not found")
    request_id = osqueryd_restarts.request_restart(state.conn, [host.id], state.clock())
    return JSONResponse({"request_id": request_id, "host_count": 1})


async def restart_team_osqueryd(request: Request, state: StubState) -> Response:
    require_admin(request, state)
    team_id = int_param(request, "team_id")
    if team_id == NO_TEAM:
        members = [h.id for h in hosts.list_hosts(state.conn) if h.team_id is None]
    else:
        if teams.get_team(state.conn, team_id) is None:
            raise not_found("team not found")
        members = [h.id for h in hosts.list_hosts(state.conn, team_id)]
    request_id = osqueryd_restarts.request_restart(state.conn, members, state.clock())
    return JSONResponse({"request_id": request_id, "host_count": len(members)})


async def restart_request(request: Request, state: StubState) -> Response:
    require_admin(request, state)
    request_id = str(request.path_params["request_id"])
    found = osqueryd_restarts.request_hosts(state.conn, request_id)
    if not found:
        raise not_found("osqueryd restart request not found")
    return JSONResponse({"request_id": request_id, "hosts": [h.to_json() for h in found]})


def routes() -> list[Route]:
    base = "/api/{version}/fleet"

    def route(path: str, name: str, handler: Handler, methods: list[str]) -> Route:
        return Route(base + path, endpoint(name, Family.ADMIN, handler), methods=methods)

    return [
        route("/rollouts", "admin_list_rollouts", list_rollouts, ["GET"]),
        route("/rollouts", "admin_create_rollout", create_rollout, ["POST"]),
        route("/rollouts/{rollout_id}", "admin_get_rollout", get_rollout, ["GET"]),
        route("/rollouts/{rollout_id}/pause", "admin_pause_rollout", _transition(AdminAction.PAUSE), ["POST"]),
        route("/rollouts/{rollout_id}/resume", "admin_resume_rollout", _transition(AdminAction.RESUME), ["POST"]),
        route("/rollouts/{rollout_id}/abort", "admin_abort_rollout", _transition(AdminAction.ABORT), ["POST"]),
        route("/hosts/{host_id}/restart_osqueryd", "admin_restart_host_osqueryd", restart_host_osqueryd, ["POST"]),
        route("/teams/{team_id}/restart_osqueryd", "admin_restart_team_osqueryd", restart_team_osqueryd, ["POST"]),
        route("/osqueryd_restarts/{request_id}", "admin_osqueryd_restart", restart_request, ["GET"]),
    ]
