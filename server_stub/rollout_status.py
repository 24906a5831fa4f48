"""The one query behind every view of a rollout: the admin REST API, the CLI (through it), the console, and the
engine's own decisions all read a rollout's progress here.

Read-only (it works on a read-only connection too): one pass over the population's hosts joined with what they
reported for the rollout's target, folded into per-wave counts by the pure ``rollout_health.count_waves``. About
10 ms per 10 000 hosts (benchmarks/rollout_config_cost.py).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from server_stub.hosts import is_online
from server_stub.json_fields import JsonObject
from server_stub.rfc3339 import iso_time
from server_stub.rollout_health import HostFacts, WaveCounts, count_waves, totals
from server_stub.rollout_model import HEALTH_OUTCOMES, Outcome, Rollout, RolloutState, Target
from server_stub.rollout_store import RolloutEvent, get_rollout, list_rollouts, recent_events

# the host column holding what the host itself says it runs, per target (desktop: only its outcomes tell)
_RUNNING_COLUMN = {Target.ORBIT: "h.orbit_version", Target.OSQUERYD: "h.osquery_version", Target.DESKTOP: "''"}


def _number(value: float) -> float | int:
    return int(value) if float(value).is_integer() else value


@dataclass(frozen=True)
class RolloutStatus:
    rollout: Rollout
    waves: tuple[WaveCounts, ...]
    events: tuple[RolloutEvent, ...]

    @property
    def next_wave_at(self) -> float | None:
        """When the current wave's soak ends (a running rollout that has a next step), else None."""
        if self.rollout.state is not RolloutState.RUNNING:
            return None
        return self.rollout.wave_started_at + self.rollout.spec.soak_seconds

    def to_json(self) -> JsonObject:
        rollout, spec = self.rollout, self.rollout.spec
        return {
            "id": rollout.id,
            "name": spec.name,
            "target": str(spec.target),
            "version": spec.version,
            "from_version": spec.from_version,
            "team_ids": None if spec.team_ids is None else list(spec.team_ids),
            "waves": [_number(w) for w in spec.waves],
            "soak_seconds": spec.soak_seconds,
            "halt_rules": {
                "max_failed_percent": _number(spec.rules.max_failed_percent),
                "min_healthy_percent": _number(spec.rules.min_healthy_percent),
            },
            "state": str(rollout.state),
            "current_wave": rollout.current_wave + 1,
            "wave_count": rollout.wave_count,
            "wave_started_at": iso_time(rollout.wave_started_at),
            "next_wave_at": iso_time(self.next_wave_at),
            "halt_reason": rollout.halt_reason,
            "source": rollout.source,
            "platforms": list(rollout.platforms),
            "created_at": iso_time(rollout.created_at),
            "updated_at": iso_time(rollout.updated_at),
            "wave_status": [w.to_json() for w in self.waves],
            "totals": totals(self.waves),
            "events": [{"at": iso_time(e.at), "event": e.event, "detail": e.detail} for e in self.events],
        }


def host_facts(conn: sqlite3.Connection, rollout: Rollout, now: float) -> list[HostFacts]:
    """Every host of the rollout's population with what it reported for the rollout's target and version."""
    spec = rollout.spec
    sql = (
        "SELECT h.id, h.osquery_host_id, h.team_id, h.seen_time, h.distributed_interval, h.config_tls_refresh, "
        f"h.logger_tls_period, {_RUNNING_COLUMN[spec.target]} AS detail_version, ht.running_version, "
        "hv.version IS NOT NULL AS reported, hv.health "
        "FROM hosts h "
        "LEFT JOIN host_targets ht ON ht.host_id = h.id AND ht.target = ? "
        "LEFT JOIN host_target_versions hv ON hv.host_id = h.id AND hv.target = ? AND hv.version = ?"
    )
    params: list[object] = [str(spec.target), str(spec.target), spec.version]
    if spec.team_ids is not None:
        sql += " WHERE h.team_id IN (" + ",".join("?" * len(spec.team_ids)) + ")"
        params += list(spec.team_ids)
    facts = []
    for row in conn.execute(sql, params):
        health = row[10]
        facts.append(
            HostFacts(
                host_id=int(row[0]),
                identity=str(row[1]),
                team_id=None if row[2] is None else int(row[2]),
                online=is_online(row[3], int(row[4]), int(row[5]), int(row[6]), now),
                running_version=str(row[8] or row[7] or ""),
                reported=bool(row[9]),
                health=Outcome(health) if health in HEALTH_OUTCOMES else None,
            )
        )
    return facts


def wave_counts(conn: sqlite3.Connection, rollout: Rollout, now: float) -> tuple[WaveCounts, ...]:
    return count_waves(rollout, host_facts(conn, rollout, now))


def status_of(conn: sqlite3.Connection, rollout: Rollout, now: float, *, with_events: bool = True) -> RolloutStatus:
    events = tuple(recent_events(conn, rollout.id)) if with_events else ()
    return RolloutStatus(rollout, wave_counts(conn, rollout, now), events)


def rollout_status(conn: sqlite3.Connection, rollout_id: int, now: float) -> RolloutStatus | None:
    """A rollout's definition, state, per-wave counts and recent events; None when there is no such rollout."""
    rollout = get_rollout(conn, rollout_id)
    return None if rollout is None else status_of(conn, rollout, now)


def rollout_statuses(conn: sqlite3.Connection, now: float, *, with_events: bool = False) -> list[RolloutStatus]:
    """Every rollout, oldest first, with its counts."""
    return [status_of(conn, r, now, with_events=with_events) for r in list_rollouts(conn)]
