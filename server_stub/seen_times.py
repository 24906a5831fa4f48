"""Hosts' last-seen times, kept in memory and written to SQLite in batches.

Every authenticated agent request marks its host seen. Written at once, that was one write transaction per request
(``BEGIN IMMEDIATE``, ``UPDATE``, ``COMMIT``): about a tenth of the stub's CPU at 10 000 hosts and, with several
workers (ADR 0019), nearly all of the SQLite writer lock's waits, whose busy handler sleeps inside the event loop and
holds every request of that worker. Fleet batches seen times for the same reason. Here a request only notes the time;
the notes are written in one transaction:

* every ``FLUSH_SECONDS`` (``keep_flushed``, one task per process);
* before anything in this process reads them to answer someone: an admin or console request, a device page, a
  rollout evaluation (``StubState.fresh_seen_times``). So in one process what an admin sees is exact; with several
  workers another worker's notes are at most ``FLUSH_SECONDS`` old;
* when the state closes (shutdown).

A flush that fails (a full disk, the lock held past the busy timeout) keeps its notes for the next one, newest time
per host, and says so in the log; a crash loses at most ``FLUSH_SECONDS`` of seen times, which only make a host look
online a second less.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import sqlite3

from server_stub.hosts import Host
from server_stub.transactions import write_transaction

log = logging.getLogger(__name__)

FLUSH_SECONDS = 1.0


class SeenTimes:
    """Seen times not yet written, per host id (the newest one)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._pending: dict[int, float] = {}

    def note(self, host_id: int, now: float) -> None:
        self._pending[host_id] = now

    def pending(self) -> int:
        return len(self._pending)

    def with_pending(self, host: Host) -> Host:
        """``host`` as read from the database, with its seen time as noted here if that is not written yet (a
        device page shows it: no write for a read)."""
        seen = self._pending.get(host.id)
        return host if seen is None else dataclasses.replace(host, seen_time=seen)

    def flush(self) -> int:
        """Write what is noted in one transaction; returns how many hosts. On an SQLite error the notes are kept
        (a newer note made meanwhile wins) and the error is raised."""
        if not self._pending:
            return 0
        batch, self._pending = self._pending, {}
        try:
            with write_transaction(self._conn):
                self._conn.executemany(
                    "UPDATE hosts SET seen_time = ? WHERE id = ?", [(seen, host_id) for host_id, seen in batch.items()]
                )
        except sqlite3.Error:
            batch.update(self._pending)
            self._pending = batch
            raise
        return len(batch)

    def flush_logged(self) -> None:
        """``flush``, an error logged rather than raised (the notes stay for the next try)."""
        try:
            self.flush()
        except sqlite3.Error as exc:
            log.error("event=seen_times_flush_failed hosts=%d error=%s", len(self._pending), exc)


async def keep_flushed(seen: SeenTimes, stop: asyncio.Event, *, every: float = FLUSH_SECONDS) -> None:
    """Until ``stop`` is set: flush every ``every`` seconds, and once more when it is."""
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every)
        seen.flush_logged()


__all__ = ["FLUSH_SECONDS", "SeenTimes", "keep_flushed"]
