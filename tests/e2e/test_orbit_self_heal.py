"""Self-healing installs end to end (issue 18): the field case — an osqueryd truncated on disk — with a real orbit,
a real fleet-stub serving a real TUF repository, and osqueryd-sim published as osqueryd."""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import running
from tests.support.orbit_world import OrbitWorld, wait_for

pytestmark = pytest.mark.timeout(240)


def installed_osqueryd(world: OrbitWorld) -> Path:
    return world.root / "bin" / "osqueryd" / "linux" / "stable" / "osqueryd"


def truncate_to_half(path: Path) -> tuple[int, int]:
    size = path.stat().st_size
    with path.open("r+b") as handle:  # in place: the version store's hard link is damaged with it
        handle.truncate(size // 2)
    return size // 2, size


def test_osqueryd_truncated_while_orbit_was_stopped_is_repaired_at_start(world: OrbitWorld) -> None:
    service = world.start_service()
    running(world)
    good = world.osqueryd_build("5.14.1").read_bytes()
    assert service.stop() == 0
    half, full = truncate_to_half(installed_osqueryd(world))
    started = time.monotonic()
    service = world.start_service()
    running(world)
    healthy_after = time.monotonic() - started
    assert installed_osqueryd(world).read_bytes() == good
    line = next(line for line in service.log().splitlines() if "event=install_repaired" in line)
    assert "target=osqueryd/linux/stable/osqueryd" in line and "version=5.14.1" in line
    assert f"problem='size {half} != {full}'" in line and "source='update repository'" in line
    print(f"osqueryd healthy {healthy_after:.1f}s after the start")
    assert healthy_after < 60, f"osqueryd healthy {healthy_after:.1f}s after the start"  # generous: loaded CI
    # the repair is reported to the server (this stub advertises update_outcomes)
    repaired = wait_for(
        lambda: [o for o in world.server_outcomes("osqueryd") if o["outcome"] == "repaired"], timeout=60
    )
    assert repaired[0]["version"] == "5.14.1" and f"size {half} != {full}" in repaired[0]["reason"]
    assert (world.root / "state" / "update-outcomes.json").stat().st_mode & 0o777 == 0o600


def test_osqueryd_damaged_while_running_is_repaired_before_the_restart_after_its_crash(world: OrbitWorld) -> None:
    service = world.start_service()
    running(world)
    first = world.osqueryd_pid()
    assert first is not None
    truncate_to_half(installed_osqueryd(world))
    os.kill(first, signal.SIGKILL)  # the crash makes the next start hash the binary in full
    wait_for(lambda: (pid := world.osqueryd_pid()) not in (None, first) and pid, timeout=60, what="osqueryd back")
    log = service.log()
    assert re.search(r"event=install_repaired target=osqueryd/linux/stable/osqueryd .*problem='size \d+ != \d+'", log)
    assert installed_osqueryd(world).read_bytes() == world.osqueryd_build("5.14.1").read_bytes()
    assert len(service.starts) == 1  # orbit itself never restarted
