"""orbit's own update with a trial boot and automatic rollback (better than Fleet: docs/reference/orbit-behaviour.md
§7.4 "we do better").

1. The update runner *stages* the new orbit beside the current one (``.versions/<digest>/orbit``, exec-checked)
   without switching to it.
2. The running orbit writes a marker (``state/trial-boot.json``), stops its children and execs the staged binary
   with ``ORBIT_TRIAL_BOOT=<digest>`` in its environment.
3. The new orbit recognises itself as the candidate and, once healthy (enrolled, config polled, osqueryd up for a
   stable period), *promotes* itself (the channel file — and so ``bin/orbit/orbit`` — now is the new version) and
   removes the marker. Unhealthy by the deadline → it quarantines its own hash and execs the old version.
4. A candidate that cannot even start (exits, crashes) never ran step 3: the service manager restarts
   ``bin/orbit/orbit``, which still is the old version; that orbit finds a marker that is not its own, records the
   failed trial, quarantines the hash (not retried until a newer target appears) and reports it.

This module is the bookkeeping (markers, quarantine, the decision at start-up); the agent does the exec.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from enum import Enum
from pathlib import Path

from safe_fs.atomic_write import SECRET_MODE, write_atomic

log = logging.getLogger(__name__)

TRIAL_ENV = "ORBIT_TRIAL_BOOT"
MAX_QUARANTINE_ENTRIES = 50


@dataclass(frozen=True)
class TrialMarker:
    digest_id: str  # the staged version directory name
    digest: str  # the full hash the repository signed
    version: str | None
    previous_version: str | None
    candidate: str  # the staged executable
    target_path: str  # orbit/<platform>/<channel>/orbit
    started_at: float
    deadline: float  # seconds the candidate has to become healthy
    # the candidate was stopped by a signal (systemctl stop, a reboot) before it could judge itself: not a failure
    interrupted: bool = False

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True)


@dataclass(frozen=True)
class QuarantineEntry:
    digest: str
    version: str | None
    reason: str
    at: float


class StartKind(Enum):
    NORMAL = "normal"
    CANDIDATE = "candidate"  # we are the new version on trial
    FAILED_TRIAL = "failed_trial"  # a candidate died before confirming; we are the old version again
    INTERRUPTED_TRIAL = "interrupted_trial"  # a candidate was stopped by a signal: try it again, quarantine nothing


def read_marker(path: Path) -> TrialMarker | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        fields = {key: data[key] for key in TrialMarker.__dataclass_fields__ if key != "interrupted"}
        return TrialMarker(**fields, interrupted=data.get("interrupted") is True)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.error("event=trial_marker_unreadable path=%s error=%s", path, exc)
        path.unlink(missing_ok=True)
        return None


def write_marker(path: Path, marker: TrialMarker) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, marker.to_json(), SECRET_MODE)


def clear_marker(path: Path) -> None:
    path.unlink(missing_ok=True)


def classify_start(marker: TrialMarker | None, env: Mapping[str, str]) -> StartKind:
    if marker is None:
        return StartKind.NORMAL
    if env.get(TRIAL_ENV) == marker.digest_id:
        return StartKind.CANDIDATE
    return StartKind.INTERRUPTED_TRIAL if marker.interrupted else StartKind.FAILED_TRIAL


class Quarantine:
    """Hashes of orbit versions that failed a trial boot, kept in ``state/quarantined-updates.json``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def entries(self) -> list[QuarantineEntry]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            log.error("event=quarantine_unreadable path=%s error=%s", self.path, exc)
            return []
        entries = []
        for item in data if isinstance(data, list) else []:
            try:
                entries.append(
                    QuarantineEntry(str(item["digest"]), item.get("version"), str(item["reason"]), float(item["at"]))
                )
            except (KeyError, TypeError, ValueError):
                continue
        return entries

    def contains(self, digest: str) -> bool:
        return any(entry.digest == digest for entry in self.entries())

    def add(self, digest: str, version: str | None, reason: str, *, now: float | None = None) -> None:
        entries = [entry for entry in self.entries() if entry.digest != digest]
        entries.append(QuarantineEntry(digest, version, reason, time.time() if now is None else now))
        entries = entries[-MAX_QUARANTINE_ENTRIES:]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(self.path, json.dumps([asdict(entry) for entry in entries], indent=1), SECRET_MODE)
        log.error("event=update_quarantined digest=%s version=%s reason=%r", digest[:16], version, reason)


def restart_env(env: Mapping[str, str], trial_digest: str | None) -> dict[str, str]:
    """The environment for exec'ing the next orbit: ours, with the trial variable set or removed."""
    result = {key: value for key, value in env.items() if key != TRIAL_ENV}
    if trial_digest is not None:
        result[TRIAL_ENV] = trial_digest
    return result
