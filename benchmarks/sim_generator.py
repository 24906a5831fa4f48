"""How many requests per second one CPU core of ``osqueryd-sim load`` generates, against a trivial TLS server.

Capacity figures of fleet-stub are only meaningful while the load generator is not the limit; this measures where
the generator itself runs out of CPU.

What runs:

* A trivial server on the second CPU: starlette on uvicorn (httptools, uvloop, one process), TLS with a throw-away
  CA from ``server_stub.tls_material``. It answers every endpoint the generator calls (osquery enroll, config,
  distributed read/write, log; orbit enroll, config, device token, pings) at once with a minimal valid body; its
  config answer sets ``distributed_interval`` and ``logger_tls_period`` to the short values of this run. It counts
  the requests it answered per route and the TLS handshakes it completed (``GET /_bench/stats``).
* ``osqueryd-sim load --with-orbit`` pinned to the first CPU, with a growing host count (100, 200, 300, …). For
  each step the script waits until the server has answered every host's start-up calls (enroll, first config,
  first log, orbit's enroll/token/config/pings) and a few seconds more, then measures a window: requests (from
  the generator's own progress lines), the generator's and the server's CPU time (psutil), TLS handshakes. It
  stops stepping once the generator is the limit (CPU saturated, or its hosts fall behind their schedule) and
  requests/s stop growing.
* Baselines on the same CPU, in this process: the same server driven by a minimal raw-asyncio TLS client (one
  keep-alive connection per coroutine, ``distributed/read`` in a closed loop) on the stdlib event loop (as
  ``osqueryd-sim load`` uses) and on uvloop, and by an httpx ``AsyncClient`` loop (one client per coroutine, as
  the simulator has one per host). Their CPU time per request, next to the generator's, is the simulator's own
  per-request overhead.

Speed is reported, never asserted (docs/design.md §3: benchmarks are not tests).

    .venv/bin/python benchmarks/sim_generator.py [--quick] [--seconds N] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import queue
import re
import resource
import secrets
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import IO

import httpx
import psutil
from bench_support import cpu_affinity, event_loop_factory, forward_sigterm, json_safe, serve_tls_app
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from server_stub.tls_material import ensure_self_signed

OSQUERY = "/api/v1/osquery"
OSQUERY_ENROLL, OSQUERY_CONFIG, OSQUERY_LOG = f"{OSQUERY}/enroll", f"{OSQUERY}/config", f"{OSQUERY}/log"
READ_PATH = f"{OSQUERY}/distributed/read"
ORBIT_ENROLL, ORBIT_CONFIG = "/api/fleet/orbit/enroll", "/api/fleet/orbit/config"
ORBIT_DEVICE_TOKEN, ORBIT_PING = "/api/fleet/orbit/device_token", "/api/fleet/orbit/ping"
DEVICE_PING = "/api/latest/fleet/device/{token}/ping"
# What every host sends once when it starts; the window opens when the server has answered all of them.
START_UP_OSQUERY = (OSQUERY_ENROLL, OSQUERY_CONFIG, OSQUERY_LOG, READ_PATH)
START_UP_ORBIT = (ORBIT_ENROLL, ORBIT_DEVICE_TOKEN, ORBIT_CONFIG, ORBIT_PING, DEVICE_PING)
STATS_PATH = "/_bench/stats"
FULL_STEPS = (100, 200, 300, 400, 500, 600, 800, 1000, 1500, 2000, 3000, 4000, 6000, 8000)
QUICK_STEPS = (100, 250, 500, 1000, 2000, 4000)
RAMP_HOSTS_PER_SECOND = 500  # host starts per second of ramp (each start: enroll, config, orbit enroll, …)
START_TIMEOUT = 60.0  # server start, and generator start-up on top of its ramp
START_UP_SECONDS_PER_HOST = 0.05  # more time allowed for the start-up calls of an overloaded generator
STOP_TIMEOUT = 60.0
SATURATED_CPU_PERCENT = 90.0
BEHIND_FRACTION = 0.8  # hosts making less than this share of the first step's requests per host: falling behind
PLATEAU_GROWTH = 1.05  # limited and less than 5 % more requests/s than the step before: stop stepping
SERVER_BUSY_PERCENT = 70.0  # above this the trivial server may be part of the limit
OTHER_LOAD_PERCENT = 10.0  # other processes on the measured core: the figures are too low
COLLAPSE_FRACTION = 0.8  # a larger step making less than this share of the best req/s: overload collapse
BASELINE_CONNECTIONS = 64
REQUEST_TIMEOUT = 16.0
PROGRESS = re.compile(r"t=\s*(\d+)s enrolled=(\d+)/(\d+) req/s=\s*[\d.]+ requests=(\d+) errors=(\d+)")


class BenchmarkError(RuntimeError):
    pass


@dataclass(frozen=True)
class Options:
    seconds: float
    settle: float
    steps: tuple[int, ...]
    distributed_interval: int
    logger_tls_period: int
    config_refresh: int
    with_orbit: bool
    baseline_connections: int
    as_json: bool


@dataclass(frozen=True)
class Step:
    hosts: int
    ramp_seconds: float
    enrolled: int
    seconds: float
    requests: int
    requests_per_second: float
    requests_per_host_second: float
    generator_cpu_percent: float
    generator_cpu_us_per_request: float
    other_cpu_percent: float
    server_cpu_percent: float
    server_requests: int
    handshakes_per_100_requests: float
    read_p50_ms: float
    read_p99_ms: float
    errors: int
    generator_rss_mib: float
    window_endpoints: dict[str, int]
    exit_code: int | None
    limited: bool = False


@dataclass(frozen=True)
class Baseline:
    client: str
    connections: int
    seconds: float
    requests: int
    requests_per_second: float
    cpu_percent: float
    cpu_us_per_request: float
    other_cpu_percent: float
    server_cpu_percent: float
    p50_ms: float
    p99_ms: float
    errors: int


@dataclass
class Report:
    generator_cpus: list[int] | None
    server_cpus: list[int] | None
    distributed_interval: int
    logger_tls_period: int
    config_refresh: int
    with_orbit: bool
    seconds: float
    steps: list[Step] = field(default_factory=list)
    baselines: list[Baseline] = field(default_factory=list)
    capacity_requests_per_second: float = 0.0
    capacity_cpu_us_per_request: float = 0.0
    saturated: bool = False
    overhead_ratios: dict[str, float] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# --- processes ----------------------------------------------------------------------------------------------------


class Child:
    """A subprocess in its own session (Ctrl-C reaches only us), stopped with SIGTERM, then SIGKILL."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: dict[str, str],
        cpus: frozenset[int] | None,
        stack: contextlib.ExitStack,
        log_path: Path | None = None,
    ) -> None:
        self.name = name
        self.exit_code: int | None = None
        self.stop_seconds = 0.0
        self.killed = False
        with contextlib.ExitStack() as opened, cpu_affinity(cpus):
            log = opened.enter_context(log_path.open("wb")) if log_path else None
            self.popen = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log if log else subprocess.PIPE,
                stderr=subprocess.STDOUT if log else subprocess.PIPE,
                env=env,
                start_new_session=True,
            )
        stack.callback(self.stop)  # at once: whatever happens next, the process gets stopped
        self.ps = psutil.Process(self.popen.pid)

    def cpu_seconds(self) -> float:
        try:
            times = self.ps.cpu_times()
        except psutil.Error:
            return float("nan")
        return float(times.user + times.system)

    def rss_mib(self) -> float:
        try:
            return float(self.ps.memory_info().rss) / (1024 * 1024)
        except psutil.Error:
            return float("nan")

    def stop(self) -> None:
        if self.exit_code is not None:
            return
        started = time.monotonic()
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.killed = True
                self.popen.kill()
                self.popen.wait()
        self.stop_seconds = time.monotonic() - started
        self.exit_code = self.popen.returncode


def plan_cpus() -> tuple[frozenset[int] | None, frozenset[int] | None]:
    """(generator CPU, server CPU): the first two CPUs we may use, or no pinning with fewer than two."""
    available = sorted(os.sched_getaffinity(0))
    if len(available) < 2:
        return None, None
    return frozenset({available[0]}), frozenset({available[1]})


def sim_command() -> list[str]:
    beside = Path(sys.executable).parent / "osqueryd-sim"
    if beside.is_file():
        return [str(beside)]
    found = shutil.which("osqueryd-sim")
    return [found] if found else [sys.executable, "-m", "osquery_sim"]


# --- the trivial server (its own process: --serve-trivial) ---------------------------------------------------------


def json_response(document: object) -> Response:
    return Response(json.dumps(document, separators=(",", ":")).encode(), media_type="application/json")


def trivial_app(distributed_interval: int, logger_tls_period: int, context: ssl.SSLContext) -> Starlette:
    """Every endpoint the generator calls, answered at once with a minimal valid body; and ``GET STATS_PATH``:
    requests answered per route and TLS handshakes completed so far (from the server's ``SSLContext``)."""
    options = {"distributed_interval": distributed_interval, "logger_tls_period": logger_tls_period}
    config = json.dumps({"options": options}, separators=(",", ":")).encode()
    answered: Counter[str] = Counter()
    unexpected: set[str] = set()

    def fixed(path: str, body: bytes) -> Route:
        async def endpoint(request: Request) -> Response:
            await request.body()
            answered[path] += 1
            return Response(body, media_type="application/json")

        return Route(path, endpoint, methods=["POST"])

    def ping(path: str) -> Route:
        async def endpoint(_request: Request) -> Response:
            answered[path] += 1
            return Response(status_code=200)

        return Route(path, endpoint, methods=["HEAD"])

    async def enroll(request: Request) -> Response:
        await request.body()
        answered[OSQUERY_ENROLL] += 1
        return json_response({"node_key": secrets.token_hex(16)})

    async def stats(_request: Request) -> Response:
        return json_response({"paths": answered, "handshakes": context.session_stats()["accept_good"]})

    async def other(request: Request) -> Response:
        key = f"{request.method} {request.url.path}"
        if key not in unexpected:  # the generator judges this as an error; say which path it was, once
            unexpected.add(key)
            print(f"level=WARNING unexpected request {key}", file=sys.stderr, flush=True)
        return json_response({"error": "not served by the trivial server"})

    return Starlette(
        routes=[
            Route(OSQUERY_ENROLL, enroll, methods=["POST"]),
            fixed(OSQUERY_CONFIG, config),
            fixed(READ_PATH, b'{"queries":{}}'),
            fixed(f"{OSQUERY}/distributed/write", b"{}"),
            fixed(OSQUERY_LOG, b"{}"),
            fixed(ORBIT_ENROLL, b'{"orbit_node_key":"k"}'),
            fixed(ORBIT_CONFIG, b"{}"),
            fixed(ORBIT_DEVICE_TOKEN, b"{}"),
            ping(ORBIT_PING),
            ping(DEVICE_PING),
            Route(STATS_PATH, stats, methods=["GET"]),
            Route("/{rest:path}", other, methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]),
        ]
    )


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def serve_trivial(ready_file: Path, tls_dir: Path, distributed_interval: int, logger_tls_period: int) -> int:
    raise_fd_limit()  # thousands of hosts, each with an osquery and an orbit connection
    return serve_tls_app(
        lambda context: trivial_app(distributed_interval, logger_tls_period, context),
        tls_dir,
        ready_file,
        backlog=4096,
        graceful_timeout=5,
    )


@dataclass(frozen=True)
class Server:
    child: Child
    port: int
    ca: Path
    log_path: Path
    stats_client: httpx.Client

    def counts(self) -> ServerCounts:
        loaded: object = self.stats_client.get(STATS_PATH).raise_for_status().json()
        paths = loaded.get("paths") if isinstance(loaded, dict) else None
        handshakes = loaded.get("handshakes") if isinstance(loaded, dict) else None
        if not isinstance(paths, dict) or not isinstance(handshakes, int):
            raise BenchmarkError(f"unexpected {STATS_PATH} answer: {loaded!r}")
        return ServerCounts({str(k): v for k, v in paths.items() if isinstance(v, int)}, handshakes)


@dataclass(frozen=True)
class ServerCounts:
    """Requests answered per route and TLS handshakes completed, since the trivial server started."""

    paths: dict[str, int]
    handshakes: int

    @property
    def requests(self) -> int:
        return sum(self.paths.values())

    def since(self, before: ServerCounts) -> ServerCounts:
        paths = {path: count - before.paths.get(path, 0) for path, count in self.paths.items()}
        return ServerCounts(
            {path: count for path, count in paths.items() if count}, self.handshakes - before.handshakes
        )


def core_busy_seconds(cpu: int | None) -> float:
    """CPU seconds the core ``cpu`` spent running processes (any) or stolen by the hypervisor, since boot.

    Interrupt and softirq time is left out: much of it is the loopback network work for our own traffic."""
    if cpu is None:
        return float("nan")
    times = psutil.cpu_times(percpu=True)[cpu]
    return float(times.user + times.nice + times.system + getattr(times, "steal", 0.0))


def only(cpus: frozenset[int] | None) -> int | None:
    return min(cpus) if cpus else None


def start_server(work: Path, options: Options, cpus: frozenset[int] | None, stack: contextlib.ExitStack) -> Server:
    tls = ensure_self_signed(work / "tls")
    if tls.ca is None:
        raise BenchmarkError("no CA certificate was created")
    ready = work / "server.json"
    argv = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--serve-trivial",
        str(ready),
        "--tls-dir",
        str(work / "tls"),
        "--distributed_interval",
        str(options.distributed_interval),
        "--logger_tls_period",
        str(options.logger_tls_period),
    ]
    log_path = work / "server.out"
    child = Child("trivial server", argv, env=dict(os.environ), cpus=cpus, stack=stack, log_path=log_path)
    deadline = time.monotonic() + START_TIMEOUT
    while not ready.is_file():
        if child.popen.poll() is not None or time.monotonic() > deadline:
            tail = log_path.read_text(encoding="utf-8", errors="replace")[-2000:]
            raise BenchmarkError(f"the trivial server did not start (exit {child.popen.poll()}):\n{tail}")
        time.sleep(0.05)
    loaded: object = json.loads(ready.read_text(encoding="utf-8"))
    port = loaded.get("port") if isinstance(loaded, dict) else None
    if not isinstance(port, int):
        raise BenchmarkError("the trivial server did not report its port")
    # One long-lived connection for the counters, so that reading them adds no handshake of its own.
    stats_client = httpx.Client(
        base_url=f"https://127.0.0.1:{port}",
        verify=ssl.create_default_context(cafile=str(tls.ca)),
        trust_env=False,
        timeout=30.0,
        limits=httpx.Limits(max_connections=1, keepalive_expiry=3600),
    )
    stack.callback(stats_client.close)
    return Server(child, port, tls.ca, log_path, stats_client)


# --- one step: osqueryd-sim load with N hosts ----------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    """One progress line of the generator, with both processes' CPU time when we read it."""

    at: float
    generator_seconds: int
    enrolled: int
    requests: int
    errors: int
    generator_cpu: float
    server_cpu: float
    core_busy: float


class GeneratorRun:
    """``osqueryd-sim load`` as a child; its progress lines (stderr) become samples, its stdout the summary."""

    def __init__(
        self,
        hosts: int,
        ramp: float,
        options: Options,
        server: Server,
        cpus: frozenset[int] | None,
        stack: contextlib.ExitStack,
    ) -> None:
        self.core = only(cpus)
        argv = [
            *sim_command(),
            "load",
            "--hosts",
            str(hosts),
            "--tls_hostname",
            f"127.0.0.1:{server.port}",
            "--tls_server_certs",
            str(server.ca),
            "--distributed_interval",
            str(options.distributed_interval),
            "--config_refresh",
            str(options.config_refresh),
            "--logger_tls_period",
            str(options.logger_tls_period),
            "--ramp",
            f"{ramp:g}",
            "--progress_interval",
            "0.5",
            # a safety net only: the window ends far earlier, with SIGTERM
            "--duration",
            f"{ramp + START_TIMEOUT + options.settle + options.seconds + 120:.0f}",
        ]
        if options.with_orbit:
            argv.append("--with-orbit")
        # The enroll secret goes through the environment (ENROLL_SECRET), not argv.
        env = {**os.environ, "ENROLL_SECRET": secrets.token_urlsafe(16)}
        self.hosts = hosts
        self.server = server
        self.samples: queue.Queue[Sample] = queue.Queue()
        self.other_lines: list[str] = []
        self.stdout_chunks: list[str] = []
        self.child = Child("osqueryd-sim load", argv, env=env, cpus=cpus, stack=stack)
        out, err = self.child.popen.stdout, self.child.popen.stderr
        if out is None or err is None:
            raise BenchmarkError("no pipes to osqueryd-sim load")
        self._threads = [
            threading.Thread(target=self._read_progress, args=(err,), daemon=True),
            threading.Thread(target=self._read_stdout, args=(out,), daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _read_progress(self, stream: IO[bytes]) -> None:
        for raw in stream:
            at = time.monotonic()
            generator_cpu, server_cpu = self.child.cpu_seconds(), self.server.child.cpu_seconds()
            core_busy = core_busy_seconds(self.core)
            line = raw.decode("utf-8", errors="replace").rstrip()
            found = PROGRESS.search(line)
            if found is None:
                if line:
                    self.other_lines.append(line)
                continue
            seconds, enrolled, _, requests, errors = (int(g) for g in found.groups())
            self.samples.put(Sample(at, seconds, enrolled, requests, errors, generator_cpu, server_cpu, core_busy))

    def _read_stdout(self, stream: IO[bytes]) -> None:
        self.stdout_chunks.append(stream.read().decode("utf-8", errors="replace"))

    def next_sample(self, deadline: float) -> Sample | None:
        while True:
            if self.child.popen.poll() is not None and self.samples.empty():
                tail = "\n".join(self.other_lines[-20:])
                raise BenchmarkError(f"osqueryd-sim load exited with {self.child.popen.returncode}:\n{tail}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            with contextlib.suppress(queue.Empty):
                return self.samples.get(timeout=min(remaining, 0.5))

    def finish(self) -> dict[str, object]:
        self.child.stop()
        for thread in self._threads:
            thread.join(10)
        text = "".join(self.stdout_chunks).strip()
        try:
            loaded: object = json.loads(text) if text else {}
        except ValueError as exc:
            raise BenchmarkError(f"osqueryd-sim load printed no JSON summary: {text[-500:]!r}") from exc
        if not isinstance(loaded, dict):
            raise BenchmarkError("osqueryd-sim load's summary is not a JSON object")
        return {str(k): v for k, v in loaded.items()}


def endpoint_figures(summary: dict[str, object]) -> dict[str, dict[str, float]]:
    """The summary's "endpoints" as numbers only (requests, errors, p50_ms, …)."""
    raw = summary.get("endpoints")
    found: dict[str, dict[str, float]] = {}
    if not isinstance(raw, dict):
        return found
    for name, figures in raw.items():
        if isinstance(figures, dict):
            found[str(name)] = {
                str(k): float(v) for k, v in figures.items() if isinstance(v, int | float) and not isinstance(v, bool)
            }
    return found


def ramp_for(hosts: int) -> float:
    return max(1.0, round(hosts / RAMP_HOSTS_PER_SECOND, 1))


def measure_step(
    hosts: int, options: Options, server: Server, cpus: frozenset[int] | None, notes: list[str]
) -> tuple[Step, list[str]]:
    ramp = ramp_for(hosts)
    problems: list[str] = []
    with contextlib.ExitStack() as stack:
        initial = server.counts()
        run = GeneratorRun(hosts, ramp, options, server, cpus, stack)
        # The window opens once every host is past its start-up calls (enroll, first config, first log, orbit's
        # enroll/token/config/pings: the server has answered each of them `hosts` times) and `settle` more seconds.
        start_up = START_UP_OSQUERY + (START_UP_ORBIT if options.with_orbit else ())
        deadline = time.monotonic() + START_TIMEOUT + ramp + hosts * START_UP_SECONDS_PER_HOST
        started_up: float | None = None
        start: Sample | None = None
        last: Sample | None = None
        while start is None:
            sample = run.next_sample(deadline)
            if sample is None:
                if last is None:
                    raise BenchmarkError(f"{hosts} hosts: no progress from osqueryd-sim load in time")
                lagging = server.counts().since(initial).paths
                notes.append(
                    f"{hosts} hosts: start-up not over when the window opened anyway "
                    f"({', '.join(f'{p} {lagging.get(p, 0)}' for p in start_up)})"
                )
                start = last
                break
            last = sample
            if started_up is None:
                answered = server.counts().since(initial).paths
                if all(answered.get(path, 0) >= hosts for path in start_up):
                    started_up = sample.at
            elif sample.at - started_up >= options.settle:
                start = sample
        server_before = server.counts()
        end: Sample | None = None
        while end is None:
            sample = run.next_sample(start.at + options.seconds + 30)
            if sample is None:
                raise BenchmarkError(f"{hosts} hosts: osqueryd-sim load stopped reporting progress")
            if sample.at - start.at >= options.seconds:
                end = sample
        server_after = server.counts()
        rss = run.child.rss_mib()
        summary = run.finish()
        problems.extend(f"{hosts} hosts, osqueryd-sim load: {line[:200]}" for line in run.other_lines[:5])
    if run.child.exit_code not in (0, None):
        lines = summary.get("log_lines")
        problems.append(f"{hosts} hosts: osqueryd-sim load exited with {run.child.exit_code} (log lines: {lines})")
    if run.child.killed:
        problems.append(f"{hosts} hosts: osqueryd-sim load did not stop within {STOP_TIMEOUT:.0f} s of SIGTERM")
    endpoints = endpoint_figures(summary)
    read = endpoints.get(READ_PATH, {})
    wall = end.at - start.at
    requests = end.requests - start.requests
    generator_cpu = end.generator_cpu - start.generator_cpu
    window = server_after.since(server_before)
    step = Step(
        hosts=hosts,
        ramp_seconds=ramp,
        enrolled=end.enrolled,
        seconds=round(wall, 3),
        requests=requests,
        requests_per_second=requests / wall,
        requests_per_host_second=requests / wall / hosts,
        generator_cpu_percent=100 * generator_cpu / wall,
        generator_cpu_us_per_request=1e6 * generator_cpu / requests if requests else float("nan"),
        other_cpu_percent=100 * (end.core_busy - start.core_busy - generator_cpu) / wall,
        server_cpu_percent=100 * (end.server_cpu - start.server_cpu) / wall,
        server_requests=window.requests,
        handshakes_per_100_requests=100 * window.handshakes / window.requests if window.requests else float("nan"),
        read_p50_ms=read.get("p50_ms", float("nan")),
        read_p99_ms=read.get("p99_ms", float("nan")),
        errors=end.errors - start.errors,
        generator_rss_mib=rss,
        window_endpoints=dict(sorted(window.paths.items())),
        exit_code=run.child.exit_code,
    )
    return step, problems


# --- baselines: the same server, a minimal client in this process ---------------------------------------------------


@dataclass
class LoopState:
    """Shared by the client coroutines: completions, errors, and latencies once the window is open."""

    stop_at: float
    completed: int = 0
    errors: int = 0
    recording: bool = False
    latencies: list[float] = field(default_factory=list)

    def done(self, begun: float, ok: bool) -> None:
        self.completed += 1
        if not ok:
            self.errors += 1
        elif self.recording:
            self.latencies.append(time.perf_counter() - begun)


def read_body(body: bytes) -> bool:
    answer: object = json.loads(body)
    return isinstance(answer, dict) and isinstance(answer.get("queries"), dict)


async def raw_client(state: LoopState, port: int, context: ssl.SSLContext, number: int) -> None:
    """One keep-alive TLS connection, ``distributed/read`` in a closed loop, HTTP/1.1 by hand."""
    body = json.dumps({"node_key": f"baseline-{number}"}).encode()
    request = (
        f"POST {READ_PATH} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
    try:
        while time.perf_counter() < state.stop_at:
            begun = time.perf_counter()
            writer.write(request)
            async with asyncio.timeout(REQUEST_TIMEOUT):
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.lower() == b"content-length":
                        length = int(value)
                answer = await reader.readexactly(length)
            state.done(begun, head.startswith(b"HTTP/1.1 200 ") and read_body(answer))
    finally:
        writer.close()
        with contextlib.suppress(OSError, TimeoutError):
            async with asyncio.timeout(1.0):
                await writer.wait_closed()


async def httpx_client(state: LoopState, port: int, context: ssl.SSLContext, number: int) -> None:
    """One httpx.AsyncClient (as each simulated host has), ``distributed/read`` in a closed loop."""
    async with httpx.AsyncClient(
        base_url=f"https://127.0.0.1:{port}", verify=context, trust_env=False, timeout=REQUEST_TIMEOUT
    ) as client:
        payload = json.dumps({"node_key": f"baseline-{number}"}).encode()
        headers = {"Content-Type": "application/json"}
        while time.perf_counter() < state.stop_at:
            begun = time.perf_counter()
            response = await client.post(READ_PATH, content=payload, headers=headers)
            state.done(begun, response.status_code == 200 and read_body(response.content))


Client = Callable[[LoopState, int, ssl.SSLContext, int], Coroutine[object, object, None]]


@dataclass(frozen=True)
class Mark:
    at: float
    completed: int
    cpu: float
    server_cpu: float
    core_busy: float


def percentile_ms(samples: list[float], fraction: float) -> float:
    if not samples:
        return float("nan")
    ordered = sorted(samples)
    return 1000 * ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def closed_loop(
    client: Client, server: Server, connections: int, warmup: float, seconds: float, core: int | None
) -> tuple[LoopState, Mark, Mark]:
    context = ssl.create_default_context(cafile=str(server.ca))
    state = LoopState(stop_at=time.perf_counter() + warmup + seconds + 0.5)

    def mark() -> Mark:
        return Mark(
            time.monotonic(), state.completed, time.process_time(), server.child.cpu_seconds(), core_busy_seconds(core)
        )

    async def window() -> tuple[Mark, Mark]:
        await asyncio.sleep(warmup)
        first = mark()
        state.recording = True
        await asyncio.sleep(seconds)
        state.recording = False
        return first, mark()

    workers = [asyncio.create_task(client(state, server.port, context, n)) for n in range(connections)]
    try:
        first, last = await window()
    finally:
        state.stop_at = 0.0
        results = await asyncio.gather(*workers, return_exceptions=True)
    failures = [r for r in results if isinstance(r, BaseException)]
    if failures:
        raise BenchmarkError(f"baseline client failed: {failures[0]!r}")
    return state, first, last


def measure_baseline(
    name: str,
    client: Client,
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None,
    server: Server,
    options: Options,
    cpus: frozenset[int] | None,
) -> Baseline:
    with cpu_affinity(cpus), asyncio.Runner(loop_factory=loop_factory) as runner:
        state, first, last = runner.run(
            closed_loop(
                client, server, options.baseline_connections, max(1.0, options.settle), options.seconds, only(cpus)
            )
        )
    wall = last.at - first.at
    requests = last.completed - first.completed
    cpu = last.cpu - first.cpu
    return Baseline(
        client=name,
        connections=options.baseline_connections,
        seconds=round(wall, 3),
        requests=requests,
        requests_per_second=requests / wall,
        cpu_percent=100 * cpu / wall,
        cpu_us_per_request=1e6 * cpu / requests if requests else float("nan"),
        other_cpu_percent=100 * (last.core_busy - first.core_busy - cpu) / wall,
        server_cpu_percent=100 * (last.server_cpu - first.server_cpu) / wall,
        p50_ms=percentile_ms(state.latencies, 0.50),
        p99_ms=percentile_ms(state.latencies, 0.99),
        errors=state.errors,
    )


# --- the run -------------------------------------------------------------------------------------------------------


def progress(message: str) -> None:
    print(f"sim_generator: {message}", file=sys.stderr, flush=True)


def server_findings(server: Server) -> list[str]:
    found: list[str] = []
    if server.child.exit_code != 0:
        found.append(f"trivial server exited with {server.child.exit_code} on SIGTERM (expected 0)")
    try:
        lines = server.log_path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return found
    bad = [ln for ln in lines if any(mark in ln for mark in ("WARNING", "ERROR", "Traceback"))]
    if bad:
        found.append(f"trivial server logged {len(bad)} warning/error line(s), e.g.: {'; '.join(bad[:5])}")
    return found


def run(options: Options) -> Report:
    generator_cpus, server_cpus = plan_cpus()
    report = Report(
        generator_cpus=sorted(generator_cpus) if generator_cpus else None,
        server_cpus=sorted(server_cpus) if server_cpus else None,
        distributed_interval=options.distributed_interval,
        logger_tls_period=options.logger_tls_period,
        config_refresh=options.config_refresh,
        with_orbit=options.with_orbit,
        seconds=options.seconds,
    )
    if server_cpus is None:
        report.notes.append("fewer than 2 CPUs: generator and server share the CPU (figures are pessimistic)")
    else:
        os.sched_setaffinity(0, server_cpus)  # this script only reads pipes meanwhile: keep it off the generator's CPU
    with contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="sim-generator-bench-")))
        progress(f"starting the trivial server in {work}")
        server = start_server(work, options, server_cpus, stack)
        for name, client, factory in (
            ("raw asyncio (stdlib loop)", raw_client, None),
            ("raw asyncio (uvloop)", raw_client, event_loop_factory()),
            ("httpx (stdlib loop)", httpx_client, None),
        ):
            progress(f"baseline {name}: {options.baseline_connections} connections, {options.seconds:g} s")
            report.baselines.append(measure_baseline(name, client, factory, server, options, generator_cpus))
        previous: Step | None = None
        for hosts in options.steps:
            progress(f"osqueryd-sim load --hosts {hosts}: ramp {ramp_for(hosts):g} s + window {options.seconds:g} s")
            step, problems = measure_step(hosts, options, server, generator_cpus, report.notes)
            step = replace(step, limited=is_limited(step, report.steps[0] if report.steps else None))
            report.steps.append(step)
            report.problems.extend(problems)
            progress(
                f"  {step.requests_per_second:,.0f} req/s, generator CPU {step.generator_cpu_percent:.0f} %, "
                f"server CPU {step.server_cpu_percent:.0f} %"
            )
            if step.server_cpu_percent > SERVER_BUSY_PERCENT:
                report.notes.append(
                    f"{hosts} hosts: the trivial server used {step.server_cpu_percent:.0f} % of its CPU — it may be "
                    "part of the limit, so no larger steps were run"
                )
                break
            if (
                step.limited
                and previous is not None
                and (previous.limited or step.requests_per_second < previous.requests_per_second * PLATEAU_GROWTH)
            ):
                break
            previous = step
        server.child.stop()
        report.problems.extend(server_findings(server))  # reads the server log: before the temp dir goes
    summarise(report)
    return report


def is_limited(step: Step, first: Step | None) -> bool:
    """The generator is the limit: its CPU is saturated, or its hosts fall behind their schedule (bursts of work
    queue up before the average CPU use reaches 100 %)."""
    if step.generator_cpu_percent >= SATURATED_CPU_PERCENT:
        return True
    unloaded = first is not None and first.generator_cpu_percent < SATURATED_CPU_PERCENT / 2
    return (
        first is not None
        and unloaded
        and step.requests_per_host_second < BEHIND_FRACTION * first.requests_per_host_second
    )


def summarise(report: Report) -> None:
    if not report.steps:
        return
    best = max(report.steps, key=lambda s: s.requests_per_second)
    report.saturated = any(s.limited for s in report.steps)
    report.capacity_requests_per_second = best.requests_per_second
    report.capacity_cpu_us_per_request = best.generator_cpu_us_per_request
    for base in report.baselines:
        if base.cpu_us_per_request == base.cpu_us_per_request and base.cpu_us_per_request > 0:
            report.overhead_ratios[base.client] = best.generator_cpu_us_per_request / base.cpu_us_per_request
        if base.server_cpu_percent > SERVER_BUSY_PERCENT:
            report.notes.append(
                f"baseline {base.client}: the trivial server used {base.server_cpu_percent:.0f} % of its CPU, so "
                f"this client was not saturated ({base.cpu_percent:.0f} % CPU); compare CPU µs/request, not req/s"
            )
    for step in report.steps:
        if step.errors:
            report.problems.append(f"{step.hosts} hosts: {step.errors} errors in the window")
        if step.other_cpu_percent > OTHER_LOAD_PERCENT:
            report.notes.append(
                f"{step.hosts} hosts: other processes used {step.other_cpu_percent:.0f} % of the generator's CPU "
                "during the window, so this step's figures are too low (run on a quiet machine)"
            )
    for base in report.baselines:
        if base.other_cpu_percent > OTHER_LOAD_PERCENT:
            report.notes.append(
                f"baseline {base.client}: other processes used {base.other_cpu_percent:.0f} % of its CPU"
            )
    beyond = [s for s in report.steps if s.hosts > best.hosts]
    worst = min(beyond, key=lambda s: s.requests_per_second, default=None)
    if worst is not None and worst.requests_per_second < COLLAPSE_FRACTION * best.requests_per_second:
        report.notes.append(
            f"overloaded, the generator makes fewer requests, not the same number: {worst.requests_per_second:,.0f} "
            f"req/s with {worst.hosts:,} hosts against {best.requests_per_second:,.0f} with {best.hosts:,} "
            f"(CPU per request {best.generator_cpu_us_per_request:,.0f} → {worst.generator_cpu_us_per_request:,.0f} "
            f"µs, TLS handshakes per 100 requests {best.handshakes_per_100_requests:.1f} → "
            f"{worst.handshakes_per_100_requests:.1f})"
        )
    if not report.saturated:
        report.notes.append(
            f"the generator never reached {SATURATED_CPU_PERCENT:.0f} % CPU nor fell behind its schedule: the "
            "capacity is at least the best figure (run larger steps)"
        )


# --- output --------------------------------------------------------------------------------------------------------


def table(header: Sequence[str], rows: Sequence[Sequence[str]], left: int = 1) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    lines = []
    for row in (header, *rows):
        cells = [c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))]
        lines.append("  ".join(cells).rstrip())
    return lines


def other_percent(value: float) -> str:
    """Other load on the core: "n/a" without pinning; small negative values are accounting noise."""
    return "n/a" if value != value else f"{max(0.0, value):.0f} %"


def render(report: Report) -> str:
    cpus = (
        f"osqueryd-sim load and the baseline clients on CPU {report.generator_cpus}, "
        f"the trivial server on CPU {report.server_cpus}"
        if report.generator_cpus
        else "no CPU pinning"
    )
    orbit = " --with-orbit" if report.with_orbit else ""
    lines = [
        f"osqueryd-sim load{orbit} against a trivial TLS server (starlette+uvicorn, httptools, uvloop); {cpus}",
        f"intervals: distributed {report.distributed_interval} s, logger_tls_period {report.logger_tls_period} s, "
        f"config_refresh {report.config_refresh} s; windows of {report.seconds:g} s once every host is past its "
        "start-up calls",
        "",
    ]
    header = (
        "hosts",
        "req/s",
        "req/s/host",
        "gen CPU",
        "CPU µs/req",
        "TLS hs/100 req",
        "read p50 ms",
        "read p99 ms",
        "errors",
        "srv CPU",
        "other CPU",
        "gen RSS MiB",
        "limited",
    )
    rows = [
        (
            f"{s.hosts:,}",
            f"{s.requests_per_second:,.0f}",
            f"{s.requests_per_host_second:.2f}",
            f"{s.generator_cpu_percent:.0f} %",
            f"{s.generator_cpu_us_per_request:,.0f}",
            f"{s.handshakes_per_100_requests:.1f}",
            f"{s.read_p50_ms:,.1f}",
            f"{s.read_p99_ms:,.1f}",
            str(s.errors),
            f"{s.server_cpu_percent:.0f} %",
            other_percent(s.other_cpu_percent),
            f"{s.generator_rss_mib:.0f}",
            "yes" if s.limited else "",
        )
        for s in report.steps
    ]
    if rows:
        lines += table(header, rows, left=0)
    base_header = (
        "baseline client",
        "conns",
        "req/s",
        "CPU",
        "CPU µs/req",
        "p50 ms",
        "p99 ms",
        "errors",
        "srv CPU",
        "other CPU",
    )
    base_rows = [
        (
            b.client,
            str(b.connections),
            f"{b.requests_per_second:,.0f}",
            f"{b.cpu_percent:.0f} %",
            f"{b.cpu_us_per_request:,.0f}",
            f"{b.p50_ms:.2f}",
            f"{b.p99_ms:.2f}",
            str(b.errors),
            f"{b.server_cpu_percent:.0f} %",
            other_percent(b.other_cpu_percent),
        )
        for b in report.baselines
    ]
    if base_rows:
        lines += ["", *table(base_header, base_rows)]
    if report.steps:
        approx = "≈" if report.saturated else "≥"
        lines += [
            "",
            f"one core of osqueryd-sim load generates {approx} {report.capacity_requests_per_second:,.0f} req/s "
            f"(≈ {report.capacity_cpu_us_per_request:,.0f} µs CPU per request)",
            f"  (1 s / {report.capacity_cpu_us_per_request:,.0f} µs = {1e6 / report.capacity_cpu_us_per_request:,.0f} "
            "req/s would need the whole core, but its hosts fall behind before that: bursts queue up)",
        ]
        for name, ratio in report.overhead_ratios.items():
            lines.append(f"  CPU per request, osqueryd-sim load / {name}: {ratio:.1f}×")
    lines += [
        "req/s, CPU and TLS handshakes (server side): measured window only; read p50/p99: distributed/read latency "
        "as the generator saw it, over its whole run",
        "other CPU: the generator's core busy with other processes or stolen by the hypervisor (interrupts not "
        "counted; approximate)",
        f"limited: the generator is the limit (CPU ≥ {SATURATED_CPU_PERCENT:.0f} %, or its hosts make less than "
        f"{BEHIND_FRACTION:.0%} of the first step's requests per host)",
    ]
    lines += [f"note: {n}" for n in report.notes]
    lines += ["", "problems: " + ("none" if not report.problems else "")]
    lines += [f"  - {p}" for p in report.problems]
    return "\n".join(lines)


def host_counts(text: str) -> list[int]:
    try:
        counts = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected positive numbers separated by commas, got {text!r}") from None
    if any(count < 1 for count in counts):
        raise argparse.ArgumentTypeError(f"host counts must be positive, got {text!r}")
    return counts


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, help="measured window per step (default 10, 3 with --quick)")
    parser.add_argument("--quick", action="store_true", help="3 s windows and fewer, coarser steps")
    parser.add_argument("--hosts", type=host_counts, help="host counts to step through (a,b,…)")
    parser.add_argument("--distributed_interval", type=int, default=1, help="seconds (default 1)")
    parser.add_argument("--logger_tls_period", type=int, default=1, help="seconds (default 1)")
    parser.add_argument("--config_refresh", type=int, default=6, help="seconds (default 6: Fleet's 60:10 ratio)")
    parser.add_argument("--no-orbit", action="store_true", help="run the generator without --with-orbit")
    parser.add_argument("--connections", type=int, default=BASELINE_CONNECTIONS, help="baseline connections")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--serve-trivial", metavar="READY_FILE", help=argparse.SUPPRESS)
    parser.add_argument("--tls-dir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.seconds is None:
        args.seconds = 3.0 if args.quick else 10.0
    if args.seconds <= 0 or args.connections < 1 or args.distributed_interval < 1 or args.config_refresh < 1:
        parser.error("--seconds, --connections, --distributed_interval and --config_refresh must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve_trivial:
        return serve_trivial(
            Path(args.serve_trivial), Path(args.tls_dir), args.distributed_interval, args.logger_tls_period
        )
    terminated = forward_sigterm()
    options = Options(
        seconds=args.seconds,
        settle=1.0 if args.quick else 2.0,
        steps=tuple(args.hosts) if args.hosts else (QUICK_STEPS if args.quick else FULL_STEPS),
        distributed_interval=args.distributed_interval,
        logger_tls_period=args.logger_tls_period,
        config_refresh=args.config_refresh,
        with_orbit=not args.no_orbit,
        baseline_connections=args.connections,
        as_json=args.json,
    )
    try:
        report = run(options)
    except KeyboardInterrupt:
        progress("interrupted; processes stopped and temporary files removed")
        return 128 + (signal.SIGTERM if terminated else signal.SIGINT)
    except (BenchmarkError, OSError, subprocess.SubprocessError, httpx.HTTPError) as exc:
        progress(f"error: {exc}")
        return 1
    print(json.dumps(json_safe(asdict(report)), indent=2, allow_nan=False) if options.as_json else render(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
