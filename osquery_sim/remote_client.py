"""osqueryd's remote-API client: enrollment, the node key, and authenticated requests with retries.

Semantics from osquery (docs/reference/fleet-api.md §3, §7.1): enroll whenever no node key is cached (up to
``--tls_enroll_max_attempts`` tries, 0 = forever, sleeping min(k², ``--tls_enroll_max_interval``)); concurrent
callers share one enrollment; ``node_invalid: true`` drops the cached key (unless ``--disable_reenrollment``) and
the call fails, so the next try enrolls first; every request is judged by its body.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from osquery_sim.remote_answer import RemoteAnswer
from osquery_sim.retry_schedules import enroll_sleep, request_retry_sleep
from osquery_sim.sim_store import SimStore
from osquery_sim.tls_transport import OsqueryTransport

log = logging.getLogger(__name__)

NODE_KEY = "nodeKey"
Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True)
class EnrollSettings:
    endpoint: str
    secret: str
    secret_field: str = "enroll_secret"  # noqa: S105 - the JSON field name (--tls_enroll_override)
    max_attempts: int = 12
    max_interval: int = 600
    disable_reenrollment: bool = False
    disable_enrollment: bool = False


@dataclass(frozen=True)
class EnrollRequest:
    host_identifier: str
    platform_type: str
    host_details: dict[str, dict[str, str]]


class EnrollmentFailed(RuntimeError):
    pass


class RemoteClient:
    def __init__(
        self,
        transport: OsqueryTransport,
        store: SimStore,
        settings: EnrollSettings,
        enroll_request: Callable[[], EnrollRequest],
        *,
        sleep: Sleep = asyncio.sleep,
        on_event: Callable[[str, str], None] | None = None,
    ) -> None:
        self._transport = transport
        self._store = store
        self._settings = settings
        self._enroll_request = enroll_request
        self._sleep = sleep
        self._lock = asyncio.Lock()
        self._on_event = on_event or (lambda _severity, _message: None)
        self.enroll_attempts = 0
        # This client is the store's only writer of the key (one daemon per database, pidfile): read once, then
        # kept in memory — every request reads it, and load mode counts thousands of hosts' keys each second.
        self._node_key = store.get(NODE_KEY)

    @property
    def node_key(self) -> str | None:
        return self._node_key

    def drop_node_key(self) -> None:
        self._store.delete(NODE_KEY)
        self._node_key = None

    async def ensure_node_key(self, *, force: bool = False) -> str:
        """The cached node key, enrolling first when there is none (one enrollment shared by all callers)."""
        current = self.node_key
        if current and not force:
            return current
        async with self._lock:
            current = self.node_key
            if current and not force:
                return current
            return await self._enroll()

    async def _enroll(self) -> str:
        settings = self._settings
        if settings.disable_enrollment:
            raise EnrollmentFailed("enrollment is disabled (--disable_enrollment)")
        if not settings.secret:
            log.warning("event=enroll_without_secret")
        attempt = 0
        last_error = ""
        while settings.max_attempts == 0 or attempt < settings.max_attempts:
            attempt += 1
            self.enroll_attempts += 1
            request = self._enroll_request()
            body: dict[str, object] = {
                settings.secret_field: settings.secret,
                "host_identifier": request.host_identifier,
                "platform_type": request.platform_type,
                "host_details": request.host_details,
            }
            answer = await self._transport.post(settings.endpoint, body)
            key = answer.body.get("node_key", answer.body.get("id")) if answer.ok else None
            if isinstance(key, str) and key:
                self._store.put(NODE_KEY, key)
                self._node_key = key
                log.info("event=enrolled attempt=%d", attempt)
                self._on_event("INFO", "Enrolled with the TLS enrollment plugin")
                return key
            last_error = answer.error if not answer.ok else "No node key returned from TLS enroll plugin"
            log.warning("event=enroll_failed attempt=%d error=%s", attempt, last_error)
            if settings.max_attempts and attempt >= settings.max_attempts:
                break
            await self._sleep(enroll_sleep(attempt, settings.max_interval))
        raise EnrollmentFailed(f"Failed enrollment request to {settings.endpoint} ({last_error})")

    async def request(
        self, endpoint: str, body: dict[str, object], *, attempts: int = 1, compress: bool = False
    ) -> RemoteAnswer:
        """An authenticated call: node key added, ``node_invalid`` handled, retried with i² sleeps."""
        answer = RemoteAnswer(ok=False, error="not attempted")
        for attempt in range(1, max(attempts, 1) + 1):
            try:
                key = await self.ensure_node_key()
            except EnrollmentFailed as exc:
                return RemoteAnswer(ok=False, error=str(exc))
            answer = await self._transport.post(endpoint, {**body, "node_key": key}, node_key=key, compress=compress)
            if answer.ok:
                return answer
            if answer.node_invalid:
                log.warning("event=node_invalid endpoint=%s", endpoint)
                if not self._settings.disable_reenrollment and self.node_key == key:
                    self.drop_node_key()
            if attempt < attempts:
                await self._sleep(request_retry_sleep(attempt))
        return answer
