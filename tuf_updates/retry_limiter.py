"""Per-target-hash retry limiting (Fleet's, since orbit 1.19): 3 consecutive failures → 24 h cooldown; pure.

The key is the target path plus the hash it is expected to have, so a newly published version (a new hash) is
tried at once, and a success clears the record. Time is passed in (``now``, seconds), never read here.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum

DEFAULT_MAX_FAILURES = 3
DEFAULT_COOLDOWN = 24 * 60 * 60.0


class RetryDecision(StrEnum):
    TRY = "try"
    COOLING_DOWN = "cooling_down"


@dataclass(frozen=True)
class _Record:
    digest: str
    failures: int = 0
    cooldown_until: float | None = None


@dataclass(frozen=True)
class RetryPolicy:
    max_failures: int = DEFAULT_MAX_FAILURES
    cooldown: float = DEFAULT_COOLDOWN


class RetryLimiter:
    """Decides whether an update of ``target`` to ``digest`` may be attempted now."""

    def __init__(self, policy: RetryPolicy | None = None) -> None:
        self.policy = policy or RetryPolicy()
        self._records: dict[str, _Record] = {}

    def _record(self, target: str, digest: str) -> _Record:
        record = self._records.get(target)
        if record is None or record.digest != digest:  # a new hash resets the count
            record = _Record(digest)
            self._records[target] = record
        return record

    def decide(self, target: str, digest: str, now: float) -> RetryDecision:
        record = self._record(target, digest)
        if record.cooldown_until is None:
            return RetryDecision.TRY
        if now >= record.cooldown_until:
            self._records[target] = _Record(digest)  # the cooldown is over: a fresh set of attempts
            return RetryDecision.TRY
        return RetryDecision.COOLING_DOWN

    def cooldown_remaining(self, target: str, digest: str, now: float) -> float:
        record = self._records.get(target)
        if record is None or record.digest != digest or record.cooldown_until is None:
            return 0.0
        return max(0.0, record.cooldown_until - now)

    def record_failure(self, target: str, digest: str, now: float) -> int:
        """Count a failed attempt; returns the consecutive failures so far (the cooldown starts at the limit)."""
        record = self._record(target, digest)
        failures = record.failures + 1
        until = now + self.policy.cooldown if failures >= self.policy.max_failures else None
        self._records[target] = replace(record, failures=failures, cooldown_until=until)
        return failures

    def record_success(self, target: str) -> None:
        self._records.pop(target, None)

    def failures(self, target: str, digest: str) -> int:
        record = self._records.get(target)
        return record.failures if record is not None and record.digest == digest else 0
