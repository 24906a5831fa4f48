"""Soak (issue 8): ``--hosts`` simulated hosts plus one real orbit (with osqueryd-sim as its osqueryd) against one
fleet-stub for ``--minutes``, while the stub is restarted twice (same port, same data dir) and 5xx are injected.

fleet-stub has no fault-injection setting, so everything talks to the stub through this script's own asyncio TLS
proxy (the stub's certificate from ``DIR/tls/``; a hidden ``--serve-proxy`` mode). The proxy pipes bytes, except
during the fault window (SIGUSR1 on, SIGUSR2 off), when it drops its piped connections and answers every request
with ``503``.

Every host runs a snapshot query every 30 s (set through the admin API), so result logs flow all the time.
Reported: log lines lost/duplicated (the load summary, checked against the stub's own per-host counts), live
queries (alternately to the real host and to a simulated one) answered, and those unanswered split by whether a
restart or the 503 window was near them (an undisturbed unanswered query is a failure), whether orbit and osqueryd
were ever down (status.json and pids sampled every second), and RSS of the stub and orbit at start and end.

    .venv/bin/python benchmarks/soak.py [--minutes 10] [--hosts 2000] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
import psutil
from bench_support import event_loop_factory, forward_sigterm, json_safe

from server_stub.tls_material import server_ssl_context
from tests.support.orbit_world import SECRET, OrbitWorld, wait_for

REAL_TIMINGS = ("ORBIT_DEV_CONFIG_INTERVAL", "ORBIT_DEV_CONFIG_MAX_BACKOFF", "ORBIT_DEV_STATUS_INTERVAL")
STOP_TIMEOUT = 60.0
LIVE_QUERY_EVERY = 15.0
RECOVERY_SECONDS = 30.0  # after a restart or 503s, hosts come back within their 10 s intervals plus backoff
SCHEDULE_INTERVAL = 30


def progress(message: str) -> None:
    print(f"soak: {message}", file=sys.stderr, flush=True)


# --- the 5xx-injecting TLS proxy (hidden --serve-proxy mode) --------------------------------------------------------


class Proxy:
    def __init__(self, upstream_port: int, stats_path: Path) -> None:
        self.upstream_port = upstream_port
        self.stats_path = stats_path
        self.fault = False
        self.piped: set[asyncio.StreamWriter] = set()
        self.stats = {"connections": 0, "upstream_refused": 0, "answered_503": 0, "fault_windows": 0}
        self.client_context = ssl.create_default_context()
        self.client_context.check_hostname = False
        self.client_context.verify_mode = ssl.CERT_NONE  # loopback to our own stub

    def write_stats(self) -> None:
        partial = self.stats_path.with_suffix(".tmp")
        partial.write_text(json.dumps(self.stats), encoding="utf-8")
        partial.replace(self.stats_path)

    def set_fault(self, on: bool) -> None:
        self.fault = on
        if on:
            self.stats["fault_windows"] += 1
            for writer in list(self.piped):
                writer.transport.abort()
        self.write_stats()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.stats["connections"] += 1
        try:
            if self.fault:
                await self.answer_503(reader, writer)
            else:
                await self.pipe(reader, writer)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            pass
        finally:
            writer.transport.abort()

    async def answer_503(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        if length:
            await reader.readexactly(length)
        # What a real 5xx looks like: a load balancer's HTML page, or Fleet's own osquery-endpoint error (it always
        # says "error"). Not a JSON object without "error": osqueryd judges by the body, so it would take that
        # for success and drop the batch (the first 10-min run injected exactly that and "lost" 1 138 lines).
        if self.stats["answered_503"] % 2:
            body, kind = b"<html><body><h1>503 Service Temporarily Unavailable</h1></body></html>", b"text/html"
        else:
            body, kind = b'{"error":"service unavailable (injected by benchmarks/soak.py)"}', b"application/json"
        writer.write(
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: "
            + kind
            + b"\r\n"
            + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + body
        )
        await writer.drain()
        self.stats["answered_503"] += 1

    async def pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(
                "127.0.0.1", self.upstream_port, ssl=self.client_context, server_hostname="localhost"
            )
        except OSError:
            self.stats["upstream_refused"] += 1
            return
        self.piped.add(writer)
        self.piped.add(up_writer)

        async def copy(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.IncompleteReadError):
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            sink.transport.abort()

        try:
            await asyncio.gather(copy(reader, up_writer), copy(up_reader, writer))
        finally:
            self.piped.discard(writer)
            self.piped.discard(up_writer)
            up_writer.transport.abort()


async def serve_proxy_async(ready: Path, tls_dir: Path, upstream_port: int) -> None:
    proxy = Proxy(upstream_port, ready.with_suffix(".stats"))
    context = server_ssl_context(tls_dir / "server.pem", tls_dir / "server-key.pem")
    server = await asyncio.start_server(proxy.handle, "127.0.0.1", 0, ssl=context, backlog=4096)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, proxy.set_fault, True)
    loop.add_signal_handler(signal.SIGUSR2, proxy.set_fault, False)
    port = int(server.sockets[0].getsockname()[1])
    partial = ready.with_suffix(".tmp")
    partial.write_text(json.dumps({"port": port, "pid": os.getpid()}), encoding="utf-8")
    partial.replace(ready)
    await stop.wait()
    server.close()
    for writer in list(proxy.piped):
        writer.transport.abort()
    proxy.write_stats()


def serve_proxy(ready: Path, tls_dir: Path, upstream_port: int) -> int:
    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        runner.run(serve_proxy_async(ready, tls_dir, upstream_port))
    return 0


# --- the soak ---------------------------------------------------------------------------------------------------


@dataclass
class Samples:
    seconds: int = 0
    orbit_down: int = 0
    osqueryd_down: int = 0
    orbit_pids: list[int] = field(default_factory=list)
    osqueryd_pids: list[int] = field(default_factory=list)
    orbit_rss_mib: list[float] = field(default_factory=list)
    stub_rss_mib: dict[int, list[float]] = field(default_factory=dict)


@dataclass
class Report:
    minutes: float
    hosts: int
    events: list[str] = field(default_factory=list)
    log_lines: dict[str, object] = field(default_factory=dict)
    distributed: dict[str, object] = field(default_factory=dict)
    live_queries: dict[str, object] = field(default_factory=dict)
    load: dict[str, object] = field(default_factory=dict)
    proxy: dict[str, object] = field(default_factory=dict)
    orbit: dict[str, object] = field(default_factory=dict)
    stub: dict[str, object] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def stop_process(proc: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT) -> int:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def rss_mib(pid: int | None) -> float | None:
    if pid is None:
        return None
    try:
        return float(psutil.Process(pid).memory_info().rss) / 2**20
    except psutil.Error:
        return None


def kill_stub(world: OrbitWorld) -> None:
    stub = world.stub
    if stub is not None and stub.proc.poll() is None:
        stub.proc.kill()
        stub.proc.wait()


def drain_stub(world: OrbitWorld, log_path: Path) -> None:
    """StubProcess pipes the stub's stdout/stderr; in a long run nobody reads them and the stub blocks on logging."""
    stub = world.stub
    assert stub is not None

    def copy(stream: IO[str] | None) -> None:
        if stream is None:
            return
        with log_path.open("a", encoding="utf-8") as log:
            for line in stream:
                log.write(line)

    for stream in (stub.proc.stdout, stub.proc.stderr):
        threading.Thread(target=copy, args=(stream,), daemon=True).start()


def sampler(world: OrbitWorld, samples: Samples, stop: threading.Event) -> None:
    while not stop.wait(1.0):
        samples.seconds += 1
        service = world.service
        orbit_pid = service.pid if service is not None else None
        osqueryd_pid = world.osqueryd_pid()
        if orbit_pid is None:
            samples.orbit_down += 1
        elif orbit_pid not in samples.orbit_pids:
            samples.orbit_pids.append(orbit_pid)
        if osqueryd_pid is None or not psutil.pid_exists(osqueryd_pid):
            samples.osqueryd_down += 1
        elif osqueryd_pid not in samples.osqueryd_pids:
            samples.osqueryd_pids.append(osqueryd_pid)
        orbit_rss = rss_mib(orbit_pid)
        if orbit_rss is not None:
            samples.orbit_rss_mib.append(orbit_rss)
        stub = world.stub
        if stub is not None:
            stub_rss = rss_mib(stub.proc.pid)
            if stub_rss is not None:
                samples.stub_rss_mib.setdefault(stub.proc.pid, []).append(stub_rss)


@dataclass
class Disturbances:
    """When the stub was stopped or answered 503s (monotonic seconds), to judge live queries fairly."""

    windows: list[tuple[float, float]] = field(default_factory=list)
    open_since: float | None = None

    def begin(self) -> None:
        self.open_since = time.monotonic()

    def end(self) -> None:
        if self.open_since is not None:
            self.windows.append((self.open_since, time.monotonic()))
            self.open_since = None

    def overlaps(self, start: float, end: float) -> bool:
        """A query is disturbed when a window (plus the hosts' recovery time) touches it."""
        spans = [*self.windows, *([(self.open_since, end)] if self.open_since is not None else [])]
        return any(w_start <= end and start <= w_end + RECOVERY_SECONDS for w_start, w_end in spans)


@dataclass
class LiveQueryCounts:
    sent: int = 0
    answered: int = 0
    unanswered_clean: int = 0  # neither a restart nor the 503 window near it: a real failure
    unanswered_disturbed: int = 0
    skipped_stub_down: int = 0
    by_target: dict[str, int] = field(default_factory=lambda: {"real orbit host": 0, "simulated hosts": 0})


def live_queries(
    world: OrbitWorld,
    targets: Callable[[int], tuple[str, int]],
    counts: LiveQueryCounts,
    disturbances: Disturbances,
    stop: threading.Event,
    event: Callable[[str], None],
) -> None:
    """Every LIVE_QUERY_EVERY s a live query through the admin API, alternately to the real host and a sim host."""
    round_number = 0
    while not stop.wait(LIVE_QUERY_EVERY):
        if world.stub is None:
            counts.skipped_stub_down += 1
            continue
        try:
            label, host_id = targets(round_number)
        except (httpx.HTTPError, ValueError, KeyError):
            counts.skipped_stub_down += 1  # the host list was not available (stub restarting)
            continue
        round_number += 1
        counts.sent += 1
        counts.by_target[label] += 1
        started = time.monotonic()
        try:
            with world.admin() as client:
                answer = client.post(f"/api/latest/fleet/hosts/{host_id}/query", json={"query": "SELECT 1 AS n"})
            body = answer.json()
            ok = answer.status_code == 200 and body.get("status") == "online" and body.get("rows") == [{"n": "1"}]
        except (httpx.HTTPError, ValueError):
            ok = False
        if ok:
            counts.answered += 1
        elif disturbances.overlaps(started, time.monotonic()):
            counts.unanswered_disturbed += 1
        else:
            counts.unanswered_clean += 1
            event(f"live query to {label} {host_id} unanswered with no restart or 503s near it")


def add_schedule(world: OrbitWorld) -> None:
    """A snapshot query every SCHEDULE_INTERVAL s on every host, so result logs flow all the time."""
    with world.admin() as client:
        current = client.get("/api/latest/fleet/config")
        current.raise_for_status()
        options = dict(current.json().get("agent_options") or {})
        config = dict(options.get("config") or {})
        config["schedule"] = {
            "soak_uptime": {"query": "SELECT * FROM uptime", "interval": SCHEDULE_INTERVAL, "snapshot": True}
        }
        options["config"] = config
        client.patch("/api/latest/fleet/config", json={"agent_options": options}).raise_for_status()


@contextlib.contextmanager
def background(*threads: threading.Thread) -> Iterator[None]:
    for thread in threads:
        thread.start()
    try:
        yield
    finally:
        for thread in threads:
            thread.join(60)


def run(minutes: float, hosts: int) -> Report:
    report = Report(minutes=minutes, hosts=hosts)
    total = minutes * 60
    restarts = (0.25 * total, 0.5 * total)
    fault_start = 0.6 * total
    fault_seconds = min(60.0, 0.25 * total)
    started_at = 0.0

    def event(text: str) -> None:
        report.events.append(f"t={time.monotonic() - started_at:6.1f}s {text}")
        progress(text)

    with tempfile.TemporaryDirectory(prefix="soak-") as tmp, contextlib.ExitStack() as stack:
        base = Path(tmp)
        progress(f"building the world in {base}")
        world = OrbitWorld(base)
        stack.callback(kill_stub, world)  # runs last: if the stub ignored SIGTERM within StubProcess's 30 s
        stack.callback(world.close)
        stub_log = base / "stub.log"
        drain_stub(world, stub_log)
        world.publish_osqueryd("5.14.1")
        world.publish_orbit("1.0.0")
        world.install_package("1.0.0")
        stub_port = world.port
        assert stub_port is not None

        ready = base / "proxy.json"
        proxy_argv = [sys.executable, __file__, "--serve-proxy", str(ready), "--tls-dir", str(world.stub_dir / "tls")]
        with (base / "proxy.out").open("wb") as out:
            proxy = subprocess.Popen(
                [*proxy_argv, "--upstream", str(stub_port)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        stack.callback(stop_process, proxy)
        wait_for(ready.is_file, timeout=30, what="the proxy")
        proxy_port = int(json.loads(ready.read_text())["port"])
        stub_url = world.url
        world.url = f"https://127.0.0.1:{proxy_port}"
        world.tuf_url = world.tuf_url.replace(f":{stub_port}", f":{proxy_port}")
        admin_token = world.admin_token

        env = {k: v for k, v in world.orbit_env().items() if k not in REAL_TIMINGS}
        world.start_service(env=env)
        wait_for(lambda: world.status().get("enrolled") and world.osqueryd_pid(), timeout=90, what="orbit enrolled")
        world.url = stub_url  # the script's own admin calls go straight to the stub
        add_schedule(world)
        real_host = wait_for(world.hosts, timeout=60, what="the real host")[0]
        host_id = int(real_host["id"])
        progress(f"orbit enrolled (host {host_id}), osqueryd {world.osqueryd_pid()}; starting {hosts} sim hosts")

        sim_env = {**os.environ, "ENROLL_SECRET": SECRET, "FLEET_ADMIN_TOKEN": admin_token}
        sim_argv = [str(Path(sys.executable).parent / "osqueryd-sim"), "load", "--hosts", str(hosts), "--with-orbit"]
        sim_argv += ["--tls_hostname", f"127.0.0.1:{proxy_port}", "--tls_server_certs", world.ca]
        sim_argv += ["--duration", str(total), "--progress_interval", "10", "--seed", "soak"]
        sim_out, sim_err = base / "sim.json", base / "sim.err"
        with sim_out.open("wb") as out, sim_err.open("wb") as err:
            sim = subprocess.Popen(
                sim_argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=sim_env, start_new_session=True
            )
        stack.callback(stop_process, sim, 120.0)
        started_at = time.monotonic()

        samples = Samples()
        counts = LiveQueryCounts()
        disturbances = Disturbances()

        sim_ids: list[int] = []

        def targets(round_number: int) -> tuple[str, int]:
            if round_number % 2 == 0:
                return "real orbit host", host_id
            if len(sim_ids) < hosts:
                sim_ids[:] = [int(h["id"]) for h in world.hosts() if int(h["id"]) != host_id]
            if not sim_ids:
                return "real orbit host", host_id
            return "simulated hosts", sim_ids[(round_number * 7919) % len(sim_ids)]

        stop = threading.Event()
        threads = (
            threading.Thread(target=sampler, args=(world, samples, stop), daemon=True),
            threading.Thread(
                target=live_queries, args=(world, targets, counts, disturbances, stop, event), daemon=True
            ),
        )
        with background(*threads):
            try:
                plan = [(t, "restart") for t in restarts] + [(fault_start, "fault on")]
                plan.append((fault_start + fault_seconds, "fault off"))
                for at, action in sorted(plan):
                    delay = at - (time.monotonic() - started_at)
                    if delay > 0:
                        time.sleep(delay)
                    if action == "restart":
                        disturbances.begin()
                        world.stop_stub()
                        event("stub stopped")
                        world.start_stub()
                        drain_stub(world, stub_log)
                        world.url = stub_url
                        event(f"stub started again on port {world.port}")
                        disturbances.end()
                    else:
                        proxy.send_signal(signal.SIGUSR1 if action == "fault on" else signal.SIGUSR2)
                        (disturbances.begin if action == "fault on" else disturbances.end)()
                        event(f"503 injection {action.removeprefix('fault ')}")
                progress("waiting for the load generator's summary")
                code = sim.wait(total + 300)
            finally:
                stop.set()
        event(f"load generator exited {code}")
        try:
            summary = json.loads(sim_out.read_text())
        except ValueError:
            summary = {}
            report.problems.append("no load summary: " + sim_err.read_text(errors="replace")[-2000:])
        report.log_lines = dict(summary.get("log_lines") or {})
        report.distributed = dict(summary.get("distributed") or {})
        report.load = {k: summary.get(k) for k in ("hosts", "enrolled", "seconds", "requests", "errors")}
        report.live_queries = asdict(counts)
        stop_process(proxy)
        stats_path = ready.with_suffix(".stats")
        report.proxy = json.loads(stats_path.read_text()) if stats_path.is_file() else {}
        orbit_rss = samples.orbit_rss_mib
        report.orbit = {
            "sampled_seconds": samples.seconds,
            "orbit_down_seconds": samples.orbit_down,
            "osqueryd_down_seconds": samples.osqueryd_down,
            "orbit_pids": samples.orbit_pids,
            "osqueryd_pids": samples.osqueryd_pids,
            "rss_start_mib": round(orbit_rss[0], 1) if orbit_rss else None,
            "rss_end_mib": round(orbit_rss[-1], 1) if orbit_rss else None,
            "rss_max_mib": round(max(orbit_rss), 1) if orbit_rss else None,
        }
        report.stub = {
            "processes": [
                {"pid": pid, "rss_start_mib": round(rss[0], 1), "rss_end_mib": round(rss[-1], 1)}
                for pid, rss in samples.stub_rss_mib.items()
            ]
        }
        stack.close()
        service = world.service
        if service is not None and service.exits and any(c not in (0, -signal.SIGTERM) for c in service.exits):
            report.problems.append(f"orbit exit codes: {service.exits}")
    lost, dup = report.log_lines.get("lost"), report.log_lines.get("duplicated")
    if lost or dup:
        report.problems.append(f"log lines lost {lost}, duplicated {dup}")
    if report.live_queries.get("unanswered_clean"):
        report.problems.append(f"live queries unanswered with no disturbance near them: {report.live_queries}")
    if not report.log_lines.get("produced"):
        report.problems.append("the simulated hosts produced no log lines: the loss check proves nothing")
    if samples.orbit_down or len(samples.orbit_pids) > 1:
        report.problems.append("orbit was down or restarted")
    if samples.osqueryd_down or len(samples.osqueryd_pids) > 1:
        report.problems.append("osqueryd was down or restarted")
    return report


def render(report: Report) -> str:
    o, s, ll, d = report.orbit, report.stub, report.log_lines, report.distributed
    lines = [f"soak: {report.minutes:g} min, {report.hosts} simulated hosts + 1 real orbit", *report.events, ""]
    lines.append(
        f"log lines (sim hosts): produced {ll.get('produced')}, acknowledged {ll.get('acknowledged')}, "
        f"buffered {ll.get('buffered')}, lost {ll.get('lost')}, duplicated {ll.get('duplicated')} (goal 0/0; "
        f"checked against the stub's counts: {ll.get('checked_against_server')})"
    )
    lines.append(
        f"distributed (sim hosts): reads {d.get('reads')}, writes acknowledged {d.get('writes_acknowledged')}; "
        f"live queries (admin API, alternately the real host and a simulated one): {report.live_queries}"
    )
    lines.append(f"load: {report.load}; proxy: {report.proxy}")
    lines.append(
        f"orbit down {o['orbit_down_seconds']} s, osqueryd down {o['osqueryd_down_seconds']} s of "
        f"{o['sampled_seconds']} s sampled; orbit pids {o['orbit_pids']}, osqueryd pids {o['osqueryd_pids']}"
    )
    lines.append(f"orbit RSS start {o['rss_start_mib']} MiB → end {o['rss_end_mib']} MiB (max {o['rss_max_mib']})")
    procs = s.get("processes")
    if isinstance(procs, list):
        for p in procs:
            lines.append(f"stub pid {p['pid']}: RSS start {p['rss_start_mib']} MiB → end {p['rss_end_mib']} MiB")
    lines += ["", "problems: " + ("none" if not report.problems else "")]
    lines += [f"  - {p}" for p in report.problems]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--hosts", type=int, default=2000)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--serve-proxy", help=argparse.SUPPRESS)
    parser.add_argument("--tls-dir", help=argparse.SUPPRESS)
    parser.add_argument("--upstream", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_proxy:
        return serve_proxy(Path(args.serve_proxy), Path(args.tls_dir), int(args.upstream))
    forward_sigterm()
    try:
        report = run(args.minutes, args.hosts)
    except KeyboardInterrupt:
        progress("interrupted; processes stopped")
        return 130
    except (AssertionError, OSError, RuntimeError, httpx.HTTPError, subprocess.SubprocessError) as exc:
        progress(f"error: {exc}")
        return 1
    print(json.dumps(json_safe(asdict(report)), indent=2) if args.json else render(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
