"""fleet-stub capacity (issue 8; goal ≥ 10 000 hosts on 2 cores with the generator on the same machine): hosts
from ``osqueryd-sim load --with-orbit`` at Fleet's default intervals (distributed read and log every 10 s, config
every 60 s, orbit config every 30 s), stepped up until p99 > 100 ms, errors appear, the stub's core is full or the
generator cannot keep up.

Each step starts a fresh ``fleet-stub`` pinned to the first CPU and the generator pinned to the second (as
``stub_throughput.py`` does), waits until every host is enrolled and the ramp is over, then measures a window. Every
host holds three keep-alive connections (osqueryd two, orbit one) on both sides, and one process may hold only as
many descriptors as its open-files limit allows (20 000 here, not raisable without ``CAP_SYS_RESOURCE``): so the stub
runs with enough ``--workers`` and the generator with enough ``--processes`` for the step (``auto``, issue 19, ADR
0019) — all the stub's workers still share the first CPU, all the generator's processes the second.

p99 comes from three places, all printed: the stub's ``/metrics`` histogram (time inside the stub, window only,
read as the upper bound of the bucket that holds the 99th percentile — 100 ms is a bucket bound, so "≤ 100 ms" is
exact); a probe — one more enrolled host, a thread of this script, sending ``distributed/read`` every 0.1 s on a
keep-alive connection — end to end as a client sees it (TLS, queueing before the handler); and the generator's own
end-to-end latency of ``distributed/read`` (window only — SIGUSR1 restarts its figures). The step fails on the stub's
or the probe's p99 over 100 ms, errors, a full core, or hosts falling behind their intervals; the generator's p99
includes its own event-loop lag with thousands of hosts in one process, so it is shown, not judged.

With ``--windows N`` each step measures N windows in a row on the same running fleet and prints each one's
figures with their min / median / max; the step is judged on the median window's p99s and on every window's
errors (the generator's own figures cover all the windows together).

    .venv/bin/python benchmarks/stub_capacity.py [--quick] [--hosts 1000,2500,5000,10000] [--window S]
        [--windows N] [--workers auto|N] [--processes auto|N] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import resource
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
import psutil
from bench_support import cpu_affinity, forward_sigterm, json_safe, realtime_priority
from stub_throughput import BenchmarkError, Target, plan_cpus, start_stub

from server_stub.connection_limits import descriptor_budget

DURATION = "fleet_stub_http_request_duration_seconds"
REQUESTS = "fleet_stub_http_requests_total"
DEFAULT_STEPS = (1000, 2500, 5000, 6000, 7500, 10000, 12500, 15000, 17500, 20000)
CONNECTIONS_PER_HOST = 3  # osqueryd's two keep-alive connections and orbit's one, on each side
FD_SLACK = 300  # listening socket, SQLite, log files, pipes
WORKER_FILL = 0.85  # auto workers: each holds at most this share of its descriptor budget (the hash is not exact)
GENERATOR_FD_PER_HOST = 4  # what osqueryd-sim load asks for per host (three connections and slack)
PORTS_PER_SOURCE = 28_000  # the ephemeral port range towards one server port, per source address
LOCK_WAITS = re.compile(r"^fleet_stub_sqlite_write_lock_wait(s|_microseconds)_total (\d+)$", re.MULTILINE)
WORKER_CONNECTIONS = re.compile(r'^fleet_stub_worker_connections_open\{worker="(\d+)"\} (\S+)$', re.MULTILINE)
P99_LIMIT_MS = 100.0
PROBE_EVERY = 0.1
STUB_CPU_LIMIT = 95.0
GEN_CPU_LIMIT = 90.0
PROGRESS = re.compile(r"t=\s*(\d+)s enrolled=(\d+)/(\d+) req/s=\s*([\d.]+) requests=(\d+) errors=(\d+)")


def progress(message: str) -> None:
    print(f"stub_capacity: {message}", file=sys.stderr, flush=True)


@dataclass
class Step:
    hosts: int
    workers: int = 1
    processes: int = 1
    load_average: float = 0.0
    window_s: float = 0.0
    requests_per_second: float = 0.0
    requests_per_host_second: float = 0.0
    stub_p50_ms: float = float("nan")
    stub_p99_ms: float = float("nan")
    stub_p99_by_endpoint_ms: dict[str, float] = field(default_factory=dict)
    gen_read_p50_ms: float = float("nan")
    gen_read_p99_ms: float = float("nan")
    gen_worst_p99_ms: float = float("nan")
    gen_worst_endpoint: str = ""
    gen_endpoints: dict[str, dict[str, float]] = field(default_factory=dict)  # the generator's figures per endpoint
    probe_p50_ms: float = float("nan")
    probe_p99_ms: float = float("nan")
    probe_failures: int = 0
    probe_realtime: bool = False  # the probe's thread ran at SCHED_FIFO (bench_support.realtime_priority)
    errors: int = 0
    non_2xx: int = 0
    stub_cpu_percent: float = 0.0
    gen_cpu_percent: float = 0.0
    stub_rss_mib: float = 0.0
    gen_rss_mib: float = 0.0
    sqlite_lock_waits_per_s: float = 0.0
    sqlite_lock_wait_ms_per_s: float = 0.0
    worker_connections: list[int] = field(default_factory=list)
    windows: list[Window] = field(default_factory=list)  # --windows > 1: each window's own figures
    verdict: str = ""


@dataclass
class Window:
    """One measured window of a step (``--windows``: several in a row on the same running fleet)."""

    seconds: float
    requests_per_second: float
    stub_p99_ms: float
    probe_p50_ms: float
    probe_p99_ms: float
    probe_failures: int
    errors: int
    non_2xx: int
    stub_cpu_percent: float
    gen_cpu_percent: float


@dataclass
class Report:
    quick: bool
    window_s: float
    windows: int
    stub_cpus: list[int] | None
    generator_cpus: list[int] | None
    steps: list[Step] = field(default_factory=list)
    max_hosts: int = 0
    limited_by: str = ""
    stub_cpu_extrapolation_hosts: int | None = None
    fd_hard_limit: int | None = None
    fd_cap_hosts: int | None = None
    notes: list[str] = field(default_factory=list)


# --- /metrics -------------------------------------------------------------------------------------------------------


@dataclass
class Scrape:
    buckets: dict[str, dict[float, float]]
    non_2xx: int
    lock_waits: int
    lock_wait_us: int
    worker_connections: list[int]


def scrape(target: Target) -> Scrape:
    """Cumulative latency buckets summed over all osquery/orbit endpoints (admin excluded), non-2xx answers, the
    SQLite write-lock waits and the connections each worker holds."""
    with httpx.Client(verify=str(target.ca_cert), trust_env=False, timeout=30) as client:
        text = client.get(target.url + "/metrics", headers={"Authorization": f"Bearer {target.admin_token}"}).text
    waits = {kind: int(n) for kind, n in LOCK_WAITS.findall(text)}
    per_worker = sorted(WORKER_CONNECTIONS.findall(text), key=lambda found: int(found[0]))
    buckets, odd = parse_latency(text)
    return Scrape(
        buckets, odd, waits.get("s", 0), waits.get("_microseconds", 0), [int(float(n)) for _, n in per_worker]
    )


def parse_latency(text: str) -> tuple[dict[str, dict[float, float]], int]:
    buckets: dict[str, dict[float, float]] = {}
    odd = 0
    for line in text.splitlines():
        name, brace, rest = line.partition("{")
        if line.startswith("#") or not brace:
            continue
        label_text, _, value_text = rest.rpartition("} ")
        labels = dict(re.findall(r'(\w+)="([^"]*)"', label_text))
        endpoint = labels.get("endpoint", "")
        if endpoint.startswith("admin") or endpoint == "metrics":
            continue
        if name == DURATION + "_bucket":
            bound = float("inf") if labels["le"] == "+Inf" else float(labels["le"])
            per = buckets.setdefault(endpoint, {})
            per[bound] = float(value_text)
            every = buckets.setdefault("*", {})
            every[bound] = every.get(bound, 0.0) + float(value_text)
        elif name == REQUESTS and not labels.get("status", "").startswith("2"):
            odd += int(float(value_text))
    return buckets, odd


def bucket_percentile_ms(before: dict[float, float], after: dict[float, float], fraction: float) -> float:
    window = {bound: after.get(bound, 0.0) - before.get(bound, 0.0) for bound in after}
    total = window.get(float("inf"), 0.0)
    if total <= 0:
        return float("nan")
    for bound in sorted(window):
        if window[bound] >= fraction * total:
            return bound * 1000
    return float("inf")


# --- one step -------------------------------------------------------------------------------------------------------


class Probe:
    """One more osquery host, outside the generator: enrolls, then sends ``distributed/read`` every PROBE_EVERY s on
    a keep-alive connection during the window. Its latency is the stub's as a client sees it (TLS, queueing before
    the handler, the handler), without the generator's own event-loop lag — a thread of this script at real-time
    priority where allowed (``realtime_priority``): the generator's processes fill the other core and the run queue,
    and a client elsewhere on the network would not wait behind them."""

    def __init__(self, stub: Target, secret: str) -> None:
        self.latencies: list[float] = []
        self.failures = 0
        self.realtime = False
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._client = httpx.Client(
            base_url=stub.url, verify=str(stub.ca_cert), timeout=30, headers={"User-Agent": "osquery/5.14.1+probe"}
        )
        enrolled = self._client.post(
            "/api/v1/osquery/enroll", json={"enroll_secret": secret, "host_identifier": "capacity-probe"}
        )
        enrolled.raise_for_status()
        self._node_key = str(enrolled.json()["node_key"])
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        self.realtime = realtime_priority()
        while not self._stop.wait(PROBE_EVERY):
            started = time.perf_counter()
            try:
                answer = self._client.post("/api/v1/osquery/distributed/read", json={"node_key": self._node_key})
                ok = answer.status_code == 200 and "queries" in answer.json()
            except (httpx.HTTPError, ValueError):
                ok = False
            with self._lock:
                if ok:
                    self.latencies.append(time.perf_counter() - started)
                else:
                    self.failures += 1

    def take(self) -> tuple[float, float, int]:
        """(p50 ms, p99 ms, failures) since the last ``take``: one window's figures."""
        with self._lock:
            latencies, failures = self.latencies, self.failures
            self.latencies, self.failures = [], 0
        ordered = sorted(latencies)
        if not ordered:
            return float("nan"), float("nan"), failures
        return _percentile_ms(ordered, 0.50), _percentile_ms(ordered, 0.99), failures

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(35)
        self._client.close()


def _percentile_ms(ordered: list[float], fraction: float) -> float:
    return ordered[min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))] * 1000


class Generator:
    """``osqueryd-sim load`` in its own session; its progress lines are parsed as they come."""

    def __init__(self, argv: list[str], env: dict[str, str], out: Path, cpus: frozenset[int] | None) -> None:
        self.out = out
        with out.open("wb") as stdout, cpu_affinity(cpus):
            self.popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=subprocess.PIPE,
                env=env,
                start_new_session=True,
            )
        self.ps = psutil.Process(self.popen.pid)
        self.enrolled = 0
        self.requests = 0
        self.errors = 0
        self.tail: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.popen.stderr is not None
        for raw in self.popen.stderr:
            line = raw.decode(errors="replace").rstrip()
            match = PROGRESS.search(line)
            if match:
                self.enrolled, self.requests, self.errors = int(match[2]), int(match[5]), int(match[6])
            else:
                self.tail = [*self.tail[-20:], line]

    def _processes(self) -> list[psutil.Process]:
        try:
            return [self.ps, *self.ps.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def cpu_seconds(self) -> float:
        """The generator and its ``--processes`` children."""
        total = 0.0
        for process in self._processes():
            with contextlib.suppress(psutil.NoSuchProcess):
                times = process.cpu_times()
                total += float(times.user + times.system)
        return total

    def rss_mib(self) -> float:
        total = 0
        for process in self._processes():
            with contextlib.suppress(psutil.NoSuchProcess):
                total += int(process.memory_info().rss)
        return total / 2**20

    def stop(self) -> dict[str, object]:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(120)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self._reader.join(10)
        try:
            loaded: object = json.loads(self.out.read_text())
        except ValueError:
            return {}
        return loaded if isinstance(loaded, dict) else {}


@dataclass
class Mark:
    """What the stub and the generator have counted so far, at one moment; two marks make a window."""

    scrape: Scrape
    requests: int
    errors: int
    stub_cpu: float
    gen_cpu: float
    at: float

    @classmethod
    def take(cls, stub: Target, gen: Generator) -> Mark:
        scraped = scrape(stub)
        return cls(scraped, gen.requests, gen.errors, stub.process.cpu_seconds(), gen.cpu_seconds(), time.monotonic())


def window_between(before: Mark, after: Mark, probe: tuple[float, float, int]) -> Window:
    wall = after.at - before.at
    return Window(
        seconds=round(wall, 1),
        requests_per_second=(after.requests - before.requests) / wall,
        stub_p99_ms=bucket_percentile_ms(before.scrape.buckets.get("*", {}), after.scrape.buckets.get("*", {}), 0.99),
        probe_p50_ms=probe[0],
        probe_p99_ms=probe[1],
        probe_failures=probe[2],
        errors=after.errors - before.errors,
        non_2xx=after.scrape.non_2xx - before.scrape.non_2xx,
        stub_cpu_percent=100 * (after.stub_cpu - before.stub_cpu) / wall,
        gen_cpu_percent=100 * (after.gen_cpu - before.gen_cpu) / wall,
    )


def fill_step(step: Step, first: Mark, last: Mark) -> None:
    """The step's figures over all its windows; the probe's and the stub's p99 are the median window's (with one
    window, that window's), so one unlucky window neither passes nor fails a step on its own."""
    wall = last.at - first.at
    before, after = first.scrape, last.scrape
    step.sqlite_lock_waits_per_s = (after.lock_waits - before.lock_waits) / wall
    step.sqlite_lock_wait_ms_per_s = (after.lock_wait_us - before.lock_wait_us) / 1000 / wall
    step.worker_connections = after.worker_connections
    step.window_s = round(wall, 1)
    step.requests_per_second = (last.requests - first.requests) / wall
    step.requests_per_host_second = step.requests_per_second / step.hosts
    step.stub_p50_ms = bucket_percentile_ms(before.buckets.get("*", {}), after.buckets.get("*", {}), 0.50)
    step.stub_p99_ms = statistics.median(w.stub_p99_ms for w in step.windows)
    step.stub_p99_by_endpoint_ms = {
        name: bucket_percentile_ms(before.buckets.get(name, {}), per, 0.99)
        for name, per in after.buckets.items()
        if name != "*"
    }
    step.probe_p50_ms = statistics.median(w.probe_p50_ms for w in step.windows)
    step.probe_p99_ms = statistics.median(w.probe_p99_ms for w in step.windows)
    step.probe_failures = sum(w.probe_failures for w in step.windows)
    step.errors = last.errors - first.errors
    step.non_2xx = after.non_2xx - before.non_2xx
    step.stub_cpu_percent = 100 * (last.stub_cpu - first.stub_cpu) / wall
    step.gen_cpu_percent = 100 * (last.gen_cpu - first.gen_cpu) / wall


def run_step(
    hosts: int, sizes: tuple[int, int], options: argparse.Namespace, work: Path, cpus: tuple[frozenset[int] | None, ...]
) -> Step:
    stub_cpus, gen_cpus = cpus
    workers, processes = sizes
    step = Step(hosts, workers=workers, processes=processes, load_average=os.getloadavg()[0])
    secret = secrets.token_urlsafe(16)
    # Starts spread over a whole multiple of 60 s (the longest regular interval: osquery's config) give every
    # periodic request a uniformly random phase, as in a real fleet; a shorter ramp keeps hosts in lock-step bursts.
    ramp = 60.0 * math.ceil(hosts / 6000)
    with contextlib.ExitStack() as stack:
        step_dir = work / f"step-{hosts}"
        step_dir.mkdir()
        stub = start_stub(step_dir, secret, stub_cpus, stack, workers=workers)
        argv = [str(Path(sys.executable).parent / "osqueryd-sim"), "load", "--hosts", str(hosts), "--with-orbit"]
        argv += ["--processes", str(processes)]
        argv += ["--tls_hostname", f"{stub.host}:{stub.port}", "--tls_server_certs", str(stub.ca_cert)]
        argv += ["--ramp", str(ramp), "--progress_interval", "1", "--seed", f"cap{hosts}"]
        gen = Generator(argv, {**os.environ, "ENROLL_SECRET": secret}, step_dir / "summary.json", gen_cpus)
        stack.callback(gen.stop)
        started = time.monotonic()
        deadline = started + ramp + 120 + hosts / 50
        while gen.enrolled < hosts or time.monotonic() - started < ramp + options.settle:
            if gen.popen.poll() is not None:
                raise BenchmarkError(f"generator exited {gen.popen.returncode}: {gen.tail}")
            if stub.process.exited() is not None:
                raise BenchmarkError(f"fleet-stub exited: {stub.process.log_tail()}")
            if time.monotonic() > deadline:
                step.verdict = f"only {gen.enrolled}/{hosts} enrolled"
                return step
            time.sleep(0.5)
        probe = Probe(stub, secret)
        probe.start()
        gen.popen.send_signal(signal.SIGUSR1)  # the generator's per-endpoint figures restart: window only
        first = mark = Mark.take(stub, gen)
        for _ in range(options.windows):
            time.sleep(options.window)
            now = Mark.take(stub, gen)
            step.windows.append(window_between(mark, now, probe.take()))
            mark = now
        probe.stop()
        step.probe_realtime = probe.realtime
        fill_step(step, first, mark)
        step.stub_rss_mib = stub.process.rss_mib()
        step.gen_rss_mib = gen.rss_mib()
        summary = gen.stop()
        endpoints = summary.get("endpoints")
        if isinstance(endpoints, dict):
            read = endpoints.get("distributed_read") or endpoints.get("/api/v1/osquery/distributed/read") or {}
            if not read:
                read = next((v for k, v in endpoints.items() if "distributed" in k and "read" in k), {})
            step.gen_read_p50_ms = float(read.get("p50_ms", float("nan")))
            step.gen_read_p99_ms = float(read.get("p99_ms", float("nan")))
            step.gen_endpoints = {
                name: {key: float(value) for key, value in figures.items() if isinstance(value, int | float)}
                for name, figures in endpoints.items()
                if isinstance(figures, dict)
            }
            if step.gen_endpoints:
                worst = max(step.gen_endpoints, key=lambda name: step.gen_endpoints[name].get("p99_ms", 0.0))
                step.gen_worst_endpoint = worst
                step.gen_worst_p99_ms = step.gen_endpoints[worst].get("p99_ms", float("nan"))
    return step


def judge(step: Step, first: Step | None) -> str:
    reasons = []
    if step.verdict:
        return step.verdict
    if step.errors or step.non_2xx:
        reasons.append(f"errors ({step.errors} generator, {step.non_2xx} non-2xx)")
    if step.stub_p99_ms > P99_LIMIT_MS:
        reasons.append("stub p99 > 100 ms")
    if step.probe_failures or step.probe_p99_ms > P99_LIMIT_MS or math.isnan(step.probe_p99_ms):
        reasons.append(f"probe p99 > 100 ms or failed ({step.probe_failures} failures)")
    if step.stub_cpu_percent >= STUB_CPU_LIMIT:
        reasons.append("stub core full")
    if step.gen_cpu_percent >= GEN_CPU_LIMIT:
        reasons.append("generator core full")
    if first is not None and step.requests_per_host_second < 0.8 * first.requests_per_host_second:
        reasons.append("hosts fall behind their intervals")
    return "; ".join(reasons)


def fd_hard_limit() -> int | None:
    """The open-files hard limit the stub and the generator inherit, after trying to raise it as they will."""
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (1 << 17, 1 << 17))
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return None if hard == resource.RLIM_INFINITY else int(hard)


def process_sizes(hosts: int, hard: int | None, options: argparse.Namespace) -> tuple[int, int] | str:
    """(stub workers, generator processes) for a step, or why the step cannot run with the ones given."""
    budget = descriptor_budget(hard)
    hosts_per_worker = None if budget is None else max(1, int(budget * WORKER_FILL) // CONNECTIONS_PER_HOST)
    hosts_per_process = PORTS_PER_SOURCE // CONNECTIONS_PER_HOST
    if hard is not None:
        hosts_per_process = min(hosts_per_process, (hard - FD_SLACK) // GENERATOR_FD_PER_HOST)
    if options.workers == "auto":
        workers = 1 if hosts_per_worker is None else math.ceil(hosts / hosts_per_worker)
    else:
        workers = int(options.workers)
        if budget is not None and hosts * CONNECTIONS_PER_HOST > workers * budget:
            held = workers * budget // CONNECTIONS_PER_HOST
            return f"not run: {workers} worker(s) under the open-files limit ({hard}) hold ≈ {held:,} hosts"
    if options.processes == "auto":
        processes = math.ceil(hosts / hosts_per_process)
    else:
        processes = int(options.processes)
        if hosts > processes * hosts_per_process:
            return f"not run: {processes} generator process(es) hold ≈ {processes * hosts_per_process:,} hosts"
    return workers, processes


def run(options: argparse.Namespace) -> Report:
    stub_cpus, gen_cpus = plan_cpus()
    report = Report(
        quick=options.quick,
        window_s=options.window,
        windows=options.windows,
        stub_cpus=sorted(stub_cpus) if stub_cpus else None,
        generator_cpus=sorted(gen_cpus) if gen_cpus else None,
    )
    if gen_cpus is not None:
        os.sched_setaffinity(0, gen_cpus)
    else:
        report.notes.append("fewer than 2 CPUs: nothing pinned")
    first: Step | None = None
    hard = fd_hard_limit()
    report.fd_hard_limit = hard
    report.fd_cap_hosts = (hard - FD_SLACK) // CONNECTIONS_PER_HOST if hard is not None else None
    with tempfile.TemporaryDirectory(prefix="stub-capacity-") as tmp:
        for hosts in options.hosts:
            sizes = process_sizes(hosts, hard, options)
            if isinstance(sizes, str):
                report.steps.append(Step(hosts, verdict=sizes))
                report.limited_by = report.limited_by or f"open files: {sizes}"
                continue
            progress(
                f"{hosts} hosts: stub --workers {sizes[0]}, load --processes {sizes[1]}; ramp, settle "
                f"{options.settle} s, {options.windows} × {options.window} s windows; load average "
                f"{os.getloadavg()[0]:.2f}"
            )
            step = run_step(hosts, sizes, options, Path(tmp), (stub_cpus, gen_cpus))
            step.verdict = judge(step, first)
            first = first or step
            report.steps.append(step)
            progress(
                f"{hosts} hosts: {step.requests_per_second:.0f} req/s, stub p99 {step.stub_p99_ms:g} ms, "
                f"probe p99 {step.probe_p99_ms:.1f} ms, "
                f"gen read p99 {step.gen_read_p99_ms:g} ms, stub CPU {step.stub_cpu_percent:.0f} %, "
                f"gen CPU {step.gen_cpu_percent:.0f} %, SQLite lock waits {step.sqlite_lock_waits_per_s:.1f}/s "
                f"({step.sqlite_lock_wait_ms_per_s:.1f} ms/s), connections per worker {step.worker_connections} "
                f"{step.verdict}"
            )
            if step.verdict:
                report.limited_by = report.limited_by or step.verdict
                if not options.all_steps:
                    break
            elif not report.limited_by:
                report.max_hosts = hosts
    passed = [s for s in report.steps if not s.verdict]
    if passed and passed[-1].stub_cpu_percent > 0:
        best = passed[-1]
        report.stub_cpu_extrapolation_hosts = int(best.hosts * 100 / best.stub_cpu_percent)
    if not report.limited_by:
        report.limited_by = "no limit reached within the steps given"
    if "stub" not in report.limited_by and (
        "generator" in report.limited_by or "fall behind" in report.limited_by or "open files" in report.limited_by
    ):
        report.notes.append(
            "the generator or the machine was the limit, not the stub: the headline is a lower bound for the stub"
        )
    return report


def metric_name(path: str) -> str:
    """The stub's /metrics name of an endpoint the generator names by its path (``/api/v1/osquery/config`` →
    ``osquery_config``, ``/api/latest/fleet/device/{token}/ping`` → ``device_ping``)."""
    for prefix in ("/api/v1/", "/api/fleet/", "/api/latest/fleet/", "/api/"):
        if path.startswith(prefix):
            return "_".join(part for part in path.removeprefix(prefix).split("/") if not part.startswith("{"))
    return path


def render(report: Report) -> str:
    cpus = f"stub on CPU {report.stub_cpus}, generator on CPU {report.generator_cpus}" if report.stub_cpus else ""
    lines = [
        f"fleet-stub capacity, osqueryd-sim load --with-orbit at Fleet's default intervals; {cpus}",
        f"{report.windows} × {report.window_s:g} s windows per step after ramp; p99 limit {P99_LIMIT_MS:g} ms"
        + ("" if report.windows == 1 else " (stub and probe p99: the median window's; errors: all windows)"),
        "",
    ]
    header = (
        "hosts",
        "W×P",
        "load",
        "req/s",
        "req/s/host",
        "stub p50",
        "stub p99",
        "probe p50",
        "probe p99",
        "gen read p50",
        "gen read p99",
        "gen worst p99",
        "errors",
        "stub CPU",
        "gen CPU",
        "stub MiB",
        "gen MiB",
        "lock waits/s",
        "verdict",
    )
    rows = [
        (
            f"{s.hosts:,}",
            f"{s.workers}×{s.processes}",
            f"{s.load_average:.1f}",
            f"{s.requests_per_second:,.0f}",
            f"{s.requests_per_host_second:.3f}",
            f"≤{s.stub_p50_ms:g}",
            f"≤{s.stub_p99_ms:g}",
            f"{s.probe_p50_ms:.1f}",
            f"{s.probe_p99_ms:.1f}",
            f"{s.gen_read_p50_ms:.1f}",
            f"{s.gen_read_p99_ms:.1f}",
            f"{s.gen_worst_p99_ms:.1f}",
            str(s.errors + s.non_2xx),
            f"{s.stub_cpu_percent:.0f} %",
            f"{s.gen_cpu_percent:.0f} %",
            f"{s.stub_rss_mib:.0f}",
            f"{s.gen_rss_mib:.0f}",
            f"{s.sqlite_lock_waits_per_s:.1f} ({s.sqlite_lock_wait_ms_per_s:.0f} ms)",
            s.verdict or "ok",
        )
        for s in report.steps
    ]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    last = len(header) - 1
    for row in (header, *rows):
        lines.append("  ".join(c.rjust(w) if i < last else c for i, (c, w) in enumerate(zip(row, widths, strict=True))))
    lines += [
        "",
        f"max hosts on this machine: {report.max_hosts:,} (goal ≥ 10,000) — stopped by: {report.limited_by}",
    ]
    if report.fd_cap_hosts is not None:
        lines.append(
            f"open files: hard limit {report.fd_hard_limit} per process → ≈ {report.fd_cap_hosts:,} hosts per process "
            f"({CONNECTIONS_PER_HOST} keep-alive connections each); W×P: the stub's --workers × the generator's "
            "--processes for the step (all workers on the stub's CPU, all generator processes on the other)"
        )
    for s in report.steps:
        if len(s.windows) > 1:
            probe = sorted(w.probe_p99_ms for w in s.windows)
            lines.append(
                f"{s.hosts:,} hosts, each window: probe p99 "
                + " / ".join(f"{w.probe_p99_ms:.1f}" for w in s.windows)
                + f" ms (min {probe[0]:.1f}, median {statistics.median(probe):.1f}, max {probe[-1]:.1f}); stub p99 ≤ "
                + " / ".join(f"{w.stub_p99_ms:g}" for w in s.windows)
                + " ms; errors "
                + " / ".join(str(w.errors + w.non_2xx + w.probe_failures) for w in s.windows)
                + "; req/s "
                + " / ".join(f"{w.requests_per_second:,.0f}" for w in s.windows)
                + "; stub CPU "
                + " / ".join(f"{w.stub_cpu_percent:.0f} %" for w in s.windows)
            )
    for s in report.steps:
        if len(s.worker_connections) > 1:
            lines.append(f"{s.hosts:,} hosts: connections per worker at the window's end {s.worker_connections}")
    if report.stub_cpu_extrapolation_hosts:
        lines.append(
            f"stub CPU at the last passing step extrapolates to ≈ {report.stub_cpu_extrapolation_hosts:,} hosts "
            "per stub core (linear; an estimate, not a measurement)"
        )
    for s in report.steps:
        if s.gen_worst_endpoint:
            worst = s.gen_endpoints[s.gen_worst_endpoint]
            lines.append(
                f"{s.hosts:,} hosts: the generator's slowest endpoint {s.gen_worst_endpoint}: p99 "
                f"{worst.get('p99_ms', float('nan')):.1f} ms over {worst.get('requests', 0):.0f} requests "
                f"({worst.get('errors', 0):.0f} errors); the stub's p99 inside for it "
                f"≤ {s.stub_p99_by_endpoint_ms.get(metric_name(s.gen_worst_endpoint), float('nan')):g} ms"
            )
    for s in report.steps:
        slow = {k: v for k, v in s.stub_p99_by_endpoint_ms.items() if v > P99_LIMIT_MS}
        if slow:
            lines.append(f"{s.hosts:,} hosts: endpoints with stub p99 > 100 ms: {slow}")
    lines.append(
        "stub p50/p99: bucket upper bounds from its /metrics (window); probe: one more host's distributed/read every "
        f"{PROBE_EVERY:g} s, end to end, from outside the generator (window); gen: the generator's own end-to-end "
        "figures (window to its stop, incl. its event-loop lag — shown, not judged)"
    )
    if report.steps:
        realtime = all(s.probe_realtime for s in report.steps)
        lines.append(f"probe at real-time priority: {'yes' if realtime else 'no (not allowed here)'}")
    lines += [f"note: {n}" for n in report.notes]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--hosts", help="comma-separated host counts (default 1000,2500,5000,6000,7500,10000,… 20000)")
    parser.add_argument("--quick", action="store_true", help="30 s windows, 5 s settle")
    parser.add_argument("--window", type=float, help="measured seconds per step (default 120, --quick 30)")
    parser.add_argument("--settle", type=float, help="seconds after the ramp before the window (default 20)")
    parser.add_argument(
        "--windows",
        type=int,
        default=1,
        help="windows in a row per step (default 1); p99: the median window's",
    )
    parser.add_argument("--all-steps", action="store_true", help="measure every step even after one failed")
    parser.add_argument(
        "--workers", default="auto", help="the stub's --workers per step (default auto: enough for the descriptors)"
    )
    parser.add_argument(
        "--processes", default="auto", help="the generator's --processes (default auto: enough for descriptors/ports)"
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    args.hosts = [int(h) for h in args.hosts.split(",")] if args.hosts else list(DEFAULT_STEPS)
    for name in ("workers", "processes"):
        value = getattr(args, name)
        if value != "auto" and not (value.isdigit() and int(value) >= 1):
            parser.error(f"--{name} must be auto or a positive whole number")
    if args.windows < 1:
        parser.error("--windows must be at least 1")
    args.window = args.window or (30.0 if args.quick else 120.0)
    args.settle = args.settle if args.settle is not None else (5.0 if args.quick else 20.0)
    terminated = forward_sigterm()
    try:
        report = run(args)
    except KeyboardInterrupt:
        progress("interrupted; processes stopped")
        return 143 if terminated else 130
    except (BenchmarkError, OSError, httpx.HTTPError, subprocess.SubprocessError) as exc:
        progress(f"error: {exc}")
        return 1
    print(json.dumps(json_safe(asdict(report)), indent=2) if args.json else render(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
