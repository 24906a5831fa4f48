"""``osqueryd-sim load --hosts N …``: N simulated hosts in one asyncio process, like Fleet's osquery-perf but
honest about loss (``--processes P`` spreads them over P such processes: ``load_processes``).

Each host has its own identity (uuid, hostname), node key, in-memory database (buffered logs, query state) and
keep-alive connections (``lean_http``: a lean HTTP/1.1 client, because httpx's cost per request capped one
generator core near 2 000 hosts), and runs the same engine as the daemon (config refresh, distributed read/write with
discovery and ``accelerate``, scheduled queries, the TLS logger) at Fleet's default intervals; starts are spread
over a ramp so the intervals are jittered. Hosts share one table database that takes each host's identity when it
answers a query. ``--with-orbit`` adds each host's orbit traffic; such a host follows the update channels its
server pins and reports update outcomes (``agent_updates``; ``--fail-fraction-on VERSION=FRACTION`` makes a
deterministic share of hosts fail on a version), and serves ``orbit_info`` to the server's detail queries as orbit's
extension does. Progress goes to stderr; a JSON summary to
stdout: requests per endpoint, errors, latency p50/p95/p99, and log lines produced / acknowledged / buffered /
lost / duplicated (checked against the server's own counts when ``--admin_token`` is given). SIGUSR1 restarts the
per-endpoint figures (a benchmark's measured window without the enrollment burst); totals cover the whole run.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import os
import resource
import signal
import ssl
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import replace

import httpx

from osquery_sim.agent_updates import HostUpdates, UpdateBehaviour, summarize
from osquery_sim.engine import Endpoints, Engine, EngineSettings
from osquery_sim.extension_registry import ExternalColumn, ExternalTable
from osquery_sim.identity import SimIdentity, machine_identity
from osquery_sim.load_options import ENROLLMENT_WAIT, LoadOptions, parse_args
from osquery_sim.load_stats import LATENCY_SAMPLES, LineAccounting, LoadStats
from osquery_sim.loop_health import LoopHealth
from osquery_sim.orbit_traffic import OrbitTraffic
from osquery_sim.remote_client import EnrollmentFailed, EnrollRequest, EnrollSettings, RemoteClient
from osquery_sim.sim_store import SimStore
from osquery_sim.table_rows import SimRuntime
from osquery_sim.tables import SimDatabase
from osquery_sim.tls_transport import LeanTlsTransport, TlsSettings
from osquery_sim.version import SIM_VERSION, sim_version
from osquery_sim.wakeable import WakeableEvent, sleep_unless_set

log = logging.getLogger(__name__)
PREFIX = "/api/v1/osquery"


ORBIT_INFO = ExternalTable(
    "orbit_info",
    1,
    tuple(
        ExternalColumn(name, "TEXT")
        for name in ("version", "orbit_channel", "osqueryd_channel", "desktop_channel", "desktop_version")
    ),
)


class LoadOrbitInfo:
    """orbit's ``orbit_info`` extension table for every simulated host: the rows of whichever host queries now."""

    def __init__(self) -> None:
        self.current: dict[str, str] = {}

    def external_tables(self) -> dict[str, ExternalTable]:
        return {"orbit_info": ORBIT_INFO}

    def generate(self, table: ExternalTable) -> list[dict[str, str]]:
        return [dict(self.current)] if table.name == "orbit_info" and self.current else []


class HostTables:
    """One host's view of the shared table database."""

    def __init__(
        self,
        shared: SimDatabase,
        identity: SimIdentity,
        runtime: SimRuntime,
        orbit_info: LoadOrbitInfo | None = None,
    ) -> None:
        self._shared = shared
        self.identity = identity
        self.runtime = runtime
        self._orbit_info = orbit_info
        self.orbit_row: dict[str, str] = {}

    def query(self, sql: str) -> list[dict[str, str]]:
        if self._shared.identity is not self.identity or self._shared.runtime is not self.runtime:
            self._shared.update_identity(self.identity, self.runtime)
        if self._orbit_info is not None:
            self._orbit_info.current = self.orbit_row
        return self._shared.query(sql)

    def first_rows(self) -> dict[str, dict[str, str]]:
        details = {}
        for table in ("os_version", "osquery_info", "system_info", "platform_info"):
            rows = self.query(f"SELECT * FROM {table} LIMIT 1")
            if rows:
                details[table] = rows[0]
        return details


class SimulatedHost:
    def __init__(
        self,
        index: int,
        options: LoadOptions,
        template: SimIdentity,
        shared: SimDatabase,
        context: ssl.SSLContext,
        stats: LoadStats,
        orbit_info: LoadOrbitInfo | None = None,
    ) -> None:
        seed = options.seed or "run"
        host_uuid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"osqueryd-sim/{seed}/{index}"))
        self.identity = replace(
            template,
            uuid=host_uuid,
            hostname=f"sim-{index:05d}",
            computer_name=f"sim-{index:05d}",
            local_hostname=f"sim-{index:05d}",
            hardware_serial=f"SIM{index:08d}",
        )
        self.runtime = SimRuntime(SIM_VERSION, str(uuid.uuid4()), os.getpid(), int(time.time()))
        self.tables = HostTables(shared, self.identity, self.runtime, orbit_info)
        self.updates: HostUpdates | None = None
        if options.with_orbit:
            behaviour = UpdateBehaviour(
                options.baseline, options.fail_rules, options.stable_period, options.failure_after, options.seed
            )
            self.updates = HostUpdates(host_uuid, behaviour)
            self._apply_versions()
        self.store = SimStore.open("", in_memory=True)
        self.transport = LeanTlsTransport(
            TlsSettings(hostname=options.tls_hostname, user_agent=f"osquery/{SIM_VERSION}"),
            context,
            max_connections=2,
            observe=stats.observe,
            local_address=options.source_address or None,
        )
        details = self.tables.first_rows()
        self.client = RemoteClient(
            self.transport,
            self.store,
            EnrollSettings(endpoint=f"{PREFIX}/enroll", secret=options.enroll_secret, max_attempts=0, max_interval=600),
            lambda: EnrollRequest(host_uuid, "9", details),
        )
        settings = EngineSettings(
            endpoints=Endpoints(
                f"{PREFIX}/config", f"{PREFIX}/log", f"{PREFIX}/distributed/read", f"{PREFIX}/distributed/write"
            ),
            config_tls=True,
            logger_tls=True,
            logger_filesystem=False,
            logger_path="",
            distributed_tls=True,
            config_refresh=options.config_refresh,
            distributed_interval=options.distributed_interval,
            distributed_tls_max_attempts=3,
            logger_tls_period=options.logger_tls_period,
            version=SIM_VERSION,
        )
        self.engine = Engine(settings, self.client, self.store, self.tables, lambda: host_uuid)
        self.orbit: OrbitTraffic | None = None
        if options.with_orbit:
            facts = {
                "hardware_uuid": host_uuid,
                "hardware_serial": self.identity.hardware_serial,
                "hostname": self.identity.hostname,
                "computer_name": self.identity.computer_name,
                "platform": self.identity.os_platform,
                "platform_like": self.identity.os_platform_like,
                "hardware_model": self.identity.hardware_model,
            }
            self.orbit = OrbitTraffic(
                OrbitTraffic.client_for(options.tls_hostname, context, options.source_address or None),
                options.enroll_secret,
                facts,
                stats.observe,
                config_interval=options.orbit_config_interval,
                updates=self.updates,
                on_versions=self._apply_versions,
            )

    @property
    def enrolled(self) -> bool:
        return bool(self.client.node_key)

    def _apply_versions(self) -> None:
        """The host now runs other versions: its osquery_info and orbit_info say so from the next query on."""
        updates = self.updates
        if updates is None:
            return
        osqueryd = sim_version({"ORBIT_BUILD_VERSION": updates.running["osqueryd"]})
        if self.runtime.version != osqueryd:
            self.runtime = replace(self.runtime, version=osqueryd)
            self.tables.runtime = self.runtime
        self.tables.orbit_row = {
            "version": updates.running["orbit"],
            "orbit_channel": "stable",
            "osqueryd_channel": "stable",
            "desktop_channel": "stable",
            "desktop_version": updates.running["desktop"],
        }

    async def run(self, stop: asyncio.Event, delay: float) -> None:
        await sleep_unless_set(delay, stop)
        if stop.is_set():
            return
        tasks = []
        if self.orbit is not None:
            tasks.append(asyncio.create_task(self.orbit.run(stop)))
        enrolling = asyncio.ensure_future(self.client.ensure_node_key())
        stopping = asyncio.ensure_future(stop.wait())
        await asyncio.wait({enrolling, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if not enrolling.done():  # max_attempts=0 retries forever; only a stop ends it
            enrolling.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await enrolling
        elif isinstance(enrolling.exception(), EnrollmentFailed):
            log.debug("event=enroll_gave_up error=%s", enrolling.exception())
        if not stop.is_set():
            self.engine.status(f"osqueryd-sim load host {self.identity.hostname} started")
            await self.engine.run(stop)
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.transport.close()

    def accounting(self, server_counts: dict[str, int] | None) -> LineAccounting:
        counters = self.engine.counters
        return LineAccounting(
            produced=counters["produced_result"] + counters["produced_status"],
            acknowledged=counters["acknowledged_result"] + counters["acknowledged_status"],
            buffered=self.store.buffered_count(),
            server_stored=None
            if server_counts is None
            else server_counts.get("result", 0) + server_counts.get("status", 0),
        )


YOUNG_COLLECTION_SECONDS = 0.5
FULL_COLLECTION_SECONDS = 600.0  # bounds what young passes never free, at the price of one pause per 10 min
ENROLLMENT_POLL = 0.1  # --duration-after-enrollment: how often the hosts' enrollment is looked at


async def _collect_young(stop: asyncio.Event) -> None:
    last_full = time.monotonic()
    while not stop.is_set():
        await sleep_unless_set(YOUNG_COLLECTION_SECONDS, stop)
        if time.monotonic() - last_full >= FULL_COLLECTION_SECONDS:
            gc.collect()
            last_full = time.monotonic()
        else:
            gc.collect(1)


def _peak_rss_mib() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return peak / 1024 if sys.platform != "darwin" else peak / 2**20


def _raise_fd_limit(hosts: int) -> None:
    """Three connections per host (two osquery, one orbit) and some slack; above the hard limit, raising that is
    tried too (root / CAP_SYS_RESOURCE), else the load is capped by what is allowed and says so."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hosts * 4 + 256
    if hard != resource.RLIM_INFINITY and hard < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, wanted))
            return
        except (ValueError, OSError):
            print(
                f"warning: open files limit {hard} < {wanted} needed for {hosts} hosts; expect connection errors",
                file=sys.stderr,
                flush=True,
            )
    target = min(wanted, hard) if hard != resource.RLIM_INFINITY else wanted
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


async def _server_counts(options: LoadOptions, context: ssl.SSLContext) -> dict[str, dict[str, int]] | None:
    if not options.admin_token:
        return None
    async with httpx.AsyncClient(
        base_url=f"https://{options.tls_hostname}",
        verify=context,
        trust_env=False,
        timeout=120,
        headers={"Authorization": f"Bearer {options.admin_token}"},
    ) as client:
        response = await client.get("/api/latest/fleet/hosts")
        response.raise_for_status()
        return {str(h["uuid"]): dict(h.get("log_counts") or {}) for h in response.json()["hosts"]}


async def _until_enrolled(hosts: Sequence[SimulatedHost], stop: asyncio.Event, deadline: float) -> None:
    """Until every host has enrolled, ``deadline`` (monotonic) passes, or the run is stopped."""
    while not stop.is_set() and time.monotonic() < deadline and not all(h.enrolled for h in hosts):
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), ENROLLMENT_POLL)


async def run_load(options: LoadOptions) -> dict[str, object]:
    _raise_fd_limit(options.hosts)
    context = ssl.create_default_context(cafile=options.tls_server_certs or None)
    template = machine_identity({})
    shared = SimDatabase(template, SimRuntime(SIM_VERSION, str(uuid.uuid4()), os.getpid(), int(time.time())))
    stats = LoadStats()
    orbit_info = LoadOrbitInfo() if options.with_orbit else None
    if orbit_info is not None:
        shared.attach_external_tables(orbit_info)
    first = options.first_host
    hosts = [
        SimulatedHost(first + i, options, template, shared, context, stats, orbit_info) for i in range(options.hosts)
    ]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    window_started = time.monotonic()

    def new_window() -> None:
        nonlocal window_started
        stats.reset_window()
        window_started = time.monotonic()
        print("window reset: per-endpoint figures start now", file=sys.stderr, flush=True)

    if hasattr(signal, "SIGUSR1"):
        loop.add_signal_handler(signal.SIGUSR1, new_window)
    ramp = options.ramp if options.ramp is not None else min(60.0, options.hosts / 200.0)
    started = time.monotonic()
    # One stop event per host: a cancelled wait is removed from its event's waiter list by a linear scan, so
    # thousands of hosts waiting on one shared event would make every wait cost O(hosts).
    host_stops = [WakeableEvent() for _ in hosts]
    runners = [
        asyncio.create_task(h.run(host_stop, ramp * i / options.hosts))
        for i, (h, host_stop) in enumerate(zip(hosts, host_stops, strict=True))
    ]

    # The collector, not the server, made the generator's latency tails: while hosts enroll, the heap grows by
    # millions of long-lived objects (connections, TLS state, tasks) and each growth of a quarter triggered a full
    # pass over all of them (2–4 s of every 10 s at 10 000 hosts); later, full passes over what was promoted since
    # still paused the loop 300 ms every ~25 s at 5 000 hosts. So automatic collection is off for the run: a task
    # collects the young generations twice a second (where cyclic garbage of requests dies), and a full pass runs
    # once, after enrollment, freezing the survivors. Cyclic garbage that survives two young passes waits for the
    # full pass every 10 min (5 000 hosts: peak RSS +0.5–0.9 MiB/s meanwhile; the progress line prints it).
    gc.collect()
    gc.freeze()
    gc.disable()
    young_collector = asyncio.create_task(_collect_young(stop))
    health = LoopHealth()
    health.start()
    watcher = asyncio.create_task(health.watch(stop))

    async def progress() -> None:
        last_requests, last_time = 0, started
        frozen_after_enrollment = False
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), options.progress_interval)
            now = time.monotonic()
            total = stats.total_requests
            rate = (total - last_requests) / max(now - last_time, 1e-6)
            last_requests, last_time = total, now
            enrolled = sum(1 for h in hosts if h.enrolled)
            if not frozen_after_enrollment and (enrolled == len(hosts) or now - started > ramp + 60):
                frozen_after_enrollment = True
                gc.collect()
                gc.freeze()
            lag, in_gc = health.take()
            print(
                f"t={now - started:6.0f}s enrolled={enrolled}/{len(hosts)} req/s={rate:8.1f} "
                f"requests={total} errors={stats.total_errors} loop_lag_max_ms={lag * 1000:.0f} "
                f"gc_ms={in_gc * 1000:.0f} rss_peak_mib={_peak_rss_mib():.0f}",
                file=sys.stderr,
                flush=True,
            )
            if options.with_orbit:  # one JSON line a benchmark can follow (who runs, ran, failed on which version)
                figures = _updates_summary(hosts)
                print(f"agent_updates t={now - started:.0f}s {json.dumps(figures)}", file=sys.stderr, flush=True)

    reporter = asyncio.create_task(progress())
    if options.duration is not None:
        if options.duration_after_enrollment:
            await _until_enrolled(hosts, stop, started + ramp + ENROLLMENT_WAIT)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), options.duration)
        stop.set()
    else:
        await stop.wait()
    for host_stop in host_stops:
        host_stop.set()
    await asyncio.gather(*runners, return_exceptions=True)
    await reporter
    await watcher
    await young_collector
    health.close()
    gc.enable()
    elapsed = time.monotonic() - started
    server = await _server_counts(options, context)
    accounts = [h.accounting(None if server is None else server.get(h.identity.uuid, {})) for h in hosts]
    shared.close()
    summary: dict[str, object] = {
        "hosts": len(hosts),
        "enrolled": sum(1 for h in hosts if h.enrolled),
        "seconds": round(elapsed, 1),
        "requests": stats.total_requests,
        "errors": stats.total_errors,
        "requests_per_second": round(stats.total_requests / max(elapsed, 1e-6), 1),
        "endpoints": stats.summary(),
        "endpoints_seconds": round(elapsed - (window_started - started), 1),
        "log_lines": {
            "produced": sum(a.produced for a in accounts),
            "acknowledged": sum(a.acknowledged for a in accounts),
            "buffered": sum(a.buffered for a in accounts),
            "lost": sum(a.lost for a in accounts),
            "duplicated": sum(a.duplicated for a in accounts),
            "checked_against_server": server is not None,
        },
        "distributed": {
            "reads": sum(h.engine.counters["distributed_reads"] for h in hosts),
            "writes_acknowledged": sum(h.engine.counters["distributed_writes"] for h in hosts),
        },
        **({"agent_updates": _updates_summary(hosts)} if options.with_orbit else {}),
    }
    if options.latency_samples:
        summary[LATENCY_SAMPLES] = stats.samples()
    return summary


def _updates_summary(hosts: Sequence[SimulatedHost]) -> dict[str, object]:
    summary = summarize([h.updates for h in hosts if h.updates is not None])
    summary["outcomes_sent"] = sum(h.orbit.outcomes_sent for h in hosts if h.orbit is not None)
    return summary


def _fast_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop where it is installed (not on Windows): the generator's own CPU per request is what limits it."""
    try:
        import uvloop  # noqa: PLC0415 - optional: not installed on Windows
    except ImportError:
        return None
    return uvloop.new_event_loop


def load_main(argv: Sequence[str]) -> int:
    options = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    failed = False
    if options.processes > 1:
        from osquery_sim.load_processes import run_processes  # noqa: PLC0415 - only the parent of --processes

        with asyncio.Runner(loop_factory=_fast_loop_factory()) as runner:
            summary, failed = runner.run(run_processes(options))
    else:
        with asyncio.Runner(loop_factory=_fast_loop_factory()) as runner:
            summary = runner.run(run_load(options))
    print(json.dumps(summary, indent=2))
    lines = summary["log_lines"]
    assert isinstance(lines, dict)
    return 0 if lines["lost"] == 0 and lines["duplicated"] == 0 and not failed else 1
