"""The orbit side of a simulated host in load mode (``--with-orbit``): what Fleet's orbit sends.

orbit enroll at start, ``/api/fleet/orbit/config`` every 30 s, the Fleet Desktop token registered at start and
rotated every hour, the device-token ping and the capabilities ping every 5 min (docs/reference/fleet-api.md §4, §7.2).
Unlike osqueryd, orbit judges answers by their HTTP status.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
import uuid
from collections.abc import Callable

from osquery_sim.lean_http import LeanHttpClient, LeanHttpError, LeanResponse, split_host_port
from osquery_sim.wakeable import sleep_unless_set

CONFIG_INTERVAL = 30.0
PING_INTERVAL = 300.0
TOKEN_ROTATION = 3600.0
ORBIT_KEEPALIVE_SECONDS = 55 * 60.0  # Fleet's orbit keeps idle connections for 55 min

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
    ) -> None:
        self._client = client
        self._secret = secret
        self._facts = facts
        self._observe = observe
        self._clock = clock
        self.node_key = ""
        self.token = ""

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
                next_config = now + CONFIG_INTERVAL
            if now >= next_ping:
                await self._call("HEAD", "/api/fleet/orbit/ping")
                if self.token:
                    await self._call("HEAD", f"/api/latest/fleet/device/{self.token}/ping")
                next_ping = now + PING_INTERVAL
            wait = min(next_config, next_ping, next_rotation) - self._clock()
            if await _sleep(stop, max(wait, 0.05)):
                break
        await self._client.aclose()


async def _sleep(stop: asyncio.Event, seconds: float) -> bool:
    await sleep_unless_set(seconds, stop)
    return stop.is_set()
