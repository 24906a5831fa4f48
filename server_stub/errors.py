"""Error values raised by handlers and how each API family renders them.

Two shapes exist on the wire (docs/reference/fleet-api.md §1.5):

* shape A (osquery endpoints): ``{"error": str, "uuid": str, "node_invalid": true?}``. osqueryd ignores HTTP
  status codes, so the body alone must say "failure"; ``node_invalid`` is a JSON boolean and present only when
  the node has to re-enroll.
* shape B (orbit, device, admin): ``{"message": str, "errors": [{"name": "base", "reason": str}], "uuid": str}``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from enum import Enum

from starlette.responses import Response

from server_stub.json_response import JSONResponse


class ErrorShape(Enum):
    OSQUERY = "A"
    FLEET = "B"


_SUMMARY_BY_STATUS = {
    400: "Bad request",
    401: "Authentication required",
    402: "Missing or invalid license",
    404: "Resource Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    413: "Request Entity Too Large",
    415: "Unsupported Media Type",
    422: "Validation Failed",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


@dataclass(frozen=True)
class ApiError(Exception):
    """A request failed; ``status`` is the HTTP status, ``reason`` the human-readable detail."""

    status: int
    reason: str
    node_invalid: bool = False
    summary: str | None = None
    retry_after: int | None = None  # seconds, sent as Retry-After (429)

    def __str__(self) -> str:
        return f"{self.status}: {self.reason}"


def bad_request(reason: str) -> ApiError:
    return ApiError(400, reason)


def unauthorized(reason: str, *, node_invalid: bool = False, summary: str | None = None) -> ApiError:
    return ApiError(401, reason, node_invalid=node_invalid, summary=summary)


def not_found(reason: str) -> ApiError:
    return ApiError(404, reason)


def conflict(reason: str) -> ApiError:
    return ApiError(409, reason)


def too_large(limit: int) -> ApiError:
    return ApiError(413, f"Request exceeds the max size limit of {limit} bytes")


def too_many_requests(retry_after: float) -> ApiError:
    return ApiError(429, "too many failed attempts; try again later", retry_after=max(1, round(retry_after)))


def render_error(error: ApiError, shape: ErrorShape) -> Response:
    error_id = str(uuid.uuid4())
    headers = {"Retry-After": str(error.retry_after)} if error.retry_after is not None else None
    if shape is ErrorShape.OSQUERY:
        body: dict[str, object] = {"error": error.reason, "uuid": error_id}
        if error.node_invalid:
            body["node_invalid"] = True
        return JSONResponse(body, status_code=error.status, headers=headers)
    summary = error.summary or _SUMMARY_BY_STATUS.get(error.status, "Error")
    return JSONResponse(
        {"message": summary, "errors": [{"name": "base", "reason": error.reason}], "uuid": error_id},
        status_code=error.status,
        headers=headers,
    )
