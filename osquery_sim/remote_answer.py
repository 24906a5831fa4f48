"""How osqueryd judges a server's answer: by the body, never by the HTTP status (docs/reference/fleet-api.md §3).

1. a body that is not JSON → failure; an empty body → success with ``{}``;
2. ``node_invalid`` is JSON ``true`` → failure, and the node key must be dropped;
3. any top-level ``error`` → failure;
4. otherwise → success.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

JsonObject = dict[str, object]


@dataclass(frozen=True)
class RemoteAnswer:
    ok: bool
    body: JsonObject = field(default_factory=dict)
    node_invalid: bool = False
    error: str = ""


def judge(raw: bytes) -> RemoteAnswer:
    if not raw.strip():
        return RemoteAnswer(ok=True)
    try:
        decoded = json.loads(raw)
    except (ValueError, RecursionError):
        return RemoteAnswer(ok=False, error="response is not JSON")
    if not isinstance(decoded, dict):
        return RemoteAnswer(ok=False, error="response is not a JSON object")
    body: JsonObject = {str(k): v for k, v in decoded.items()}
    if body.get("node_invalid") is True:
        message = body.get("error")
        return RemoteAnswer(
            ok=False,
            body=body,
            node_invalid=True,
            error=f"Invalid node key: {message}" if isinstance(message, str) and message else "Invalid node key",
        )
    if "error" in body:
        message = body.get("error")
        return RemoteAnswer(ok=False, body=body, error=str(message) if message is not None else "error")
    return RemoteAnswer(ok=True, body=body)
