"""Rollouts in SQLite: rows to ``Rollout`` values and back, and each rollout's event history.

Every change of a rollout is one transaction that also appends its event, so the history and the state never
disagree, and both survive a restart (the state machine's whole state is the row: the clock decides the rest).

With several processes on one database (ADR 0019), two of them may decide a change of the same rollout at once (an
admin's pause in one worker, the ticker in another). A change is therefore stored only onto the revision of the
row it was decided from (``save_transition`` answers None otherwise, and nothing is written), and every change
bumps ``rollout_generation`` in the same transaction: a process that keeps rollouts in memory re-reads them when
the generation it last saw is no longer the database's.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, replace

from server_stub.json_text import decode_json
from server_stub.rollout_model import HaltRules, Rollout, RolloutSpec, RolloutState, Target
from server_stub.transactions import write_transaction

MAX_EVENTS_SHOWN = 50


@dataclass(frozen=True)
class RolloutEvent:
    at: float
    event: str
    detail: str | None


def _json_list(text: str | None) -> list[object] | None:
    if text is None:
        return None
    value = decode_json(text).value
    return value if isinstance(value, list) else []


def _rollout(row: sqlite3.Row) -> Rollout:
    teams = _json_list(row["team_ids"])
    spec = RolloutSpec(
        name=str(row["name"]),
        target=Target(row["target"]),
        version=str(row["version"]),
        from_version=str(row["from_version"]),
        team_ids=None if teams is None else tuple(int(str(t)) for t in teams),
        waves=tuple(float(str(w)) for w in _json_list(row["waves"]) or [100.0]),
        soak_seconds=int(row["soak_seconds"]),
        rules=HaltRules(float(row["max_failed_percent"]), float(row["min_healthy_percent"])),
    )
    return Rollout(
        id=int(row["id"]),
        spec=spec,
        state=RolloutState(row["state"]),
        current_wave=int(row["current_wave"]),
        wave_started_at=float(row["wave_started_at"]),
        halt_reason=row["halt_reason"],
        created_at=float(row["created_at"]),
        updated_at=float(row["updated_at"]),
        source=str(row["source"]),
        platforms=tuple(str(p) for p in _json_list(row["platforms"]) or []),
        revision=int(row["revision"]),
    )


def list_rollouts(conn: sqlite3.Connection) -> list[Rollout]:
    return [_rollout(r) for r in conn.execute("SELECT * FROM rollouts ORDER BY id")]


def get_rollout(conn: sqlite3.Connection, rollout_id: int) -> Rollout | None:
    row = conn.execute("SELECT * FROM rollouts WHERE id = ?", (rollout_id,)).fetchone()
    return _rollout(row) if row else None


def find_by_name(conn: sqlite3.Connection, name: str) -> Rollout | None:
    row = conn.execute("SELECT * FROM rollouts WHERE name = ?", (name,)).fetchone()
    return _rollout(row) if row else None


def name_taken(conn: sqlite3.Connection, name: str) -> bool:
    return conn.execute("SELECT 1 FROM rollouts WHERE name = ?", (name,)).fetchone() is not None


def insert_rollout(
    conn: sqlite3.Connection,
    spec: RolloutSpec,
    platforms: tuple[str, ...],
    source: str,
    now: float,
    check: Callable[[], None] | None = None,
) -> Rollout:
    """``check`` runs inside the write transaction, before the insert (it raises to refuse): what must still hold
    when the row is written — no other process inserted a conflicting rollout or took the name meanwhile."""
    with write_transaction(conn):
        if check is not None:
            check()
        cursor = conn.execute(
            "INSERT INTO rollouts (name, target, version, from_version, team_ids, waves, soak_seconds, "
            "max_failed_percent, min_healthy_percent, platforms, state, current_wave, wave_started_at, source, "
            "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?, ?, ?)",
            (
                spec.name,
                str(spec.target),
                spec.version,
                spec.from_version,
                None if spec.team_ids is None else json.dumps(list(spec.team_ids), allow_nan=False),
                json.dumps(list(spec.waves), allow_nan=False),
                spec.soak_seconds,
                spec.rules.max_failed_percent,
                spec.rules.min_healthy_percent,
                json.dumps(list(platforms), allow_nan=False),
                str(RolloutState.RUNNING),
                now,
                source,
                now,
                now,
            ),
        )
        rollout_id = int(cursor.lastrowid or 0)
        _bump_generation(conn)
        _append_event(
            conn, rollout_id, now, "created", f"{spec.target} {spec.from_version} → {spec.version}, wave 1 begins"
        )
    created = get_rollout(conn, rollout_id)
    assert created is not None
    return created


def save_transition(conn: sqlite3.Connection, rollout: Rollout, event: str, detail: str | None) -> Rollout | None:
    """Store the rollout's new state with the event that led to it, if the row is still at ``rollout.revision``
    (the revision it was decided from); returns the stored rollout (its revision one higher), or None when another
    process changed the row meanwhile — then nothing was written."""
    with write_transaction(conn):
        cursor = conn.execute(
            "UPDATE rollouts SET state = ?, current_wave = ?, wave_started_at = ?, halt_reason = ?, updated_at = ?, "
            "revision = revision + 1 WHERE id = ? AND revision = ?",
            (
                str(rollout.state),
                rollout.current_wave,
                rollout.wave_started_at,
                rollout.halt_reason,
                rollout.updated_at,
                rollout.id,
                rollout.revision,
            ),
        )
        if cursor.rowcount != 1:
            return None
        _bump_generation(conn)
        _append_event(conn, rollout.id, rollout.updated_at, event, detail)
    return replace(rollout, revision=rollout.revision + 1)


def _bump_generation(conn: sqlite3.Connection) -> None:
    conn.execute("UPDATE rollout_generation SET generation = generation + 1 WHERE id = 1")


def generation(conn: sqlite3.Connection) -> int:
    """How many times any rollout was created or changed (one indexed row: a few microseconds)."""
    row = conn.execute("SELECT generation FROM rollout_generation WHERE id = 1").fetchone()
    return int(row[0]) if row else 0


def _append_event(conn: sqlite3.Connection, rollout_id: int, at: float, event: str, detail: str | None) -> None:
    conn.execute(
        "INSERT INTO rollout_events (rollout_id, at, event, detail) VALUES (?, ?, ?, ?)",
        (rollout_id, at, event, detail),
    )


def recent_events(conn: sqlite3.Connection, rollout_id: int, limit: int = MAX_EVENTS_SHOWN) -> list[RolloutEvent]:
    rows = conn.execute(
        "SELECT at, event, detail FROM rollout_events WHERE rollout_id = ? ORDER BY id DESC LIMIT ?",
        (rollout_id, limit),
    ).fetchall()
    return [RolloutEvent(float(r["at"]), str(r["event"]), r["detail"]) for r in reversed(rows)]
