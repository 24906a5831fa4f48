"""osqueryd-sim as a daemon: pidfile, database path, extensions socket, signals, faults, and the engine.

Start-up follows osqueryd: refuse a pidfile held by a live process (unless ``--force``), open the database
(node key, instance id, buffered logs), start the extension manager on ``--extensions_socket`` (``extensions.py``;
its extensions' tables join the query database), enroll when a TLS plugin needs a node key —
and exit with osquery's EXIT_CATASTROPHIC (78) when enrollment finally fails and the TLS logger cannot start.
SIGTERM/SIGINT stop gracefully (one last log flush; unsent lines stay buffered on disk).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path

from osquery_sim import faults as fault_knobs
from osquery_sim import pidfile
from osquery_sim.engine import Endpoints, Engine, EngineSettings
from osquery_sim.extension_registry import ExtensionRegistry
from osquery_sim.extensions import ExtensionManager, ManagerSettings
from osquery_sim.flag_specs import FlagKind
from osquery_sim.gflags import Flags
from osquery_sim.host_facts import HostFacts, build_host_facts
from osquery_sim.remote_client import EnrollmentFailed, EnrollRequest, EnrollSettings, RemoteClient
from osquery_sim.sim_store import SimStore
from osquery_sim.tls_transport import TlsSettings, TlsTransport, TransportError
from osquery_sim.wakeable import WakeableEvent

log = logging.getLogger(__name__)

EXIT_SUCCESS = 0
EXIT_FAILURE = 1
EXIT_CATASTROPHIC = 78
LINUX_PLATFORM_TYPE = "9"  # osquery's PlatformType bitmask: posix (0x1) | linux (0x8)


@dataclass(frozen=True)
class DaemonPaths:
    pidfile: Path
    database: str
    extensions_socket: Path | None


def read_enroll_secret(flags: Flags, env: dict[str, str]) -> str:
    path = flags.string("enroll_secret_path")
    if path:
        try:
            return Path(path).read_text(encoding="utf-8").strip()
        except OSError as exc:
            log.error("event=enroll_secret_unreadable path=%s error=%s", path, exc.strerror)
            return ""
    variable = flags.string("enroll_secret_env")
    return env.get(variable, "").strip() if variable else ""


def engine_settings(flags: Flags, version: str) -> EngineSettings:
    loggers = {p.strip() for p in flags.string("logger_plugin").split(",") if p.strip()}
    return EngineSettings(
        endpoints=Endpoints(
            config=flags.string("config_tls_endpoint"),
            logger=flags.string("logger_tls_endpoint"),
            distributed_read=flags.string("distributed_tls_read_endpoint"),
            distributed_write=flags.string("distributed_tls_write_endpoint"),
        ),
        config_tls=flags.string("config_plugin") == "tls",
        logger_tls="tls" in loggers and not flags.boolean("disable_logging"),
        logger_filesystem="filesystem" in loggers and not flags.boolean("disable_logging"),
        logger_path=flags.string("logger_path"),
        distributed_tls=not flags.boolean("disable_distributed") and flags.string("distributed_plugin") == "tls",
        config_refresh=flags.integer("config_refresh"),
        config_accelerated_refresh=flags.integer("config_accelerated_refresh"),
        config_tls_max_attempts=flags.integer("config_tls_max_attempts"),
        distributed_interval=flags.integer("distributed_interval"),
        distributed_tls_max_attempts=flags.integer("distributed_tls_max_attempts"),
        distributed_denylist_duration=flags.integer("distributed_denylist_duration"),
        logger_tls_period=flags.integer("logger_tls_period"),
        logger_tls_max_lines=flags.integer("logger_tls_max_lines"),
        logger_tls_max_linesize=flags.integer("logger_tls_max_linesize"),
        logger_tls_backoff_max=flags.integer("logger_tls_backoff_max"),
        logger_tls_compress=flags.boolean("logger_tls_compress"),
        tls_disable_status_log=flags.boolean("tls_disable_status_log"),
        logger_min_status=flags.integer("logger_min_status"),
        buffered_log_max=flags.integer("buffered_log_max"),
        pack_delimiter=flags.string("pack_delimiter"),
        schedule_splay_percent=flags.integer("schedule_splay_percent"),
        schedule_default_interval=flags.integer("schedule_default_interval"),
        decorations_top_level=flags.boolean("decorations_top_level"),
        schedule_epoch=flags.integer("schedule_epoch"),
        version=version,
    )


def host_identifier_for(flags: Flags, facts: HostFacts, ephemeral_id: str) -> str:
    mode = flags.string("host_identifier")
    if mode == "uuid" and facts.identity.uuid:
        return facts.identity.uuid
    if mode == "instance":
        return facts.instance_id
    if mode == "ephemeral":
        return ephemeral_id
    if mode == "specified" and flags.string("specified_identifier"):
        return flags.string("specified_identifier")
    return facts.identity.hostname


def read_faults(flags: Flags) -> fault_knobs.Faults:
    return fault_knobs.Faults(
        crash_after=flags.number("sim_crash_after"),
        exit_code=flags.integer("sim_exit_code"),
        ignore_sigterm=flags.boolean("sim_ignore_sigterm"),
        slow_start=flags.number("sim_slow_start"),
        hang_after=flags.number("sim_hang_after"),
        memory_growth_mb_per_min=flags.number("sim_memory_growth_mb_per_min"),
    )


def _seconds(text: str, default: float) -> float:
    """``--extensions_interval``/``--extensions_timeout`` are string flags holding seconds (fractions allowed here)."""
    try:
        value = float(text)
    except ValueError:
        return default
    return max(value, 0.1)


def _flag_text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def option_listing(flags: Flags) -> dict[str, tuple[str, str, str]]:
    """What ``ExtensionManager.options()`` returns: osquery's flags with value, default and type."""
    return {
        name: (_flag_text(flags.values.get(name, spec.default)), _flag_text(spec.default), str(spec.type))
        for name, spec in flags.table.flags.items()
        if spec.kind is not FlagKind.SIM
    }


def start_extension_manager(flags: Flags, facts: HostFacts) -> ExtensionManager | None:
    """osquery's extension manager on ``--extensions_socket`` (unless ``--disable_extensions``), its tables attached."""
    if flags.boolean("disable_extensions"):
        return None
    settings = ManagerSettings(
        socket_path=Path(flags.string("extensions_socket")),
        interval=_seconds(flags.string("extensions_interval"), 3.0),
        timeout=_seconds(flags.string("extensions_timeout"), 3.0),
    )
    manager = ExtensionManager(
        settings,
        ExtensionRegistry(facts.database.tables()),
        query=facts.database.query,
        options=lambda: option_listing(flags),
    )
    try:
        manager.start()
    except OSError as exc:
        log.warning("event=extensions_socket_failed path=%s error=%s", settings.socket_path, exc.strerror or exc)
        return None
    facts.database.attach_external_tables(manager)
    facts.database.update_runtime(replace(facts.runtime, extensions="active"))
    return manager


class Daemon:
    def __init__(self, flags: Flags, env: dict[str, str], version: str) -> None:
        self.flags = flags
        self.env = env
        self.version = version
        self.faults = read_faults(flags)
        self.stop = WakeableEvent()
        self.ephemeral_id = str(uuid.uuid4())

    def _install_signals(self, loop: asyncio.AbstractEventLoop) -> None:
        def on_signal(signum: int) -> None:
            if self.faults.ignore_sigterm and signum == signal.SIGTERM:
                log.warning("event=sigterm_ignored")
                return
            log.info("event=shutdown_requested signal=%d", signum)
            self.stop.set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal, int(sig))

    async def run(self) -> int:
        flags = self.flags
        store = SimStore.open(
            flags.string("database_path"), in_memory=flags.boolean("ephemeral") or flags.boolean("disable_database")
        )
        store.denylist_crashed(time.time(), flags.integer("distributed_denylist_duration"))
        facts = build_host_facts(flags, store, self.version)
        settings = engine_settings(flags, self.version)
        needs_tls = settings.config_tls or settings.logger_tls or settings.distributed_tls
        manager = start_extension_manager(flags, facts)
        loop = asyncio.get_running_loop()
        self._install_signals(loop)
        background = self._start_faults()
        transport: TlsTransport | None = None
        try:
            if not needs_tls:
                log.info("event=running_without_remote_plugins")
                await self.stop.wait()
                return EXIT_SUCCESS
            try:
                transport = TlsTransport(
                    TlsSettings(
                        hostname=flags.string("tls_hostname"),
                        server_certs=flags.string("tls_server_certs") if flags.is_set("tls_server_certs") else "",
                        client_cert=flags.string("tls_client_cert"),
                        client_key=flags.string("tls_client_key"),
                        accept_gzip=flags.boolean("tls_accept_gzip"),
                        user_agent=f"osquery/{self.version}",
                    )
                )
            except (TransportError, OSError) as exc:
                log.error("event=tls_setup_failed error=%s", exc)
                return EXIT_CATASTROPHIC
            client = RemoteClient(
                transport,
                store,
                EnrollSettings(
                    endpoint=flags.string("enroll_tls_endpoint"),
                    secret=read_enroll_secret(flags, self.env),
                    secret_field=flags.string("tls_enroll_override"),
                    max_attempts=flags.integer("tls_enroll_max_attempts"),
                    max_interval=flags.integer("tls_enroll_max_interval"),
                    disable_reenrollment=flags.boolean("disable_reenrollment"),
                    disable_enrollment=flags.boolean("disable_enrollment"),
                ),
                lambda: EnrollRequest(self._identifier(facts), LINUX_PLATFORM_TYPE, facts.host_details()),
            )
            engine = Engine(settings, client, store, facts.database, lambda: self._identifier(facts))
            if flags.boolean("enroll_always"):
                client.drop_node_key()
            enroll_task = asyncio.create_task(client.ensure_node_key())
            stop_task = asyncio.create_task(self.stop.wait())
            await asyncio.wait({enroll_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
            if self.stop.is_set():
                enroll_task.cancel()
                return EXIT_SUCCESS
            stop_task.cancel()
            try:
                enroll_task.result()
            except EnrollmentFailed as exc:
                log.error("event=enrollment_failed error=%s", exc)
                if settings.logger_tls:
                    return EXIT_CATASTROPHIC  # the TLS logger cannot start without a node key
            engine.status(f"osqueryd-sim {self.version} started (instance {facts.instance_id})")
            await engine.run(self.stop)
            return EXIT_SUCCESS
        finally:
            for task in background:
                task.cancel()
            if transport is not None:
                await transport.close()
            if manager is not None:
                facts.database.attach_external_tables(None)
                await asyncio.to_thread(manager.close)
            store.close()

    def _identifier(self, facts: HostFacts) -> str:
        return host_identifier_for(self.flags, facts, self.ephemeral_id)

    def _start_faults(self) -> list[asyncio.Task[None]]:
        tasks = []
        if self.faults.crash_after > 0:
            tasks.append(asyncio.create_task(fault_knobs.crash_later(self.faults)))
        if self.faults.hang_after > 0:
            tasks.append(asyncio.create_task(fault_knobs.hang_later(self.faults)))
        if self.faults.memory_growth_mb_per_min > 0:
            tasks.append(asyncio.create_task(fault_knobs.grow_memory(self.faults)))
        return tasks


def run_daemon(flags: Flags, env: dict[str, str], version: str) -> int:
    faults = read_faults(flags)
    fault_knobs.slow_start(faults)
    pid_path = Path(flags.string("pidfile"))
    try:
        pidfile.acquire(pid_path, force=flags.boolean("force"))
    except pidfile.PidfileBusy as exc:
        log.error("event=pidfile_busy error=%s", exc)
        print(f"osqueryd initialize failed: Could not create pidfile: {exc}", flush=True)
        return EXIT_CATASTROPHIC
    except OSError as exc:
        print(f"osqueryd initialize failed: Could not create pidfile: {exc.strerror}", flush=True)
        return EXIT_CATASTROPHIC
    try:
        return asyncio.run(Daemon(flags, env, version).run())
    finally:
        pidfile.release(pid_path)
