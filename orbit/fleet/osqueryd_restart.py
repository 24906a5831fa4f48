"""Restarting osqueryd when the server asks (issue 18 protocol §4), once per request id.

The orbit config answer's ``notifications.restart_osqueryd_request_id`` names a pending request. orbit restarts
only osqueryd (not itself, not Fleet Desktop), then acknowledges with ``POST /api/fleet/orbit/osqueryd_restart/
result``. The id is written to ``state/osqueryd-restart-request.json`` (0600, one rename) *before* the restart, so an
orbit that is itself restarted meanwhile does not restart osqueryd a second time for the same request — it only
sends the acknowledgement that is still owed. An acknowledgement that fails is retried at the next poll.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from orbit.fleet.client import FleetError, OrbitClient, OrbitConfig
from safe_fs.atomic_write import SECRET_MODE, write_atomic

log = logging.getLogger(__name__)

# restart osqueryd and wait until it runs again; returns None, or what went wrong (sent to the server as ``error``)
RestartOsqueryd = Callable[[str], Awaitable[str | None]]


@dataclass(frozen=True)
class HandledRequest:
    request_id: str
    acknowledged: bool
    error: str | None = None


def load_handled(path: Path) -> HandledRequest | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.error("event=restart_request_state_unreadable path=%s error=%s", path, exc)
        return None
    if not isinstance(data, dict) or not isinstance(data.get("request_id"), str):
        return None
    error = data.get("error")
    return HandledRequest(
        data["request_id"], data.get("acknowledged") is True, error if isinstance(error, str) else None
    )


def save_handled(path: Path, handled: HandledRequest) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(asdict(handled)), SECRET_MODE)


class OsquerydRestartRequests:
    """A config receiver (called on every poll) that starts at most one restart-and-acknowledge job at a time."""

    def __init__(
        self,
        client: OrbitClient,
        state_path: Path,
        restart: RestartOsqueryd,
        spawn: Callable[[Awaitable[None]], object],
    ) -> None:
        self._client = client
        self._path = state_path
        self._restart = restart
        self._spawn = spawn
        self._busy = False
        self.restarts = 0

    def on_config(self, config: OrbitConfig) -> None:
        request_id = config.restart_osqueryd_request_id
        if request_id is None or self._busy:
            return
        handled = load_handled(self._path)
        if handled is not None and handled.request_id == request_id and handled.acknowledged:
            return
        self._busy = True
        if handled is not None and handled.request_id == request_id:
            self._spawn(self._job(request_id, restart=False, error=handled.error))  # restarted already: ack only
        else:
            self._spawn(self._job(request_id, restart=True, error=None))

    async def _job(self, request_id: str, *, restart: bool, error: str | None) -> None:
        try:
            if restart:
                save_handled(self._path, HandledRequest(request_id, acknowledged=False))
                log.info("event=osqueryd_restart_on_request request_id=%r", request_id)
                error = await self._restart(f"server request {request_id}")
                self.restarts += 1
                if error is not None:
                    save_handled(self._path, HandledRequest(request_id, acknowledged=False, error=error))
            await self._acknowledge(request_id, error)
        except OSError as exc:  # the state file could not be written: nothing restarted twice, tried again next poll
            log.error("event=osqueryd_restart_request_failed request_id=%r error=%s", request_id, exc)
        finally:
            self._busy = False

    async def _acknowledge(self, request_id: str, error: str | None) -> None:
        try:
            await self._client.post_osqueryd_restart_result(request_id, error)
        except FleetError as exc:
            log.warning("event=osqueryd_restart_ack_failed request_id=%r error=%s", request_id, exc)
            return
        save_handled(self._path, HandledRequest(request_id, acknowledged=True, error=error))
        log.info("event=osqueryd_restart_acknowledged request_id=%r error=%r", request_id, error)


__all__ = ["HandledRequest", "OsquerydRestartRequests", "load_handled", "save_handled"]
