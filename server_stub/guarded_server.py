"""uvicorn's Server with the stub's own connection layer (ADR 0014): the listening socket feeds ``ConnectionGuard``
(cap, shedding, TLS, deadlines), each connection speaks through ``LimitedHttpProtocol``. Any ASGI app can be
served this way (``benchmarks/stub_http_layers.py`` serves a trivial one); ``server.StubServer`` adds the stub's
signals, reload and ready file.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable

import uvicorn

from server_stub.connection_guard import Connection, ConnectionGuard
from server_stub.connection_limits import ConnectionLimits, connection_cap, descriptor_budget
from server_stub.fd_limit import open_files_limit
from server_stub.limited_http import LimitedHttpProtocol

log = logging.getLogger(__name__)


def _ignore(_name: str) -> None:
    pass


class GuardedServer(uvicorn.Server):
    def __init__(
        self,
        config: uvicorn.Config,
        limits: ConnectionLimits = ConnectionLimits(),  # noqa: B008 - frozen, shared safely
        count: Callable[[str], None] = _ignore,
    ) -> None:
        super().__init__(config)
        self.limits = limits
        self._count = count
        self.guard: ConnectionGuard | None = None

    def _make_http(self, conn: Connection) -> LimitedHttpProtocol:
        assert self.guard is not None
        return LimitedHttpProtocol(self.config, self.server_state, self.lifespan.state, self.guard, conn)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        """uvicorn's startup, except that the listening server is ours: plain TCP into the connection guard (TLS is
        the guard's: ``config.ssl`` is its context)."""
        await self.lifespan.startup()
        limits = self.limits
        open_files = open_files_limit()
        cap = connection_cap(limits, open_files)
        budget = descriptor_budget(open_files)
        if limits.max_connections is not None and budget is not None and limits.max_connections > budget:
            log.warning(
                "event=max_connections_lowered wanted=%d cap=%d open_files_limit=%d reason=%s",
                limits.max_connections,
                budget,
                open_files,
                "the open-files limit must leave room for the stub's own files",
            )
        self.guard = ConnectionGuard(limits, cap, self.config.ssl, self._make_http, self._count)
        self.guard.start()
        log.info("event=connection_limits cap=%s open_files_limit=%s %s", cap, open_files, limits.describe())
        loop = asyncio.get_running_loop()
        self.servers = [
            await loop.create_server(self.guard.protocol, sock=sock, backlog=self.config.backlog)
            for sock in sockets or []
        ]
        self.started = True

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        try:
            await super().shutdown(sockets=sockets)
        finally:
            if self.guard is not None:
                await self.guard.stop()
