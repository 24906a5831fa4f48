"""Which HTTP layer fleet-stub runs on (ADR 0014), measured: one trivial starlette app over the stub's TLS, served by

* ``httptools``: stock uvicorn with httptools and uvloop, TLS by the loop — what the stub ran before issue 15 and the
  baseline of ``stub_throughput.py``;
* ``guarded``: the same httptools protocol wrapped with the stub's limits (``limited_http``) behind its connection
  guard (``connection_guard``: cap, shedding, TLS on the raw transport, deadlines) — what the stub runs now;
* ``h11``: uvicorn's pure-Python h11 protocol with ``h11_max_incomplete_event_size`` = 64 KiB, TLS by the loop.

For each: keep-alive and new-connection-per-request throughput (wrk; in close mode a full TLS handshake per request
as osqueryd makes them, through ``bench_support.build_full_handshake_shim``: wrk alone resumes its TLS session),
alternating the layers, repeated (median and best); then a huge-header attack — headers of ``--huge-mib`` MiB, each
sent as fast as the server takes it and ended with a blank line, one after another for ``--attack-seconds`` —
timing the answers, the server's CPU and a legitimate ping's latency meanwhile (a probe thread pinging every 10 ms
on its own keep-alive connection), next to the probe's latency alone for as long.

    .venv/bin/python benchmarks/stub_http_layers.py [--quick] [--repeats N] [--seconds N] [--huge-mib N] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import uvicorn
from bench_support import (
    ReadyGuardedServer,
    build_full_handshake_shim,
    cpu_affinity,
    forward_sigterm,
    json_safe,
    serve_tls_app,
)
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from stub_throughput import BenchmarkError, ServerProcess, plan_cpus, read_json_file, wait_for_file

from server_stub.connection_limits import ConnectionLimits
from server_stub.tls_material import ensure_self_signed

LAYERS = ("httptools", "guarded", "h11")
MIB = 1024 * 1024
H11_MAX_EVENT = 64 * 1024
PROBE_EVERY = 0.01
WRK_MARKER = "LAYER_RESULT "
WRK_SCRIPT = r"""
wrk.method = "POST"
wrk.body = '{"node_key":"0123456789abcdef0123456789abcdef"}'
wrk.headers["Content-Type"] = "application/json"
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('@MARKER@{"requests":%d,"duration_us":%d,"errors":%d,"p99_us":%d}\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.status + e.timeout,
    latency:percentile(99)))
end
"""


def progress(message: str) -> None:
    print(f"stub_http_layers: {message}", file=sys.stderr, flush=True)


# --- the servers (each its own process: --serve LAYER) -------------------------------------------------------------


async def answer(request: Request) -> Response:
    await request.body()
    return JSONResponse({"queries": {}})


async def ping(_request: Request) -> Response:
    return Response(status_code=200)


def serve(layer: str, ready: Path, tls_dir: Path) -> int:
    app = Starlette(routes=[Route("/", answer, methods=["POST", "GET"]), Route("/ping", ping, methods=["HEAD"])])
    http: Literal["httptools", "h11"] = "h11" if layer == "h11" else "httptools"

    def guarded(config: uvicorn.Config, on_ready: Callable[[], None]) -> uvicorn.Server:
        return ReadyGuardedServer(config, on_ready, ConnectionLimits())

    return serve_tls_app(
        lambda _context: app,
        tls_dir,
        ready,
        http=http,
        h11_max_incomplete_event_size=H11_MAX_EVENT if layer == "h11" else None,
        make_server=guarded if layer == "guarded" else None,
    )


@dataclass(frozen=True)
class Server:
    layer: str
    port: int
    process: ServerProcess


def start_servers(work: Path, cpus: frozenset[int] | None, stack: contextlib.ExitStack) -> list[Server]:
    tls = ensure_self_signed(work / "tls")
    servers = []
    for layer in LAYERS:
        ready = work / f"{layer}.json"
        argv = [sys.executable, str(Path(__file__).resolve()), "--serve", layer, str(ready), str(tls.cert.parent)]
        log_path = work / f"{layer}.out"
        process = ServerProcess(layer, argv, env=dict(os.environ), log_path=log_path, cpus=cpus, stack=stack)
        wait_for_file(ready, process)
        port = read_json_file(ready).get("port")
        if not isinstance(port, int):
            raise BenchmarkError(f"{layer} did not report its port")
        servers.append(Server(layer, port, process))
    return servers


# --- throughput --------------------------------------------------------------------------------------------------


@dataclass
class Throughput:
    layer: str
    mode: str
    requests_per_second: list[float] = field(default_factory=list)
    cpu_us_per_request: list[float] = field(default_factory=list)
    p99_ms: list[float] = field(default_factory=list)
    errors: int = 0


def run_wrk(
    script: Path, server: Server, close: bool, seconds: int, connections: int, shim: Path | None = None
) -> dict[str, int]:
    """``shim``: in close mode, the LD_PRELOAD library that makes each reconnect a full TLS handshake (as osqueryd's
    are; wrk alone resumes its session, bench_support.build_full_handshake_shim)."""
    wrk = shutil.which("wrk")
    if wrk is None:
        raise BenchmarkError("wrk is needed (apt-get install wrk)")
    argv = [wrk, "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s", "-s", str(script)]
    env = dict(os.environ)
    if close:
        argv += ["-H", "Connection: close"]
        if shim is not None:
            env["LD_PRELOAD"] = str(shim)
    done = subprocess.run(
        [*argv, f"https://127.0.0.1:{server.port}/"],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=False,
        env=env,
    )
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith(WRK_MARKER)), None)
    if done.returncode != 0 or line is None:
        raise BenchmarkError(f"wrk failed: {done.stdout[-1000:]}{done.stderr[-1000:]}")
    parsed: dict[str, int] = json.loads(line.removeprefix(WRK_MARKER))
    return parsed


def measure_throughput(servers: Sequence[Server], options: argparse.Namespace, work: Path) -> list[Throughput]:
    script = work / "layers.lua"
    script.write_text(WRK_SCRIPT.replace("@MARKER@", WRK_MARKER), encoding="utf-8")
    shim, why = build_full_handshake_shim(work)
    progress(why)
    results = {(s.layer, mode): Throughput(s.layer, mode) for s in servers for mode in ("keep-alive", "close")}
    for repeat in range(options.repeats):
        order = list(servers[repeat % len(servers) :]) + list(servers[: repeat % len(servers)])  # alternate
        for mode in ("keep-alive", "close"):
            for server in order:
                progress(f"round {repeat + 1}/{options.repeats}: {server.layer} {mode}")
                run_wrk(script, server, mode == "close", 1, options.connections, shim)  # warm-up
                cpu_before = server.process.cpu_seconds()
                figures = run_wrk(script, server, mode == "close", options.seconds, options.connections, shim)
                cpu = server.process.cpu_seconds() - cpu_before
                result = results[(server.layer, mode)]
                seconds = figures["duration_us"] / 1e6
                result.requests_per_second.append(figures["requests"] / seconds)
                result.cpu_us_per_request.append(1e6 * cpu / max(1, figures["requests"]))
                result.p99_ms.append(figures["p99_us"] / 1000)
                result.errors += figures["errors"]
    return list(results.values())


# --- the huge-header attack ----------------------------------------------------------------------------------------


class Probe:
    """A legitimate client: HEAD /ping every 10 ms on one keep-alive TLS connection, from its own thread."""

    def __init__(self, port: int, context: ssl.SSLContext) -> None:
        self._port = port
        self._context = context
        self._stop = threading.Event()
        self.latencies: list[float] = []
        self.failures = 0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Probe:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(60)

    def _connect(self) -> ssl.SSLSocket:
        raw = socket.create_connection(("127.0.0.1", self._port), timeout=30)
        return self._context.wrap_socket(raw, server_hostname="localhost")

    def _run(self) -> None:
        sock: ssl.SSLSocket | None = None
        while not self._stop.wait(PROBE_EVERY):
            started = time.perf_counter()
            try:
                sock = sock or self._connect()
                sock.sendall(b"HEAD /ping HTTP/1.1\r\nHost: probe\r\n\r\n")
                head = b""
                while b"\r\n\r\n" not in head:
                    chunk = sock.recv(4096)
                    if not chunk:
                        raise ConnectionError("closed")
                    head += chunk
                if not head.startswith(b"HTTP/1.1 200"):
                    raise ConnectionError(head[:40].decode(errors="replace"))
                self.latencies.append(time.perf_counter() - started)
            except OSError:
                self.failures += 1
                if sock is not None:
                    sock.close()
                sock = None
        if sock is not None:
            sock.close()


@dataclass
class Attack:
    layer: str
    answer: str
    attempts: int
    window_s: float
    answer_after_s_median: float
    sent_mib_per_attempt: float
    server_cpu_percent: float
    probe_p99_ms_quiet: float
    probe_p99_ms: float
    probe_max_ms: float
    probe_failures: int


def percentile_ms(samples: Sequence[float], fraction: float) -> float:
    if not samples:
        return float("nan")
    ordered = sorted(samples)
    return 1000 * ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def send_huge_header(port: int, context: ssl.SSLContext, size: int) -> tuple[bytes, float, int]:
    """One attempt: a ``size``-byte header as fast as the server takes it, then a blank line; stops at the answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname="localhost")
    started = time.perf_counter()
    writer.write(b"POST / HTTP/1.1\r\nHost: attacker\r\nContent-Length: 0\r\nX-Huge: ")
    got: list[bytes] = []

    async def read() -> None:
        with contextlib.suppress(OSError, EOFError):
            got.append(await reader.read(4096))

    reading = asyncio.create_task(read())
    sent = 0
    chunk = b"a" * 65536
    while sent < size and not reading.done() and not writer.transport.is_closing():
        writer.write(chunk)
        with contextlib.suppress(OSError):
            await writer.drain()
        sent += len(chunk)
        await asyncio.sleep(0)  # let the loop see an answer
    if not reading.done() and not writer.transport.is_closing():
        writer.write(b"\r\n\r\n")
    await asyncio.wait_for(reading, 600)
    elapsed = time.perf_counter() - started
    writer.transport.abort()
    return b"".join(got), elapsed, sent


async def attack_for(port: int, context: ssl.SSLContext, size: int, window: float) -> list[tuple[bytes, float, int]]:
    """Huge-header attempts one after another for ``window`` seconds (the last one may run past it)."""
    attempts: list[tuple[bytes, float, int]] = []
    ends = time.perf_counter() + window
    while not attempts or time.perf_counter() < ends:
        attempts.append(await send_huge_header(port, context, size))
    return attempts


def measure_attack(server: Server, context: ssl.SSLContext, size: int, window: float) -> Attack:
    with Probe(server.port, context) as quiet:
        time.sleep(window)  # the probe alone: its latency with no attack
    cpu_before = server.process.cpu_seconds()
    started = time.perf_counter()
    with Probe(server.port, context) as probe:
        attempts = asyncio.run(attack_for(server.port, context, size, window))
    elapsed = time.perf_counter() - started
    cpu = server.process.cpu_seconds() - cpu_before
    head = attempts[0][0]
    status = head.split(b"\r\n", 1)[0].decode(errors="replace") if head else "closed without an answer"
    return Attack(
        layer=server.layer,
        answer=status.removeprefix("HTTP/1.1 "),
        attempts=len(attempts),
        window_s=elapsed,
        answer_after_s_median=statistics.median(a[1] for a in attempts),
        sent_mib_per_attempt=statistics.mean(a[2] for a in attempts) / MIB,
        server_cpu_percent=100 * cpu / elapsed,
        probe_p99_ms_quiet=percentile_ms(quiet.latencies, 0.99),
        probe_p99_ms=percentile_ms(probe.latencies, 0.99),
        probe_max_ms=1000 * max(probe.latencies, default=float("nan")),
        probe_failures=probe.failures,
    )


# --- the run -------------------------------------------------------------------------------------------------------


@dataclass
class Report:
    repeats: int
    seconds: int
    connections: int
    huge_mib: int
    attack_seconds: float
    server_cpus: list[int] | None
    throughput: list[Throughput] = field(default_factory=list)
    attacks: list[Attack] = field(default_factory=list)


def run(options: argparse.Namespace) -> Report:
    server_cpus, load_cpus = plan_cpus()
    if load_cpus is not None:
        os.sched_setaffinity(0, load_cpus)
    report = Report(
        options.repeats,
        options.seconds,
        options.connections,
        options.huge_mib,
        options.attack_seconds,
        sorted(server_cpus or []) or None,
    )
    with contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="stub-layers-")))
        with cpu_affinity(server_cpus):
            servers = start_servers(work, server_cpus, stack)
        context = ssl.create_default_context(cafile=str(work / "tls" / "ca.pem"))
        report.throughput = measure_throughput(servers, options, work)
        for server in servers:
            progress(f"{options.huge_mib} MiB header → {server.layer}")
            report.attacks.append(measure_attack(server, context, options.huge_mib * MIB, options.attack_seconds))
        for server in servers:
            server.process.stop()
    return report


def render(report: Report) -> str:
    lines = [
        f"HTTP layers on one trivial app over the stub's TLS; wrk -t1 -c{report.connections}, "
        f"{report.repeats} × {report.seconds} s per layer and mode, alternating; servers on CPU {report.server_cpus}",
        "",
        "layer      mode        req/s median (best)   CPU µs/req median   p99 ms median   errors",
    ]
    by_key = {(t.layer, t.mode): t for t in report.throughput}
    for mode in ("keep-alive", "close"):
        for layer in LAYERS:
            t = by_key[(layer, mode)]
            lines.append(
                f"{layer:<10} {mode:<10} {statistics.median(t.requests_per_second):>8,.0f} "
                f"({max(t.requests_per_second):>6,.0f})   {statistics.median(t.cpu_us_per_request):>15,.0f}   "
                f"{statistics.median(t.p99_ms):>13.2f}   {t.errors:>6}"
            )
    lines += ["", "ratio to stock httptools (median req/s):"]
    for mode in ("keep-alive", "close"):
        base = statistics.median(by_key[("httptools", mode)].requests_per_second)
        ratios = ", ".join(
            f"{layer} {statistics.median(by_key[(layer, mode)].requests_per_second) / base:.2f}×" for layer in LAYERS
        )
        lines.append(f"  {mode:<10} {ratios}")
    lines += [
        "",
        f"huge-header attack: {report.huge_mib} MiB headers one after another for {report.attack_seconds:g} s; a ping "
        "every 10 ms on another connection, alone for as long before",
        "layer      answer                            attempts  answer s  MiB sent/attempt  server CPU"
        "  ping p99 alone → attacked ms  ping max ms  ping failures",
    ]
    for a in report.attacks:
        lines.append(
            f"{a.layer:<10} {a.answer[:32]:<32} {a.attempts:>9}  {a.answer_after_s_median:>8.3f}  "
            f"{a.sent_mib_per_attempt:>16.2f}  {a.server_cpu_percent:>8.0f} %  {a.probe_p99_ms_quiet:>10.1f} → "
            f"{a.probe_p99_ms:>8.1f}    {a.probe_max_ms:>9.1f}  {a.probe_failures:>13}"
        )
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--repeats", type=int, default=3, help="rounds of every layer and mode (default 3)")
    parser.add_argument("--seconds", type=int, default=5, help="seconds per measurement (default 5)")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (default 32)")
    parser.add_argument("--huge-mib", type=int, default=150, help="size of the attacking header (default 150)")
    parser.add_argument("--attack-seconds", type=float, default=10.0, help="length of the attack (default 10)")
    parser.add_argument("--quick", action="store_true", help="1 round of 2 s, 32 MiB headers for 3 s")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--serve", nargs=3, metavar=("LAYER", "READY_FILE", "TLS_DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.seconds, args.huge_mib, args.attack_seconds = 1, 2, 32, 3.0
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve:
        layer, ready, tls_dir = args.serve
        return serve(layer, Path(ready), Path(tls_dir))
    terminated = forward_sigterm()
    try:
        report = run(args)
    except KeyboardInterrupt:
        progress("interrupted; servers stopped")
        return 128 + (signal.SIGTERM if terminated else signal.SIGINT)
    except (BenchmarkError, OSError, subprocess.SubprocessError) as exc:
        progress(f"error: {exc}")
        return 1
    print(json.dumps(json_safe(asdict(report)), indent=2, allow_nan=False) if args.json else render(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
