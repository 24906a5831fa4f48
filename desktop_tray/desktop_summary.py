"""The DesktopSummary JSON of ``GET /api/latest/fleet/device/{token}/desktop`` as typed values (fleet-api.md §5.3).

Every field may be missing or null. A field of the wrong type makes the whole answer malformed
(``SummaryFormatError``): the caller treats it as a server error, never as a crash.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


class SummaryFormatError(ValueError):
    """The server's JSON does not have the documented shape."""


@dataclass(frozen=True)
class OrgInfo:
    org_name: str | None = None
    org_logo_url: str | None = None
    org_logo_url_light_background: str | None = None
    contact_url: str | None = None


@dataclass(frozen=True)
class DesktopSummary:
    failing_policies_count: int | None = None
    self_service: bool | None = None  # None (old servers): show the item
    needs_mdm_migration: bool = False
    renew_enrollment_profile: bool = False
    org_info: OrgInfo = field(default_factory=OrgInfo)
    macos_migration_mode: str | None = None  # "voluntary", "forced" or None
    alternative_browser_host: str | None = None
    error: str | None = None


def _object(value: object, where: str) -> Mapping[str, object]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise SummaryFormatError(f"{where} must be a JSON object")
    return value


def _opt_str(obj: Mapping[str, object], key: str, where: str) -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise SummaryFormatError(f"{where}.{key} must be a string")
    return value


def _opt_bool(obj: Mapping[str, object], key: str, where: str) -> bool | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, bool):
        raise SummaryFormatError(f"{where}.{key} must be a boolean")
    return value


def _opt_count(obj: Mapping[str, object], key: str, where: str) -> int | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise SummaryFormatError(f"{where}.{key} must be a non-negative integer")
    return value


def parse_desktop_summary(payload: object) -> DesktopSummary:
    if not isinstance(payload, dict):
        raise SummaryFormatError("the summary must be a JSON object")
    top = _object(payload, "summary")
    notifications = _object(top.get("notifications"), "notifications")
    config = _object(top.get("config"), "config")
    org = _object(config.get("org_info"), "config.org_info")
    mdm = _object(config.get("mdm"), "config.mdm")
    migration = _object(mdm.get("macos_migration"), "config.mdm.macos_migration")
    return DesktopSummary(
        failing_policies_count=_opt_count(top, "failing_policies_count", "summary"),
        self_service=_opt_bool(top, "self_service", "summary"),
        needs_mdm_migration=bool(_opt_bool(notifications, "needs_mdm_migration", "notifications")),
        renew_enrollment_profile=bool(_opt_bool(notifications, "renew_enrollment_profile", "notifications")),
        org_info=OrgInfo(
            org_name=_opt_str(org, "org_name", "org_info"),
            org_logo_url=_opt_str(org, "org_logo_url", "org_info"),
            org_logo_url_light_background=_opt_str(org, "org_logo_url_light_background", "org_info"),
            contact_url=_opt_str(org, "contact_url", "org_info"),
        ),
        macos_migration_mode=_opt_str(migration, "mode", "macos_migration") or None,
        alternative_browser_host=(_opt_str(top, "alternative_browser_host", "summary") or "").strip() or None,
        error=_opt_str(top, "error", "summary") or None,
    )


def count_failing_policies(payload: object) -> int:
    """From the ``/policies`` fallback (§5.4): the entries whose ``response`` is not ``"pass"``."""
    if not isinstance(payload, dict):
        raise SummaryFormatError("the policies answer must be a JSON object")
    top = _object(payload, "policies answer")
    policies = top.get("policies")
    if policies is None:
        return 0
    if not isinstance(policies, list):
        raise SummaryFormatError("policies must be a JSON array")
    failing = 0
    for index, entry in enumerate(policies):
        policy = _object(entry, f"policies[{index}]")
        if policy.get("response") != "pass":
            failing += 1
    return failing
