"""What the running agent knows about itself, written every few seconds to ``state/status.json`` (0600) so that
``orbit doctor`` — a separate process — can report children, restarts, breakers, updates, rollbacks and the last
server contact without talking to the agent.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from orbit.children.supervisor import ChildStatus, Supervisor
from orbit.fleet.client import OrbitClient
from orbit.fleet.config_poller import ConfigPoller
from orbit.fleet.server_overrides import Channels
from orbit.options import Options
from orbit.root_layout import RootLayout
from orbit.self_update.trial_boot import Quarantine
from safe_fs.atomic_write import SECRET_MODE, write_atomic
from tuf_updates.update_runner import CheckReport

log = logging.getLogger(__name__)


def _iso(timestamp: float | None) -> str | None:
    return None if timestamp is None else datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")


def child_json(status: ChildStatus | None) -> dict[str, object] | None:
    if status is None:
        return None
    return {
        "name": status.name,
        "state": status.state.value,
        "pid": status.pid,
        "restarts": status.restarts,
        "consecutive_failures": status.consecutive_failures,
        "breaker": status.breaker.value,
        "last_exit_code": status.last_exit_code,
        "next_start_in": status.next_start_in,
        "uptime": status.uptime,
    }


class StatusSource(Protocol):
    """What the status file reads of the running agent (``Agent`` provides it; tests can pass anything alike)."""

    @property
    def options(self) -> Options: ...
    @property
    def channels(self) -> Channels: ...
    @property
    def client(self) -> OrbitClient | None: ...
    @property
    def poller(self) -> ConfigPoller | None: ...
    @property
    def osqueryd(self) -> Supervisor | None: ...
    @property
    def quarantine(self) -> Quarantine: ...

    def extra_children(self) -> dict[str, ChildStatus]: ...
    def extra_status(self) -> dict[str, object]: ...


@dataclass
class AgentState:
    layout: RootLayout
    version: str
    started_at: float
    secret_origin: str = "none"  # noqa: S105 - where the secret came from, not a secret
    start_kind: str = "normal"
    updates: str = "disabled"
    server_reachable: bool | None = None
    host_uuid: str | None = None
    config_digest: str | None = None
    last_update: dict[str, object] | None = None
    rollbacks: list[dict[str, object]] = field(default_factory=list)
    extra: dict[str, object] = field(default_factory=dict)

    def note_update_report(self, report: CheckReport) -> None:
        self.last_update = {
            "at": report.finished_at.isoformat(timespec="seconds"),
            "ok": report.ok,
            "error": report.refresh_error,
            "error_kind": str(report.refresh_error_kind) if report.refresh_error_kind else None,
            "clock_skew": report.clock_skew,
            "targets": [
                {
                    "target": report_item.spec.path,
                    "outcome": report_item.outcome.value,
                    "version": report_item.version,
                    "error": report_item.error,
                }
                for report_item in report.targets
            ],
        }

    def note_rollback(self, version: str | None, running: str | None, reason: str) -> None:
        self.rollbacks.append(
            {"at": _iso(time.time()), "failed_version": version, "running": running, "reason": reason}
        )

    def health_summary(self) -> str:
        return f"server_reachable={self.server_reachable} updates={self.updates}"

    def snapshot(self, agent: StatusSource) -> dict[str, object]:
        client = agent.client
        poller = agent.poller
        return {
            "pid": os.getpid(),
            "version": self.version,
            "started_at": _iso(self.started_at),
            "written_at": _iso(time.time()),
            "root_dir": str(self.layout.root),
            "start_kind": self.start_kind,
            "secret_origin": self.secret_origin,
            "host_uuid": self.host_uuid,
            "fleet_url": agent.options.fleet_url,
            "channels": {
                "orbit": agent.channels.orbit,
                "osqueryd": agent.channels.osqueryd,
                "desktop": agent.channels.desktop,
            },
            "enrolled": client.enrolled if client is not None else None,
            "server_capabilities": sorted(client.server_capabilities) if client is not None else [],
            "last_error": client.last_error if client is not None else None,
            "reenrollments": client.reenrollments if client is not None else 0,
            "config": {
                "polls": poller.polls if poller is not None else 0,
                "failures": poller.failures if poller is not None else 0,
                "last_error": poller.last_error if poller is not None else None,
                "seconds_since_success": (
                    time.monotonic() - poller.last_success
                    if poller is not None and poller.last_success is not None
                    else None
                ),
                "digest": self.config_digest,
            },
            "children": {
                "osqueryd": child_json(agent.osqueryd.status() if agent.osqueryd is not None else None),
                **{name: child_json(status) for name, status in agent.extra_children().items()},
            },
            "updates": {"state": self.updates, "last_check": self.last_update},
            "rollbacks": self.rollbacks[-10:],
            "quarantined": [
                {"digest": entry.digest, "version": entry.version, "reason": entry.reason, "at": _iso(entry.at)}
                for entry in agent.quarantine.entries()
            ],
            "scripts_enabled": agent.options.enable_scripts,
            **agent.extra_status(),
            **self.extra,
        }

    async def write_now(self, agent: StatusSource) -> None:
        try:
            data = json.dumps(self.snapshot(agent), indent=1, default=str)
            await asyncio.to_thread(write_atomic, self.layout.status_file, data, SECRET_MODE)
        except OSError as exc:
            log.warning("event=status_write_failed error=%s", exc)

    async def run(self, agent: StatusSource, stop: asyncio.Event, interval: float) -> None:
        while not stop.is_set():
            await self.write_now(agent)
            try:
                await asyncio.wait_for(stop.wait(), timeout=interval)
            except TimeoutError:
                continue
