"""The agent's pure decisions (orbit/reactions.py): after an install, on a channel switch, health, waits."""

from __future__ import annotations

import itertools
import random

import pytest

from orbit.children.supervisor import ChildState
from orbit.fleet.server_overrides import Channels
from orbit.reactions import (
    ChannelSwitch,
    InstalledAction,
    after_install,
    channel_switch,
    doubling_delays,
    first_update_delay,
    healthy_for,
)
from tuf_updates.targets import TargetName
from tuf_updates.update_runner import TargetOutcome


@pytest.mark.parametrize(
    ("name", "outcome", "dev_mode", "desktop", "expected"),
    [
        (TargetName.ORBIT, TargetOutcome.STAGED, False, False, InstalledAction.START_TRIAL),
        (TargetName.ORBIT, TargetOutcome.STAGED, True, False, InstalledAction.NOTHING),
        (TargetName.OSQUERYD, TargetOutcome.INSTALLED, False, False, InstalledAction.RESTART_OSQUERYD),
        (TargetName.DESKTOP, TargetOutcome.INSTALLED, False, True, InstalledAction.RESTART_DESKTOP),
        (TargetName.DESKTOP, TargetOutcome.INSTALLED, False, False, InstalledAction.NOTHING),
    ],
)
def test_an_install_restarts_only_the_child_it_concerns(
    name: TargetName, outcome: TargetOutcome, dev_mode: bool, desktop: bool, expected: InstalledAction
) -> None:
    assert after_install(name, outcome, dev_mode=dev_mode, desktop_supervised=desktop) is expected


def test_a_channel_switch_restarts_a_child_only_when_its_channel_changed_and_the_binary_is_there() -> None:
    old = Channels("stable", "stable", "stable")
    both = Channels("stable", "edge", "edge")
    assert channel_switch(
        old, both, osqueryd_installed=True, desktop_installed=True, desktop_supervised=True
    ) == ChannelSwitch(restart_osqueryd=True, restart_desktop=True)
    # not installed yet: the update that installs it restarts it
    assert channel_switch(
        old, both, osqueryd_installed=False, desktop_installed=False, desktop_supervised=True
    ) == ChannelSwitch(restart_osqueryd=False, restart_desktop=False)
    # only orbit's channel changed: no child restarts
    assert channel_switch(
        old,
        Channels("edge", "stable", "stable"),
        osqueryd_installed=True,
        desktop_installed=True,
        desktop_supervised=True,
    ) == ChannelSwitch(restart_osqueryd=False, restart_desktop=False)
    # no desktop supervisor (--fleet-desktop off): nothing to restart
    assert not channel_switch(
        old, both, osqueryd_installed=True, desktop_installed=True, desktop_supervised=False
    ).restart_desktop


def test_health_needs_a_running_osqueryd_and_with_a_server_an_enrollment() -> None:
    running = {"osqueryd_state": ChildState.RUNNING, "osqueryd_uptime": 42.0}
    assert healthy_for(fleet_configured=True, enrolled=True, **running) == 42.0  # type: ignore[arg-type]
    assert healthy_for(fleet_configured=True, enrolled=False, **running) == 0.0  # type: ignore[arg-type]
    assert healthy_for(fleet_configured=False, enrolled=False, **running) == 42.0  # type: ignore[arg-type]
    assert (
        healthy_for(fleet_configured=False, enrolled=True, osqueryd_state=ChildState.BACKING_OFF, osqueryd_uptime=9.0)
        == 0.0
    )
    assert healthy_for(fleet_configured=False, enrolled=True, osqueryd_state=None, osqueryd_uptime=None) == 0.0


def test_the_first_periodic_update_check_waits_an_interval_plus_at_most_ten_minutes_of_jitter() -> None:
    rng = random.Random(7)
    delays = [first_update_delay(900.0, rng) for _ in range(200)]
    assert all(900.0 <= d <= 1500.0 for d in delays)
    assert max(delays) - min(delays) > 300.0  # spread, not a constant
    assert all(60.0 <= first_update_delay(60.0, rng) <= 120.0 for _ in range(50))  # jitter ≤ the interval


def test_start_up_retries_double_up_to_the_cap() -> None:
    assert list(itertools.islice(doubling_delays(5.0, 300.0), 9)) == [5, 10, 20, 40, 80, 160, 300, 300, 300]
