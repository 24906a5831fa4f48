"""The options of ``osqueryd-sim load`` (``--processes`` gives each child the same, with its share of the hosts)."""

from __future__ import annotations

import argparse
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

from osquery_sim.agent_updates import FailureRule, parse_failure_rule
from osquery_sim.orbit_traffic import CONFIG_INTERVAL
from osquery_sim.version import OSQUERY_VERSION

MAX_PROCESSES = 64
ENROLLMENT_WAIT = 120.0  # --duration-after-enrollment: how long past the ramp hosts may take to enroll


@dataclass(frozen=True)
class LoadOptions:
    hosts: int
    tls_hostname: str
    tls_server_certs: str
    enroll_secret: str
    distributed_interval: int = 10
    config_refresh: int = 60
    logger_tls_period: int = 10
    duration: float | None = None
    # --duration counts from when every host is enrolled (at most ENROLLMENT_WAIT past the ramp), not from the start:
    # a busy machine slows enrollment, and a short run would end with hosts still enrolling
    duration_after_enrollment: bool = False
    with_orbit: bool = False
    ramp: float | None = None
    admin_token: str = ""
    progress_interval: float = 10.0
    seed: str = ""
    processes: int = 1
    first_host: int = 0  # a process of ``--processes`` simulates hosts first_host … first_host + hosts - 1
    source_address: str = ""
    latency_samples: bool = False  # the summary carries every latency (for the parent of ``--processes``)
    fail_rules: tuple[FailureRule, ...] = ()
    orbit_config_interval: float = CONFIG_INTERVAL
    stable_period: float = 60.0
    failure_after: float = 20.0
    baseline: dict[str, str] = field(
        default_factory=lambda: {"orbit": "1.0.0", "osqueryd": OSQUERY_VERSION, "desktop": "1.0.0"}
    )


def parse_args(argv: Sequence[str]) -> LoadOptions:
    parser = argparse.ArgumentParser(prog="osqueryd-sim load", description="Simulate many osquery hosts at once.")
    parser.add_argument("--hosts", type=int, required=True)
    parser.add_argument("--tls_hostname", required=True, help="HOST:PORT of the Fleet server")
    parser.add_argument("--tls_server_certs", default="", help="CA bundle that verifies the server")
    parser.add_argument("--enroll_secret", default=os.environ.get("ENROLL_SECRET", ""), help="(or env ENROLL_SECRET)")
    parser.add_argument("--enroll_secret_path", help="a file holding the enroll secret (osquery's flag)")
    parser.add_argument("--distributed_interval", type=int, default=10)
    parser.add_argument("--config_refresh", type=int, default=60)
    parser.add_argument("--logger_tls_period", type=int, default=10)
    parser.add_argument("--duration", type=float, help="seconds to run (default: until SIGINT/SIGTERM)")
    parser.add_argument(
        "--duration-after-enrollment",
        action="store_true",
        help=f"count --duration from when every host is enrolled (waiting at most {ENROLLMENT_WAIT:g} s past the ramp)",
    )
    parser.add_argument("--with-orbit", action="store_true", help="also send each host's orbit traffic")
    parser.add_argument("--ramp", type=float, help="seconds over which host starts are spread")
    parser.add_argument(
        "--admin_token",
        default=os.environ.get("FLEET_ADMIN_TOKEN", ""),
        help="check lost/duplicated lines against the server's counts (or env FLEET_ADMIN_TOKEN)",
    )
    parser.add_argument("--admin_token_file", help="a file holding the admin token")
    parser.add_argument("--progress_interval", type=float, default=10.0)
    parser.add_argument("--seed", default="", help="identity seed: the same seed gives the same host uuids")
    parser.add_argument(
        "--processes",
        type=int,
        default=1,
        help="spread the hosts over this many processes (one merged summary); each has its own core's worth of "
        "event loop and its own open-files limit",
    )
    parser.add_argument(
        "--source_address",
        default="",
        help="connect from this local address; with --processes and a loopback server each process gets its own "
        "(127.0.0.2, 127.0.0.3, …) unless given: one address has ≈ 28 000 ports towards one server port",
    )
    parser.add_argument("--first_host", type=int, default=0, help=argparse.SUPPRESS)
    orbit = parser.add_argument_group("simulated orbit updates (with --with-orbit)")
    orbit.add_argument(
        "--fail-fraction-on",
        action="append",
        default=[],
        metavar="[TARGET:]VERSION=FRACTION",
        help="this share of hosts (chosen deterministically) fails on VERSION: orbit rolls back, osqueryd/desktop "
        "crash-loop; they report it and go back to what they ran before (repeatable)",
    )
    orbit.add_argument("--orbit-config-interval", type=float, default=CONFIG_INTERVAL, help="seconds (orbit: 30)")
    orbit.add_argument(
        "--stable-period", type=float, default=60.0, help="seconds a new version runs before it is confirmed"
    )
    orbit.add_argument(
        "--failure-after", type=float, default=20.0, help="seconds until a failing host detects the failure"
    )
    orbit.add_argument("--orbit-version", default="1.0.0", help="the orbit version hosts run on non-version channels")
    orbit.add_argument("--osqueryd-version", default=OSQUERY_VERSION, help="likewise for osqueryd")
    orbit.add_argument("--desktop-version", default="1.0.0", help="likewise for Fleet Desktop")
    parser.add_argument("--latency_samples", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.hosts <= 0:
        parser.error("--hosts must be positive")
    if not 1 <= args.processes <= MAX_PROCESSES:
        parser.error(f"--processes must be between 1 and {MAX_PROCESSES}")
    if args.processes > args.hosts:
        parser.error("--processes must not exceed --hosts")
    if args.first_host < 0:
        parser.error("--first_host must not be negative")
    if args.source_address:
        try:
            ipaddress.ip_address(args.source_address)
        except ValueError:
            parser.error(f"--source_address must be an IP address, not {args.source_address!r}")
    try:
        rules = tuple(parse_failure_rule(text) for text in args.fail_fraction_on)
    except ValueError as exc:
        parser.error(str(exc))
    if rules and not args.with_orbit:
        parser.error("--fail-fraction-on needs --with-orbit")
    for name in ("orbit_config_interval", "stable_period", "failure_after"):
        value = getattr(args, name)
        if not value > 0 or value == float("inf"):
            parser.error(f"--{name.replace('_', '-')} must be a positive number of seconds")
    try:
        if args.enroll_secret_path:
            args.enroll_secret = _read_secret(args.enroll_secret_path)
        if args.admin_token_file:
            args.admin_token = _read_secret(args.admin_token_file)
    except ValueError as exc:
        parser.error(str(exc))
    if not args.enroll_secret:
        parser.error("--enroll_secret (or ENROLL_SECRET, or --enroll_secret_path) is required")
    return LoadOptions(
        hosts=args.hosts,
        tls_hostname=args.tls_hostname,
        tls_server_certs=args.tls_server_certs,
        enroll_secret=args.enroll_secret,
        distributed_interval=args.distributed_interval,
        config_refresh=args.config_refresh,
        logger_tls_period=args.logger_tls_period,
        duration=args.duration,
        duration_after_enrollment=args.duration_after_enrollment,
        with_orbit=args.with_orbit,
        ramp=args.ramp,
        admin_token=args.admin_token,
        progress_interval=args.progress_interval,
        seed=args.seed,
        processes=args.processes,
        first_host=args.first_host,
        source_address=args.source_address,
        latency_samples=args.latency_samples,
        fail_rules=rules,
        orbit_config_interval=args.orbit_config_interval,
        stable_period=args.stable_period,
        failure_after=args.failure_after,
        baseline={"orbit": args.orbit_version, "osqueryd": args.osqueryd_version, "desktop": args.desktop_version},
    )


def _read_secret(path: str) -> str:
    """The first line of a small secret file (as osquery reads ``--enroll_secret_path``); ValueError if unusable."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(65537)
    except OSError as exc:
        raise ValueError(f"{path}: {exc.strerror or exc}") from None
    if len(data) > 65536:
        raise ValueError(f"{path}: larger than 64 KiB")
    text = data.decode("utf-8", errors="replace").strip()
    if not text:
        raise ValueError(f"{path}: empty")
    return text.splitlines()[0].strip()
