"""``fleet-stub serve --workers N`` (ADR 0019): the parent's wiring and what each worker runs.

The parent does once what the single process does at start (data dir, TLS material, admin token, migrations,
secrets, the configuration file, recovery of log counters and live queries), raises the open-files limit, binds
the port (``worker_listeners``) and hands over to ``worker_pool.WorkerPool``, which forks the workers. Each worker
opens its own SQLite connection, serves the port with the same ``StubServer`` as the single process and talks to
the parent through ``worker_channel.WorkerLink``:

* a live query answered here wakes the caller waiting in another worker (``live_queries.LiveQueryHub.announce``);
* ``/metrics`` answered here sums every worker's figures;
* limits given for the whole server are split (``worker_shares``): ``--max-connections``, the device-token
  guessing budget and the console's failed-login budget; every answer carries ``X-Fleet-Stub-Worker: <n>``;
* worker 1 alone runs the rollout ticker; a failure reported to another worker nudges it through the parent, and
  every worker's rollout engine follows the changes the others store (``rollouts.RolloutEngine(watching=True)``);
  console sessions are in SQLite, so any worker knows them.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import socket
import sqlite3
import time
from dataclasses import replace

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server_stub.database import open_database
from server_stub.declarative_config import ConfigFileError
from server_stub.device_throttle import DEFAULT_BURST, DEFAULT_PER_HOUR, DeviceGuessLimiter
from server_stub.fd_limit import CONNECTIONS_PER_HOST, raise_open_files_limit
from server_stub.metrics import Snapshot
from server_stub.rollouts import RolloutEngine
from server_stub.server import (
    SERVER_JSON,
    StartupError,
    StubServer,
    announce_ready,
    apply_config_path,
    configure_logging,
    make_uvicorn_config,
    mkdir_private,
    prepare,
    run_loop,
    server_info,
)
from server_stub.settings import ServeSettings
from server_stub.state import DATABASE_FILE, LOGIN_BURST, LOGIN_PER_HOUR, build_state
from server_stub.tls_material import TlsFiles
from server_stub.worker_channel import TOPIC_LIVE_QUERY_DONE, TOPIC_ROLLOUT_NUDGE, WorkerLink
from server_stub.worker_listeners import Balance, ListenError, listening_sockets, reuseport_available
from server_stub.worker_pool import WorkerPool
from server_stub.worker_shares import share_of, share_of_rate

log = logging.getLogger(__name__)

WORKER_HEADER = b"x-fleet-stub-worker"
ROLLOUT_TICKER_WORKER = 1
STOP_GRACE = 45.0  # a worker's graceful shutdown takes up to 30 s (uvicorn's timeout_graceful_shutdown), then SIGKILL


class WorkerHeader:
    """ASGI middleware: ``X-Fleet-Stub-Worker: <n>`` on every answer of the application."""

    def __init__(self, app: ASGIApp, worker: int) -> None:
        self._app = app
        self._header = (WORKER_HEADER, str(worker).encode())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), self._header]}
            await send(message)

        await self._app(scope, receive, sending)


def serve_with_workers(settings: ServeSettings) -> int:
    configure_logging(mkdir_private(settings.data_dir), shared=True)
    state, files = prepare(settings)
    admin_token = state.admin_token
    state.close()  # no SQLite connection may cross a fork: each worker opens its own
    open_files = raise_open_files_limit()  # inherited by every worker: each has this many descriptors of its own
    balance = Balance(settings.worker_balance)
    if balance is Balance.REUSEPORT and not reuseport_available():
        log.warning("event=worker_balance_unavailable wanted=reuseport using=shared")
        balance = Balance.SHARED
    try:
        listeners = listening_sockets(settings.listen_host, settings.listen_port, settings.workers, balance)
    except ListenError as exc:
        raise StartupError(str(exc.strerror)) from None
    info = server_info(settings, int(listeners[0].getsockname()[1]), admin_token, files.ca)
    log.info(
        "event=workers count=%d balance=%s open_files_limit_each=%s approx_hosts=%s",
        settings.workers,
        balance.value,
        open_files if open_files is not None else "unlimited",
        settings.workers * open_files // CONNECTIONS_PER_HOST if open_files is not None else "unlimited",
    )

    def run_worker(index: int, listener: socket.socket, channel: socket.socket) -> int:
        return worker_main(settings, admin_token, files, index, listener, channel)

    pool = WorkerPool(
        settings.workers,
        listeners,
        run_worker,
        lambda: announce_ready(settings, info),
        lambda: reload_config_file(settings),
        STOP_GRACE,
    )
    gc.collect()
    gc.freeze()  # what the parent built stays shared with the workers: the collector never writes to it
    try:
        code = pool.run()
    finally:
        for sock in listeners:
            sock.close()
        with contextlib.suppress(FileNotFoundError):
            (settings.data_dir / SERVER_JSON).unlink()
        log.info("event=stopped")
    return code


def reload_config_file(settings: ServeSettings) -> None:
    """SIGHUP, in the parent: apply the configuration file once for all workers (they read it from SQLite; their
    rollout engines see the rollouts' generation change)."""
    path = settings.config_file
    if path is None:
        return
    conn = open_database(settings.data_dir / DATABASE_FILE)
    try:
        apply_config_path(path, conn, RolloutEngine(conn, settings.tuf_repo), time.time())
    except (ConfigFileError, OSError, sqlite3.Error) as exc:
        log.error("event=config_reload_failed error=%s", exc)
    finally:
        conn.close()


def worker_main(
    settings: ServeSettings,
    admin_token: str,
    files: TlsFiles,
    index: int,
    listener: socket.socket,
    channel: socket.socket,
) -> int:
    """One worker, in the forked child: the single-process server on its share of the port."""
    configure_logging(settings.data_dir, shared=True, worker=index)
    count = settings.workers
    limits = settings.limits
    if limits.max_connections is not None:
        limits = replace(limits, max_connections=share_of(limits.max_connections, count))
    state = build_state(replace(settings, limits=limits), admin_token, recover=False, shared=True)
    state.device_guesses = DeviceGuessLimiter(
        burst=share_of(DEFAULT_BURST, count), per_hour=share_of_rate(DEFAULT_PER_HOUR, count), clock=state.clock
    )
    state.login_guesses = DeviceGuessLimiter(
        burst=share_of(LOGIN_BURST, count), per_hour=share_of_rate(LOGIN_PER_HOUR, count), clock=state.now
    )
    ticker = index == ROLLOUT_TICKER_WORKER
    server: StubServer | None = None

    def snapshot() -> Snapshot:
        state.sync_process_counters()
        guard = server.guard if server is not None else None
        return {
            "worker": index,
            "pid": os.getpid(),
            "metrics": state.metrics.snapshot(),
            "requests": state.metrics.total_requests,
            "connections": guard.open_connections if guard is not None else 0,
        }

    def published(topic: str, value: object) -> None:
        if topic == TOPIC_LIVE_QUERY_DONE and isinstance(value, int) and state.live.answered_elsewhere(value):
            state.metrics.count("live_query_wakeups_from_other_workers")
        elif topic == TOPIC_ROLLOUT_NUDGE and ticker:
            state.rollouts.nudged_elsewhere()

    def parent_gone() -> None:
        if server is not None and not server.should_exit:
            log.warning("event=parent_gone action=stop")
            server.request_stop()

    link = WorkerLink(index, snapshot, published, parent_gone)
    state.live.announce = lambda query_id: link.publish(TOPIC_LIVE_QUERY_DONE, query_id)
    if not ticker:  # a lost nudge costs time only: the ticker's next full evaluation (≤ 60 s) sees the failures
        state.rollouts.on_nudge = lambda: link.publish(TOPIC_ROLLOUT_NUDGE, None)
    state.cluster_metrics = link.render

    def ready() -> None:
        gc.freeze()
        link.ready()

    config = make_uvicorn_config(state, files, wrap=lambda app: WorkerHeader(app, index))
    server = StubServer(config, state, ready, worker=True, rollout_ticker=ticker)

    async def main() -> None:
        assert server is not None
        await link.connect(channel)
        await server.serve(sockets=[listener])

    try:
        run_loop(main())
    finally:
        state.close()
        log.info("event=worker_stopped")
    return 0
