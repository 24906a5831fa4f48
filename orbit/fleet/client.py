"""Fleet's orbit API, client side (docs/reference/orbit-behaviour.md §2, §4; docs/reference/fleet-api.md §4–§5), on
httpx.AsyncClient.

- Lazy enrollment: every authenticated call first gets the node key, enrolling (behind one lock, so concurrent
  callers never enroll twice) with Fleet's retries — 6 attempts, waits of 10, 20, 40, 80, 160 s; 404 = the
  server has no orbit API, not retried.
- 401 debounce (Fleet #47650): a 401 does not throw the key away. Only when 401s have persisted for
  ``reenroll_debounce`` seconds does the client enroll again, writing the new key over the old in one rename,
  and retry the call once. Any success clears the run.
- ``X-Fleet-Capabilities`` is sent on every request and the server's set is replaced from every 2xx orbit answer.
- ``get_config`` answers from a 3 s cache so receivers in the same tick share one request.
- Errors are typed (``FleetUnavailable`` for network/5xx, ``FleetUnauthenticated``, ``FleetNotFound``,
  ``FleetConflict``, ``FleetError``) and carry the server's message, never the secret or the node key.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import cast
from urllib.parse import quote

import httpx

from orbit.fleet.device_token import DeviceTokenConflictError
from orbit.fleet.node_key_store import MAX_NODE_KEY_LENGTH, NodeKeyStore
from orbit.fleet.scripts_receiver import ScriptRequest, ScriptRequestError

log = logging.getLogger(__name__)

CAPABILITIES_HEADER = "X-Fleet-Capabilities"
CLIENT_CAPABILITIES = ""  # we advertise only what we implement (Fleet's escrow_buddy/setup_experience are not)
MAX_RESPONSE_BYTES = 10 * 1024 * 1024


class FleetError(Exception):
    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class FleetUnavailable(FleetError):
    """Network trouble, a timeout or a 5xx: worth retrying later."""


class FleetUnauthenticated(FleetError):
    pass


class FleetNotFound(FleetError):
    pass


class FleetConflict(FleetError):
    pass


@dataclass(frozen=True)
class UpdateChannels:
    orbit: str
    osqueryd: str
    desktop: str


@dataclass(frozen=True)
class OrbitConfig:
    """The typed parts of ``OrbitConfig`` we act on; ``digest`` identifies the whole answer."""

    startup_flags: Mapping[str, object] | None
    update_channels: UpdateChannels | None
    script_execution_timeout: int | None
    pending_script_execution_ids: tuple[str, ...]
    extensions: Mapping[str, object] | None
    digest: str
    raw: Mapping[str, object] = field(repr=False)
    restart_osqueryd_request_id: str | None = None  # fleet-stub's restart-osqueryd action (issue 18 protocol §4)


MAX_REQUEST_ID = 256


class ConfigFormatError(FleetError):
    pass


def _channel(value: object, name: str) -> str:
    if value is None or value == "":
        return "stable"
    if not isinstance(value, str) or "/" in value or value in (".", ".."):
        raise ConfigFormatError(f"update_channels.{name} is not a channel name")
    return value


def parse_orbit_config(body: Mapping[str, object]) -> OrbitConfig:
    """Validate the fields we use; unknown fields are ignored, wrong types are an error (nothing is applied)."""
    flags = body.get("command_line_startup_flags")
    if flags is not None and not isinstance(flags, dict):
        raise ConfigFormatError("command_line_startup_flags is not an object")
    channels_raw = body.get("update_channels")
    channels: UpdateChannels | None = None
    if channels_raw is not None:
        if not isinstance(channels_raw, dict):
            raise ConfigFormatError("update_channels is not an object")
        channels = UpdateChannels(
            _channel(channels_raw.get("orbit"), "orbit"),
            _channel(channels_raw.get("osqueryd"), "osqueryd"),
            _channel(channels_raw.get("desktop"), "desktop"),
        )
    timeout = body.get("script_execution_timeout")
    if timeout is not None and (not isinstance(timeout, int) or isinstance(timeout, bool) or timeout < 0):
        raise ConfigFormatError("script_execution_timeout is not a non-negative integer")
    notifications = body.get("notifications") or {}
    if not isinstance(notifications, dict):
        raise ConfigFormatError("notifications is not an object")
    pending = notifications.get("pending_script_execution_ids") or []
    if not isinstance(pending, list) or not all(isinstance(item, str) for item in pending):
        raise ConfigFormatError("notifications.pending_script_execution_ids is not a list of strings")
    extensions = body.get("extensions")
    if extensions is not None and not isinstance(extensions, dict):
        raise ConfigFormatError("extensions is not an object")
    restart_id = notifications.get("restart_osqueryd_request_id")
    if restart_id is not None and (
        not isinstance(restart_id, str)
        or not restart_id
        or len(restart_id) > MAX_REQUEST_ID
        or not restart_id.isprintable()
    ):
        raise ConfigFormatError(
            f"notifications.restart_osqueryd_request_id is not a printable string of 1-{MAX_REQUEST_ID} characters"
        )
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str).encode("utf-8")
    return OrbitConfig(
        startup_flags=cast("dict[str, object] | None", flags),
        update_channels=channels,
        script_execution_timeout=timeout,
        pending_script_execution_ids=tuple(cast("list[str]", pending)),
        extensions=cast("dict[str, object] | None", extensions),
        digest=hashlib.sha256(canonical).hexdigest(),
        raw=body,
        restart_osqueryd_request_id=restart_id,
    )


def _server_message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except (ValueError, UnicodeDecodeError):
        return response.text[:200] or response.reason_phrase
    if not isinstance(body, dict):
        return response.reason_phrase
    message = str(body.get("message") or body.get("error") or response.reason_phrase)
    errors = body.get("errors")
    if isinstance(errors, list) and errors and isinstance(errors[0], dict) and errors[0].get("reason"):
        message = f"{message}: {errors[0]['reason']}"
    return message[:500]


def _raise_for(response: httpx.Response, what: str) -> None:
    status = response.status_code
    if 200 <= status < 300:
        return
    message = f"{what}: {status} {_server_message(response)}"
    if status == 401:
        raise FleetUnauthenticated(message, status=status)
    if status == 404:
        raise FleetNotFound(message, status=status)
    if status == 409:
        raise FleetConflict(message, status=status)
    if status >= 500 or status == 429:
        raise FleetUnavailable(message, status=status)
    raise FleetError(message, status=status)


def _json_object(response: httpx.Response, what: str) -> dict[str, object]:
    if response.status_code == 204 or not response.content:
        return {}
    if len(response.content) > MAX_RESPONSE_BYTES:
        raise FleetError(f"{what}: answer larger than {MAX_RESPONSE_BYTES} bytes")
    try:
        body = response.json()
    except (ValueError, UnicodeDecodeError):
        raise FleetError(f"{what}: the answer is not JSON") from None
    if not isinstance(body, dict):
        raise FleetError(f"{what}: the answer is not a JSON object")
    error = body.get("error")
    if isinstance(error, str) and error:
        raise FleetError(f"{what}: {error}", status=response.status_code)
    return body


EnrollBody = Callable[[], Mapping[str, str]]
Sleep = Callable[[float], Awaitable[None]]


class OrbitClient:
    def __init__(
        self,
        http: httpx.AsyncClient,
        fleet_url: str,
        node_keys: NodeKeyStore,
        enroll_body: EnrollBody,
        *,
        enroll_retry_interval: float = 10.0,
        enroll_attempts: int = 6,
        reenroll_debounce: float = 45.0,
        config_cache_ttl: float = 3.0,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._http = http
        self._base = fleet_url.rstrip("/")
        self._keys = node_keys
        self._enroll_body = enroll_body
        self._retry_interval = enroll_retry_interval
        self._attempts = enroll_attempts
        self._debounce = reenroll_debounce
        self._cache_ttl = config_cache_ttl
        self._monotonic = monotonic
        self._sleep = sleep
        self._enroll_lock = asyncio.Lock()
        self._unauthenticated_since: float | None = None
        self._config_cache: tuple[float, OrbitConfig] | None = None
        self.server_capabilities: frozenset[str] = frozenset()
        self.enrolled = False
        self.last_error: str | None = None
        self.last_success: float | None = None
        self.reenrollments = 0
        self.last_server_date: str | None = None

    # -- plumbing ------------------------------------------------------------------------------------------

    def _url(self, path: str) -> str:
        return f"{self._base}{path}"

    def _record_error(self, message: str) -> None:
        self.last_error = f"{datetime.now(UTC).isoformat(timespec='seconds')} {message}"

    async def _send(self, method: str, path: str, what: str, body: Mapping[str, object] | None) -> httpx.Response:
        try:
            response = await self._http.request(
                method, self._url(path), json=body, headers={CAPABILITIES_HEADER: CLIENT_CAPABILITIES}
            )
        except httpx.HTTPError as exc:
            detail = str(exc) or type(exc).__name__
            self._record_error(f"{what}: {detail}")
            raise FleetUnavailable(f"{what}: cannot reach {self._base}: {detail}") from None
        self.last_server_date = response.headers.get("Date") or self.last_server_date
        if 200 <= response.status_code < 300 and path.startswith("/api/fleet/orbit/"):
            header = response.headers.get(CAPABILITIES_HEADER)
            if header is not None:
                self.server_capabilities = frozenset(part.strip() for part in header.split(",") if part.strip())
        return response

    # -- unauthenticated -----------------------------------------------------------------------------------

    async def ping(self) -> bool:
        """``HEAD /api/fleet/orbit/ping``: True when the server answered (404 = an older server, fine)."""
        try:
            response = await self._send("HEAD", "/api/fleet/orbit/ping", "ping", None)
        except FleetUnavailable:
            return False
        return response.status_code < 500

    async def enroll_once(self) -> str:
        body = dict(self._enroll_body())
        response = await self._send("POST", "/api/fleet/orbit/enroll", "enroll", body)
        _raise_for(response, "enroll")
        answer = _json_object(response, "enroll")
        key = answer.get("orbit_node_key")
        if not isinstance(key, str) or not key:
            raise FleetError("enroll: the answer has no orbit_node_key")
        if len(key) > MAX_NODE_KEY_LENGTH or not key.isprintable():
            # NodeKeyStore.save would raise ValueError, which no caller expects (it escaped the config loop)
            raise FleetError("enroll: the answer's orbit_node_key is unusable (too long or not printable)")
        return key

    async def _enroll_with_retries(self) -> str:
        wait = self._retry_interval
        for attempt in range(1, self._attempts + 1):
            try:
                key = await self.enroll_once()
            except FleetNotFound as exc:
                self._record_error(str(exc))
                raise FleetNotFound(f"{exc} (the server has no orbit enroll endpoint)", status=404) from None
            except FleetError as exc:
                self._record_error(str(exc))
                if attempt == self._attempts:
                    raise
                log.warning("event=enroll_failed attempt=%d retry_in=%.0f error=%s", attempt, wait, exc)
                await self._sleep(wait)
                wait *= 2
                continue
            self._keys.save(key)
            self.enrolled = True
            self._unauthenticated_since = None
            log.info("event=enrolled attempt=%d", attempt)
            return key
        raise AssertionError("unreachable")

    async def node_key(self, *, force: bool = False) -> str:
        """The stored key, or enroll for one (one enrollment at a time across all callers)."""
        stale = self._keys.load()
        async with self._enroll_lock:
            current = self._keys.load()
            if current is not None and not force:
                return current
            if force and current is not None and current != stale:
                return current  # someone else re-enrolled while we waited
            return await self._enroll_with_retries()

    # -- authenticated -------------------------------------------------------------------------------------

    def _note_unauthenticated(self) -> bool:
        """Record a 401; True when they have persisted past the debounce (time to enroll again)."""
        now = self._monotonic()
        self.enrolled = False
        if self._unauthenticated_since is None:
            self._unauthenticated_since = now
            log.warning("event=unauthenticated reenroll_after=%.0fs", self._debounce)
            return False
        return now - self._unauthenticated_since >= self._debounce

    async def _authed(self, method: str, path: str, what: str, body: Mapping[str, object]) -> dict[str, object]:
        for retry in (False, True):
            key = await self.node_key(force=retry)
            response = await self._send(method, path, what, {"orbit_node_key": key, **body})
            if response.status_code == 401:
                if not retry and self._note_unauthenticated():
                    log.warning("event=reenroll reason=%r", "401s persisted past the debounce")
                    self.reenrollments += 1
                    continue
                _raise_for(response, what)
            _raise_for(response, what)
            answer = _json_object(response, what)
            self._unauthenticated_since = None
            self.enrolled = True
            self.last_success = self._monotonic()
            return answer
        raise AssertionError("unreachable")

    async def get_config(self) -> OrbitConfig:
        now = self._monotonic()
        if self._config_cache is not None and now - self._config_cache[0] < self._cache_ttl:
            return self._config_cache[1]
        config = parse_orbit_config(await self._authed("POST", "/api/fleet/orbit/config", "config", {}))
        self._config_cache = (self._monotonic(), config)
        return config

    async def register_device_token(self, token: str) -> None:
        try:
            await self._authed("POST", "/api/fleet/orbit/device_token", "device_token", {"device_auth_token": token})
        except FleetConflict as exc:
            raise DeviceTokenConflictError(str(exc)) from None

    async def check_device_token(self, token: str) -> bool:
        """Is the token valid on the server? (``HEAD …/ping``; a 404 falls back to ``GET …/desktop``)."""
        base = f"/api/latest/fleet/device/{quote(token, safe='')}"
        response = await self._send("HEAD", f"{base}/ping", "device ping", None)
        if response.status_code == 404:
            response = await self._send("GET", f"{base}/desktop", "device desktop", None)
            if response.status_code == 402:
                return True
        if response.status_code == 401:
            return False
        if response.status_code >= 500:
            raise FleetUnavailable(f"device ping: {response.status_code}", status=response.status_code)
        return 200 <= response.status_code < 300

    async def script_request(self, execution_id: str) -> ScriptRequest:
        answer = await self._authed(
            "POST", "/api/fleet/orbit/scripts/request", "script request", {"execution_id": execution_id}
        )
        try:
            return ScriptRequest.from_json(answer)
        except ScriptRequestError as exc:
            raise FleetError(f"script request: {exc}") from None

    async def post_script_result(
        self, execution_id: str, output: str, runtime: int, exit_code: int, timeout: int
    ) -> None:
        await self._authed(
            "POST",
            "/api/fleet/orbit/scripts/result",
            "script result",
            {
                "execution_id": execution_id,
                "output": output,
                "runtime": runtime,
                "exit_code": exit_code,
                "timeout": timeout,
            },
        )

    async def post_update_outcomes(self, outcomes: Sequence[Mapping[str, object]]) -> None:
        """``POST /api/fleet/orbit/update_outcomes`` (issue 18 protocol §3); only for a server advertising
        ``update_outcomes`` — the caller checks ``server_capabilities``."""
        await self._authed(
            "POST", "/api/fleet/orbit/update_outcomes", "update outcomes", {"outcomes": [dict(o) for o in outcomes]}
        )

    async def post_osqueryd_restart_result(self, request_id: str, error: str | None) -> None:
        """``POST /api/fleet/orbit/osqueryd_restart/result`` (issue 18 protocol §4): the restart was done."""
        await self._authed(
            "POST",
            "/api/fleet/orbit/osqueryd_restart/result",
            "osqueryd restart result",
            {"request_id": request_id, "error": error},
        )

    async def report_error(
        self, token: str, error: Mapping[str, object], *, attempts: int = 3, gap: float = 15.0
    ) -> bool:
        """``POST /api/latest/fleet/device/{token}/debug/errors`` (FleetdError); 3 tries, 15 s apart."""
        path = f"/api/latest/fleet/device/{quote(token, safe='')}/debug/errors"
        for attempt in range(1, attempts + 1):
            try:
                response = await self._send("POST", path, "debug errors", {"error": dict(error)})
                _raise_for(response, "debug errors")
                return True
            except FleetError as exc:
                log.warning("event=error_report_failed attempt=%d error=%s", attempt, exc)
                if attempt < attempts:
                    await self._sleep(gap)
        return False
