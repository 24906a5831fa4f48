"""The agent's half of a halted rollout (issue 18), with a real orbit: the server pins a bad osqueryd by an
exact-version channel, orbit reports the crash loop as an outcome, the server pins the good version again and the
host converges without anyone touching it."""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e.conftest import running
from tests.support.orbit_world import OrbitWorld, wait_for, write_launcher

pytestmark = pytest.mark.timeout(300)

# passes the installer's ``--help`` check, then exits at once at every start
BROKEN = 'case "$1" in --help) echo "usage: osqueryd"; exit 0;; esac\necho "osqueryd 5.15.0: broken" >&2\nexit 1\n'


def outcomes(world: OrbitWorld, target: str) -> list[dict[str, Any]]:
    """What the stub stored from this orbit's reports."""
    return world.server_outcomes(target)


def pin(world: OrbitWorld, channels: dict[str, str]) -> None:
    with world.admin() as admin:
        answer = admin.patch(
            "/api/latest/fleet/config", json={"agent_options": {"config": {}, "update_channels": channels}}
        )
        assert answer.status_code == 200, answer.text


def test_a_crash_looping_pinned_osqueryd_is_reported_and_the_host_converges_when_pinned_back(
    world: OrbitWorld,
) -> None:
    world.publish_osqueryd("5.14.1", "stable", "5.14.1")
    bad = write_launcher(
        world.base / "builds" / "osqueryd-bad" / "osqueryd", "osquery_sim", version="5.15.0", body=BROKEN
    )
    world.publish("osqueryd", bad, "5.15.0", "5.15.0")
    service = world.start_service(env=world.orbit_env(ORBIT_DEV_STABLE_RESET="3"))
    running(world)
    first = wait_for(lambda: outcomes(world, "osqueryd"), timeout=60, what="the first osqueryd confirmed")
    assert first[0]["outcome"] == "confirmed" and first[0]["version"] == "5.14.1"
    pin(world, {"osqueryd": "5.15.0"})  # what a rollout's wave does
    looped = wait_for(
        lambda: [o for o in outcomes(world, "osqueryd") if o["outcome"] == "crash_loop"],
        timeout=120,
        what="the crash loop of 5.15.0 reported",
    )
    assert looped[0]["version"] == "5.15.0" and looped[0]["previous_version"] == "5.14.1"
    assert looped[0]["channel"] == "5.15.0" and "crash-loop breaker open" in looped[0]["reason"]
    pin(world, {"osqueryd": "5.14.1"})  # what a halted rollout does: back to the previous version
    wait_for(lambda: world.osqueryd_channel_running() == "5.14.1", timeout=120, what="osqueryd 5.14.1 running")
    wait_for(
        lambda: (world.status().get("children") or {}).get("osqueryd", {}).get("uptime", 0) >= 3,
        timeout=60,
        what="osqueryd up for the stable period",
    )
    assert world.osqueryd_channel_running() == "5.14.1"
    assert len(service.starts) == 1  # orbit itself never restarted
    status = world.status()
    assert status["update_outcomes"]["server_accepts"] is True  # this stub takes them (a real Fleet would not)
    wait_for(lambda: world.status()["update_outcomes"]["queued"] == 0, timeout=30, what="the queue sent")
    reported = [(o["outcome"], o["version"], o["previous_version"]) for o in outcomes(world, "osqueryd")]
    assert reported == [
        ("confirmed", "5.14.1", None),
        ("crash_loop", "5.15.0", "5.14.1"),
        ("rolled_back", "5.15.0", "5.14.1"),  # back on 5.14.1: what the server needs to see the host back
    ]
