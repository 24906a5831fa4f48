"""What the benchmark scripts share: a baseline ASGI app served over TLS the way fleet-stub is served, CPU pinning,
SIGTERM handling and strict JSON output.

The scripts run as plain files (``.venv/bin/python benchmarks/<script>.py``), so they import this module by its
bare name from their own directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from types import FrameType
from typing import Literal

import uvicorn
from starlette.types import ASGIApp

from server_stub.connection_limits import ConnectionLimits
from server_stub.guarded_server import GuardedServer
from server_stub.tls_material import server_ssl_context


class ReadyServer(uvicorn.Server):
    """uvicorn as a benchmark runs it: exit 0 on SIGTERM/SIGINT, and a callback once listening."""

    def __init__(self, config: uvicorn.Config, on_ready: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_ready = on_ready

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._request_stop)
        try:
            yield
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)

    def _request_stop(self) -> None:
        if self.should_exit:
            self.force_exit = True
        self.should_exit = True

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started and not self.should_exit:
            self._on_ready()


class ReadyGuardedServer(ReadyServer, GuardedServer):
    """The same behind fleet-stub's own connection layer (cap, shedding, TLS, limits: ADR 0014)."""

    def __init__(self, config: uvicorn.Config, on_ready: Callable[[], None], limits: ConnectionLimits) -> None:
        super().__init__(config, on_ready)
        self.limits = limits


# wrk reconnects with SSL_clear, which keeps the TLS session, so its next handshake is a resumption. osqueryd's TLS
# client makes a new SSL object per connection: a full handshake. This shim drops the session after SSL_clear.
FULL_HANDSHAKE_SHIM = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stddef.h>
typedef struct ssl_st SSL;
typedef struct ssl_session_st SSL_SESSION;
int SSL_set_session(SSL *s, SSL_SESSION *session);
int SSL_clear(SSL *s) {
    static int (*real)(SSL *) = NULL;
    if (real == NULL) real = (int (*)(SSL *))dlsym(RTLD_NEXT, "SSL_clear");
    int result = real(s);
    SSL_set_session(s, NULL);
    return result;
}
"""


def build_full_handshake_shim(work: Path) -> tuple[Path | None, str]:
    """The LD_PRELOAD library that makes wrk's reconnects full handshakes; (None, why) when it cannot be built."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        return None, "no C compiler: close mode measures wrk's resumed TLS sessions, not full handshakes"
    source, library = work / "full-handshake.c", work / "full-handshake.so"
    source.write_text(FULL_HANDSHAKE_SHIM, encoding="utf-8")
    built = subprocess.run(
        [compiler, "-O2", "-shared", "-fPIC", "-o", str(library), str(source), "-ldl", "-lssl"],
        capture_output=True,
        text=True,
        check=False,
    )
    if built.returncode != 0:
        return None, f"cannot build the full-handshake shim ({built.stderr.strip()[:200]}): close mode resumes"
    return library, "close mode: a full TLS handshake per request (wrk with the session-dropping shim)"


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop  # noqa: PLC0415 - optional accelerator, as in server_stub.server.run_loop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def serve_tls_app(
    make_app: Callable[[ssl.SSLContext], ASGIApp],
    tls_dir: Path,
    ready_file: Path,
    *,
    backlog: int = 2048,
    graceful_timeout: int = 30,
    http: Literal["httptools", "h11"] = "httptools",
    h11_max_incomplete_event_size: int | None = None,
    make_server: Callable[[uvicorn.Config, Callable[[], None]], uvicorn.Server] | None = None,
) -> int:
    """Serve ``make_app(tls_context)`` on 127.0.0.1 with the stub's certificate and TLS settings.

    Writes ``{"port", "pid"}`` to ``ready_file`` (atomically) once listening; returns when stopped by SIGTERM/SIGINT.
    ``make_server(config, on_ready)`` replaces the plain ``ReadyServer`` (e.g. with the stub's guarded one).
    """
    cert, key = tls_dir / "server.pem", tls_dir / "server-key.pem"
    context = server_ssl_context(cert, key)

    def factory(_config: uvicorn.Config, _default: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
        return context

    config = uvicorn.Config(
        make_app(context),
        ssl_certfile=str(cert),
        ssl_keyfile=str(key),
        ssl_context_factory=factory,
        http=http,
        h11_max_incomplete_event_size=h11_max_incomplete_event_size,
        lifespan="off",
        access_log=False,
        log_config=None,
        timeout_graceful_shutdown=graceful_timeout,
        timeout_keep_alive=75,
        server_header=False,
        backlog=backlog,
    )
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(backlog)
    sock.setblocking(False)
    port = int(sock.getsockname()[1])

    def ready() -> None:
        partial = ready_file.with_suffix(".tmp")
        partial.write_text(json.dumps({"port": port, "pid": os.getpid()}), encoding="utf-8")
        partial.replace(ready_file)

    server = make_server(config, ready) if make_server is not None else ReadyServer(config, ready)
    try:
        with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
            runner.run(server.serve(sockets=[sock]))
    finally:
        sock.close()
    return 0


@contextlib.contextmanager
def cpu_affinity(cpus: frozenset[int] | None) -> Iterator[None]:
    """Run the block (typically a fork) with this thread pinned to ``cpus``; children inherit the mask."""
    if cpus is None:
        yield
        return
    previous = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, previous)


def json_safe(value: object) -> object:
    """NaN (a figure with no samples) becomes null, so ``--json`` output is strict JSON."""
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, list):
        return [json_safe(item) for item in value]
    return value


def forward_sigterm() -> list[int]:
    """Treat SIGTERM like Ctrl-C: through the current SIGINT handler, so asyncio.Runner cancels its task cleanly."""
    received: list[int] = []

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        received.append(signum)
        handler = signal.getsignal(signal.SIGINT)
        if callable(handler):
            handler(signal.SIGINT, frame)
        else:
            raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)
    return received


def realtime_priority() -> bool:
    """Put the calling thread on a real-time priority where allowed (root, Linux; False where not allowed).

    For a measuring client that shares its core with load it does not stand for (the attacker in
    ``stub_under_attack.py``, the generator's processes in ``stub_capacity.py``): on a real network they are other
    machines. At SCHED_FIFO the client runs the moment it wakes, so what it measures is the server's latency, not the
    other processes' CPU (nice 19 alone still let the agents' own wake-up lag double).
    """
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
    except (AttributeError, PermissionError, OSError):
        return False
    return True
