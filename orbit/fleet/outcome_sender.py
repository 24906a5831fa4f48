"""Sending queued update outcomes (issue 18 protocol §3), only to a server that advertises ``update_outcomes``.

A real Fleet server does not advertise it and never receives a request: without the capability in the latest
``X-Fleet-Capabilities`` answer nothing is sent and the queue keeps its entries (a stub that gains the capability
later gets them then). It runs as a config receiver on every poll (Fleet's cadence, 30 s): batches of at most 100,
deleted after a 200, kept on a network error, a 5xx or a 401 (the client's re-enroll debounce handles those), dropped
with a log line on any other 4xx — a server that refuses a body will refuse it forever.
"""

from __future__ import annotations

import logging

from orbit.fleet.client import FleetError, FleetUnauthenticated, FleetUnavailable, OrbitClient, OrbitConfig
from orbit.outcome_queue import OutcomeQueue

log = logging.getLogger(__name__)

UPDATE_OUTCOMES = "update_outcomes"
MAX_BATCH = 100


class OutcomeSender:
    def __init__(self, client: OrbitClient, queue: OutcomeQueue) -> None:
        self._client = client
        self._queue = queue
        self.sent = 0
        self.dropped = 0

    @property
    def enabled(self) -> bool:
        return UPDATE_OUTCOMES in self._client.server_capabilities

    async def on_config(self, _config: OrbitConfig) -> None:
        await self.send_pending()

    async def send_pending(self) -> int:
        """Send what is queued (if the server takes it); the number of outcomes the server accepted."""
        accepted = 0
        while self.enabled:
            batch = self._queue.pending(MAX_BATCH)
            if not batch:
                break
            ids = [outcome.id for outcome in batch]
            try:
                await self._client.post_update_outcomes([outcome.to_json() for outcome in batch])
            except (FleetUnavailable, FleetUnauthenticated) as exc:
                log.warning("event=update_outcomes_not_sent kept=%d error=%s", len(self._queue), exc)
                break
            except FleetError as exc:
                if exc.status is None or not 400 <= exc.status < 500:
                    log.warning("event=update_outcomes_not_sent kept=%d error=%s", len(self._queue), exc)
                    break
                self._queue.remove(ids)
                self.dropped += len(ids)
                log.error("event=update_outcomes_dropped count=%d error=%s", len(ids), exc)
                continue
            self._queue.remove(ids)
            accepted += len(ids)
            self.sent += len(ids)
            log.info("event=update_outcomes_sent count=%d", len(ids))
        return accepted


__all__ = ["MAX_BATCH", "UPDATE_OUTCOMES", "OutcomeSender"]
