"""Fleet's 5-minute ping (docs/reference/orbit-behaviour.md §1.1, §11.1): notice a server upgrade or downgrade from the
``X-Fleet-Capabilities`` header. Logged; the only reaction is registering the device token once the server gains
``token_rotation`` (nothing else needs a restart here)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from orbit.fleet.client import OrbitClient

log = logging.getLogger(__name__)

TOKEN_ROTATION = "token_rotation"  # noqa: S105 - a capability name


class CapabilitiesWatcher:
    def __init__(
        self, client: OrbitClient, on_token_rotation: Callable[[], Awaitable[None]], interval: float = 300.0
    ) -> None:
        self._client = client
        self._on_token_rotation = on_token_rotation
        self._interval = interval

    async def check(self) -> None:
        before = self._client.server_capabilities
        await self._client.ping()
        after = self._client.server_capabilities
        if after == before:
            return
        log.info("event=server_capabilities_changed old=%s new=%s", ",".join(sorted(before)), ",".join(sorted(after)))
        if TOKEN_ROTATION in after - before:
            await self._on_token_rotation()

    async def run(self, stop: asyncio.Event) -> None:
        while True:
            try:
                await asyncio.wait_for(stop.wait(), timeout=self._interval)
            except TimeoutError:
                await self.check()
            else:
                return
