"""The wrapper every route goes through: error rendering per API family, metrics, capability headers.

A handler is ``async def handler(request, state) -> Response`` and raises ``ApiError`` for failures; the
wrapper turns that into shape A (osquery family) or shape B (everything else), counts the request under the
route's name, and adds ``X-Fleet-Capabilities`` to 2xx answers of the orbit and device families.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from enum import Enum

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from server_stub.connection_guard import vouch_for
from server_stub.errors import ApiError, ErrorShape, render_error
from server_stub.state import StubState

log = logging.getLogger(__name__)

Handler = Callable[[Request, StubState], Awaitable[Response]]
Endpoint = Callable[[Request], Awaitable[Response]]

CAPABILITIES_HEADER = "X-Fleet-Capabilities"
# Endpoints that answer 2xx without any credential: their success proves nothing about the connection.
OPEN_ENDPOINTS = frozenset({"orbit_ping", "device_public_ping"})
CLIENT_GONE = 499  # nginx's "client closed request": counted in the metrics, never sent


class Family(Enum):
    OSQUERY = "osquery"
    ORBIT = "orbit"
    DEVICE = "device"
    ADMIN = "admin"
    WEB = "web"
    TUF = "tuf"

    @property
    def error_shape(self) -> ErrorShape:
        return ErrorShape.OSQUERY if self is Family.OSQUERY else ErrorShape.FLEET


def stub_state(request: Request) -> StubState:
    state: StubState = request.app.state.stub
    return state


def endpoint(name: str, family: Family, handler: Handler) -> Endpoint:
    async def run(request: Request) -> Response:
        state = stub_state(request)
        started = time.perf_counter()
        try:
            response = await handler(request, state)
        except ApiError as error:
            response = render_error(error, family.error_shape)
        except ClientDisconnect:  # the client left, or the connection guard timed its body out (408 already sent)
            log.debug("event=client_gone endpoint=%s", name)
            state.metrics.observe(name, CLIENT_GONE, time.perf_counter() - started)
            return Response(status_code=CLIENT_GONE)
        except Exception:
            log.exception("event=handler_failed endpoint=%s", name)
            response = render_error(ApiError(500, "internal server error"), family.error_shape)
        if 200 <= response.status_code < 300:
            if name not in OPEN_ENDPOINTS:
                vouch_for(request.scope)
            if family is Family.ORBIT:
                response.headers[CAPABILITIES_HEADER] = state.capabilities_header
            elif family is Family.DEVICE:
                response.headers[CAPABILITIES_HEADER] = ""
        state.metrics.observe(name, response.status_code, time.perf_counter() - started)
        return response

    run.__name__ = name
    return run
