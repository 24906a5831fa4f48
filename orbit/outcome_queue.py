"""Update outcomes waiting to be reported to the server (issue 18, protocol §3): a durable queue in the root dir.

After every install of orbit, osqueryd or desktop, orbit records what became of it — ``confirmed`` after its trial
or stable period, ``rolled_back`` (with why), ``crash_loop`` when the child's breaker opened on that version,
``install_failed``, ``repaired`` by the self-heal — here, and ``fleet.outcome_sender`` sends them to a server that
advertises ``update_outcomes`` (a real Fleet server does not, so it never sees them).

The queue is ``state/update-outcomes.json`` (0600, replaced whole by one rename, so a crash leaves the old or the new
list, never half of one), at most ``MAX_QUEUED`` entries: when full, the oldest is dropped. Every entry carries a
uuid4 made here, so a report sent twice (an answer lost after the server stored it) is counted once by the server.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path

from safe_fs.atomic_write import SECRET_MODE, write_atomic

log = logging.getLogger(__name__)

MAX_QUEUED = 200
MAX_REASON = 1024
TARGETS = frozenset({"orbit", "osqueryd", "desktop"})


class OutcomeKind(StrEnum):
    CONFIRMED = "confirmed"
    ROLLED_BACK = "rolled_back"
    CRASH_LOOP = "crash_loop"
    INSTALL_FAILED = "install_failed"
    REPAIRED = "repaired"


@dataclass(frozen=True)
class UpdateOutcome:
    """One report, in the protocol's field names (``to_json`` is the wire form)."""

    id: str
    target: str
    version: str
    previous_version: str | None
    channel: str
    outcome: OutcomeKind
    reason: str | None
    at: str

    def to_json(self) -> dict[str, object]:
        data = asdict(self)
        data["outcome"] = self.outcome.value
        return data

    @classmethod
    def from_json(cls, data: object) -> UpdateOutcome | None:
        """An entry read back from the queue file; None when it is not one (a damaged or foreign file)."""
        if not isinstance(data, dict):
            return None
        text = {key: data.get(key) for key in ("id", "target", "version", "channel", "outcome", "at")}
        if not all(isinstance(value, str) and value for value in text.values()):
            return None
        previous, reason = data.get("previous_version"), data.get("reason")
        if previous is not None and not isinstance(previous, str):
            return None
        if reason is not None and not isinstance(reason, str):
            return None
        try:
            kind = OutcomeKind(str(text["outcome"]))
        except ValueError:
            return None
        if text["target"] not in TARGETS:
            return None
        return cls(
            str(text["id"]),
            str(text["target"]),
            str(text["version"]),
            previous,
            str(text["channel"]),
            kind,
            reason,
            str(text["at"]),
        )


def rfc3339(moment: datetime) -> str:
    """``2026-12-05T10:00:00Z``: UTC, seconds, the protocol's form."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def new_outcome(
    target: str,
    version: str | None,
    previous_version: str | None,
    channel: str,
    kind: OutcomeKind,
    reason: str | None = None,
    *,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> UpdateOutcome:
    """A fresh outcome: a new uuid4, orbit's clock, the reason cut to the protocol's 1024 characters."""
    if target not in TARGETS:
        raise ValueError(f"{target!r} is not an update target")
    return UpdateOutcome(
        id=str(uuid.uuid4()),
        target=target,
        version=version or "unknown",
        previous_version=previous_version,
        channel=channel,
        outcome=kind,
        reason=None if reason is None else reason[:MAX_REASON],
        at=rfc3339(now()),
    )


class OutcomeQueue:
    """The durable queue; safe to use from the event loop and from worker threads."""

    def __init__(self, path: Path, *, limit: int = MAX_QUEUED) -> None:
        self.path = path
        self.limit = limit
        self._lock = threading.Lock()
        self._entries = self._load()

    def _load(self) -> list[UpdateOutcome]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            log.error("event=outcome_queue_unreadable path=%s error=%s", self.path, exc)
            return []
        entries = [
            entry for item in (data if isinstance(data, list) else []) if (entry := UpdateOutcome.from_json(item))
        ]
        return entries[-self.limit :]

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(self.path, json.dumps([entry.to_json() for entry in self._entries], indent=1), SECRET_MODE)

    def add(self, outcome: UpdateOutcome) -> None:
        with self._lock:
            self._entries.append(outcome)
            dropped = self._entries[: -self.limit] if len(self._entries) > self.limit else []
            self._entries = self._entries[-self.limit :]
            self._save()
        for old in dropped:
            log.warning("event=update_outcome_dropped id=%s target=%s reason=%r", old.id, old.target, "queue full")
        log.info(
            "event=update_outcome target=%s version=%s outcome=%s previous=%s reason=%r",
            outcome.target,
            outcome.version,
            outcome.outcome.value,
            outcome.previous_version,
            outcome.reason,
        )

    def pending(self, limit: int) -> list[UpdateOutcome]:
        with self._lock:
            return list(self._entries[:limit])

    def remove(self, ids: Sequence[str]) -> None:
        gone = set(ids)
        with self._lock:
            kept = [entry for entry in self._entries if entry.id not in gone]
            if len(kept) != len(self._entries):
                self._entries = kept
                self._save()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)


__all__ = ["MAX_QUEUED", "OutcomeKind", "OutcomeQueue", "UpdateOutcome", "new_outcome", "rfc3339"]
