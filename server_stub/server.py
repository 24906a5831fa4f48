"""Running fleet-stub: data dir, TLS, admin token, configuration, uvicorn, ``server.json``, signals.

SIGTERM/SIGINT stop accepting, let in-flight requests finish (waiting live queries are woken and answer at
once), and exit 0. SIGHUP re-applies the configuration file; a file with errors is reported and ignored.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import logging.handlers
import math
import os
import signal
import socket
import sqlite3
import ssl
import sys
from collections.abc import Callable, Generator
from pathlib import Path

import uvicorn
from starlette.types import ASGIApp

from server_stub.app import build_app
from server_stub.atomic_files import write_private
from server_stub.collector import keep_collector_paced
from server_stub.declarative_config import ConfigFileError, apply_config, load_config_file
from server_stub.fd_limit import raise_open_files_limit
from server_stub.guarded_server import GuardedServer
from server_stub.node_keys import new_admin_token
from server_stub.rollouts import RolloutEngine, RolloutRefused
from server_stub.seen_times import keep_flushed
from server_stub.settings import ServeSettings
from server_stub.state import StubState, build_state
from server_stub.teams import SecretConflict, ensure_team, sync_secrets
from server_stub.tls_material import TlsFiles, ensure_self_signed, server_ssl_context

log = logging.getLogger(__name__)

SERVER_JSON = "server.json"
ADMIN_TOKEN_FILE = "admin_token"  # noqa: S105 - a file name, not a secret
LOG_FILE = "fleet-stub.log"
IDLE_ABORT_AFTER = 0.5


class StartupError(RuntimeError):
    pass


LOG_MAX_BYTES = 10 * 1024 * 1024
LOG_BACKUPS = 3


def configure_logging(
    data_dir: Path, level: int = logging.INFO, *, shared: bool = False, worker: int | None = None
) -> None:
    """stderr and ``DIR/fleet-stub.log`` (rotated at 10 MiB × 3). ``shared``: several processes write the file (the
    parent and its workers, ADR 0019); ``worker``: lines say which worker wrote them."""
    root = logging.getLogger()
    root.setLevel(level)
    who = f" worker={worker}" if worker is not None else ""
    formatter = logging.Formatter(f"ts=%(asctime)s level=%(levelname)s logger=%(name)s{who} %(message)s")
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    stderr = logging.StreamHandler(sys.stderr)
    stderr.setFormatter(formatter)
    root.addHandler(stderr)
    rotating: logging.Handler
    if shared:
        from server_stub.shared_log_file import SharedRotatingLog  # noqa: PLC0415 - POSIX only (fcntl)

        rotating = SharedRotatingLog(data_dir / LOG_FILE, LOG_MAX_BYTES, LOG_BACKUPS)
    else:
        rotating = logging.handlers.RotatingFileHandler(
            data_dir / LOG_FILE, maxBytes=LOG_MAX_BYTES, backupCount=LOG_BACKUPS
        )
    rotating.setFormatter(formatter)
    root.addHandler(rotating)
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)


def load_or_create_admin_token(data_dir: Path, given: str | None) -> str:
    path = data_dir / ADMIN_TOKEN_FILE
    if given:
        return given
    if path.is_file():
        token = path.read_text(encoding="utf-8").strip()
        if token:
            return token
    token = new_admin_token()
    write_private(path, token.encode() + b"\n")
    return token


def tls_files(settings: ServeSettings) -> TlsFiles:
    if settings.tls_cert and settings.tls_key:
        for path in (settings.tls_cert, settings.tls_key):
            if not path.is_file():
                raise StartupError(f"TLS file not found: {path}")
        return TlsFiles(cert=settings.tls_cert, key=settings.tls_key, ca=None)
    return ensure_self_signed(settings.data_dir / "tls")


def apply_flag_secrets(state: StubState) -> None:
    desired: dict[str, int | None] = {}
    for spec in state.settings.enroll_secrets:
        desired[spec.secret] = ensure_team(state.conn, spec.team, source="flag").id if spec.team else None
    try:
        sync_secrets(state.conn, "flag", desired, state.clock())
    except SecretConflict as exc:
        raise StartupError(f"--enroll-secret: {exc}") from None


def apply_config_file(state: StubState) -> None:
    path = state.settings.config_file
    if path is None:
        return
    apply_config_path(path, state.conn, state.rollouts, state.clock())


def apply_config_path(path: Path, conn: sqlite3.Connection, rollouts: RolloutEngine, now: float) -> None:
    """The configuration file's teams, secrets, options, policies and rollouts, into the database."""
    declared = load_config_file(path)
    try:
        rollouts.check_declared(declared.rollouts)
        apply_config(conn, declared, now)
        rollouts.apply_declared(declared.rollouts, now)
    except RolloutRefused as exc:
        raise ConfigFileError(f"{path}: rollouts: {exc}") from None
    log.info(
        "event=config_applied path=%s teams=%d policies=%d rollouts=%d",
        path,
        len(declared.teams),
        len(declared.policies),
        len(declared.rollouts),
    )


def bind_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise StartupError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def server_info(settings: ServeSettings, port: int, admin_token: str, ca: Path | None) -> dict[str, object]:
    host = settings.listen_url_host if settings.listen_host not in ("0.0.0.0", "::") else "127.0.0.1"  # noqa: S104
    url = f"https://{host}:{port}"
    info: dict[str, object] = {
        "url": url,
        "ca_cert": str(ca) if ca else None,
        "pid": os.getpid(),
        "admin_token": admin_token,
    }
    if settings.tuf_repo is not None:
        info["tuf_url"] = f"{url}/tuf"
    return info


class StubServer(GuardedServer):
    """uvicorn with our own connection layer (``GuardedServer``, ADR 0014), our own signal handling (exit 0 on
    SIGTERM, SIGHUP reload) and a ready callback."""

    def __init__(
        self,
        config: uvicorn.Config,
        state: StubState,
        on_ready: Callable[[], None],
        *,
        worker: bool = False,
        rollout_ticker: bool = True,
    ) -> None:
        super().__init__(config, state.settings.limits, state.metrics.count)
        self._state = state
        self._on_ready = on_ready
        # A worker (ADR 0019) stops on SIGTERM only — its parent passes SIGTERM/SIGINT on, and a Ctrl-C that reaches
        # the whole process group must not count twice (a second signal stops at once) — and leaves SIGHUP to it.
        self._worker = worker
        # With several workers, one of them evaluates the rollouts (ADR 0019): N tickers would decide N times.
        self._runs_rollout_ticker = rollout_ticker
        self._reaper: asyncio.Task[None] | None = None
        self._rollout_ticker: asyncio.Task[None] | None = None
        self._collector: asyncio.Task[None] | None = None
        self._seen_writer: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        loop = asyncio.get_running_loop()
        installed: list[signal.Signals] = []
        try:
            for sig in (signal.SIGTERM,) if self._worker else (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.request_stop)
                installed.append(sig)
            if self._worker:
                signal.signal(signal.SIGINT, signal.SIG_IGN)
                signal.signal(signal.SIGHUP, signal.SIG_IGN)
            else:
                loop.add_signal_handler(signal.SIGHUP, self.reload)
                installed.append(signal.SIGHUP)
        except (NotImplementedError, RuntimeError):  # not the main thread (tests) or no signals (Windows)
            pass
        try:
            yield
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)

    def request_stop(self) -> None:
        if self.should_exit:
            self.force_exit = True
        self.should_exit = True
        self._stopping.set()
        self._state.live.close()
        if self.guard is not None:
            self.guard.stopping = True
        if self._reaper is None:
            self._reaper = asyncio.get_running_loop().create_task(self._abort_idle_connections())

    async def _abort_idle_connections(self) -> None:
        """Drop connections that are not serving a request once shutdown began.

        uvicorn asks idle connections to close, but over TLS a close waits for the client's close_notify, which an
        idle keep-alive client never sends: without this, one agent holding a connection open would keep the
        server from exiting. Connections still answering a request are left to finish.
        """
        while True:
            await asyncio.sleep(IDLE_ABORT_AFTER)
            if self.guard is not None:
                self.guard.abort_idle()

    def reload(self) -> None:
        try:
            apply_config_file(self._state)
        except (ConfigFileError, OSError) as exc:
            log.error("event=config_reload_failed error=%s", exc)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        try:
            await super().shutdown(sockets=sockets)
        finally:
            for task in (self._reaper, self._rollout_ticker, self._collector, self._seen_writer):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started and not self.should_exit:
            state = self._state
            if self._runs_rollout_ticker:
                self._rollout_ticker = asyncio.get_running_loop().create_task(
                    state.rollouts.run_ticker(state.clock, state.settings.rollout_tick)
                )
            self._on_ready()  # freezes what start-up allocated (gc.freeze)
            loop = asyncio.get_running_loop()
            self._collector = loop.create_task(keep_collector_paced(self._stopping))
            self._seen_writer = loop.create_task(keep_flushed(state.seen_times, self._stopping))


def make_uvicorn_config(
    state: StubState, files: TlsFiles, wrap: Callable[[ASGIApp], ASGIApp] | None = None
) -> uvicorn.Config:
    try:
        context = server_ssl_context(files.cert, files.key)
    except (ssl.SSLError, OSError) as exc:
        raise StartupError(
            f"cannot load the TLS certificate {files.cert} and key {files.key} (PEM, matching each other): {exc}"
        ) from None

    def factory(_config: uvicorn.Config, _default: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
        return context

    app: ASGIApp = build_app(state)
    return uvicorn.Config(
        wrap(app) if wrap is not None else app,
        ssl_certfile=str(files.cert),
        ssl_keyfile=str(files.key),
        ssl_context_factory=factory,
        http="httptools",
        ws="none",
        lifespan="off",
        access_log=False,
        log_config=None,
        timeout_graceful_shutdown=30,
        timeout_keep_alive=max(1, math.ceil(state.settings.limits.idle_timeout)),  # the guard keeps it, in fact
        server_header=False,
    )


def prepare(settings: ServeSettings) -> tuple[StubState, TlsFiles]:
    mkdir_private(settings.data_dir)
    with contextlib.suppress(FileNotFoundError):
        (settings.data_dir / SERVER_JSON).unlink()
    files = tls_files(settings)
    admin_token = load_or_create_admin_token(settings.data_dir, settings.admin_token)
    state = build_state(settings, admin_token)
    try:
        apply_flag_secrets(state)
        apply_config_file(state)
    except (ConfigFileError, StartupError):
        state.close()
        raise
    return state, files


def announce_ready(settings: ServeSettings, info: dict[str, object]) -> None:
    """``server.json`` (atomically, 0600) and ``listening on …``: the contract's sign that the server serves."""
    write_private(settings.data_dir / SERVER_JSON, json.dumps(info, indent=2, allow_nan=False).encode() + b"\n")
    print(f"listening on {info['url']}", flush=True)
    log.info("event=ready url=%s", info["url"])


def serve(settings: ServeSettings) -> int:
    configure_logging(settings.data_dir if settings.data_dir.is_dir() else mkdir_private(settings.data_dir))
    state, files = prepare(settings)
    raise_open_files_limit()
    sock = bind_socket(settings.listen_host, settings.listen_port)
    port = int(sock.getsockname()[1])
    info = server_info(settings, port, state.admin_token, files.ca)

    def ready() -> None:
        announce_ready(settings, info)
        # Everything allocated so far (modules, routes, settings) lives as long as the process: out of the cyclic
        # collector's sight, a full collection scans only what serving creates. Under a burst of connections that
        # took full collections from ~90-140 ms (a stall for every agent) to ~25 ms (benchmarks/stub_under_attack.py).
        gc.freeze()

    server = StubServer(make_uvicorn_config(state, files), state, ready)
    try:
        run_loop(server.serve(sockets=[sock]))
    finally:
        sock.close()
        with contextlib.suppress(FileNotFoundError):
            (settings.data_dir / SERVER_JSON).unlink()
        state.close()
        log.info("event=stopped")
    return 0


def mkdir_private(path: Path) -> Path:
    """The data dir holds node keys, the admin token and host logs: owner-only."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


def run_loop(coro: object) -> None:
    try:
        import uvloop  # noqa: PLC0415 - optional accelerator, absent on Windows
    except ImportError:
        asyncio.run(coro)  # type: ignore[arg-type]
        return
    uvloop.run(coro)  # type: ignore[arg-type]
