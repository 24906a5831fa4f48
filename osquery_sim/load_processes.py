"""``osqueryd-sim load --processes N``: the hosts spread over N processes of ``load``, one merged summary.

Why: one process simulates a few thousand hosts before its own event loop or its open-files limit (three
keep-alive connections per host) is what a benchmark measures, not the server. The parent starts N children of
``load`` itself, each with its share of the hosts (host numbers continue across them, so identities are those of
a single process), the same intervals, ramp and seed; the secrets go through the environment, never argv. With a
server on a loopback address each child connects from its own loopback address (127.0.0.2, 127.0.0.3, …): one
source address has only the ephemeral port range (≈ 28 000 ports) towards one server port.

Progress: a line in the single process's format every ``--progress_interval`` with the children's figures summed
(lag and GC time: the worst child; RSS: the sum). SIGINT/SIGTERM and SIGUSR1 are passed on. The summary is
``load_merge.merge_summaries`` of the children's, percentiles recomputed from their samples.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
import re
import signal
import sys
import time
from dataclasses import dataclass

from osquery_sim.lean_http import split_host_port
from osquery_sim.load_merge import merge_summaries
from osquery_sim.load_options import LoadOptions

PROGRESS = re.compile(
    r"t=\s*\d+s enrolled=(\d+)/(\d+) req/s=\s*([\d.]+) requests=(\d+) errors=(\d+) "
    r"loop_lag_max_ms=(\d+) gc_ms=(\d+) rss_peak_mib=(\d+)"
)
MAX_SUMMARY_BYTES = 512 * 1024 * 1024


def host_shares(hosts: int, processes: int) -> list[int]:
    """Hosts per process, as even as possible (the first ones take the remainder)."""
    base, extra = divmod(hosts, processes)
    return [base + (1 if i < extra else 0) for i in range(processes)]


def source_addresses(options: LoadOptions) -> list[str]:
    """One local address per child: the one given for all, else distinct loopback ones when the server is on an
    IPv4 loopback address, else none (the system picks)."""
    if options.source_address:
        return [options.source_address] * options.processes
    try:
        host, _port = split_host_port(options.tls_hostname)
        loopback = ipaddress.ip_address(host)
    except ValueError:
        return [""] * options.processes
    if loopback.version != 4 or not loopback.is_loopback:
        return [""] * options.processes
    return [f"127.0.0.{2 + i}" for i in range(options.processes)]


def child_argv(options: LoadOptions, hosts: int, first: int, address: str, ramp: float) -> list[str]:
    program = [sys.executable] if getattr(sys, "frozen", False) else [sys.executable, "-m", "osquery_sim"]
    argv = [*program, "load", "--hosts", str(hosts), "--first_host", str(first)]
    argv += ["--tls_hostname", options.tls_hostname, "--tls_server_certs", options.tls_server_certs]
    argv += ["--distributed_interval", str(options.distributed_interval)]
    argv += ["--config_refresh", str(options.config_refresh), "--logger_tls_period", str(options.logger_tls_period)]
    argv += ["--ramp", repr(ramp), "--progress_interval", repr(options.progress_interval), "--latency_samples"]
    if options.seed:
        argv += ["--seed", options.seed]
    if options.duration is not None:
        argv += ["--duration", repr(options.duration)]
    if options.duration_after_enrollment:
        argv.append("--duration-after-enrollment")
    if options.with_orbit:
        argv.append("--with-orbit")
        for rule in options.fail_rules:
            target = f"{rule.target}:" if rule.target else ""
            argv += ["--fail-fraction-on", f"{target}{rule.version}={rule.fraction!r}"]
        argv += ["--orbit-config-interval", repr(options.orbit_config_interval)]
        argv += ["--stable-period", repr(options.stable_period), "--failure-after", repr(options.failure_after)]
        argv += ["--orbit-version", options.baseline["orbit"], "--osqueryd-version", options.baseline["osqueryd"]]
        argv += ["--desktop-version", options.baseline["desktop"]]
    if address:
        argv += ["--source_address", address]
    return argv


@dataclass
class _Progress:
    enrolled: int = 0
    hosts: int = 0
    rate: float = 0.0
    requests: int = 0
    errors: int = 0
    lag_ms: int = 0
    gc_ms: int = 0
    rss_mib: int = 0


class _Child:
    def __init__(self, number: int, process: asyncio.subprocess.Process, hosts: int) -> None:
        self.number = number
        self.process = process
        self.progress = _Progress(hosts=hosts)
        self.stdout = b""

    async def read_stderr(self) -> None:
        assert self.process.stderr is not None
        async for raw in self.process.stderr:
            line = raw.decode(errors="replace").rstrip()
            match = PROGRESS.search(line)
            if match:
                enrolled, hosts, rate, requests, errors, lag, in_gc, rss = match.groups()
                self.progress = _Progress(
                    int(enrolled), int(hosts), float(rate), int(requests), int(errors), int(lag), int(in_gc), int(rss)
                )
            elif line:
                print(f"[process {self.number}] {line}", file=sys.stderr, flush=True)

    async def read_stdout(self) -> None:
        assert self.process.stdout is not None
        chunks: list[bytes] = []
        size = 0
        while chunk := await self.process.stdout.read(1 << 20):
            size += len(chunk)
            if size <= MAX_SUMMARY_BYTES:
                chunks.append(chunk)
        self.stdout = b"".join(chunks)

    def summary(self) -> dict[str, object] | None:
        try:
            found = json.loads(self.stdout)
        except ValueError:
            return None
        return found if isinstance(found, dict) else None


def _progress_line(started: float, children: list[_Child]) -> str:
    each = [c.progress for c in children]
    return (
        f"t={time.monotonic() - started:6.0f}s enrolled={sum(p.enrolled for p in each)}/"
        f"{sum(p.hosts for p in each)} req/s={sum(p.rate for p in each):8.1f} "
        f"requests={sum(p.requests for p in each)} errors={sum(p.errors for p in each)} "
        f"loop_lag_max_ms={max(p.lag_ms for p in each)} gc_ms={max(p.gc_ms for p in each)} "
        f"rss_peak_mib={sum(p.rss_mib for p in each)} processes={len(each)}"
    )


async def run_processes(options: LoadOptions) -> tuple[dict[str, object], bool]:
    """Run the children to their end; returns the merged summary and whether a child gave no summary."""
    ramp = options.ramp if options.ramp is not None else min(60.0, options.hosts / 200.0)
    env = {**os.environ, "ENROLL_SECRET": options.enroll_secret, "FLEET_ADMIN_TOKEN": options.admin_token}
    children: list[_Child] = []
    first = options.first_host
    for number, (hosts, address) in enumerate(
        zip(host_shares(options.hosts, options.processes), source_addresses(options), strict=True)
    ):
        process = await asyncio.create_subprocess_exec(
            *child_argv(options, hosts, first, address, ramp),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
        children.append(_Child(number + 1, process, hosts))
        first += hosts
    loop = asyncio.get_running_loop()

    def forward(sig: signal.Signals) -> None:
        for child in children:
            if child.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    child.process.send_signal(sig)

    forwarded = [signal.SIGINT, signal.SIGTERM] + ([signal.SIGUSR1] if hasattr(signal, "SIGUSR1") else [])
    for sig in forwarded:
        loop.add_signal_handler(sig, forward, signal.SIGTERM if sig == signal.SIGINT else sig)
    started = time.monotonic()
    readers = [asyncio.create_task(c.read_stderr()) for c in children]
    readers += [asyncio.create_task(c.read_stdout()) for c in children]
    waiting = asyncio.ensure_future(asyncio.gather(*(c.process.wait() for c in children)))
    try:
        while not waiting.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(waiting), options.progress_interval)
            if not waiting.done():
                print(_progress_line(started, children), file=sys.stderr, flush=True)
        await asyncio.gather(*readers)
    finally:
        for sig in forwarded:
            loop.remove_signal_handler(sig)
    summaries = []
    failed = False
    for child in children:
        summary = child.summary()
        if summary is None:
            failed = True
            print(
                f"[process {child.number}] exited {child.process.returncode} without a summary",
                file=sys.stderr,
                flush=True,
            )
        else:
            summaries.append(summary)
    print(_progress_line(started, children), file=sys.stderr, flush=True)
    return merge_summaries(summaries), failed
