"""macOS ``--use-system-configuration``: the Fleet URL and enroll secret from the fleetd configuration profile an MDM
installed (payload ``com.fleetdm.fleetd.config``; ``orbitctl mdm profile`` writes one), behind an interface so the
parsing and the waiting are tested on Linux with fixtures (docs/reference/orbit-behaviour.md §1.3 step 5, §2.6;
docs/adr/0021-mdm-deployment.md).

Sources (``ConfigurationSource``), tried in order until one is complete:

- ``ProfilesCommand``: ``/usr/bin/profiles -C -o stdout-xml`` (what Fleet's orbit reads): the computer-level
  profiles; the payload whose ``PayloadType`` or ``PayloadIdentifier`` is ``com.fleetdm.fleetd.config``.
- ``ManagedPreferencesFile``: ``/Library/Managed Preferences/com.fleetdm.fleetd.config.plist``, where macOS puts
  that payload's keys (readable without running a program; a fallback when ``profiles`` fails).

Resolution (``resolve_once``, Fleet's order): a complete profile wins over flags and environment and is persisted to
``<root>/fleet_url.txt`` and ``<root>/secret.txt`` (0600, atomic); without one, a URL and secret already given by
flags/environment are used; else the persisted files (the secret file through the keystore, as at every start). Not
found: ``wait_for_configuration`` tries again every 30 s, waking at once on the agent's stop.
"""

from __future__ import annotations

import asyncio
import logging
import plistlib
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Protocol

from orbit.fleet.enroll_secret import Keystore, resolve_enroll_secret
from safe_fs.atomic_write import SECRET_MODE, write_atomic
from safe_fs.secret_read import SecretFileError, read_secret_file

log = logging.getLogger(__name__)

PAYLOAD: Final = "com.fleetdm.fleetd.config"
MANAGED_PREFERENCES: Final = Path("/Library/Managed Preferences") / f"{PAYLOAD}.plist"
PROFILES_COMMAND: Final = ("/usr/bin/profiles", "-C", "-o", "stdout-xml")
RETRY_INTERVAL_S: Final = 30.0
FLEET_URL_FILE: Final = "fleet_url.txt"
SECRET_FILE: Final = "secret.txt"  # noqa: S105 - a file name (RootLayout.secret_file)
MAX_PLIST_BYTES: Final = 8 << 20  # a profiles listing with many profiles is still far below this
MAX_VALUE_BYTES: Final = 4096
_COMMAND_TIMEOUT_S: Final = 60.0


class SystemConfigurationError(RuntimeError):
    """A source could not be read or parsed; the message never holds the secret."""


@dataclass(frozen=True)
class FleetdConfig:
    fleet_url: str | None = None
    enroll_secret: str | None = field(default=None, repr=False)
    enable_scripts: bool | None = None

    @property
    def complete(self) -> bool:
        return bool(self.fleet_url and self.enroll_secret)


def _text(payload: dict[object, object], key: str) -> str | None:
    value = payload.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or len(value.encode("utf-8")) > MAX_VALUE_BYTES:
        raise SystemConfigurationError(f"{key} in the configuration profile is not a string of at most 4096 bytes")
    return value.strip() or None


def config_from_payload(payload: dict[object, object]) -> FleetdConfig:
    """The payload's keys as Fleet writes them: ``FleetURL``, ``EnrollSecret``, ``EnableScripts`` (bool)."""
    scripts = payload.get("EnableScripts")
    if scripts is not None and not isinstance(scripts, bool):
        raise SystemConfigurationError("EnableScripts in the configuration profile is not a boolean")
    return FleetdConfig(_text(payload, "FleetURL"), _text(payload, "EnrollSecret"), scripts)


def _load_plist(data: bytes, what: str) -> object:
    try:
        return plistlib.loads(data)
    except (plistlib.InvalidFileException, ValueError, TypeError, OverflowError) as exc:
        raise SystemConfigurationError(f"{what} is not a property list: {type(exc).__name__}") from None


def parse_managed_preferences(data: bytes) -> FleetdConfig:
    loaded = _load_plist(data, "the managed preferences file")
    if not isinstance(loaded, dict):
        raise SystemConfigurationError("the managed preferences file does not hold a dictionary")
    return config_from_payload(loaded)


def parse_profiles_output(data: bytes) -> FleetdConfig:
    """``profiles -C -o stdout-xml``: ``{"_computerlevel": [profile…]}``, each profile with ``ProfileItems``; an
    empty listing (``<dict/>``) or no fleetd payload is an empty config, not an error."""
    loaded = _load_plist(data, "the profiles output")
    if not isinstance(loaded, dict):
        raise SystemConfigurationError("the profiles output does not hold a dictionary")
    profiles = loaded.get("_computerlevel", [])
    if not isinstance(profiles, list):
        raise SystemConfigurationError("_computerlevel in the profiles output is not a list")
    for profile in profiles:
        items = profile.get("ProfileItems", []) if isinstance(profile, dict) else []
        for item in items if isinstance(items, list) else []:
            if not isinstance(item, dict) or PAYLOAD not in (item.get("PayloadType"), item.get("PayloadIdentifier")):
                continue
            content = item.get("PayloadContent")
            if not isinstance(content, dict):
                raise SystemConfigurationError(f"the {PAYLOAD} payload has no PayloadContent dictionary")
            return config_from_payload(content)
    return FleetdConfig()


class ConfigurationSource(Protocol):
    name: str

    def read(self) -> FleetdConfig: ...


class ManagedPreferencesFile:
    name = "managed-preferences"

    def __init__(self, path: Path = MANAGED_PREFERENCES) -> None:
        self.path = path

    def read(self) -> FleetdConfig:
        try:
            with self.path.open("rb") as handle:
                data = handle.read(MAX_PLIST_BYTES + 1)
        except FileNotFoundError:
            return FleetdConfig()
        except OSError as exc:
            raise SystemConfigurationError(f"{self.path} cannot be read: {exc.strerror or exc}") from None
        if len(data) > MAX_PLIST_BYTES:
            raise SystemConfigurationError(f"{self.path} is larger than {MAX_PLIST_BYTES} bytes")
        return parse_managed_preferences(data)


def run_profiles_command(argv: Sequence[str]) -> bytes:
    """The real ``profiles`` run: no shell, bounded time; its stderr is kept out of the parsed output."""
    try:
        done = subprocess.run(list(argv), capture_output=True, timeout=_COMMAND_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SystemConfigurationError(f"{argv[0]} could not run: {exc}") from None
    if done.returncode != 0:
        raise SystemConfigurationError(f"{argv[0]} exited {done.returncode}")
    if len(done.stdout) > MAX_PLIST_BYTES:
        raise SystemConfigurationError(f"{argv[0]} printed more than {MAX_PLIST_BYTES} bytes")
    return done.stdout


class ProfilesCommand:
    name = "profiles"

    def __init__(self, run: Callable[[Sequence[str]], bytes] = run_profiles_command) -> None:
        self._run = run

    def read(self) -> FleetdConfig:
        return parse_profiles_output(self._run(PROFILES_COMMAND))


def macos_sources() -> tuple[ConfigurationSource, ...]:
    return (ProfilesCommand(), ManagedPreferencesFile())


def read_sources(sources: Sequence[ConfigurationSource]) -> FleetdConfig:
    """The first complete config; a source's failure is logged (never with the secret) and the next one tried."""
    for source in sources:
        try:
            config = source.read()
        except SystemConfigurationError as exc:
            log.warning("event=system_configuration_unreadable source=%s error=%s", source.name, exc)
            continue
        if config.complete:
            return config
        log.debug("event=system_configuration_incomplete source=%s", source.name)
    return FleetdConfig()


@dataclass(frozen=True)
class Resolved:
    fleet_url: str
    enroll_secret: str = field(repr=False)
    origin: str  # profile | flags | files
    enable_scripts: bool | None = None


def _persist(path: Path, value: str) -> None:
    """0600, atomic, and only when it changed (an unchanged profile rewrites nothing at each start)."""
    try:
        current = read_secret_file(path, MAX_VALUE_BYTES)
    except SecretFileError:
        current = None
    if current != value:
        write_atomic(path, value, SECRET_MODE)


def resolve_once(
    sources: Sequence[ConfigurationSource],
    root: Path,
    flag_url: str | None,
    flag_secret: str | None,
    keystore: Keystore | None,
) -> Resolved | None:
    """One attempt in Fleet's order (module docstring); None when no URL and secret are known yet."""
    config = read_sources(sources)
    if config.complete:
        assert config.fleet_url is not None and config.enroll_secret is not None
        _persist(root / SECRET_FILE, config.enroll_secret)
        _persist(root / FLEET_URL_FILE, config.fleet_url)
        log.info("event=system_configuration_found source=profile")
        return Resolved(config.fleet_url, config.enroll_secret, "profile", config.enable_scripts)
    if flag_url and flag_secret:
        return Resolved(flag_url, flag_secret, "flags")
    try:
        url = flag_url or read_secret_file(root / FLEET_URL_FILE, MAX_VALUE_BYTES)
    except SecretFileError as exc:
        raise SystemConfigurationError(f"{exc.path} {exc.reason}") from None
    secret = flag_secret or resolve_enroll_secret(None, root / SECRET_FILE, keystore=keystore).secret
    if url and secret:
        log.info("event=system_configuration_found source=files")
        return Resolved(url, secret, "files")
    return None


async def wait_for_configuration(
    attempt: Callable[[], Resolved | None], stop: asyncio.Event, *, interval: float = RETRY_INTERVAL_S
) -> Resolved | None:
    """``attempt`` (run in a thread: ``profiles`` is a subprocess) until it finds a URL and secret; every wait ends
    at once when ``stop`` is set (then None)."""
    while not stop.is_set():
        found = await asyncio.to_thread(attempt)
        if found is not None:
            return found
        log.info("event=system_configuration_waiting retry_s=%g", interval)
        try:
            await asyncio.wait_for(stop.wait(), timeout=interval)
        except TimeoutError:
            continue
    return None
