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

from starlette.requests import Request
from starlette.responses import Response

from server_stub.errors import ApiError, ErrorShape, render_error
from server_stub.state import StubState

log = logging.getLogger(__name__)

Handler = Callable[[Request, StubState], Awaitable[Response]]
Endpoint = Callable[[Request], Awaitable[Response]]

CAPABILITIES_HEADER = "X-Fleet-Capabilities"


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
        except Exception:
            log.exception("event=handler_failed endpoint=%s", name)
            response = render_error(ApiError(500, "internal server error"), family.error_shape)
        if 200 <= response.status_code < 300:
            if family is Family.ORBIT:
                response.headers[CAPABILITIES_HEADER] = state.capabilities_header
            elif family is Family.DEVICE:
                response.headers[CAPABILITIES_HEADER] = ""
        state.metrics.observe(name, response.status_code, time.perf_counter() - started)
        return response

    run.__name__ = name
    return run
