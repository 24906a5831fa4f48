"""orbit's macOS ``--use-system-configuration`` (orbit/fleet/system_configuration.py and the agent's start-up step):
the fleetd profile read from ``profiles -C -o stdout-xml`` output and from the Managed Preferences plist in a fake
root, Fleet's precedence (profile over flags over persisted files), the 30 s retry that wakes on stop, and a round
trip from ``orbitctl mdm profile`` through a model of what macOS does with an installed profile."""

from __future__ import annotations

import asyncio
import plistlib
import stat
import threading
from collections.abc import Sequence
from pathlib import Path

import pytest

from orbit.actors import DaemonThreadExecutor
from orbit.agent import Agent, AgentStartError
from orbit.fleet.system_configuration import (
    FLEET_URL_FILE,
    MANAGED_PREFERENCES,
    PROFILES_COMMAND,
    FleetdConfig,
    ManagedPreferencesFile,
    ProfilesCommand,
    Resolved,
    SystemConfigurationError,
    parse_profiles_output,
    read_sources,
    resolve_once,
    wait_for_configuration,
)
from orbit.options import parse_options
from orbit.timings import Timings
from packager.mdm.fleetd_profile import FleetdProfile, profile_plist

URL = "https://fleet.example.com"
SECRET = "profile-secret-42"


def installed_on_a_mac(mobileconfig: bytes) -> tuple[bytes, bytes]:
    """A model of what macOS makes of an installed configuration profile, as Fleet's orbit tests record it
    (orbit/pkg/profiles/profiles_darwin_test.go): ``profiles -C -o stdout-xml`` lists it under ``_computerlevel``
    with each payload as a ``ProfileItems`` entry whose ``PayloadContent`` holds the payload's own keys; and
    ``/Library/Managed Preferences/<PayloadType>.plist`` holds those keys."""
    profile = plistlib.loads(mobileconfig)
    items = []
    for payload in profile["PayloadContent"]:
        own = {key: value for key, value in payload.items() if not key.startswith("Payload")}
        items.append({"PayloadContent": own} | {k: v for k, v in payload.items() if k.startswith("Payload")})
    listing = {
        "_computerlevel": [
            {"ProfileIdentifier": "com.example.other", "ProfileItems": [{"PayloadType": "com.apple.dock"}]},
            {
                "ProfileIdentifier": profile["PayloadIdentifier"],
                "ProfileDisplayName": profile["PayloadDisplayName"],
                "ProfileInstallDate": "2026-12-05 07:00:00 +0000",
                "ProfileItems": items,
                "ProfileType": "Configuration",
                "ProfileUUID": profile["PayloadUUID"],
            },
        ]
    }
    return plistlib.dumps(listing), plistlib.dumps(items[0]["PayloadContent"])


def _profile(enable_scripts: bool = False) -> bytes:
    return profile_plist(FleetdProfile(URL, SECRET, enable_scripts=enable_scripts))


class Fixed:
    """A source that answers from a list (one answer per read; the last one repeats)."""

    def __init__(self, *answers: FleetdConfig | Exception, name: str = "fixed") -> None:
        self.answers = list(answers)
        self.name = name
        self.reads = 0

    def read(self) -> FleetdConfig:
        answer = self.answers[min(self.reads, len(self.answers) - 1)]
        self.reads += 1
        if isinstance(answer, Exception):
            raise answer
        return answer


class MemoryKeystore:
    name = "memory"

    def __init__(self, secret: str | None = None) -> None:
        self.secret = secret

    def get(self) -> str | None:
        return self.secret

    def put(self, secret: str) -> None:
        self.secret = secret


# -- reading the profile ----------------------------------------------------------------------------------------


def test_orbitctls_profile_is_read_back_from_the_profiles_listing_and_the_managed_preferences(
    tmp_path: Path,
) -> None:
    listing, managed = installed_on_a_mac(_profile(enable_scripts=True))
    expected = FleetdConfig(URL, SECRET, True)
    seen: list[Sequence[str]] = []

    def run(argv: Sequence[str]) -> bytes:
        seen.append(argv)
        return listing

    assert ProfilesCommand(run).read() == expected
    assert seen == [PROFILES_COMMAND] == [("/usr/bin/profiles", "-C", "-o", "stdout-xml")]
    fake_root = tmp_path / "root"
    prefs = fake_root / MANAGED_PREFERENCES.relative_to("/")
    prefs.parent.mkdir(parents=True)
    prefs.write_bytes(managed)
    assert ManagedPreferencesFile(prefs).read() == expected
    assert prefs.name == "com.fleetdm.fleetd.config.plist" and prefs.parent.name == "Managed Preferences"


def test_fleets_recorded_listing_shape_with_the_payload_type_fleet_used_earlier() -> None:
    """Fleet's earlier profiles used PayloadType com.fleetdm.fleetd with the identifier com.fleetdm.fleetd.config."""
    listing = plistlib.dumps(
        {
            "_computerlevel": [
                {
                    "ProfileIdentifier": "com.fleetdm.fleetd.config",
                    "ProfileItems": [
                        {
                            "PayloadContent": {"EnrollSecret": "ENROLL_SECRET", "FleetURL": "https://test.example.com"},
                            "PayloadIdentifier": "com.fleetdm.fleetd.config",
                            "PayloadType": "com.fleetdm.fleetd",
                        }
                    ],
                }
            ]
        }
    )
    assert parse_profiles_output(listing) == FleetdConfig("https://test.example.com", "ENROLL_SECRET", None)


@pytest.mark.parametrize(
    "listing",
    [
        b'<?xml version="1.0" encoding="UTF-8"?><plist version="1.0"><dict/></plist>',  # no profiles at all
        plistlib.dumps({"_computerlevel": []}),
        plistlib.dumps({"_computerlevel": [{"ProfileItems": [{"PayloadType": "com.apple.dock"}]}]}),
    ],
)
def test_no_fleetd_profile_is_an_empty_config_not_an_error(listing: bytes) -> None:
    assert parse_profiles_output(listing) == FleetdConfig()


@pytest.mark.parametrize(
    ("listing", "message"),
    [
        (b"invalid-xml", "not a property list"),
        (plistlib.dumps(["a list"]), "does not hold a dictionary"),
        (plistlib.dumps({"_computerlevel": "x"}), "is not a list"),
        (plistlib.dumps({"_computerlevel": [{"ProfileItems": [{"PayloadType": "com.fleetdm.fleetd.config"}]}]}), "no "),
        (
            plistlib.dumps(
                {
                    "_computerlevel": [
                        {
                            "ProfileItems": [
                                {"PayloadType": "com.fleetdm.fleetd.config", "PayloadContent": {"FleetURL": 7}}
                            ]
                        }
                    ]
                }
            ),
            "FleetURL",
        ),
        (
            plistlib.dumps(
                {
                    "_computerlevel": [
                        {
                            "ProfileItems": [
                                {
                                    "PayloadType": "com.fleetdm.fleetd.config",
                                    "PayloadContent": {"EnrollSecret": SECRET, "EnableScripts": "yes"},
                                }
                            ]
                        }
                    ]
                }
            ),
            "EnableScripts",
        ),
    ],
)
def test_hostile_listings_are_clear_errors_without_the_secret(listing: bytes, message: str) -> None:
    with pytest.raises(SystemConfigurationError, match=message) as caught:
        parse_profiles_output(listing)
    assert SECRET not in str(caught.value)


def test_the_managed_preferences_file_missing_is_empty_and_broken_is_an_error(tmp_path: Path) -> None:
    assert ManagedPreferencesFile(tmp_path / "absent.plist").read() == FleetdConfig()
    (tmp_path / "broken.plist").write_bytes(b"\x00\x01 not a plist")
    with pytest.raises(SystemConfigurationError, match="not a property list"):
        ManagedPreferencesFile(tmp_path / "broken.plist").read()
    (tmp_path / "huge.plist").write_bytes(b" " * ((8 << 20) + 1))
    with pytest.raises(SystemConfigurationError, match="larger than"):
        ManagedPreferencesFile(tmp_path / "huge.plist").read()


def test_a_failing_source_falls_through_to_the_next() -> None:
    broken = Fixed(SystemConfigurationError("/usr/bin/profiles exited 1"), name="profiles")
    incomplete = Fixed(FleetdConfig(URL, None))
    good = Fixed(FleetdConfig(URL, SECRET))
    assert read_sources([broken, incomplete, good]) == FleetdConfig(URL, SECRET)
    assert read_sources([broken, incomplete]) == FleetdConfig()


def test_the_secret_never_shows_in_a_repr() -> None:
    assert SECRET not in repr(FleetdConfig(URL, SECRET)) and SECRET not in repr(Resolved(URL, SECRET, "profile"))


# -- Fleet's precedence -----------------------------------------------------------------------------------------


def test_the_profile_wins_over_flags_and_is_persisted_0600(tmp_path: Path) -> None:
    found = resolve_once([Fixed(FleetdConfig(URL, SECRET, True))], tmp_path, "https://flag.example", "flag", None)
    assert found == Resolved(URL, SECRET, "profile", True)
    for name, value in ((FLEET_URL_FILE, URL), ("secret.txt", SECRET)):
        assert (tmp_path / name).read_text() == value
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600


def test_without_a_profile_flags_are_used_and_then_the_persisted_files(tmp_path: Path) -> None:
    nothing = Fixed(FleetdConfig())
    assert resolve_once([nothing], tmp_path, URL, "flag-secret", None) == Resolved(URL, "flag-secret", "flags")
    assert resolve_once([nothing], tmp_path, None, None, None) is None  # nothing anywhere yet
    resolve_once([Fixed(FleetdConfig(URL, SECRET))], tmp_path, None, None, None)  # an earlier start saw the profile
    assert resolve_once([nothing], tmp_path, None, None, None) == Resolved(URL, SECRET, "files")


def test_the_persisted_secret_moves_into_the_keystore_as_every_secret_file_does(tmp_path: Path) -> None:
    resolve_once([Fixed(FleetdConfig(URL, SECRET))], tmp_path, None, None, None)
    keystore = MemoryKeystore()
    assert resolve_once([Fixed(FleetdConfig())], tmp_path, None, None, keystore) == Resolved(URL, SECRET, "files")
    assert keystore.secret == SECRET and not (tmp_path / "secret.txt").exists()
    assert resolve_once([Fixed(FleetdConfig())], tmp_path, None, None, keystore) == Resolved(URL, SECRET, "files")


def test_an_unchanged_profile_does_not_rewrite_the_files(tmp_path: Path) -> None:
    source = Fixed(FleetdConfig(URL, SECRET))
    resolve_once([source], tmp_path, None, None, None)
    before = (tmp_path / "secret.txt").stat().st_ino
    resolve_once([source], tmp_path, None, None, None)
    assert (tmp_path / "secret.txt").stat().st_ino == before


# -- waiting ------------------------------------------------------------------------------------------------------


def test_it_waits_until_the_profile_arrives() -> None:
    source = Fixed(FleetdConfig(), FleetdConfig(), FleetdConfig(URL, SECRET))

    async def main() -> Resolved | None:
        return await wait_for_configuration(lambda: read_or_none(source), asyncio.Event(), interval=0.01)

    assert asyncio.run(main()) == Resolved(URL, SECRET, "profile")
    assert source.reads == 3


def read_or_none(source: Fixed) -> Resolved | None:
    config = source.read()
    if not config.complete:
        return None
    assert config.fleet_url and config.enroll_secret
    return Resolved(config.fleet_url, config.enroll_secret, "profile")


def test_a_stop_ends_the_wait_at_once() -> None:
    """The retry interval is an hour here: only the stop event can end the wait."""

    async def main() -> tuple[Resolved | None, int]:
        stop = asyncio.Event()
        attempts = 0

        def attempt() -> Resolved | None:
            nonlocal attempts
            attempts += 1
            return None

        waiting = asyncio.create_task(wait_for_configuration(attempt, stop, interval=3600))
        while attempts == 0:
            await asyncio.sleep(0)  # yield until the first attempt ran (no wall-clock wait)
        stop.set()
        return await asyncio.wait_for(waiting, timeout=60), attempts

    assert asyncio.run(main()) == (None, 1)


# -- the agent's start-up step ------------------------------------------------------------------------------------


def _agent(tmp_path: Path, platform: str, *sources: Fixed, argv: Sequence[str] = ()) -> Agent:
    options = parse_options(
        ["--root-dir", str(tmp_path / "root"), "--use-system-configuration", "--disable-keystore", *argv],
        {},
        platform=platform,
    )
    agent = Agent(
        options,
        [],
        {},
        platform=platform,
        timings=Timings(system_configuration_retry=0.01),
        configuration_sources=sources,
    )
    agent.layout.ensure()
    return agent


def test_the_agent_takes_url_secret_and_scripts_from_the_profile_on_macos(tmp_path: Path) -> None:
    agent = _agent(tmp_path, "macos", Fixed(FleetdConfig("fleet.example.com/", SECRET, True)))
    before = agent.options
    assert before.use_system_configuration and before.fleet_url is None
    assert asyncio.run(agent._await_system_configuration()) is True
    after = agent.options
    assert (after.fleet_url, after.enroll_secret) == (URL, SECRET)  # normalised like --fleet-url
    assert after.enable_scripts is True and agent.state.extra["configuration_source"] == "profile"
    agent._resolve_secret()
    assert agent.secret == SECRET


def test_the_agent_waits_for_the_profile_and_a_stop_ends_it(tmp_path: Path) -> None:
    agent = _agent(tmp_path, "macos", Fixed(FleetdConfig()))
    agent.timings = Timings(system_configuration_retry=3600)

    async def main() -> bool:
        waiting = asyncio.create_task(agent._await_system_configuration())
        await asyncio.sleep(0)
        agent.request_stop("test")
        return await asyncio.wait_for(waiting, timeout=60)

    assert asyncio.run(main()) is False


def test_a_stop_does_not_wait_for_a_hanging_profiles_command(tmp_path: Path) -> None:
    """``profiles`` runs in a thread; a stop must not wait for it (here it blocks until the test releases it)."""
    started, release = threading.Event(), threading.Event()

    class Hanging:
        name = "profiles"

        def read(self) -> FleetdConfig:
            started.set()
            release.wait(timeout=120)
            return FleetdConfig()

    agent = _agent(tmp_path, "macos")
    agent.configuration_sources = (Hanging(),)

    async def main() -> bool:
        asyncio.get_running_loop().set_default_executor(DaemonThreadExecutor())  # as Agent.run does
        waiting = asyncio.create_task(agent._await_system_configuration())
        assert await asyncio.to_thread(started.wait, 60)  # the attempt is now inside `profiles`
        agent.request_stop("test")
        return await asyncio.wait_for(waiting, timeout=60)

    try:
        assert asyncio.run(main()) is False
        assert not release.is_set()  # it returned while the command still hung
    finally:
        release.set()


def test_elsewhere_the_flag_changes_nothing(tmp_path: Path) -> None:
    source = Fixed(FleetdConfig(URL, SECRET))
    agent = _agent(tmp_path, "linux", source)
    assert asyncio.run(agent._await_system_configuration()) is True
    assert agent.options.fleet_url is None and source.reads == 0


def test_an_unreadable_persisted_file_stops_the_start_with_a_message(tmp_path: Path) -> None:
    agent = _agent(tmp_path, "macos", Fixed(FleetdConfig()))
    (agent.layout.root / FLEET_URL_FILE).mkdir()  # a directory where the URL file should be
    with pytest.raises(AgentStartError, match=r"fleet_url\.txt"):
        asyncio.run(agent._await_system_configuration())


def test_orbit_accepts_the_flag_and_its_environment_variable() -> None:
    assert parse_options(["--use-system-configuration"], {}, platform="macos").use_system_configuration
    assert parse_options([], {"ORBIT_USE_SYSTEM_CONFIGURATION": "true"}, platform="macos").use_system_configuration
    assert not parse_options([], {}, platform="macos").use_system_configuration
