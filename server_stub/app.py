"""The ASGI application: every route family mounted on one Starlette app, with JSON error pages.

Unknown paths and wrong methods answer in the shape of the family the path belongs to (shape A under the
osquery prefixes, so an osqueryd pointed at a wrong endpoint sees a failure, not a success).
"""

from __future__ import annotations

import os
import time

from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount
from starlette.staticfiles import NotModifiedResponse, PathLike, StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server_stub import device_page, routes_admin, routes_device, routes_orbit, routes_osquery, routes_rollouts
from server_stub.console import routes as console_routes
from server_stub.errors import ApiError, ErrorShape, render_error
from server_stub.file_sending import CachedFirstFileResponse
from server_stub.state import StubState

OSQUERY_PREFIXES = ("/api/osquery/", "/api/v1/osquery/")


class _TufStaticFiles(StaticFiles):
    """starlette's StaticFiles (path checks, HEAD, ranges, 304s) with whole files sent by ``file_sending``."""

    def file_response(
        self, full_path: PathLike, stat_result: os.stat_result, scope: Scope, status_code: int = 200
    ) -> Response:
        response = CachedFirstFileResponse(full_path, status_code=status_code, stat_result=stat_result)
        if self.is_not_modified(response.headers, Headers(scope=scope)):
            return NotModifiedResponse(response.headers)
        return response


class _TufFiles:
    """Static TUF repository files, counted in the metrics; everything absent is a 404."""

    def __init__(self, state: StubState) -> None:
        self._state = state
        directory = state.settings.tuf_repo
        self._files: ASGIApp | None = (
            _TufStaticFiles(directory=directory, check_dir=False, follow_symlink=False) if directory else None
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        status = 500

        async def counting_send(message: Message) -> None:
            nonlocal status
            if message.get("type") == "http.response.start":
                status = int(str(message.get("status", 500)))
            await send(message)

        try:
            if self._files is None:
                raise HTTPException(404)
            await self._files(scope, receive, counting_send)
        except HTTPException as exc:
            status = exc.status_code
            response = render_error(ApiError(exc.status_code, "not found"), ErrorShape.FLEET)
            await response(scope, receive, send)
        finally:
            self._state.metrics.observe("tuf_file", status, time.perf_counter() - started)


async def _http_error(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    reason = {404: "no such endpoint", 405: "method not allowed"}.get(status, "request failed")
    shape = ErrorShape.OSQUERY if request.url.path.startswith(OSQUERY_PREFIXES) else ErrorShape.FLEET
    response = render_error(ApiError(status, f"{reason}: {request.method} {request.url.path}"), shape)
    stub: StubState | None = getattr(request.app.state, "stub", None)
    if stub is not None:
        stub.metrics.observe("unmatched", status, 0.0)
    return response


def build_app(state: StubState) -> Starlette:
    all_routes: list[BaseRoute] = [
        *routes_osquery.routes(),
        *routes_orbit.routes(),
        *routes_device.routes(),
        *routes_admin.routes(),
        *routes_rollouts.routes(),
        *device_page.routes(),
        *console_routes.routes(),
        Mount("/tuf", app=_TufFiles(state)),
    ]
    app = Starlette(routes=all_routes, exception_handlers={HTTPException: _http_error})
    # Starlette would answer "/path/" with a redirect built from the client's Host header (an open redirect that a
    # hostile client steers); Fleet's router answers 404 there, and so do we
    app.router.redirect_slashes = False
    app.state.stub = state
    return app
