"""Everything a request handler needs, built once per server and reachable as ``request.app.state.stub``."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from server_stub.admin_sessions import SessionStore
from server_stub.carves import CarveStore
from server_stub.database import open_database
from server_stub.database_reader import DatabaseReader
from server_stub.device_throttle import DeviceGuessLimiter
from server_stub.live_queries import LiveQueryHub
from server_stub.log_sink import LogSink
from server_stub.metrics import Gauge, Metrics
from server_stub.rollouts import RolloutEngine
from server_stub.seen_times import SeenTimes
from server_stub.settings import ServeSettings
from server_stub.transactions import WRITE_LOCK_WAITS

Clock = Callable[[], float]
LOGIN_BURST = 20  # failed console logins per client address before they are paced
LOGIN_PER_HOUR = 120.0
DATABASE_FILE = "fleet-stub.sqlite3"
# With several workers (ADR 0019): renders /metrics from this worker's figures and the others' (worker_channel).
ClusterMetrics = Callable[[Metrics, Sequence[Gauge]], Awaitable[str]]


@dataclass
class StubState:
    settings: ServeSettings
    conn: sqlite3.Connection
    clock: Clock
    admin_token: str
    logs: LogSink
    carves: CarveStore
    live: LiveQueryHub
    reader: DatabaseReader
    rollouts: RolloutEngine
    sessions: SessionStore
    seen_times: SeenTimes
    metrics: Metrics = field(default_factory=Metrics)
    device_guesses: DeviceGuessLimiter = field(default_factory=DeviceGuessLimiter)
    login_guesses: DeviceGuessLimiter = field(default_factory=DeviceGuessLimiter)

    cluster_metrics: ClusterMetrics | None = None

    def now(self) -> float:
        """The time by ``clock`` as it is at the call (tests replace the clock after the state is built)."""
        return self.clock()

    def sync_process_counters(self) -> None:
        """Copy counters this process keeps outside ``metrics`` into it (before a snapshot or a render)."""
        self.metrics.set_counter("sqlite_write_lock_waits", WRITE_LOCK_WAITS.count)
        self.metrics.set_counter("sqlite_write_lock_wait_microseconds", WRITE_LOCK_WAITS.microseconds)

    async def render_metrics(self, gauges: Sequence[Gauge]) -> str:
        """``/metrics``: this process's figures, or every worker's summed when there are several."""
        self.sync_process_counters()
        if self.cluster_metrics is None:
            return self.metrics.render(gauges)
        return await self.cluster_metrics(self.metrics, gauges)

    def fresh_seen_times(self) -> None:
        """Write this process's noted seen times before reading them to answer someone (``seen_times``)."""
        self.seen_times.flush_logged()

    @property
    def capabilities_header(self) -> str:
        return ",".join(self.settings.capabilities)

    def close(self) -> None:
        self.live.close()
        self.reader.close()
        self.seen_times.flush_logged()
        self.conn.close()


def build_state(
    settings: ServeSettings, admin_token: str, clock: Clock = time.time, *, recover: bool = True, shared: bool = False
) -> StubState:
    """``recover``: reconcile log counters with the files, expire live queries left by a previous run and end the
    console sessions of a previous run — once per start of the server, never in a worker process (it would cut
    other workers' appends, expire their queries or log their admins out). ``shared``: other processes serve the
    same database (ADR 0019): the rollout engine watches for their changes."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    path = settings.data_dir / DATABASE_FILE
    conn = open_database(path)
    seen_times = SeenTimes(conn)
    state = StubState(
        settings=settings,
        conn=conn,
        clock=clock,
        admin_token=admin_token,
        logs=LogSink(conn, settings.data_dir / "logs"),
        carves=CarveStore(conn, settings.data_dir / "carves"),
        live=LiveQueryHub(conn, clock),
        rollouts=RolloutEngine(conn, settings.tuf_repo, watching=shared, before_evaluation=seen_times.flush_logged),
        device_guesses=DeviceGuessLimiter(clock=clock),
        reader=DatabaseReader(path),
        sessions=SessionStore(conn, clock),
        seen_times=seen_times,
    )
    # through the state, so that a clock put in later (tests) governs sessions and login throttling too
    state.sessions = SessionStore(conn, state.now)
    state.login_guesses = DeviceGuessLimiter(burst=LOGIN_BURST, per_hour=LOGIN_PER_HOUR, clock=state.now)
    if recover:
        state.logs.reconcile()
        state.live.expire_leftovers()
        state.sessions.clear()
    return state
