"""Restart osqueryd on demand (issue 18 protocol §4): an admin asks fleet-stub, the orbit config carries the
request, orbit restarts only osqueryd, once, and acknowledges."""

from __future__ import annotations

import json

import pytest

from tests.e2e.conftest import running
from tests.support.orbit_world import OrbitWorld, wait_for

pytestmark = pytest.mark.timeout(240)


def handled(world: OrbitWorld) -> dict[str, object]:
    try:
        data: dict[str, object] = json.loads((world.root / "state" / "osqueryd-restart-request.json").read_text())
    except (OSError, ValueError):
        return {}
    return data


def test_an_admin_restart_request_restarts_only_osqueryd_once(world: OrbitWorld) -> None:
    service = world.start_service()
    running(world)
    orbit_pid, first = service.pid, world.osqueryd_pid()
    host_id = world.hosts()[0]["id"]
    with world.admin() as admin:
        answer = admin.post(f"/api/latest/fleet/hosts/{host_id}/restart_osqueryd")
        assert answer.status_code in (200, 202), answer.text
    second = wait_for(
        lambda: (pid := world.osqueryd_pid()) not in (None, first) and pid, timeout=60, what="osqueryd restarted"
    )
    done = wait_for(lambda: (state := handled(world)).get("acknowledged") is True and state, timeout=60, what="ack")
    assert done["error"] is None
    assert service.pid == orbit_pid and len(service.starts) == 1  # orbit itself kept running
    assert "event=osqueryd_restart_on_request" in service.log()
    # the acknowledged request is not repeated: later polls leave osqueryd alone
    polls = world.status()["config"]["polls"]
    wait_for(lambda: world.status()["config"]["polls"] >= polls + 3, timeout=60, what="more config polls")
    assert world.osqueryd_pid() == second
    assert service.log().count("event=osqueryd_restart_on_request") == 1
