"""Checking a rollout definition (admin API body or ``[[rollouts]]`` table of the configuration file): pure.

```json
{"name": "orbit-1.4.0",                 // optional (API): "<target>-<version>", numbered when taken
 "target": "orbit",                     // orbit | osqueryd | desktop
 "version": "1.4.0",                    // an exact-version channel published in the served TUF repository
 "from_version": "1.3.0",               // optional: derived from what the population runs (rollouts.py)
 "team_ids": [1, 2],                    // API; the file says "teams": ["Workstations"]; absent/null = every host
 "waves": [1, 10, 50, 100],             // cumulative percentages, increasing, ending at 100
 "soak_seconds": 3600,                  // minimum time each wave runs before the next begins
 "halt_rules": {"max_failed_percent": 5, "min_healthy_percent": 80}}
```

Unknown keys are refused: a misspelt ``soak_second`` silently falling back to the default soak is the kind of
mistake a rollout must not hide. Wrong JSON types are a 400, values out of their range a 422.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

from server_stub.int_ranges import INT64_MAX
from server_stub.rollout_model import (
    DEFAULT_MAX_FAILED_PERCENT,
    DEFAULT_MIN_HEALTHY_PERCENT,
    DEFAULT_SOAK_SECONDS,
    DEFAULT_WAVES,
    HaltRules,
    Target,
)

# what ``orbitctl updates add --version`` accepts: the exact-version channel every published target gets
EXACT_VERSION = re.compile(r"\d+\.\d+\.\d+(?:[.-][0-9A-Za-z.+-]+)?")
MAX_VERSION_LENGTH = 64
MAX_NAME_LENGTH = 100
MAX_WAVES = 20
MAX_TEAMS = 1000
MAX_SOAK_SECONDS = 30 * 24 * 3600
COMMON_KEYS = frozenset({"name", "target", "version", "from_version", "waves", "soak_seconds", "halt_rules"})
RULE_KEYS = frozenset({"max_failed_percent", "min_healthy_percent"})


class InvalidRollout(ValueError):
    def __init__(self, message: str, *, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class RolloutRequest:
    """A checked definition; the shell fills in the name and from_version and checks them against the world."""

    name: str | None
    target: Target
    version: str
    from_version: str | None
    waves: tuple[float, ...]
    soak_seconds: int
    rules: HaltRules


def _type_error(where: str, expected: str) -> InvalidRollout:
    return InvalidRollout(f"{where} must be {expected}", status=400)


def _text(body: Mapping[str, object], key: str, where: str) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _type_error(f"{where}{key}", "a string")
    return value.strip()


def exact_version(value: str, what: str) -> str:
    if len(value) > MAX_VERSION_LENGTH or not EXACT_VERSION.fullmatch(value):
        raise InvalidRollout(f"{what} must be an exact version such as 1.4.0 (an exact-version TUF channel)")
    return value


def _number(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _type_error(what, "a number")
    number = float(value) if not isinstance(value, int) or abs(value) <= 2**53 else math.inf
    if not math.isfinite(number):
        raise InvalidRollout(f"{what} must be a finite number")
    return number


def _percent(value: object, what: str) -> float:
    number = _number(value, what)
    if not 0.0 <= number <= 100.0:
        raise InvalidRollout(f"{what} must be from 0 to 100")
    return number


def parse_waves(value: object, where: str = "") -> tuple[float, ...]:
    if value is None:
        return DEFAULT_WAVES
    if not isinstance(value, list):
        raise _type_error(f"{where}waves", "a list of percentages")
    if not 1 <= len(value) <= MAX_WAVES:
        raise InvalidRollout(f"{where}waves must hold 1 to {MAX_WAVES} percentages")
    waves = tuple(_number(item, f"{where}waves[{i}]") for i, item in enumerate(value))
    if any(not 0.0 < p <= 100.0 for p in waves):
        raise InvalidRollout(f"{where}waves must be percentages above 0 and at most 100")
    if any(b <= a for a, b in itertools.pairwise(waves)):
        raise InvalidRollout(f"{where}waves must increase (they are cumulative: 1, 10, 50, 100)")
    if waves[-1] != 100.0:
        raise InvalidRollout(f"{where}waves must end at 100 (the whole population)")
    return waves


def parse_soak(value: object, where: str = "") -> int:
    if value is None:
        return DEFAULT_SOAK_SECONDS
    if isinstance(value, bool) or not isinstance(value, int):
        raise _type_error(f"{where}soak_seconds", "an integer number of seconds")
    if not 0 <= value <= MAX_SOAK_SECONDS:
        raise InvalidRollout(f"{where}soak_seconds must be from 0 to {MAX_SOAK_SECONDS}")
    return value


def parse_rules(value: object, where: str = "") -> HaltRules:
    if value is None:
        return HaltRules()
    if not isinstance(value, dict):
        raise _type_error(f"{where}halt_rules", "an object")
    unknown = sorted(str(k) for k in value if k not in RULE_KEYS)
    if unknown:
        known = ", ".join(sorted(RULE_KEYS))
        raise InvalidRollout(f"{where}halt_rules: unknown key(s) {', '.join(unknown)}; known: {known}")
    failed = value.get("max_failed_percent")
    healthy = value.get("min_healthy_percent")
    return HaltRules(
        max_failed_percent=DEFAULT_MAX_FAILED_PERCENT
        if failed is None
        else _percent(failed, f"{where}halt_rules.max_failed_percent"),
        min_healthy_percent=DEFAULT_MIN_HEALTHY_PERCENT
        if healthy is None
        else _percent(healthy, f"{where}halt_rules.min_healthy_percent"),
    )


def parse_request(body: Mapping[str, object], population_keys: frozenset[str], where: str = "") -> RolloutRequest:
    """Everything but the population (``team_ids`` or ``teams``), which the caller reads itself."""
    unknown = sorted(str(k) for k in body if k not in COMMON_KEYS | population_keys)
    if unknown:
        known = ", ".join(sorted(COMMON_KEYS | population_keys))
        raise InvalidRollout(f"{where}unknown key(s) {', '.join(unknown)}; known: {known}")
    raw_target = _text(body, "target", where)
    try:
        target = Target(raw_target or "")
    except ValueError:
        raise InvalidRollout(f"{where}target must be one of {', '.join(t.value for t in Target)}") from None
    version = _text(body, "version", where)
    if not version:
        raise InvalidRollout(f"{where}version is required")
    exact_version(version, f"{where}version")
    from_version = _text(body, "from_version", where) or None
    if from_version is not None:
        exact_version(from_version, f"{where}from_version")
        if from_version == version:
            raise InvalidRollout(f"{where}from_version must differ from version")
    name = _text(body, "name", where) or None
    if name is not None and (len(name) > MAX_NAME_LENGTH or not name.isprintable()):
        raise InvalidRollout(f"{where}name must be printable text of at most {MAX_NAME_LENGTH} characters")
    return RolloutRequest(
        name=name,
        target=target,
        version=version,
        from_version=from_version,
        waves=parse_waves(body.get("waves"), where),
        soak_seconds=parse_soak(body.get("soak_seconds"), where),
        rules=parse_rules(body.get("halt_rules"), where),
    )


def parse_team_ids(value: object) -> tuple[int, ...] | None:
    """The API's population: ``null``/absent = every host, else a non-empty list of team ids."""
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in value):
        raise _type_error("team_ids", "a list of team ids (integers), or null for every host")
    if not 1 <= len(value) <= MAX_TEAMS:
        raise InvalidRollout(f"team_ids must hold 1 to {MAX_TEAMS} team ids (null for every host)")
    if any(not 0 < i <= INT64_MAX for i in value):
        raise InvalidRollout(f"team_ids must be team ids (1..{INT64_MAX})")
    return tuple(sorted(set(value)))


def parse_team_names(value: object, where: str) -> tuple[str, ...] | None:
    """The configuration file's population: team names (declared in the file or existing)."""
    if value is None:
        return None
    if not isinstance(value, list) or not value or not all(isinstance(n, str) and n.strip() for n in value):
        raise InvalidRollout(f"{where}teams must be a non-empty list of team names (omit it for every host)")
    return tuple(dict.fromkeys(n.strip() for n in value))
