"""osquery's gflags validators (``DEFINE_validator``): the few flags whose parsed value osquery still refuses.

A validator returns None when the value is fine, else the line osquery writes to stderr before gflags reports
``ERROR: failed validation of new value '<v>' for flag '<name>'``. Sources: ``alarm_timeout`` in
osquery/core/init.cpp, ``aws_imdsv2_request_attempts`` in osquery/utils/aws/aws_util.cpp, ``logger_mode`` in
plugins/logger/filesystem_logger.cpp.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

from osquery_sim.cpp_defaults import FlagValue

Validator = Callable[[str, FlagValue], "str | None"]

_OCTAL_PREFIX = re.compile(r"[ \t\n\v\f\r]*([+-]?)([0-7]+)")  # std::stoi(value, &pos, 8): a prefix is enough
LOGGER_MODE_INVALID = "The logger_mode flag does not contain a valid UNIX permission"
LOGGER_MODE_NOT_OCTAL = "Failed to convert logger_mode string to octal"


def _alarm_timeout(_name: str, value: FlagValue) -> str | None:
    if isinstance(value, int) and value < 10:
        return "Alarm timeout cannot be lower than 10 seconds"
    return None


def _at_least_one(name: str, value: FlagValue) -> str | None:
    if value == 0:
        return f"Only values higher than 0 are supported for {name}"
    return None


def _logger_mode(_name: str, value: FlagValue) -> str | None:
    text = str(value)
    if len(text) > 5:  # a leading 0, the special bits and the permission bits
        return LOGGER_MODE_INVALID
    match = _OCTAL_PREFIX.match(text)
    if match is None:
        return LOGGER_MODE_NOT_OCTAL
    mode = int(match.group(2), 8) * (-1 if match.group(1) == "-" else 1)
    if mode <= 0 or mode > 0o7777:
        return LOGGER_MODE_INVALID
    return None


VALIDATORS: Mapping[str, Validator] = {
    "alarm_timeout": _alarm_timeout,
    "aws_imdsv2_request_attempts": _at_least_one,
    "logger_mode": _logger_mode,
}


def validate(name: str, value: FlagValue) -> str | None:
    """osquery's complaint about ``value`` for the canonical flag ``name``, or None when it is accepted."""
    validator = VALIDATORS.get(name)
    return None if validator is None else validator(name, value)
