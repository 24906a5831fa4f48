"""The admin console's cost (issue 20): how long its pages take with 10 000 hosts, and whether an admin browsing
moves the agents' p99 at 5 000 simulated hosts.

Part 1, pages: a fresh ``fleet-stub`` (pinned to the first CPU) gets three global policies, then 10 000 hosts
enrolled by ``osqueryd-sim load --hosts 10000`` — real enrollments and real answers (host details, policy results)
through the osquery API, the rows the stub's own write path makes; the generator is then stopped. Each page is
fetched ``--rounds`` × ``--requests`` times on one logged-in keep-alive TLS connection, alternating with the
baseline: the console's stylesheet (same server, connection and session check, no database) — a figure per round,
min and median of the rounds, and the ratio page / baseline.

Part 2, agents: a fresh stub and ``osqueryd-sim load --hosts 5000 --with-orbit`` at Fleet's default intervals (as
``stub_capacity.py``). After the ramp, windows of ``--window`` s alternate: nobody browsing (A), an admin clicking
through the console about once a second (B, "person"), and an admin re-loading pages back to back (C, "stress");
the admin is a child process on the generator's CPU (the browser would be on another machine; its work must not
share a GIL with the probe).
Each window measures the agents' p99 twice: a probe (one more osquery host in this script sending
``distributed/read`` every 50 ms — end-to-end, exact) and the stub's own histogram for the osquery and orbit
endpoints (bucket bounds: coarse). Repeated ``--repeats`` times, A/B/C in turn; min and median per kind, and the
ratio to A.

    .venv/bin/python benchmarks/console_pages.py [--quick] [--hosts 10000] [--agents 5000] [--window S] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
from bench_support import cpu_affinity, forward_sigterm, json_safe
from stub_capacity import DURATION, Generator, bucket_percentile_ms
from stub_throughput import BenchmarkError, Target, plan_cpus, start_stub

POLICIES = (
    ("Passes everywhere", "SELECT 1"),
    ("Fails everywhere", "SELECT 1 FROM system_info WHERE 0"),
    ("Linux only", "SELECT 1 FROM os_version WHERE platform_like LIKE '%debian%'"),
)
PROBE_EVERY = 0.05
THINK_SECONDS = 1.0  # "person": a page about once a second


def progress(message: str) -> None:
    print(f"console_pages: {message}", file=sys.stderr, flush=True)


@dataclass
class PageFigure:
    name: str
    path: str
    rounds_ms: list[float] = field(default_factory=list)  # median per round
    baseline_rounds_ms: list[float] = field(default_factory=list)
    bytes: int = 0

    @property
    def min_ms(self) -> float:
        return min(self.rounds_ms)

    @property
    def median_ms(self) -> float:
        return statistics.median(self.rounds_ms)

    @property
    def ratio(self) -> float:
        return self.median_ms / statistics.median(self.baseline_rounds_ms)


@dataclass
class Window:
    kind: str  # quiet, person, stress
    probe_p50_ms: float
    probe_p99_ms: float
    probe_samples: int
    stub_p99_ms: float
    pages: int
    page_p50_ms: float
    errors: int


@dataclass
class Report:
    hosts: int
    agents: int
    how_loaded: str
    stub_cpus: list[int] | None
    generator_cpus: list[int] | None
    pages: list[PageFigure] = field(default_factory=list)
    windows: list[Window] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# --- the stub and its hosts -----------------------------------------------------------------------------------------


def admin(target: Target) -> httpx.Client:
    return httpx.Client(
        base_url=target.url,
        verify=str(target.ca_cert),
        trust_env=False,
        timeout=60,
        headers={"Authorization": f"Bearer {target.admin_token}"},
    )


@contextlib.contextmanager
def console_session(target: Target) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=target.url, verify=str(target.ca_cert), trust_env=False, timeout=60) as client:
        answer = client.post("/console/login", data={"token": target.admin_token})
        if answer.status_code != 303:
            raise BenchmarkError(f"console login: {answer.status_code} {answer.text[:200]}")
        yield client


def host_count(target: Target) -> int:
    with admin(target) as client:
        return int(client.get("/api/latest/fleet/hosts/count").json()["count"])


def start_load(
    target: Target, secret: str, hosts: int, work: Path, cpus: frozenset[int] | None, *, orbit: bool, seed: str
) -> Generator:
    ramp = 60.0 * math.ceil(hosts / 6000)
    argv = [str(Path(sys.executable).parent / "osqueryd-sim"), "load", "--hosts", str(hosts)]
    argv += ["--tls_hostname", f"{target.host}:{target.port}", "--tls_server_certs", str(target.ca_cert)]
    argv += ["--ramp", str(ramp), "--progress_interval", "1", "--seed", seed]
    if orbit:
        argv.append("--with-orbit")
    return Generator(argv, {**os.environ, "ENROLL_SECRET": secret}, work / f"summary-{seed}.json", cpus)


def wait_enrolled(target: Target, gen: Generator, hosts: int, settle: float) -> None:
    started = time.monotonic()
    ramp = 60.0 * math.ceil(hosts / 6000)
    deadline = started + ramp + 300 + hosts / 20
    while gen.enrolled < hosts or time.monotonic() - started < ramp + settle:
        if gen.popen.poll() is not None:
            raise BenchmarkError(f"generator exited {gen.popen.returncode}: {gen.tail}")
        if target.process.exited() is not None:
            raise BenchmarkError(f"fleet-stub exited: {target.process.log_tail()}")
        if time.monotonic() > deadline:
            raise BenchmarkError(f"only {gen.enrolled}/{hosts} hosts enrolled")
        time.sleep(0.5)


def add_policies(target: Target) -> None:
    with admin(target) as client:
        for name, query in POLICIES:
            body = {"name": name, "query": query, "description": "", "resolution": "", "platform": ""}
            client.post("/api/latest/fleet/global/policies", json=body).raise_for_status()


# --- part 1: page times ---------------------------------------------------------------------------------------------


def timed_get(client: httpx.Client, path: str) -> tuple[float, int]:
    started = time.perf_counter()
    answer = client.get(path)
    elapsed = time.perf_counter() - started
    if answer.status_code != 200:
        raise BenchmarkError(f"GET {path}: {answer.status_code} {answer.text[:200]}")
    return elapsed * 1000, len(answer.content)


def measure_pages(target: Target, pages: Sequence[tuple[str, str]], rounds: int, requests: int) -> list[PageFigure]:
    figures = [PageFigure(name, path) for name, path in pages]
    baseline = "/console/static/console.css"
    with console_session(target) as client, admin(target) as api:
        clients = {"console": client, "api": api}
        for figure in figures:  # warm-up: SQLite's page cache, the interpreter's
            timed_get(clients["api" if figure.path.startswith("/api/") else "console"], figure.path)
        for number in range(rounds):
            for figure in figures:
                session = clients["api" if figure.path.startswith("/api/") else "console"]
                page_ms, base_ms = [], []
                for _ in range(requests):  # A/B in turn, on the same connection
                    elapsed, size = timed_get(session, figure.path)
                    page_ms.append(elapsed)
                    figure.bytes = size
                    base_ms.append(timed_get(session, baseline)[0])
                figure.rounds_ms.append(statistics.median(page_ms))
                figure.baseline_rounds_ms.append(statistics.median(base_ms))
            progress(f"pages: round {number + 1}/{rounds} done")
    return figures


def page_list(target: Target, hosts: int) -> list[tuple[str, str]]:
    with admin(target) as client:
        first = client.get("/api/latest/fleet/hosts", params={"per_page": "1"}).json()["hosts"][0]["id"]
    last_page = max(0, math.ceil(hosts / 50) - 1)
    return [
        ("hosts, first page (by hostname)", "/console/hosts"),
        ("hosts, last page", f"/console/hosts?page={last_page}"),
        ("hosts by failing policies", "/console/hosts?order_key=failing_policies_count&order_direction=desc"),
        ("hosts online only", "/console/hosts?status=online"),
        ("hosts, search", "/console/hosts?query=sim-0999"),
        ("host page", f"/console/hosts/{first}"),
        ("versions", "/console/versions"),
        ("REST: one page of 50", "/api/latest/fleet/hosts?per_page=50"),
        ("REST: every host (no paging)", "/api/latest/fleet/hosts"),
    ]


# --- part 2: agents' p99 while an admin browses ----------------------------------------------------------------------


class Probe:
    """One osquery host of this script: ``distributed/read`` every PROBE_EVERY s; latencies kept per window."""

    def __init__(self, target: Target, secret: str) -> None:
        self._client = httpx.Client(base_url=target.url, verify=str(target.ca_cert), trust_env=False, timeout=30)
        answer = self._client.post(
            "/api/v1/osquery/enroll", json={"enroll_secret": secret, "host_identifier": "console-probe"}
        )
        answer.raise_for_status()
        self._node_key = str(answer.json()["node_key"])
        self._samples: list[float] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.failures = 0
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(PROBE_EVERY):
            started = time.perf_counter()
            try:
                ok = (
                    self._client.post("/api/v1/osquery/distributed/read", json={"node_key": self._node_key}).status_code
                    == 200
                )
            except httpx.HTTPError:
                ok = False
            with self._lock:
                if ok:
                    self._samples.append(time.perf_counter() - started)
                else:
                    self.failures += 1

    def take(self) -> list[float]:
        with self._lock:
            found, self._samples = self._samples, []
        return sorted(found)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(35)
        self._client.close()


BROWSE_PATHS = (
    "/console/hosts?order_key={key}&page={page}",
    "/console/hosts/{host}",
    "/console/versions",
    "/console/hosts?status=online&query=sim-0",
)
SORT_KEYS = ("hostname", "seen_time", "failing_policies_count", "osquery_version", "team_name", "platform")


def browse(url: str, ca: str, token: str, think: float) -> int:
    """``--browse``: someone in the console (hosts sorted differently each time, a host, the versions, a filtered
    list) until SIGTERM; then the page latencies as JSON on stdout. A process of its own, so that its work shares no
    GIL with the probe."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    latencies: list[float] = []
    errors = 0
    with httpx.Client(base_url=url, verify=ca, trust_env=False, timeout=60) as client:
        if client.post("/console/login", data={"token": token}).status_code != 303:
            raise BenchmarkError("console login failed")
        number = 0
        while not stop.is_set():
            number += 1
            path = BROWSE_PATHS[number % len(BROWSE_PATHS)].format(
                key=SORT_KEYS[number % len(SORT_KEYS)], page=number % 40, host=1 + number * 37 % 4000
            )
            started = time.perf_counter()
            try:
                ok = client.get(path).status_code == 200
            except httpx.HTTPError:
                ok = False
            if ok:
                latencies.append(time.perf_counter() - started)
            else:
                errors += 1
            if think:
                stop.wait(think)
    print(json.dumps({"latencies": latencies, "errors": errors}))
    return 0


class Admin:
    """``browse()`` in a child process on the generator's CPU."""

    def __init__(self, target: Target, think: float, cpus: frozenset[int] | None) -> None:
        env = {**os.environ, "CONSOLE_BENCH_TOKEN": target.admin_token}  # never in argv
        argv = [sys.executable, __file__, "--browse", target.url, str(target.ca_cert), str(think)]
        with cpu_affinity(cpus):
            self._popen = subprocess.Popen(argv, stdout=subprocess.PIPE, env=env, stdin=subprocess.DEVNULL)
        self.latencies: list[float] = []
        self.errors = 0

    def stop(self) -> None:
        self._popen.send_signal(signal.SIGTERM)
        out, _ = self._popen.communicate(timeout=120)
        if self._popen.returncode != 0 or not out.strip():
            raise BenchmarkError(f"the browsing admin exited with {self._popen.returncode}")
        found = json.loads(out)
        self.latencies = [float(x) for x in found["latencies"]]
        self.errors = int(found["errors"])


def percentile_ms(ordered: Sequence[float], fraction: float) -> float:
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))] * 1000


def agent_buckets(target: Target) -> dict[float, float]:
    """The stub's latency histogram summed over the agents' endpoints (osquery and orbit) only."""
    with admin(target) as client:
        text = client.get("/metrics").text
    summed: dict[float, float] = {}
    for line in text.splitlines():
        if not line.startswith(DURATION + "_bucket{"):
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', line))
        if not labels.get("endpoint", "").startswith(("osquery_", "orbit_")):
            continue
        bound = float("inf") if labels["le"] == "+Inf" else float(labels["le"])
        summed[bound] = summed.get(bound, 0.0) + float(line.rsplit(" ", 1)[1])
    return summed


def measure_window(target: Target, probe: Probe, kind: str, seconds: float, cpus: frozenset[int] | None) -> Window:
    browsing = {"quiet": None, "person": THINK_SECONDS, "stress": 0.0}[kind]
    before = agent_buckets(target)
    probe.take()
    admin_user = Admin(target, browsing, cpus) if browsing is not None else None
    time.sleep(seconds)
    if admin_user is not None:
        admin_user.stop()
    samples = probe.take()
    after = agent_buckets(target)
    pages = sorted(admin_user.latencies) if admin_user else []
    return Window(
        kind=kind,
        probe_p50_ms=percentile_ms(samples, 0.50),
        probe_p99_ms=percentile_ms(samples, 0.99),
        probe_samples=len(samples),
        stub_p99_ms=bucket_percentile_ms(before, after, 0.99),
        pages=len(pages),
        page_p50_ms=percentile_ms(pages, 0.50),
        errors=(admin_user.errors if admin_user else 0),
    )


# --- the run --------------------------------------------------------------------------------------------------------


def run(options: argparse.Namespace) -> Report:
    stub_cpus, gen_cpus = plan_cpus()
    report = Report(
        hosts=options.hosts,
        agents=options.agents,
        how_loaded=(
            f"osqueryd-sim load --hosts {options.hosts}: real enrollments, host details and answers to "
            f"{len(POLICIES)} global policies through the osquery API (the generator stopped before measuring)"
        ),
        stub_cpus=sorted(stub_cpus) if stub_cpus else None,
        generator_cpus=sorted(gen_cpus) if gen_cpus else None,
    )
    if gen_cpus is not None:
        os.sched_setaffinity(0, gen_cpus)
    else:
        report.notes.append("fewer than 2 CPUs: nothing pinned")
    with tempfile.TemporaryDirectory(prefix="console-pages-") as tmp:
        work = Path(tmp)
        if options.hosts:
            with contextlib.ExitStack() as stack:
                secret = secrets.token_urlsafe(16)
                part = work / "pages"
                part.mkdir()
                target = start_stub(part, secret, stub_cpus, stack)
                add_policies(target)
                progress(f"loading {options.hosts} hosts with osqueryd-sim load")
                gen = start_load(target, secret, options.hosts, part, gen_cpus, orbit=False, seed="pages")
                stack.callback(gen.stop)
                wait_enrolled(target, gen, options.hosts, settle=options.settle)
                gen.stop()
                found = host_count(target)
                if found < options.hosts:
                    raise BenchmarkError(f"the stub knows {found} hosts, expected {options.hosts}")
                progress(f"{found} hosts; timing pages")
                report.pages = measure_pages(target, page_list(target, found), options.rounds, options.requests)
        if options.agents:
            with contextlib.ExitStack() as stack:
                secret = secrets.token_urlsafe(16)
                part = work / "agents"
                part.mkdir()
                target = start_stub(part, secret, stub_cpus, stack)
                add_policies(target)
                progress(f"{options.agents} agents with orbit traffic at Fleet's intervals: ramp")
                gen = start_load(target, secret, options.agents, part, gen_cpus, orbit=True, seed="agents")
                stack.callback(gen.stop)
                wait_enrolled(target, gen, options.agents, settle=options.settle)
                probe = Probe(target, secret)
                stack.callback(probe.close)
                for repeat in range(options.repeats):
                    for kind in ("quiet", "person", "stress"):
                        window = measure_window(target, probe, kind, options.window, gen_cpus)
                        report.windows.append(window)
                        progress(
                            f"repeat {repeat + 1}/{options.repeats} {kind}: probe p99 {window.probe_p99_ms:.1f} ms, "
                            f"stub p99 ≤ {window.stub_p99_ms:g} ms, {window.pages} pages"
                        )
                if probe.failures or gen.errors:
                    report.notes.append(f"probe failures {probe.failures}, generator errors {gen.errors}")
    return report


def summary(report: Report, kind: str, pick: Callable[[Window], float]) -> tuple[float, float]:
    values = [pick(w) for w in report.windows if w.kind == kind and not math.isnan(pick(w))]
    return (min(values), statistics.median(values)) if values else (float("nan"), float("nan"))


def render(report: Report) -> str:
    cpus = f"stub on CPU {report.stub_cpus}, load and this script on CPU {report.generator_cpus}"
    lines = [f"fleet-stub console; {cpus}"]
    if report.pages:
        lines += [
            "",
            f"Part 1 — pages with {report.hosts} hosts ({report.how_loaded}).",
            "Medians per round over keep-alive TLS; baseline: /console/static/console.css on the same connection.",
            f"{'page':<32} {'min ms':>8} {'median ms':>10} {'baseline':>9} {'ratio':>7} {'bytes':>9}",
        ]
        for page in report.pages:
            lines.append(
                f"{page.name:<32} {page.min_ms:8.1f} {page.median_ms:10.1f} "
                f"{statistics.median(page.baseline_rounds_ms):9.2f} {page.ratio:6.1f}× {page.bytes:9,}"
            )
    if report.windows:
        lines += [
            "",
            f"Part 2 — the agents' p99 with {report.agents} simulated hosts (+ orbit), windows A/B/C in turn.",
            f"{'window':<34} {'probe p99 min':>13} {'median':>8} {'ratio':>7} {'stub p99 ≤ (median)':>20} "
            f"{'admin pages':>11}",
        ]
        quiet = summary(report, "quiet", lambda w: w.probe_p99_ms)[1]
        titles = {
            "quiet": "A nobody browsing",
            "person": "B an admin, a page a second",
            "stress": "C pages back to back",
        }
        for kind, title in titles.items():
            low, mid = summary(report, kind, lambda w: w.probe_p99_ms)
            stub_mid = summary(report, kind, lambda w: w.stub_p99_ms)[1]
            pages = sum(w.pages for w in report.windows if w.kind == kind)
            page_p50 = summary(report, kind, lambda w: w.page_p50_ms)[1]
            extra = f"{pages} (p50 {page_p50:.0f} ms)" if pages else "-"
            lines.append(f"{title:<34} {low:13.1f} {mid:8.1f} {mid / quiet:6.2f}× {stub_mid:20g} {extra:>11}")
    lines += [f"note: {n}" for n in report.notes]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hosts", type=int, default=10_000, help="hosts for the page timings (0: skip part 1)")
    parser.add_argument("--agents", type=int, default=5_000, help="simulated agents for part 2 (0: skip it)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=10, help="requests per page per round")
    parser.add_argument("--window", type=float, default=20.0, help="seconds per window in part 2")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--settle", type=float, default=15.0, help="seconds after the ramp before measuring")
    parser.add_argument("--quick", action="store_true", help="1 000 hosts, 500 agents, short windows")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--browse", nargs=3, metavar=("URL", "CA", "THINK"), help=argparse.SUPPRESS)
    options = parser.parse_args(argv)
    if options.browse:
        url, ca, think = options.browse
        return browse(url, ca, os.environ["CONSOLE_BENCH_TOKEN"], float(think))
    if options.quick:
        options.hosts = min(options.hosts, 1000)
        options.agents = min(options.agents, 500)
        options.rounds, options.requests, options.window, options.settle = 3, 5, 6.0, 3.0
    forward_sigterm()
    try:
        report = run(options)
    except BenchmarkError as error:
        print(f"console_pages: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    if options.json:
        data = asdict(report)
        for page, figure in zip(data["pages"], report.pages, strict=True):
            page.update(min_ms=figure.min_ms, median_ms=figure.median_ms, ratio=figure.ratio)
        print(json.dumps(json_safe(data), indent=2, allow_nan=False))
    else:
        print(render(report))
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    sys.exit(main())
