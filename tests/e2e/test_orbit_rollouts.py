"""Staged rollouts end to end with a real orbit (issue 18): fleet-stub pins the host by an exact-version channel,
orbit installs it and reports what became of it, the stub's halt rules act on the report, and the host comes back
to the previous version without anyone touching it. Also the admin's abort."""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e.conftest import running
from tests.support.orbit_world import OrbitWorld, wait_for, write_launcher

pytestmark = pytest.mark.timeout(300)

# pass the installer's ``--help`` check, then exit at once at every start
BROKEN_OSQUERYD = 'case "$1" in --help) echo "usage: osqueryd"; exit 0;; esac\necho "osqueryd: broken" >&2\nexit 1\n'
BROKEN_ORBIT = 'case "$1" in --help) echo "usage: orbit"; exit 0;; esac\necho "orbit 2.0.0: broken" >&2\nexit 1\n'


def create_rollout(world: OrbitWorld, **definition: Any) -> dict[str, Any]:
    body = {"waves": [100], "soak_seconds": 600, "halt_rules": {"max_failed_percent": 5}, **definition}
    with world.admin() as admin:
        answer = admin.post("/api/latest/fleet/rollouts", json=body)
    assert answer.status_code == 200, answer.text
    rollout: dict[str, Any] = answer.json()["rollout"]
    return rollout


def rollout(world: OrbitWorld, rollout_id: int) -> dict[str, Any]:
    with world.admin() as admin:
        answer = admin.get(f"/api/latest/fleet/rollouts/{rollout_id}")
    assert answer.status_code == 200, answer.text
    found: dict[str, Any] = answer.json()["rollout"]
    return found


def stays_on(world: OrbitWorld, channel: str, seconds: float) -> None:
    """osqueryd from ``channel`` has been up for ``seconds`` (the probation's stable period)."""
    wait_for(
        lambda: (
            world.osqueryd_channel_running() == channel
            and (world.status().get("children") or {}).get("osqueryd", {}).get("uptime", 0) >= seconds
        ),
        timeout=120,
        what=f"osqueryd from channel {channel} up for {seconds}s",
    )


def start(world: OrbitWorld) -> None:
    world.start_service(env=world.orbit_env(ORBIT_DEV_STABLE_RESET="3"))
    running(world)


def test_a_crash_looping_osqueryd_halts_the_rollout_and_the_host_returns(world: OrbitWorld) -> None:
    world.publish_osqueryd("5.14.1", "stable", "5.14.1")
    bad = write_launcher(
        world.base / "builds" / "bad" / "osqueryd", "osquery_sim", version="5.15.0", body=BROKEN_OSQUERYD
    )
    world.publish("osqueryd", bad, "5.15.0", "5.15.0")
    start(world)
    created = create_rollout(world, target="osqueryd", version="5.15.0", from_version="5.14.1")
    assert created["state"] == "running"
    halted = wait_for(
        lambda: (found := rollout(world, created["id"]))["state"] == "halted" and found,
        timeout=150,
        what="the rollout halted by orbit's crash_loop report",
    )
    wave = halted["wave_status"][0]
    assert wave["targeted"] == 1 and wave["rolled_back"] == 1, halted
    assert halted["halt_reason"]
    stays_on(world, "5.14.1", 3.0)  # pinned back to from_version: converged by itself
    reported = [(o["version"], o["outcome"]) for o in world.server_outcomes("osqueryd")]
    assert ("5.15.0", "crash_loop") in reported
    assert world.service is not None and len(world.service.starts) == 1  # orbit itself never restarted


def test_an_orbit_failing_its_trial_halts_the_rollout_and_the_host_keeps_the_good_orbit(world: OrbitWorld) -> None:
    world.publish_osqueryd("5.14.1", "stable", "5.14.1")
    world.publish_orbit("1.0.0", "stable", "1.0.0")
    world.publish_orbit("2.0.0", "2.0.0", body=BROKEN_ORBIT)
    start(world)
    created = create_rollout(world, target="orbit", version="2.0.0", from_version="1.0.0")
    halted = wait_for(
        lambda: (found := rollout(world, created["id"]))["state"] == "halted" and found,
        timeout=200,
        what="the rollout halted by orbit's rolled_back report",
    )
    assert halted["wave_status"][0]["rolled_back"] == 1, halted
    failed = [o for o in world.server_outcomes("orbit") if o["outcome"] == "rolled_back"]
    assert failed[0]["version"] == "2.0.0" and failed[0]["previous_version"] == "1.0.0"
    # back on 1.0.0, now from the pinned from_version channel (a trial of the same good build, confirmed)
    status = wait_for(
        lambda: (
            (s := world.status()).get("version") == "1.0.0"
            and s.get("channels", {}).get("orbit") == "1.0.0"
            and s.get("start_kind") in ("confirmed", "normal")
            and s.get("enrolled") is True
            and s
        ),
        timeout=120,
        what="orbit 1.0.0 running from the from_version channel",
    )
    assert status["quarantined"][0]["version"] == "2.0.0"
    running(world)


def test_an_aborted_rollout_takes_the_host_back_to_the_previous_version(world: OrbitWorld) -> None:
    world.publish_osqueryd("5.14.1", "stable", "5.14.1")
    world.publish_osqueryd("5.16.0", "5.16.0")
    start(world)
    created = create_rollout(world, target="osqueryd", version="5.16.0", from_version="5.14.1")
    stays_on(world, "5.16.0", 3.0)
    wait_for(
        lambda: rollout(world, created["id"])["wave_status"][0]["healthy"] == 1,
        timeout=90,
        what="the host healthy on 5.16.0 (its confirmed outcome)",
    )
    with world.admin() as admin:
        answer = admin.post(f"/api/latest/fleet/rollouts/{created['id']}/abort")
    assert answer.status_code == 200, answer.text
    assert answer.json()["rollout"]["state"] == "aborted"
    stays_on(world, "5.14.1", 3.0)
    wait_for(
        lambda: rollout(world, created["id"])["wave_status"][0]["on_from_version"] == 1,
        timeout=90,
        what="the stub seeing the host back on 5.14.1",
    )
