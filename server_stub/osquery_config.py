"""The osquery configuration a host receives: its team's (or the global) agent options, platform overrides applied.

Fleet serves the ``config`` part of agent options at top level, replaced wholesale by
``overrides.platforms.<platform>`` when the host's platform has an override.
"""

from __future__ import annotations

from server_stub.int_ranges import INT64_MAX, parse_id_or_none
from server_stub.json_fields import JsonObject
from server_stub.policies import platform_family


def config_for_host(agent_options: JsonObject, host_platform: str) -> JsonObject:
    config = agent_options.get("config")
    served: JsonObject = dict(config) if isinstance(config, dict) else {}
    overrides = agent_options.get("overrides")
    if isinstance(overrides, dict):
        platforms = overrides.get("platforms")
        if isinstance(platforms, dict):
            for key in (host_platform, platform_family(host_platform)):
                override = platforms.get(key) if key else None
                if isinstance(override, dict):
                    return dict(override)
    return served


def _int_option(options: JsonObject, *names: str) -> int:
    """An interval option as recorded for the host: a non-negative int64 (an integer or ASCII-digit string)."""
    for name in names:
        value = options.get(name)
        if isinstance(value, bool):
            continue
        if isinstance(value, str):
            value = parse_id_or_none(value)
        if isinstance(value, int) and 0 <= value <= INT64_MAX:
            return value
    return 0


def interval_options(config: JsonObject) -> tuple[int, int, int]:
    """(distributed_interval, config refresh, logger_tls_period) as served, 0 when absent."""
    options = config.get("options")
    if not isinstance(options, dict):
        return 0, 0, 0
    return (
        _int_option(options, "distributed_interval"),
        _int_option(options, "config_refresh", "config_tls_refresh"),
        _int_option(options, "logger_tls_period"),
    )
