"""The agent's intervals and limits (docs/reference/orbit-behaviour.md §14), with the few knobs Fleet itself reads from
the
environment, plus ``ORBIT_DEV_*`` knobs that tests and the demo use to compress minutes into seconds.

The ``ORBIT_DEV_*`` variables are not part of the product's interface: packages never set them.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping
from dataclasses import dataclass, fields

from tuf_updates.durations import DurationError, parse_duration


@dataclass(frozen=True)
class Timings:
    config_interval: float = 30.0
    config_max_backoff: float = 300.0
    config_cache_ttl: float = 3.0
    enroll_retry_interval: float = 10.0  # FLEETD_ENROLL_RETRY_INTERVAL
    enroll_attempts: int = 6
    reenroll_debounce: float = 45.0
    capabilities_interval: float = 300.0
    token_local_check: float = 30.0
    token_remote_check: float = 300.0
    trial_healthy_period: float = 30.0  # osqueryd up and config polled this long → the new orbit is confirmed
    trial_deadline: float = 300.0  # not healthy by then → revert to the previous orbit
    desktop_session_retry: float = 30.0
    stable_reset: float = 60.0  # a child that ran this long has its backoff reset
    status_interval: float = 5.0
    system_configuration_retry: float = 30.0  # macOS --use-system-configuration: wait for the MDM's profile


_DEV_PREFIX = "ORBIT_DEV_"


def timings_from_env(env: Mapping[str, str]) -> Timings:
    """Defaults, ``FLEETD_ENROLL_RETRY_INTERVAL`` (a Go duration, as Fleet), and ``ORBIT_DEV_<FIELD>`` overrides."""
    values: dict[str, float | int] = {}
    retry = env.get("FLEETD_ENROLL_RETRY_INTERVAL", "").strip()
    if retry:
        with contextlib.suppress(DurationError):  # Fleet ignores a bad value too
            interval = parse_duration(retry)
            if interval >= 0:  # a negative wait would retry enrollment back to back
                values["enroll_retry_interval"] = interval
    for field in fields(Timings):
        raw = env.get(_DEV_PREFIX + field.name.upper(), "").strip()
        if not raw:
            continue
        try:
            number = float(raw)
        except ValueError:
            continue
        if not math.isfinite(number):
            continue  # "inf" crashed int() and is no timing
        value = int(number) if field.type == "int" else number
        if value > 0:  # "0.5" attempts would be 0: no enrollment at all
            values[field.name] = value
    return Timings(**values)  # type: ignore[arg-type]
