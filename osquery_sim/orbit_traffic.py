"""The orbit side of a simulated host in load mode (``--with-orbit``): what Fleet's orbit sends.

orbit enroll at start, ``/api/fleet/orbit/config`` every 30 s, the Fleet Desktop token registered at start and
rotated every hour, the device-token ping and the capabilities ping every 5 min (docs/reference/fleet-api.md §4, §7.2).
Unlike osqueryd, orbit judges answers by their HTTP status.

With ``updates`` (issue 18) the host also follows the ``update_channels`` of its config answers
(``agent_updates.HostUpdates``) and sends its update outcomes — only to a server whose latest orbit answer advertised
``update_outcomes``, as orbit does — in batches of at most 100 after each config poll: removed after a 2xx, dropped
after another 4xx than 401, kept otherwise.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
import uuid
from collections.abc import Callable

from osquery_sim.agent_updates import HostUpdates
from osquery_sim.lean_http import LeanHttpClient, LeanHttpError, LeanResponse, split_host_port
from osquery_sim.wakeable import sleep_unless_set

CONFIG_INTERVAL = 30.0
PING_INTERVAL = 300.0
TOKEN_ROTATION = 3600.0
ORBIT_KEEPALIVE_SECONDS = 55 * 60.0  # Fleet's orbit keeps idle connections for 55 min
UPDATE_OUTCOMES = "update_outcomes"
MAX_OUTCOME_BATCH = 100

Observe = Callable[[str, float, bool], None]


class OrbitTraffic:
    def __init__(
        self,
        client: LeanHttpClient,
        secret: str,
        facts: dict[str, str],
        observe: Observe,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        config_interval: float = CONFIG_INTERVAL,
        updates: HostUpdates | None = None,
        on_versions: Callable[[], None] | None = None,
    ) -> None:
        self._client = client
        self._secret = secret
        self._facts = facts
        self._observe = observe
        self._clock = clock
        self._wall = wall_clock
        self._config_interval = config_interval
        self.updates = updates
        self._on_versions = on_versions
        self.node_key = ""
        self.token = ""
        self.server_capabilities: frozenset[str] = frozenset()
        self.outcomes_sent = 0

    @staticmethod
    def client_for(hostname: str, context: ssl.SSLContext, local_address: str | None = None) -> LeanHttpClient:
        host, port = split_host_port(hostname)
        return LeanHttpClient(
            host,
            port,
            context,
            timeout=30.0,
            keepalive=ORBIT_KEEPALIVE_SECONDS,
            max_connections=1,
            headers={"User-Agent": "orbit-sim", "X-Fleet-Capabilities": "escrow_buddy,setup_experience"},
            local_address=local_address,
        )

    async def _call(self, method: str, path: str, body: dict[str, object] | None = None) -> LeanResponse | None:
        label = "/api/latest/fleet/device/{token}/ping" if "/device/" in path else path
        payload = b"" if body is None else json.dumps(body, separators=(",", ":")).encode()
        headers = {} if body is None else {"Content-Type": "application/json"}
        started = time.perf_counter()
        try:
            response = await self._client.request(method, path, payload, headers)
        except LeanHttpError:
            self._observe(label, time.perf_counter() - started, False)
            return None
        self._observe(label, time.perf_counter() - started, response.is_success)
        return response

    @staticmethod
    def _json(response: LeanResponse) -> dict[str, object]:
        try:
            decoded = json.loads(response.body)
        except ValueError:
            return {}
        return decoded if isinstance(decoded, dict) else {}

    async def enroll(self) -> bool:
        body: dict[str, object] = {"enroll_secret": self._secret, **self._facts}
        response = await self._call("POST", "/api/fleet/orbit/enroll", body)
        if response is None or not response.is_success:
            return False
        key = self._json(response).get("orbit_node_key")
        self.node_key = key if isinstance(key, str) else ""
        return bool(self.node_key)

    async def rotate_token(self) -> None:
        token = str(uuid.uuid4())
        response = await self._call(
            "POST", "/api/fleet/orbit/device_token", {"orbit_node_key": self.node_key, "device_auth_token": token}
        )
        if response is not None and response.is_success:
            self.token = token
        elif response is not None and response.status == 401:
            self.node_key = ""

    def _note_capabilities(self, response: LeanResponse) -> None:
        header = response.headers.get("x-fleet-capabilities")
        if response.is_success and header is not None:
            self.server_capabilities = frozenset(part.strip() for part in header.split(",") if part.strip())

    def _follow_channels(self, response: LeanResponse) -> None:
        updates = self.updates
        if updates is None or not response.is_success:
            return
        channels = self._json(response).get("update_channels")
        if updates.on_channels(channels if isinstance(channels, dict) else None, self._clock(), self._wall()):
            self._versions_changed()

    def _versions_changed(self) -> None:
        if self._on_versions is not None:
            self._on_versions()

    async def send_outcomes(self) -> None:
        updates = self.updates
        while updates is not None and updates.outcomes and UPDATE_OUTCOMES in self.server_capabilities:
            batch = updates.outcomes[:MAX_OUTCOME_BATCH]
            response = await self._call(
                "POST", "/api/fleet/orbit/update_outcomes", {"orbit_node_key": self.node_key, "outcomes": batch}
            )
            if response is None or response.status == 401 or response.status >= 500 or response.status == 429:
                if response is not None and response.status == 401:
                    self.node_key = ""
                return
            updates.sent({str(item["id"]) for item in batch})  # a 2xx, or a refusal that would repeat forever
            if response.is_success:
                self.outcomes_sent += len(batch)

    async def run(self, stop: asyncio.Event) -> None:
        next_config = next_ping = next_rotation = self._clock()
        while not stop.is_set():
            if not self.node_key and not await self.enroll():
                if await _sleep(stop, 10.0):
                    break
                continue
            now = self._clock()
            if now >= next_rotation or not self.token:
                await self.rotate_token()
                next_rotation = now + TOKEN_ROTATION
            if now >= next_config:
                response = await self._call("POST", "/api/fleet/orbit/config", {"orbit_node_key": self.node_key})
                if response is not None and response.status == 401:
                    self.node_key = ""
                if response is not None:
                    self._note_capabilities(response)
                    self._follow_channels(response)
                next_config = now + self._config_interval
                if self.updates is not None and self.node_key:
                    await self.send_outcomes()
            if self.updates is not None and self.updates.tick(self._clock(), self._wall()):
                self._versions_changed()
            if now >= next_ping:
                ping = await self._call("HEAD", "/api/fleet/orbit/ping")
                if ping is not None:
                    self._note_capabilities(ping)
                if self.token:
                    await self._call("HEAD", f"/api/latest/fleet/device/{self.token}/ping")
                next_ping = now + PING_INTERVAL
            due = self.updates.next_due() if self.updates is not None else None
            wait = min(next_config, next_ping, next_rotation, due if due is not None else next_config) - self._clock()
            if await _sleep(stop, max(wait, 0.05)):
                break
        await self._client.aclose()


async def _sleep(stop: asyncio.Event, seconds: float) -> bool:
    await sleep_unless_set(seconds, stop)
    return stop.is_set()
