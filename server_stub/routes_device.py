"""Device endpoints for Fleet Desktop and the My device page (docs/reference/fleet-api.md §5).

The token is a path segment; an unknown or expired token (older than an hour) is a 401 in shape B. The version
segment is one of ``v1``, ``2022-04`` and ``latest``.
"""

from __future__ import annotations

import json
import logging

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from server_stub import device_tokens, hosts, policies
from server_stub.api import Family, Handler, endpoint
from server_stub.errors import not_found, too_many_requests, unauthorized
from server_stub.host_views import host_json, policy_json
from server_stub.http_body import MIB, read_json_object
from server_stub.json_response import JSONResponse
from server_stub.state import StubState
from server_stub.transactions import write_transaction

log = logging.getLogger(__name__)

API_VERSIONS = frozenset({"v1", "2022-04", "latest"})
DEBUG_ERRORS_LIMIT = 5 * MIB


def device_host(request: Request, state: StubState) -> hosts.Host:
    if request.path_params.get("version") not in API_VERSIONS:
        raise not_found("unknown API version")
    client = request.client.host if request.client is not None else "?"
    if (wait := state.device_guesses.retry_after(client)) is not None:
        raise too_many_requests(wait)
    token = str(request.path_params.get("token", ""))
    host_id = device_tokens.host_for_token(state.conn, token, state.clock())
    host = hosts.get_host(state.conn, host_id) if host_id is not None else None
    if host is None:
        state.device_guesses.failed(client)
        raise unauthorized("authentication error: invalid or expired device token")
    return state.seen_times.with_pending(host)


async def public_ping(request: Request, state: StubState) -> Response:
    return Response(status_code=200)


async def token_ping(request: Request, state: StubState) -> Response:
    device_host(request, state)
    return Response(status_code=200)


async def desktop_summary(request: Request, state: StubState) -> Response:
    host = device_host(request, state)
    results = policies.results_for_host(state.conn, host.id, host.team_id, host.platform)
    return JSONResponse(
        {
            "failing_policies_count": policies.failing_count(results),
            "self_service": False,
            "notifications": {"needs_mdm_migration": False, "renew_enrollment_profile": False},
            "config": {
                "org_info": {
                    "org_name": state.settings.org_name,
                    "org_logo_url": "",
                    "org_logo_url_light_background": "",
                    "contact_url": "",
                },
                "mdm": {"macos_migration": {"mode": ""}},
            },
        }
    )


async def device_policies(request: Request, state: StubState) -> Response:
    host = device_host(request, state)
    results = policies.results_for_host(state.conn, host.id, host.team_id, host.platform)
    return JSONResponse({"policies": [policy_json(r) for r in results]})


async def debug_errors(request: Request, state: StubState) -> Response:
    host = device_host(request, state)
    body = await read_json_object(request, DEBUG_ERRORS_LIMIT)
    with write_transaction(state.conn):
        state.conn.execute(
            "INSERT INTO debug_errors (host_id, received_at, body) VALUES (?, ?, ?)",
            (host.id, state.clock(), json.dumps(body, allow_nan=False)),
        )
    log.warning("event=device_error_report host_id=%d source=%s", host.id, body.get("error_source", ""))
    return JSONResponse({})


async def transparency(request: Request, state: StubState) -> Response:
    device_host(request, state)
    return RedirectResponse(state.settings.transparency_url, status_code=307)


async def device_info(request: Request, state: StubState) -> Response:
    host = device_host(request, state)
    return JSONResponse(
        {
            "host": host_json(state, host, with_policies=True),
            "self_service": False,
            "org_logo_url": "",
            "org_logo_url_light_background": "",
            "org_contact_url": "",
            "license": {"tier": "free"},
            "global_config": {
                "mdm": {"enabled_and_configured": False, "require_all_software": False},
                "features": {"enable_host_users": False, "enable_software_inventory": False},
            },
        }
    )


async def refetch(request: Request, state: StubState) -> Response:
    host = device_host(request, state)
    hosts.set_timestamps(state.conn, host.id, detail_updated_at=None, policy_updated_at=None)
    return JSONResponse({})


def routes() -> list[Route]:
    base = "/api/{version}/fleet/device/{token}"

    def route(path: str, name: str, handler: Handler, methods: list[str]) -> Route:
        return Route(path, endpoint(name, Family.DEVICE, handler), methods=methods)

    return [
        route("/api/fleet/device/ping", "device_public_ping", public_ping, ["HEAD", "GET"]),
        route(base, "device_info", device_info, ["GET"]),
        route(base + "/ping", "device_ping", token_ping, ["HEAD", "GET"]),
        route(base + "/desktop", "device_desktop", desktop_summary, ["GET"]),
        route(base + "/policies", "device_policies", device_policies, ["GET"]),
        route(base + "/debug/errors", "device_debug_errors", debug_errors, ["POST"]),
        route(base + "/transparency", "device_transparency", transparency, ["GET"]),
        route(base + "/refetch", "device_refetch", refetch, ["POST"]),
    ]
