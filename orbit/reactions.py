"""The agent's decisions as plain values in, values out: what to do when an update lands, when the server pins
other channels, how long orbit has been healthy, and how long to wait before trying again.

``agent.py`` gathers the facts (installer, supervisors, client), asks here, and acts; nothing here touches a
socket, a clock, a file or a process, so every branch is unit-tested (tests/unit/test_orbit_reactions.py).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum

from orbit.children.supervisor import ChildState
from orbit.fleet.server_overrides import Channels
from tuf_updates.targets import TargetName
from tuf_updates.update_runner import TargetOutcome

# Fleet waits up to 10 minutes of jitter before the first periodic update check (spread the fleet's checks).
MAX_UPDATE_JITTER_S = 600.0


class InstalledAction(Enum):
    """What a finished install asks of the agent."""

    START_TRIAL = "start_trial"  # a staged orbit: exec it on trial (docs/adr/0005)
    RESTART_OSQUERYD = "restart_osqueryd"
    RESTART_DESKTOP = "restart_desktop"
    NOTHING = "nothing"


def after_install(name: str, outcome: TargetOutcome, *, dev_mode: bool, desktop_supervised: bool) -> InstalledAction:
    """The one child a new binary concerns is restarted; orbit itself is never swapped in dev mode."""
    if outcome is TargetOutcome.STAGED:
        return InstalledAction.NOTHING if dev_mode else InstalledAction.START_TRIAL
    if name == TargetName.OSQUERYD:
        return InstalledAction.RESTART_OSQUERYD
    if name == TargetName.DESKTOP and desktop_supervised:
        return InstalledAction.RESTART_DESKTOP
    return InstalledAction.NOTHING


@dataclass(frozen=True)
class ChannelSwitch:
    """The restarts a change of pinned channels needs (the update runner then checks at once)."""

    restart_osqueryd: bool
    restart_desktop: bool


def channel_switch(
    old: Channels,
    new: Channels,
    *,
    osqueryd_installed: bool,
    desktop_installed: bool,
    desktop_supervised: bool,
) -> ChannelSwitch:
    """A child is restarted only when its channel changed and the new channel's binary is already installed
    (otherwise the update that installs it restarts it)."""
    return ChannelSwitch(
        restart_osqueryd=old.osqueryd != new.osqueryd and osqueryd_installed,
        restart_desktop=old.desktop != new.desktop and desktop_supervised and desktop_installed,
    )


def healthy_for(
    *,
    fleet_configured: bool,
    enrolled: bool,
    osqueryd_state: ChildState | None,
    osqueryd_uptime: float | None,
) -> float:
    """Seconds orbit has been healthy: osqueryd running and, with a server, enrolled (what a trial boot waits
    for before it promotes the new orbit)."""
    if fleet_configured and not enrolled:
        return 0.0
    if osqueryd_state is not ChildState.RUNNING or osqueryd_uptime is None:
        return 0.0
    return float(osqueryd_uptime)


def first_update_delay(interval: float, rng: random.Random) -> float:
    """The start-up check already ran: the periodic loop's first check waits one interval plus Fleet's jitter."""
    return interval + rng.uniform(0.0, min(interval, MAX_UPDATE_JITTER_S))


def doubling_delays(first: float, cap: float) -> Iterator[float]:
    """``first, 2·first, 4·first … cap, cap …``: the waits between attempts at a start-up step that keeps failing
    (osqueryd not installed yet, ``osqueryd -S`` failing)."""
    delay = first
    while True:
        yield delay
        delay = min(delay * 2, cap)
