"""fleet-stub under hostile clients (issue 15; goal: 1 000 hostile connections cost legitimate agents < 2× p99 and 0
errors): simulated agents' latency and errors while hostile connections run, next to the same agents with no attack,
measured in the same run in alternating windows.

What runs:

* ``fleet-stub serve`` pinned to the first CPU (a scenario may start it under a lower open-files limit, or with
  ``FLEET_STUB_WHEN_FULL``); ``--hosts`` hosts are enrolled.
* **Agents**, in this process on the second CPU: one coroutine per host with its own keep-alive TLS connection, a
  request every ``--interval`` s (osquery's mix: 8 × ``distributed/read``, then ``config``, then ``log``), and a
  new connection every ``--reconnect-every`` requests (connection churn: restarts, Connection: close, pools). They run
  all the time; every request is stamped, and each window takes its own.
* **Attacker**, this script in a second process (``--attack``) on the second CPU too, holding ``--hostile``
  connections: 40 % idle TLS, 20 % TLS handshakes never finished, 20 % slowloris headers, 10 % slow bodies, 5 % huge
  headers (150 MiB, sent as fast as the stub reads), 5 % oversized bodies (a 200 MB ``log``, an 80 MB ``carve/block``
  for no session). Whatever the stub closes or answers comes back after 1 s.
* Windows alternate: quiet, attack (started once the attacker holds its connections), ``--repeats`` times. Per
  window: the agents' requests, p50/p99, errors (connect/TLS failures, resets, timeouts, non-200), the stub's CPU,
  and what the stub's limits did (its ``/metrics`` counters).

Scenarios: ``default`` (the stub's defaults: its cap is far above the attack), and two with room for fewer
connections than the attack brings (a 768-descriptor open-files limit, cap 656): ``shed-idle`` (the default policy)
and ``refuse-new`` — the measurement behind ADR 0014's choice.

    .venv/bin/python benchmarks/stub_under_attack.py [--quick] [--scenarios default,shed-idle,refuse-new] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import re
import secrets
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
from bench_support import cpu_affinity, event_loop_factory, forward_sigterm, json_safe, realtime_priority
from stub_throughput import (
    BenchmarkError,
    ServerProcess,
    Target,
    close_quietly,
    enroll_hosts,
    fleet_stub_command,
    host_and_port,
    plan_cpus,
    read_json_file,
    read_response,
    request_body,
    wait_for_file,
)

MIB = 1024 * 1024
REQUEST_TIMEOUT = 10.0
COME_BACK_AFTER = 1.0
LOW_OPEN_FILES = 768
STATUS_PREFIX = "ATTACKER "
SCENARIOS: dict[str, dict[str, str]] = {
    "default": {},
    "shed-idle": {"FLEET_STUB_WHEN_FULL": "shed-idle"},
    "refuse-new": {"FLEET_STUB_WHEN_FULL": "refuse-new"},
}
LOW_LIMIT_SCENARIOS = ("shed-idle", "refuse-new")
MIX = (
    ("idle_tls", 40),
    ("no_handshake", 20),
    ("slowloris", 20),
    ("slow_body", 10),
    ("huge_header", 5),
    ("big_body", 5),
)
OPEN_FILES_WRAPPER = (
    "import os, resource, sys; n = int(sys.argv[1]); resource.setrlimit(resource.RLIMIT_NOFILE, (n, n)); "
    "os.execv(sys.argv[2], sys.argv[2:])"
)


def progress(message: str) -> None:
    print(f"stub_under_attack: {message}", file=sys.stderr, flush=True)


# --- the attacker (its own process: --attack) ----------------------------------------------------------------------


class Attacker:
    def __init__(self, host: str, port: int, ca: str, hostile: int, mix: dict[str, int]) -> None:
        self.host, self.port = host, port
        self.mix = mix
        self.context = ssl.create_default_context(cafile=ca)
        self.hostile = hostile
        self.open = 0
        self.counts: Counter[str] = Counter()

    async def tls(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.wait_for(
            asyncio.open_connection(self.host, self.port, ssl=self.context, server_hostname="localhost"), 30
        )

    async def hold(self, kind: str, attack: Callable[[], Coroutine[Any, Any, None]]) -> None:
        while True:
            try:
                await attack()
            except (OSError, EOFError, TimeoutError, asyncio.IncompleteReadError):
                self.counts[f"{kind}_failed"] += 1
            await asyncio.sleep(COME_BACK_AFTER)

    @contextlib.asynccontextmanager
    async def counted(self, kind: str, writer: asyncio.StreamWriter) -> Any:
        self.open += 1
        self.counts[f"{kind}_opened"] += 1
        try:
            yield
        finally:
            self.open -= 1
            writer.transport.abort()

    async def until_answer(self, kind: str, reader: asyncio.StreamReader) -> None:
        with contextlib.suppress(OSError, EOFError):
            first = await reader.read(64)
            status = first.split(b" ", 2)[1].decode(errors="replace") if first.startswith(b"HTTP/") else "closed"
            self.counts[f"{kind}_{status}"] += 1

    async def idle_tls(self) -> None:
        reader, writer = await self.tls()
        async with self.counted("idle_tls", writer):
            await self.until_answer("idle_tls", reader)

    async def no_handshake(self) -> None:
        reader, writer = await asyncio.open_connection(self.host, self.port)
        async with self.counted("no_handshake", writer):
            await self.until_answer("no_handshake", reader)

    async def dribbled(self, kind: str, head: bytes) -> None:
        reader, writer = await self.tls()
        async with self.counted(kind, writer):
            writer.write(head)
            answer = asyncio.create_task(self.until_answer(kind, reader))
            while not answer.done() and not writer.transport.is_closing():
                writer.write(b"a")
                await asyncio.wait([answer], timeout=1.0)
            await answer

    async def slowloris(self) -> None:
        await self.dribbled("slowloris", b"POST /api/osquery/config HTTP/1.1\r\nHost: stub\r\nX-Slow: ")

    async def slow_body(self) -> None:
        head = b"POST /api/osquery/enroll HTTP/1.1\r\nHost: stub\r\nContent-Length: 100000\r\n\r\n{"
        await self.dribbled("slow_body", head)

    async def streamed(self, kind: str, head: bytes, size: int, tail: bytes = b"") -> None:
        reader, writer = await self.tls()
        async with self.counted(kind, writer):
            writer.write(head)
            answer = asyncio.create_task(self.until_answer(kind, reader))
            chunk, sent = b"QUJD" * 16384, 0
            while sent < size and not answer.done() and not writer.transport.is_closing():
                writer.write(chunk)
                await writer.drain()
                sent += len(chunk)
                await asyncio.sleep(0)
            if tail and not answer.done() and not writer.transport.is_closing():
                writer.write(tail)
            await asyncio.wait_for(answer, 120)

    async def huge_header(self) -> None:
        head = b"POST /api/osquery/config HTTP/1.1\r\nHost: stub\r\nX-Huge: "
        await self.streamed("huge_header", head, 150 * MIB, b"\r\n\r\n")

    async def big_body(self) -> None:
        if self.counts["big_body_opened"] % 2 == 0:
            head = b"POST /api/osquery/log HTTP/1.1\r\nHost: stub\r\nContent-Length: 200000000\r\n\r\n"
            await self.streamed("big_body", head, 200_000_000)
        else:
            data = b'{"block_id": 0, "session_id": "none", "request_id": "q", "data": "'
            head = b"POST /api/osquery/carve/block HTTP/1.1\r\nHost: stub\r\nContent-Length: %d\r\n\r\n" % (
                len(data) + 80 * MIB + 2
            )
            await self.streamed("big_body", head + data, 80 * MIB, b'"}')

    async def run(self) -> None:
        kinds = [kind for kind, share in self.mix.items() for _ in range(round(self.hostile * share / 100))]
        tasks = [asyncio.create_task(self.hold(kind, getattr(self, kind))) for kind in kinds]
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        while not stop.is_set():
            print(STATUS_PREFIX + json.dumps({"open": self.open, "counts": self.counts}), flush=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        print(STATUS_PREFIX + json.dumps({"open": self.open, "counts": self.counts, "final": True}), flush=True)


def attack_main(spec: str) -> int:
    host, port, ca, hostile, mix = spec.split(",", 4)
    attacker = Attacker(host, int(port), ca, int(hostile), parse_mix(mix))
    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        runner.run(attacker.run())
    return 0


def parse_mix(text: str) -> dict[str, int]:
    """``kind=percent,…`` (the kinds of MIX)."""
    mix = {}
    for item in text.split(","):
        kind, _, share = item.partition("=")
        if kind not in dict(MIX) or not share.isdigit():
            raise ValueError(f"bad mix item {item!r}: KIND=PERCENT with KIND one of {', '.join(dict(MIX))}")
        mix[kind] = int(share)
    return mix


class AttackerProcess:
    def __init__(self, target: Target, hostile: int, mix: dict[str, int], stack: contextlib.ExitStack) -> None:
        text = ",".join(f"{kind}={share}" for kind, share in mix.items())
        spec = f"{target.host},{target.port},{target.ca_cert},{hostile},{text}"
        self._popen = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--attack", spec],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
            # It shares the agents' CPU: at the lowest priority, it gets what they leave, and their latency stays
            # the stub's (on a real network attacker and agents are different machines).
            preexec_fn=lambda: os.nice(19),  # noqa: PLW1509 - no threads yet at this point of the benchmark
        )
        stack.callback(self.stop)
        self.status: dict[str, Any] = {"open": 0, "counts": {}}
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self._popen.stdout is not None
        for line in self._popen.stdout:
            if line.startswith(STATUS_PREFIX):
                self.status = json.loads(line.removeprefix(STATUS_PREFIX))

    def wait_holding(self, wanted: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and int(self.status.get("open", 0)) < wanted:
            time.sleep(0.2)

    def stop(self) -> dict[str, Any]:
        if self._popen.poll() is None:
            self._popen.send_signal(signal.SIGTERM)
            try:
                self._popen.wait(60)
            except subprocess.TimeoutExpired:
                self._popen.kill()
                self._popen.wait()
        self._reader.join(10)
        return self.status


# --- the agents (a thread of this process) --------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    at: float
    latency: float
    error: str | None
    late: float  # how late the agent's own loop woke up to send it (client-side lag, not the stub's)
    fresh: bool  # sent on a new connection (its latency includes the TCP and TLS handshakes)


class Agents:
    """``len(hosts)`` osquery-like hosts on their own keep-alive connections, in a thread with its own loop."""

    PATHS = ("/api/v1/osquery/distributed/read",) * 8 + ("/api/v1/osquery/config", "/api/v1/osquery/log")

    def __init__(self, target: Target, hosts: Sequence[tuple[str, str]], interval: float, reconnect_every: int) -> None:
        self._target = target
        self._hosts = hosts
        self._interval = interval
        self._reconnect_every = reconnect_every
        self.samples: list[Sample] = []
        self.realtime = False
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(60)

    def _run(self) -> None:
        self.realtime = realtime_priority()
        with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
            runner.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        context = ssl.create_default_context(cafile=str(self._target.ca_cert))
        agents = [asyncio.create_task(self._agent(n, host, context)) for n, host in enumerate(self._hosts)]
        await self._stop.wait()
        for agent in agents:
            agent.cancel()
        await asyncio.gather(*agents, return_exceptions=True)

    async def _agent(self, number: int, host: tuple[str, str], context: ssl.SSLContext) -> None:
        identifier, key = host
        loop = asyncio.get_running_loop()
        next_at = loop.time() + random.random() * self._interval
        reader: asyncio.StreamReader | None = None
        writer: asyncio.StreamWriter | None = None
        # agents reconnect in turn, not all in the same second (every window then holds its share of new connections)
        count = random.randrange(self._reconnect_every) if self._reconnect_every else 0
        wire_host = f"{self._target.host}:{self._target.port}".encode()
        while True:
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            late = max(0.0, loop.time() - next_at)
            next_at += self._interval
            count += 1
            path = self.PATHS[(number + count) % len(self.PATHS)]
            body = request_body(path, identifier, key, count)
            wire = (
                b"POST " + path.encode() + b" HTTP/1.1\r\nHost: " + wire_host + b"\r\nContent-Type: application/json"
                b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
            )
            started = time.perf_counter()
            error: str | None = None
            closes = False
            fresh = reader is None or writer is None or reader.at_eof()
            try:
                if reader is None or writer is None or reader.at_eof():  # a pool's check before reuse
                    if writer is not None:
                        await close_quietly(writer)
                    async with asyncio.timeout(REQUEST_TIMEOUT):
                        reader, writer = await asyncio.open_connection(
                            self._target.host, self._target.port, ssl=context, server_hostname="localhost"
                        )
                writer.write(wire)
                async with asyncio.timeout(REQUEST_TIMEOUT):
                    status, closes = await read_response(reader)
                if status != 200:
                    error = f"status {status}"
            except TimeoutError:
                error, closes = "timeout", True
            except (OSError, EOFError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
                error, closes = type(exc).__name__, True
            self.samples.append(Sample(time.perf_counter(), time.perf_counter() - started, error, late, fresh))
            if writer is not None and (closes or (self._reconnect_every and count % self._reconnect_every == 0)):
                await close_quietly(writer)
                reader = writer = None


# --- the stub -------------------------------------------------------------------------------------------------------


def start_stub(
    work: Path,
    secret: str,
    env: dict[str, str],
    open_files: int | None,
    cpus: frozenset[int] | None,
    stack: Any,
    workers: int = 1,
) -> Target:
    data_dir = work / "stub"
    prefix = [sys.executable, "-c", OPEN_FILES_WRAPPER, str(open_files)] if open_files else []
    argv = [*prefix, *fleet_stub_command(), "serve", "--data-dir", str(data_dir), "--listen", "127.0.0.1:0"]
    if workers > 1:
        argv += ["--workers", str(workers)]  # all of them on the stub's CPU, like the single process
    full_env = {**os.environ, "FLEET_STUB_ENROLL_SECRET": secret, **env}
    if prefix and not Path(argv[len(prefix)]).is_absolute():
        raise BenchmarkError("fleet-stub must be an absolute path for the open-files wrapper")
    process = ServerProcess("fleet-stub", argv, env=full_env, log_path=work / "fleet-stub.out", cpus=cpus, stack=stack)
    wait_for_file(data_dir / "server.json", process)
    info = read_json_file(data_dir / "server.json")
    host, port = host_and_port(str(info["url"]))
    return Target("fleet-stub", host, port, Path(str(info["ca_cert"])), process, str(info["admin_token"]))


METRIC = re.compile(r"^fleet_stub_((?:connections|requests|tls)_\w+)_total (\d+)$", re.MULTILINE)
COUNTED = (
    "connections_shed_unproven",
    "connections_shed_proven",
    "connections_refused",
    "connections_without_request_closed",
    "tls_handshakes_timed_out",
    "tls_handshakes_failed",
    "requests_header_timeouts",
    "requests_body_timeouts",
    "requests_headers_too_large",
)


def limit_counters(admin: httpx.Client) -> Counter[str]:
    for _attempt in range(5):
        with contextlib.suppress(httpx.HTTPError):
            text = admin.get("/metrics").text
            return Counter({name: int(value) for name, value in METRIC.findall(text)})
    return Counter()


# --- windows --------------------------------------------------------------------------------------------------------


@dataclass
class Window:
    scenario: str
    kind: str  # quiet | attack
    round: int
    seconds: float
    requests: int
    p50_ms: float
    p99_ms: float
    p99_keepalive_ms: float  # requests on an open connection (what an osqueryd holding its connections sees)
    p99_new_connection_ms: float  # requests that opened a connection first
    errors: int
    error_kinds: dict[str, int]
    stub_cpu_percent: float
    agent_lag_p99_ms: float
    hostile_open: int
    limits: dict[str, int]
    agents_realtime: bool  # the agents' thread ran at SCHED_FIFO (see realtime_priority)


def percentile_ms(values: Sequence[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return 1000 * ordered[min(len(ordered) - 1, math.floor(fraction * len(ordered)))]


def measure_window(
    scenario: str, kind: str, number: int, seconds: float, stub: Target, agents: Agents, admin: httpx.Client
) -> tuple[float, float, Counter[str], float]:
    before = limit_counters(admin)
    cpu_before = stub.process.cpu_seconds()
    start = time.perf_counter()
    time.sleep(seconds)
    end = time.perf_counter()
    cpu = stub.process.cpu_seconds() - cpu_before
    after = limit_counters(admin)
    progress(f"{scenario}: {kind} window {number + 1} done")
    return start, end, after - before, 100 * cpu / (end - start)


def summarize(
    scenario: str, kind: str, number: int, span: tuple[float, float], agents: Agents, limits: Counter[str], cpu: float
) -> Window:
    start, end = span
    taken = [s for s in agents.samples if start <= s.at < end]
    errors = Counter(s.error for s in taken if s.error)
    return Window(
        scenario=scenario,
        kind=kind,
        round=number + 1,
        seconds=end - start,
        requests=len(taken),
        p50_ms=percentile_ms([s.latency for s in taken if not s.error], 0.50),
        p99_ms=percentile_ms([s.latency for s in taken], 0.99),
        p99_keepalive_ms=percentile_ms([s.latency for s in taken if not s.fresh], 0.99),
        p99_new_connection_ms=percentile_ms([s.latency for s in taken if s.fresh], 0.99),
        errors=sum(errors.values()),
        error_kinds=dict(errors),
        stub_cpu_percent=cpu,
        agent_lag_p99_ms=percentile_ms([s.late for s in taken], 0.99),
        hostile_open=0,
        limits={name: limits[name] for name in COUNTED if limits[name]},
        agents_realtime=agents.realtime,
    )


def scenario_label(scenario: str, workers: int) -> str:
    return scenario if workers == 1 else f"{scenario}/{workers}w"


def run_scenario(
    scenario: str, workers: int, rounds: Sequence[int], options: argparse.Namespace, cpus: tuple[Any, Any]
) -> list[Window]:
    """One stub (``workers`` processes) through ``rounds`` quiet/attack rounds of ``scenario``."""
    server_cpus, _load_cpus = cpus
    open_files = LOW_OPEN_FILES if scenario in LOW_LIMIT_SCENARIOS else None
    windows: list[Window] = []
    secret = secrets.token_urlsafe(16)
    label = scenario_label(scenario, workers)
    with contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="stub-attack-")))
        with cpu_affinity(server_cpus):
            stub = start_stub(work, secret, SCENARIOS[scenario], open_files, server_cpus, stack, workers)
        progress(f"{label}: enrolling {options.hosts} hosts")
        hosts = enroll_hosts(stub, secret, options.hosts)
        agents = Agents(stub, hosts, options.interval, options.reconnect_every)
        agents.start()
        stack.callback(agents.stop)
        context = ssl.create_default_context(cafile=str(stub.ca_cert))
        admin = stack.enter_context(
            httpx.Client(
                base_url=stub.url,
                verify=context,
                trust_env=False,
                timeout=30,
                headers={"Authorization": f"Bearer {stub.admin_token}"},
            )
        )
        limit_counters(admin)  # its keep-alive connection is proven before any attack
        time.sleep(min(5.0, options.window))  # agents settle: every one has connected
        for number in rounds:
            start, end, limits, cpu = measure_window(label, "quiet", number, options.window, stub, agents, admin)
            windows.append(summarize(label, "quiet", number, (start, end), agents, limits, cpu))
            attacker = AttackerProcess(stub, options.hostile, options.mix, stack)
            attacker.wait_holding(int(0.9 * options.hostile) if open_files is None else 1, 30)
            time.sleep(2.0 if open_files is None else 5.0)  # the attacker's ramp, then steady pressure
            start, end, limits, cpu = measure_window(label, "attack", number, options.window, stub, agents, admin)
            window = summarize(label, "attack", number, (start, end), agents, limits, cpu)
            window.hostile_open = int(attacker.status.get("open", 0))
            windows.append(window)
            attacker.stop()
            time.sleep(2.0)  # what the attack left behind drains before the next quiet window
        agents.stop()
        stub.process.stop()
        if stub.process.exit_code != 0:
            progress(f"{label}: fleet-stub exited with {stub.process.exit_code}")
    return windows


@dataclass
class Report:
    hosts: int
    interval: float
    reconnect_every: int
    hostile: int
    window: float
    repeats: int
    mix: dict[str, int]
    windows: list[Window] = field(default_factory=list)
    ratios: dict[str, dict[str, float]] = field(default_factory=dict)


def ratios(windows: Sequence[Window]) -> dict[str, dict[str, float]]:
    found: dict[str, dict[str, float]] = {}
    for scenario in dict.fromkeys(w.scenario for w in windows):
        pairs = [
            (q, a)
            for q in windows
            for a in windows
            if q.scenario == a.scenario == scenario and q.round == a.round and q.kind == "quiet" and a.kind == "attack"
        ]
        each = [a.p99_ms / q.p99_ms for q, a in pairs if q.p99_ms]
        kept = [a.p99_keepalive_ms / q.p99_keepalive_ms for q, a in pairs if q.p99_keepalive_ms]
        found[scenario] = {
            "p99_ratio_min": min(each, default=float("nan")),
            "p99_ratio_median": statistics.median(each) if each else float("nan"),
            "p99_keepalive_ratio_median": statistics.median(kept) if kept else float("nan"),
            "attack_errors": float(sum(a.errors for _q, a in pairs)),
            "quiet_errors": float(sum(q.errors for q, _a in pairs)),
        }
    return found


def render(report: Report) -> str:
    mix = ", ".join(f"{share} % {kind}" for kind, share in report.mix.items())
    lines = [
        f"{report.hosts} agents (a request every {report.interval:g} s, a new connection every "
        f"{report.reconnect_every} requests); {report.hostile} hostile connections ({mix}), each back 1 s after the "
        f"stub closes it; {report.repeats} × ({report.window:g} s quiet, {report.window:g} s attacked)",
        "",
        "scenario    window   round  requests  p50 ms  p99 ms  (kept  new)  errors  stub CPU  agent lag p99  "
        "hostile open  what the limits did",
    ]
    for w in report.windows:
        did = ", ".join(f"{k} {v}" for k, v in w.limits.items()) or "-"
        hostile = str(w.hostile_open) if w.kind == "attack" else "-"
        lines.append(
            f"{w.scenario:<11} {w.kind:<7} {w.round:>6}  {w.requests:>8}  {w.p50_ms:>6.1f}  {w.p99_ms:>6.1f}  "
            f"({w.p99_keepalive_ms:>4.1f} {w.p99_new_connection_ms:>5.1f})  {w.errors:>6}  "
            f"{w.stub_cpu_percent:>6.0f} %  {w.agent_lag_p99_ms:>10.1f} ms  {hostile:>12}  {did}"
        )
        if w.error_kinds:
            lines.append(f"{'':>28}errors: {w.error_kinds}")
    lines += ["", "attacked / quiet p99 (same round), and errors:"]
    for scenario, r in report.ratios.items():
        lines.append(
            f"  {scenario:<11} p99 {r['p99_ratio_median']:.2f}× median, {r['p99_ratio_min']:.2f}× best "
            f"(requests on kept connections: {r['p99_keepalive_ratio_median']:.2f}× median); "
            f"errors attacked {r['attack_errors']:.0f}, quiet {r['quiet_errors']:.0f}"
        )
    realtime = all(w.agents_realtime for w in report.windows)
    lines.append(
        "agents at real-time priority: "
        + ("yes" if realtime else "no (not root?): their own CPU wait beside the attacker is in their latency")
    )
    lines.append(
        "scenarios: default = the stub's defaults; shed-idle / refuse-new = a 768-descriptor open-files limit "
        "(cap 656) with that FLEET_STUB_WHEN_FULL"
    )
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--scenarios", default="default,shed-idle,refuse-new", help="comma-separated (default: all)")
    parser.add_argument("--hosts", type=int, default=200, help="legitimate agents (default 200)")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between an agent's requests (default 1)")
    parser.add_argument("--reconnect-every", type=int, default=20, help="requests per agent connection (default 20)")
    parser.add_argument("--hostile", type=int, default=1000, help="hostile connections (default 1000)")
    parser.add_argument("--window", type=float, default=20.0, help="seconds per window (default 20)")
    parser.add_argument("--repeats", type=int, default=3, help="quiet/attack rounds per scenario (default 3)")
    parser.add_argument("--mix", type=parse_mix, default=dict(MIX), help="KIND=PERCENT,… of the hostile connections")
    parser.add_argument(
        "--workers",
        default="1",
        help="comma-separated fleet-stub --workers to compare (e.g. 1,2; default 1): with several, each round runs "
        "once per count, alternating, a fresh stub each time",
    )
    parser.add_argument("--quick", action="store_true", help="1 round of 8 s windows")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--attack", metavar="HOST,PORT,CA,N", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.window = 1, 8.0
    try:
        args.workers = [int(w) for w in args.workers.split(",")]
    except ValueError:
        parser.error("--workers must be comma-separated whole numbers")
    if not args.workers or min(args.workers) < 1:
        parser.error("--workers must be at least 1")
    unknown = set(args.scenarios.split(",")) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios: {', '.join(sorted(unknown))} (known: {', '.join(SCENARIOS)})")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.attack:
        return attack_main(args.attack)
    terminated = forward_sigterm()
    server_cpus, load_cpus = plan_cpus()
    if load_cpus is not None:
        os.sched_setaffinity(0, load_cpus)
    report = Report(
        args.hosts,
        args.interval,
        args.reconnect_every,
        args.hostile,
        args.window,
        args.repeats,
        args.mix,
    )
    try:
        for scenario in args.scenarios.split(","):
            if len(args.workers) == 1:
                report.windows += run_scenario(
                    scenario, args.workers[0], range(args.repeats), args, (server_cpus, load_cpus)
                )
                continue
            for number in range(args.repeats):  # A/B: every count once per round, the order flipped each round
                for workers in args.workers if number % 2 == 0 else list(reversed(args.workers)):
                    report.windows += run_scenario(scenario, workers, [number], args, (server_cpus, load_cpus))
    except KeyboardInterrupt:
        progress("interrupted; processes stopped")
        return 128 + (signal.SIGTERM if terminated else signal.SIGINT)
    except (BenchmarkError, OSError, subprocess.SubprocessError, httpx.HTTPError) as exc:
        progress(f"error: {exc}")
        return 1
    report.ratios = ratios(report.windows)
    print(json.dumps(json_safe(asdict(report)), indent=2, allow_nan=False) if args.json else render(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
