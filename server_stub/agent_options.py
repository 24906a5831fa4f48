"""Validation of agent options documents (admin API and declarative config file): a pure check.

Shape: ``{"config": {...}, "overrides": {"platforms": {<name>: {...}}}, "command_line_flags": {...},
"update_channels": {"orbit"|"osqueryd"|"desktop": "<channel>"}, "script_execution_timeout": 1..3600}``.
"""

from __future__ import annotations

import math

from server_stub.int_ranges import INT64_MAX, INT64_MIN, fits_int64
from server_stub.json_fields import JsonObject

UPDATE_CHANNEL_TARGETS = frozenset({"orbit", "osqueryd", "desktop"})
KNOWN_KEYS = frozenset({"config", "overrides", "command_line_flags", "update_channels", "script_execution_timeout"})
MAX_SCRIPT_TIMEOUT = 3600


class InvalidAgentOptions(ValueError):
    pass


def _flag_value_ok(value: object) -> bool:
    return isinstance(value, (str, int, float, bool))


def _check_numbers(document: object) -> None:
    """Every number is one the stub can store and serve as strict JSON: finite, integers within int64.

    A configuration file can hold NaN or inf (TOML ``nan``, Python's JSON ``NaN``), and an integer beyond int64 in
    an interval option used to make every osquery config request fail where the stub records it.
    """
    stack: list[object] = [document]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, float) and not math.isfinite(node):
            raise InvalidAgentOptions("agent options must not contain NaN or Infinity (not JSON)")
        elif isinstance(node, int) and not isinstance(node, bool) and not fits_int64(node):
            raise InvalidAgentOptions(f"agent options hold an integer out of range ({INT64_MIN}..{INT64_MAX})")


def validate_agent_options(options: object) -> JsonObject:
    if not isinstance(options, dict):
        raise InvalidAgentOptions("agent options must be a JSON object")
    _check_numbers(options)
    unknown = sorted(set(options) - KNOWN_KEYS)
    if unknown:
        raise InvalidAgentOptions(f"unknown agent options key(s): {', '.join(unknown)}")
    config = options.get("config")
    if config is not None and not isinstance(config, dict):
        raise InvalidAgentOptions("'config' must be an object (an osquery configuration)")
    if isinstance(config, dict):
        for key in ("options", "schedule", "packs", "decorators"):
            if key in config and not isinstance(config[key], dict):
                raise InvalidAgentOptions(f"'config.{key}' must be an object")
    overrides = options.get("overrides")
    if overrides is not None:
        if not isinstance(overrides, dict):
            raise InvalidAgentOptions("'overrides' must be an object")
        platforms = overrides.get("platforms", {})
        if not isinstance(platforms, dict) or not all(isinstance(v, dict) for v in platforms.values()):
            raise InvalidAgentOptions("'overrides.platforms' must map platform names to osquery configurations")
    flags = options.get("command_line_flags")
    if flags is not None:
        if not isinstance(flags, dict) or not all(_flag_value_ok(v) for v in flags.values()):
            raise InvalidAgentOptions("'command_line_flags' must map flag names to strings, numbers or booleans")
        if any(not isinstance(k, str) or not k or k.startswith("-") for k in flags):
            raise InvalidAgentOptions("'command_line_flags' keys are flag names without leading dashes")
    channels = options.get("update_channels")
    if channels is not None:
        if not isinstance(channels, dict):
            raise InvalidAgentOptions("'update_channels' must be an object")
        bad = sorted(set(channels) - UPDATE_CHANNEL_TARGETS)
        if bad:
            raise InvalidAgentOptions(f"'update_channels' has unknown target(s): {', '.join(bad)}")
        if not all(isinstance(v, str) and v.strip() for v in channels.values()):
            raise InvalidAgentOptions("'update_channels' values must be non-empty channel names")
    timeout = options.get("script_execution_timeout")
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, int) or not 1 <= timeout <= MAX_SCRIPT_TIMEOUT
    ):
        raise InvalidAgentOptions(f"'script_execution_timeout' must be an integer from 1 to {MAX_SCRIPT_TIMEOUT}")
    return {str(k): v for k, v in options.items()}


def validate_notifications(value: object) -> JsonObject:
    if not isinstance(value, dict):
        raise InvalidAgentOptions("orbit notifications must be a JSON object")
    if not all(isinstance(v, (bool, str)) for v in value.values()):
        raise InvalidAgentOptions("orbit notification values must be booleans or strings")
    if "pending_script_execution_ids" in value:
        raise InvalidAgentOptions("pending_script_execution_ids is derived from queued scripts; queue a script instead")
    return {str(k): v for k, v in value.items()}
