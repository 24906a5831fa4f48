"""The daemon's work once running: config refresh, scheduled queries, the TLS logger, distributed queries.

Each is a loop on one asyncio event loop. The engine does not know about processes, pidfiles or signals
(``daemon.py``) nor how tables are implemented (anything with ``query(sql) -> rows`` that raises an exception
carrying osquery's error text).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

from osquery_sim.osquery_config import OsqueryConfig, ScheduledQuery, parse_config
from osquery_sim.remote_client import RemoteClient
from osquery_sim.result_logs import LogContext, diff_rows, differential_lines, snapshot_line, status_line
from osquery_sim.retry_schedules import distributed_wait, logger_backoff
from osquery_sim.sim_store import SimStore
from osquery_sim.version import SIM_VERSION
from osquery_sim.wakeable import WakeableEvent, sleep_unless_set

log = logging.getLogger(__name__)

Rows = list[dict[str, str]]


class QueryRunner(Protocol):
    def query(self, sql: str) -> Rows: ...


@dataclass(frozen=True)
class Endpoints:
    config: str = ""
    logger: str = ""
    distributed_read: str = ""
    distributed_write: str = ""


@dataclass(frozen=True)
class EngineSettings:
    """Start-up values from the command line; config ``options`` may override the FLAG-kind ones at run time."""

    endpoints: Endpoints
    config_tls: bool
    logger_tls: bool
    logger_filesystem: bool
    logger_path: str
    distributed_tls: bool
    config_refresh: int = 0
    config_accelerated_refresh: int = 300
    config_tls_max_attempts: int = 3
    distributed_interval: int = 60
    distributed_tls_max_attempts: int = 3
    distributed_denylist_duration: int = 86400
    logger_tls_period: int = 4
    logger_tls_max_lines: int = 1024
    logger_tls_max_linesize: int = 1024 * 1024
    logger_tls_backoff_max: int = 3600
    logger_tls_compress: bool = False
    tls_disable_status_log: bool = False
    logger_min_status: int = 0
    buffered_log_max: int = 1_000_000
    pack_delimiter: str = "_"
    schedule_splay_percent: int = 10
    schedule_default_interval: int = 3600
    decorations_top_level: bool = False
    schedule_epoch: int = 0
    version: str = SIM_VERSION
    overridable: frozenset[str] = field(default_factory=frozenset)


IDLE_SCHEDULE_WAIT = 60.0

RUNTIME_OPTIONS = {
    "distributed_interval": "distributed_interval",
    "logger_tls_period": "logger_tls_period",
    "logger_tls_max_lines": "logger_tls_max_lines",
    "distributed_tls_max_attempts": "distributed_tls_max_attempts",
    "config_refresh": "config_refresh",
    "config_tls_refresh": "config_refresh",
    "schedule_splay_percent": "schedule_splay_percent",
    "buffered_log_max": "buffered_log_max",
}


def apply_options(settings: EngineSettings, options: Mapping[str, object]) -> EngineSettings:
    """Integer options from the config override the settings of the same name (as osquery's config does)."""
    changes: dict[str, object] = {}
    for option, attribute in RUNTIME_OPTIONS.items():
        value = options.get(option)
        if isinstance(value, bool):
            continue
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value.strip())
        if isinstance(value, int) and value >= 0:
            changes[attribute] = value
    return replace(settings, **changes) if changes else settings  # type: ignore[arg-type]


@dataclass
class _Scheduled:
    query: ScheduledQuery
    next_run: float


class Engine:
    def __init__(
        self,
        settings: EngineSettings,
        client: RemoteClient,
        store: SimStore,
        tables: QueryRunner,
        host_identifier: Callable[[], str],
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.base_settings = settings
        self.settings = settings
        self.client = client
        self.store = store
        self.tables = tables
        self.host_identifier = host_identifier
        self.clock = clock
        self.config = OsqueryConfig()
        self.config_loaded = asyncio.Event()
        self.decorations: dict[str, str] = {}
        self._scheduled: dict[str, _Scheduled] = {}
        self._accelerate_until = 0.0
        self._pending_results: dict[str, object] | None = None
        self._log_failures = {"result": 0, "status": 0}
        self._wake_logger = asyncio.Event()
        self._schedule_changed = WakeableEvent()
        self.counters: dict[str, int] = {
            "config_ok": 0,
            "config_failed": 0,
            "distributed_reads": 0,
            "distributed_writes": 0,
            "log_batches_sent": 0,
            "log_batches_failed": 0,
            "lines_logged": 0,
            "produced_result": 0,
            "produced_status": 0,
            "acknowledged_result": 0,
            "acknowledged_status": 0,
            "dropped_oversized": 0,
        }

    # --- logging ------------------------------------------------------------------------------------------

    def _context(self) -> LogContext:
        return LogContext(
            host_identifier=self.host_identifier(),
            decorations=self.decorations,
            epoch=self.settings.schedule_epoch,
            decorations_top_level=self.settings.decorations_top_level,
        )

    def emit(self, log_type: str, lines: list[dict[str, object]]) -> None:
        if not lines:
            return
        encoded = [json.dumps(line, separators=(",", ":")) for line in lines]
        if self.settings.logger_filesystem and self.settings.logger_path:
            name = "osqueryd.results.log" if log_type == "result" else "osqueryd.status.log"
            path = Path(self.settings.logger_path)
            try:
                path.mkdir(parents=True, exist_ok=True)
                with (path / name).open("a", encoding="utf-8") as handle:
                    handle.write("".join(e + "\n" for e in encoded))
            except OSError as exc:
                log.error("event=filesystem_logger_failed error=%s", exc)
        if self.settings.logger_tls:
            purged = self.store.buffer_lines(log_type, encoded, self.settings.buffered_log_max)
            if purged:
                log.warning("event=buffered_logs_purged lines=%d", purged)
            self.counters["lines_logged"] += len(encoded)
            self.counters[f"produced_{log_type}"] += len(encoded)

    def status(self, message: str, severity: str = "INFO") -> None:
        from osquery_sim.result_logs import SEVERITY  # noqa: PLC0415 - tiny constant table

        if self.settings.tls_disable_status_log or SEVERITY.get(severity, 0) < self.settings.logger_min_status:
            return
        self.emit(
            "status",
            [status_line(message, self._context(), self.clock(), severity=severity, version=self.settings.version)],
        )

    # --- config ---------------------------------------------------------------------------------------------

    async def load_config(self) -> bool:
        if not self.settings.config_tls:
            self.config_loaded.set()
            return True
        answer = await self.client.request(
            self.settings.endpoints.config, {}, attempts=self.settings.config_tls_max_attempts
        )
        if not answer.ok:
            self.counters["config_failed"] += 1
            log.warning("event=config_failed error=%s", answer.error)
            return False
        self.counters["config_ok"] += 1
        self.apply_config(answer.body)
        return True

    def apply_config(self, document: Mapping[str, object]) -> None:
        config = parse_config(
            document,
            pack_delimiter=self.base_settings.pack_delimiter,
            default_interval=self.base_settings.schedule_default_interval,
        )
        self.config = config
        self.settings = apply_options(self.base_settings, config.options)
        self.decorations = self._run_decorators(config.decorators.load)
        now = self.clock()
        scheduled: dict[str, _Scheduled] = {}
        for query in config.queries:
            existing = self._scheduled.get(query.name)
            if existing is not None and existing.query.interval == query.interval:
                scheduled[query.name] = _Scheduled(query, existing.next_run)
            else:
                scheduled[query.name] = _Scheduled(query, now + self._splayed(query.interval))
        self._scheduled = scheduled
        self._schedule_changed.set()
        self.config_loaded.set()
        self._wake_logger.set()
        log.info("event=config_applied queries=%d", len(scheduled))

    def _splayed(self, interval: int) -> float:
        percent = self.settings.schedule_splay_percent
        if percent <= 0:
            return float(interval)
        spread = interval * percent / 100.0
        return max(1.0, interval + random.uniform(-spread, spread))  # noqa: S311 - scheduling jitter

    def _run_decorators(self, sqls: tuple[str, ...]) -> dict[str, str]:
        decorations: dict[str, str] = {}
        for sql in sqls:
            try:
                rows = self.tables.query(sql)
            except Exception as exc:
                log.warning("event=decorator_failed sql=%r error=%s", sql, exc)
                continue
            if rows:
                decorations.update(rows[0])
        return decorations

    async def config_loop(self, stop: asyncio.Event) -> None:
        ok = await self.load_config()
        if not ok:
            self.status("Could not load the configuration from the TLS config plugin", "WARNING")
        while not stop.is_set():
            refresh = self.settings.config_refresh
            if refresh <= 0:
                if ok:
                    return
                refresh = self.settings.config_accelerated_refresh
            wait = refresh if ok else min(self.settings.config_accelerated_refresh, refresh)
            if await _wait(stop, wait):
                return
            ok = await self.load_config()

    # --- scheduled queries ------------------------------------------------------------------------------------

    def run_scheduled(self, item: ScheduledQuery) -> int:
        """Run one scheduled query and log its results; returns lines logged."""
        now = self.clock()
        try:
            rows = self.tables.query(item.sql)
        except Exception as exc:
            self.status(f"Error executing scheduled query {item.name}: {exc}", "ERROR")
            return 0
        if self.config.decorators.always:
            self.decorations.update(self._run_decorators(self.config.decorators.always))
        context = self._context()
        previous = self.store.query_state(item.name, item.sql)
        if item.snapshot:
            counter = 0 if previous is None else previous.counter + 1
            self.store.save_query_state(item.name, item.sql, rows, counter, now)
            self.emit("result", [snapshot_line(item.name, rows, context, now, counter)])
            return 1
        diff = diff_rows(None if previous is None else previous.rows, rows)
        counter = 0 if previous is None else previous.counter + (0 if diff.empty else 1)
        self.store.save_query_state(item.name, item.sql, rows, counter, now)
        lines = differential_lines(item.name, diff, context, now, counter, log_removed=item.removed)
        self.emit("result", lines)
        return len(lines)

    async def schedule_loop(self, stop: asyncio.Event) -> None:
        await self.config_loaded.wait()
        while not stop.is_set():
            now = self.clock()
            for item in list(self._scheduled.values()):
                if item.next_run <= now:
                    self.run_scheduled(item.query)
                    item.next_run = now + item.query.interval
            upcoming = min((item.next_run for item in self._scheduled.values()), default=now + IDLE_SCHEDULE_WAIT)
            self._schedule_changed.clear()
            wait = min(max(upcoming - self.clock(), 0.05), IDLE_SCHEDULE_WAIT)
            if await _wait(stop, wait, self._schedule_changed):
                return

    # --- TLS logger ---------------------------------------------------------------------------------------------

    async def flush_logs(self) -> bool:
        """Send what is buffered, one batch per stream; returns True when everything sent was acknowledged."""
        all_ok = True
        for log_type in ("result", "status"):
            batch = self.store.peek_lines(log_type, self.settings.logger_tls_max_lines)
            if not batch:
                continue
            data: list[object] = []
            oversized: list[int] = []
            for item in batch:
                if len(item.line) > self.settings.logger_tls_max_linesize:
                    oversized.append(item.id)
                    continue
                try:
                    data.append(json.loads(item.line))
                except ValueError:
                    oversized.append(item.id)
            if oversized:
                self.store.drop_lines(oversized)
                self.counters["dropped_oversized"] += len(oversized)
            if not data:
                continue
            answer = await self.client.request(
                self.settings.endpoints.logger,
                {"log_type": log_type, "data": data},
                compress=self.settings.logger_tls_compress,
            )
            if answer.ok:
                self.store.drop_lines([i.id for i in batch if i.id not in oversized])
                self._log_failures[log_type] = 0
                self.counters["log_batches_sent"] += 1
                self.counters[f"acknowledged_{log_type}"] += len(data)
            else:
                self._log_failures[log_type] += 1
                self.counters["log_batches_failed"] += 1
                all_ok = False
                log.warning("event=log_send_failed log_type=%s error=%s", log_type, answer.error)
        return all_ok

    async def logger_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.flush_logs()
            failures = max(self._log_failures.values())
            period = max(self.settings.logger_tls_period, 1)
            if await _wait(stop, logger_backoff(period, failures, self.settings.logger_tls_backoff_max)):
                await self.flush_logs()  # last chance on shutdown; what fails stays buffered on disk
                return

    # --- distributed ---------------------------------------------------------------------------------------------

    async def distributed_once(self) -> None:
        settings = self.settings
        if self._pending_results is None:
            answer = await self.client.request(
                settings.endpoints.distributed_read, {}, attempts=settings.distributed_tls_max_attempts
            )
            self.counters["distributed_reads"] += 1
            if not answer.ok:
                log.warning("event=distributed_read_failed error=%s", answer.error)
                return
            accelerate = answer.body.get("accelerate")
            if isinstance(accelerate, int) and not isinstance(accelerate, bool) and accelerate > 0:
                self._accelerate_until = self.clock() + accelerate
            self._pending_results = self._run_distributed(answer.body)
        if self._pending_results is None:
            return
        write = await self.client.request(
            settings.endpoints.distributed_write, self._pending_results, attempts=settings.distributed_tls_max_attempts
        )
        if write.ok:
            self.counters["distributed_writes"] += 1
            self._pending_results = None
        else:
            log.warning("event=distributed_write_failed error=%s", write.error)

    def _run_distributed(self, body: Mapping[str, object]) -> dict[str, object] | None:
        queries = body.get("queries")
        discovery = body.get("discovery") or {}
        if not isinstance(queries, Mapping) or not isinstance(discovery, Mapping):
            log.warning("event=distributed_rejected reason=malformed")
            return None
        if not all(isinstance(v, str) and v for v in queries.values()) or not all(
            isinstance(v, str) and v for v in discovery.values()
        ):
            log.warning("event=distributed_rejected reason='Distributed query is not a string'")
            return None
        results: dict[str, object] = {}
        statuses: dict[str, int] = {}
        messages: dict[str, str] = {}
        stats: dict[str, dict[str, int]] = {}
        now = self.clock()
        for name, sql in queries.items():
            discover = discovery.get(name)
            if isinstance(discover, str):
                try:
                    if not self.tables.query(discover):
                        continue
                except Exception as exc:
                    log.warning("event=distributed_rejected reason=discovery_failed name=%s error=%s", name, exc)
                    return None
            assert isinstance(sql, str)
            if self.store.is_denylisted(sql, now):
                results[name], statuses[name], messages[name] = [], 1, "distributed query is denylisted"
                continue
            started = time.perf_counter()
            self.store.mark_running(sql, now)
            try:
                rows = self.tables.query(sql)
                results[name], statuses[name], messages[name] = rows, 0, ""
            except Exception as exc:
                results[name], statuses[name], messages[name] = [], 1, str(exc)
            finally:
                self.store.clear_running(sql)
            elapsed = int((time.perf_counter() - started) * 1000)
            stats[name] = {"wall_time_ms": elapsed, "user_time": 0, "system_time": 0, "memory": 0}
        if not results:
            return None
        return {"queries": results, "statuses": statuses, "messages": messages, "stats": stats}

    async def distributed_loop(self, stop: asyncio.Event) -> None:
        await self.config_loaded.wait()
        while not stop.is_set():
            await self.distributed_once()
            wait = distributed_wait(self.settings.distributed_interval, self.clock(), self._accelerate_until)
            if await _wait(stop, wait):
                return

    async def run(self, stop: asyncio.Event) -> None:
        tasks = [asyncio.create_task(self.config_loop(stop), name="config")]
        tasks.append(asyncio.create_task(self.schedule_loop(stop), name="schedule"))
        if self.settings.logger_tls:
            tasks.append(asyncio.create_task(self.logger_loop(stop), name="logger"))
        if self.settings.distributed_tls:
            tasks.append(asyncio.create_task(self.distributed_loop(stop), name="distributed"))
        await stop.wait()
        done, pending = await asyncio.wait(tasks, timeout=10)
        for task in pending:
            task.cancel()
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                log.error("event=task_failed task=%s error=%r", task.get_name(), task.exception())


async def _wait(stop: asyncio.Event, seconds: float, wake: asyncio.Event | None = None) -> bool:
    """Sleep up to ``seconds`` (less when ``wake`` is set); True when ``stop`` was set meanwhile."""
    await sleep_unless_set(seconds, stop, *([wake] if wake is not None else []))
    return stop.is_set()
