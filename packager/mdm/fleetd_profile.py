"""The fleetd configuration profile (``.mobileconfig``): pure — options in, plist bytes out.

Layout as Fleet's own profile (server/mdm/apple/mobileconfig ``FleetdProfileTemplate``): a ``Configuration``
profile whose ``PayloadIdentifier`` is ``com.fleetdm.fleetd.config``, holding one payload of that
``PayloadType``/``PayloadIdentifier`` with ``EnrollSecret``, ``FleetURL`` and ``EnableScripts``. On the Mac the
payload's keys land in ``/Library/Managed Preferences/com.fleetdm.fleetd.config.plist`` and in
``profiles -C -o stdout-xml``; orbit started with ``--use-system-configuration`` reads them there
(``orbit.fleet.system_configuration``).

Deterministic: keys sorted (plistlib), UUIDs derived from the Fleet URL (never from the secret), so the same inputs
give the same bytes — and a second profile for the same server replaces the first on the Mac (same identifier).
"""

from __future__ import annotations

import plistlib
import uuid
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import urlsplit

PAYLOAD_IDENTIFIER: Final = "com.fleetdm.fleetd.config"
DISPLAY_NAME: Final = "Fleetd configuration"  # the name Fleet gives its own profile
DESCRIPTION: Final = "Fleet URL and enroll secret for the fleetd agent (orbit --use-system-configuration)."
_UUID_NAMESPACE: Final = uuid.UUID("3B0E5B43-2F3A-4E39-9C56-7E1C0E2F7A10")
MAX_SECRET_LENGTH: Final = 4096


class ProfileError(ValueError):
    """The options cannot make a valid profile; the message never shows the secret."""


@dataclass(frozen=True)
class FleetdProfile:
    fleet_url: str
    enroll_secret: str = field(repr=False)
    enable_scripts: bool = False
    organization: str | None = None

    def __post_init__(self) -> None:
        parts = urlsplit(self.fleet_url)
        if parts.scheme != "https" or not parts.hostname:
            raise ProfileError(f"the Fleet URL {self.fleet_url!r} must be an https:// URL with a host")
        if not self.enroll_secret or self.enroll_secret != self.enroll_secret.strip():
            raise ProfileError("the enroll secret is empty or has surrounding whitespace")
        if len(self.enroll_secret) > MAX_SECRET_LENGTH or any(ord(char) < 0x20 for char in self.enroll_secret):
            raise ProfileError("the enroll secret is too long or holds control characters")


def _uuid(kind: str, fleet_url: str) -> str:
    return str(uuid.uuid5(_UUID_NAMESPACE, f"{kind}\0{fleet_url}")).upper()


def profile_plist(profile: FleetdProfile) -> bytes:
    payload = {
        "EnrollSecret": profile.enroll_secret,
        "FleetURL": profile.fleet_url,
        "EnableScripts": profile.enable_scripts,
        "PayloadDisplayName": DISPLAY_NAME,
        "PayloadIdentifier": PAYLOAD_IDENTIFIER,
        "PayloadType": PAYLOAD_IDENTIFIER,
        "PayloadUUID": _uuid("payload", profile.fleet_url),
        "PayloadVersion": 1,
    }
    outer: dict[str, object] = {
        "PayloadContent": [payload],
        "PayloadDescription": DESCRIPTION,
        "PayloadDisplayName": DISPLAY_NAME,
        "PayloadIdentifier": PAYLOAD_IDENTIFIER,
        "PayloadScope": "System",
        "PayloadType": "Configuration",
        "PayloadUUID": _uuid("profile", profile.fleet_url),
        "PayloadVersion": 1,
    }
    if profile.organization:
        outer["PayloadOrganization"] = profile.organization
    return plistlib.dumps(outer, fmt=plistlib.FMT_XML, sort_keys=True)
