"""fleet-stub's batched seen times: noted per request, written in one transaction, nothing lost when a write fails."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from server_stub import hosts
from server_stub.database import open_database
from server_stub.seen_times import SeenTimes, keep_flushed
from server_stub.settings import ServeSettings
from server_stub.state import build_state
from server_stub.transactions import WRITE_LOCK_WAITS


@pytest.fixture
def database(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "stub.sqlite3"
    open_database(path).close()
    yield path


def _seen(conn: sqlite3.Connection, host_id: int) -> float | None:
    host = hosts.get_host(conn, host_id)
    assert host is not None
    return host.seen_time


def _enrolled(conn: sqlite3.Connection, count: int) -> list[int]:
    return [hosts.enroll_osquery(conn, f"host-{n}", None, {}, 100.0)[0] for n in range(count)]


def test_notes_are_written_in_one_transaction_newest_per_host(database: Path) -> None:
    conn = open_database(database)
    first, second = _enrolled(conn, 2)
    seen = SeenTimes(conn)
    seen.note(first, 110.0)
    seen.note(second, 111.0)
    seen.note(first, 112.0)
    assert _seen(conn, first) == 100.0  # nothing written yet
    changes_before = conn.total_changes
    assert seen.flush() == 2
    assert conn.total_changes - changes_before == 2  # one UPDATE per host, not per note
    assert (_seen(conn, first), _seen(conn, second)) == (112.0, 111.0)
    assert seen.pending() == 0 and seen.flush() == 0


def test_a_failed_write_keeps_the_notes_and_a_newer_note_wins(database: Path) -> None:
    conn = open_database(database)
    first, second = _enrolled(conn, 2)
    conn.execute("PRAGMA busy_timeout = 20")
    seen = SeenTimes(conn)
    seen.note(first, 110.0)
    seen.note(second, 111.0)
    other = sqlite3.connect(database, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another worker holds the writer lock past the busy timeout
    waits_before = WRITE_LOCK_WAITS.count
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        seen.flush()
    assert WRITE_LOCK_WAITS.count == waits_before  # a BEGIN that failed is not a wait that ended
    assert seen.pending() == 2
    seen.note(first, 120.0)
    seen.flush_logged()  # still locked: logged, kept
    assert seen.pending() == 2
    other.execute("ROLLBACK")
    other.close()
    assert seen.flush() == 2
    assert (_seen(conn, first), _seen(conn, second)) == (120.0, 111.0)


def test_a_device_page_sees_a_noted_time_without_a_write(database: Path) -> None:
    conn = open_database(database)
    (host_id,) = _enrolled(conn, 1)
    seen = SeenTimes(conn)
    host = hosts.get_host(conn, host_id)
    assert host is not None
    assert seen.with_pending(host) is host
    seen.note(host_id, 150.0)
    assert seen.with_pending(host).seen_time == 150.0
    assert _seen(conn, host_id) == 100.0


def test_the_writer_task_flushes_on_its_own_and_once_more_when_stopped(database: Path) -> None:
    conn = open_database(database)
    first, second = _enrolled(conn, 2)
    seen = SeenTimes(conn)

    async def scenario() -> None:
        stop = asyncio.Event()
        writer = asyncio.create_task(keep_flushed(seen, stop, every=0.01))
        seen.note(first, 130.0)
        async with asyncio.timeout(30):
            while _seen(conn, first) != 130.0:
                await asyncio.sleep(0.01)
        slow = asyncio.create_task(keep_flushed(seen, stop, every=3600))
        await asyncio.sleep(0)
        seen.note(second, 140.0)
        stop.set()
        async with asyncio.timeout(30):
            await asyncio.gather(writer, slow)

    asyncio.run(scenario())
    assert _seen(conn, second) == 140.0


def test_the_state_writes_its_notes_when_it_closes(tmp_path: Path) -> None:
    state = build_state(ServeSettings(data_dir=tmp_path / "data"), "admin-token")
    (host_id,) = _enrolled(state.conn, 1)
    state.seen_times.note(host_id, 160.0)
    state.close()
    conn = open_database(tmp_path / "data" / "fleet-stub.sqlite3")
    assert _seen(conn, host_id) == 160.0


def test_a_rollout_evaluation_writes_the_notes_first(tmp_path: Path) -> None:
    state = build_state(ServeSettings(data_dir=tmp_path / "data"), "admin-token")
    (host_id,) = _enrolled(state.conn, 1)
    state.seen_times.note(host_id, 170.0)
    state.rollouts.evaluate(170.0)
    assert state.seen_times.pending() == 0 and _seen(state.conn, host_id) == 170.0
    state.close()
