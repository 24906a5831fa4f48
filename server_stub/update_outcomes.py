"""Update outcomes reported by orbit (``POST /api/fleet/orbit/update_outcomes``, docs/adr/0017 "Agent side").

Body: ``{"orbit_node_key": "...", "outcomes": [OUTCOME, ...]}`` with 1..100 outcomes, each
``{"id", "target", "version", "previous_version", "channel", "outcome", "reason", "at"}``. Parsing is strict and
all-or-nothing (a 400 names the first bad field; orbit drops a batch refused with 400, so a bug shows instead of
hiding), except that a ``reason`` beyond 1024 characters is cut rather than refused.

Storing: each new outcome (``id`` unseen for this host; an id is only ever compared with the same host's, so one
host cannot shadow another's reports) is kept, and two summaries follow it, which is what the rollout status reads:
``host_target_versions`` (per host, target and version: reported at all, and the latest health outcome) and
``host_targets`` (per host and target: the version its latest outcome says it runs). The newest 200 outcomes per
host are kept.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass

from server_stub.errors import bad_request
from server_stub.rfc3339 import parse_rfc3339
from server_stub.rollout_health import implied_version
from server_stub.rollout_model import FAILED_OUTCOMES, HEALTH_OUTCOMES, Outcome, Target
from server_stub.transactions import write_transaction

MAX_OUTCOMES_PER_REQUEST = 100
MAX_ID_LENGTH = 128
MAX_VERSION_LENGTH = 64
MAX_REASON_LENGTH = 1024
KEPT_PER_HOST = 200


@dataclass(frozen=True)
class OutcomeReport:
    outcome_id: str
    target: Target
    version: str
    previous_version: str | None
    channel: str
    outcome: Outcome
    reason: str | None
    at: str  # RFC 3339 UTC, as sent (checked)


def _field(item: Mapping[str, object], key: str, where: str, limit: int, *, nullable: bool = False) -> str | None:
    value = item.get(key)
    if value is None and nullable:
        return None
    if not isinstance(value, str) or not value.strip():
        kind = "a non-empty string or null" if nullable else "a non-empty string"
        raise bad_request(f"{where}.{key} must be {kind}")
    if len(value) > limit:
        raise bad_request(f"{where}.{key} is longer than {limit} characters")
    return value.strip()


def _choice(item: Mapping[str, object], key: str, where: str, allowed: type[Target] | type[Outcome]) -> str:
    value = item.get(key)
    known = ", ".join(m.value for m in allowed)
    if not isinstance(value, str) or value not in {m.value for m in allowed}:
        raise bad_request(f"{where}.{key} must be one of {known}")
    return value


def _one(item: object, where: str) -> OutcomeReport:
    if not isinstance(item, dict):
        raise bad_request(f"{where} must be an object")
    at = _field(item, "at", where, 64) or ""
    if parse_rfc3339(at) is None:
        raise bad_request(f"{where}.at must be an RFC 3339 time such as 2026-12-05T10:00:00Z")
    reason = item.get("reason")
    if reason is not None and not isinstance(reason, str):
        raise bad_request(f"{where}.reason must be a string or null")
    return OutcomeReport(
        outcome_id=_field(item, "id", where, MAX_ID_LENGTH) or "",
        target=Target(_choice(item, "target", where, Target)),
        version=_field(item, "version", where, MAX_VERSION_LENGTH) or "",
        previous_version=_field(item, "previous_version", where, MAX_VERSION_LENGTH, nullable=True),
        channel=_field(item, "channel", where, MAX_VERSION_LENGTH) or "",
        outcome=Outcome(_choice(item, "outcome", where, Outcome)),
        reason=None if reason is None else reason[:MAX_REASON_LENGTH],
        at=at,
    )


def parse_outcomes(body: Mapping[str, object]) -> list[OutcomeReport]:
    """The checked outcomes of a request body; raises a 400 ``ApiError`` for anything malformed."""
    raw = body.get("outcomes")
    if not isinstance(raw, list):
        raise bad_request("'outcomes' must be a list of outcome objects")
    if not 1 <= len(raw) <= MAX_OUTCOMES_PER_REQUEST:
        raise bad_request(f"'outcomes' must hold 1 to {MAX_OUTCOMES_PER_REQUEST} outcomes (got {len(raw)})")
    return [_one(item, f"outcomes[{index}]") for index, item in enumerate(raw)]


@dataclass(frozen=True)
class Recorded:
    new: int  # outcomes not seen before
    failures: int  # of them, rolled_back / crash_loop / install_failed (the rollout engine is nudged)


def record_outcomes(conn: sqlite3.Connection, host_id: int, reports: list[OutcomeReport], now: float) -> Recorded:
    new = failures = 0
    with write_transaction(conn):
        for report in reports:
            cursor = conn.execute(
                "INSERT OR IGNORE INTO update_outcomes (host_id, outcome_id, target, version, previous_version, "
                "channel, outcome, reason, at, received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    host_id,
                    report.outcome_id,
                    str(report.target),
                    report.version,
                    report.previous_version,
                    report.channel,
                    str(report.outcome),
                    report.reason,
                    report.at,
                    now,
                ),
            )
            if cursor.rowcount != 1:
                continue  # already had it: a resend after a lost answer
            new += 1
            failures += report.outcome in FAILED_OUTCOMES
            health = str(report.outcome) if report.outcome in HEALTH_OUTCOMES else None
            conn.execute(
                "INSERT INTO host_target_versions (host_id, target, version, health, updated_at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (host_id, target, version) DO UPDATE SET "
                "health = COALESCE(excluded.health, health), updated_at = excluded.updated_at",
                (host_id, str(report.target), report.version, health, now),
            )
            conn.execute(
                "INSERT INTO host_targets (host_id, target, running_version, updated_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (host_id, target) DO UPDATE SET "
                "running_version = COALESCE(excluded.running_version, running_version), "
                "updated_at = excluded.updated_at",
                (
                    host_id,
                    str(report.target),
                    implied_version(report.outcome, report.version, report.previous_version),
                    now,
                ),
            )
        if new:
            conn.execute(
                "DELETE FROM update_outcomes WHERE host_id = ? AND id < COALESCE((SELECT id FROM update_outcomes "
                "WHERE host_id = ? ORDER BY id DESC LIMIT 1 OFFSET ?), 0)",
                (host_id, host_id, KEPT_PER_HOST - 1),
            )
    return Recorded(new, failures)


def recent_outcomes(conn: sqlite3.Connection, host_id: int, limit: int = 50) -> list[dict[str, object]]:
    """A host's latest outcomes, newest first (admin views)."""
    rows = conn.execute(
        "SELECT outcome_id, target, version, previous_version, channel, outcome, reason, at FROM update_outcomes "
        "WHERE host_id = ? ORDER BY id DESC LIMIT ?",
        (host_id, limit),
    ).fetchall()
    return [
        {
            "id": r["outcome_id"],
            "target": r["target"],
            "version": r["version"],
            "previous_version": r["previous_version"],
            "channel": r["channel"],
            "outcome": r["outcome"],
            "reason": r["reason"],
            "at": r["at"],
        }
        for r in rows
    ]
