"""Shared e2e fixtures: a whole deployment with orbit 1.0.0 installed as a package and osqueryd 5.14.1 published."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.orbit_world import OrbitWorld, wait_for


@pytest.fixture
def world(tmp_path: Path) -> Iterator[OrbitWorld]:
    built = OrbitWorld(tmp_path)
    built.publish_osqueryd("5.14.1")
    built.publish_orbit("1.0.0")
    built.install_package("1.0.0")
    try:
        yield built
    finally:
        built.close()


def running(world: OrbitWorld) -> dict[str, object]:
    """Wait until orbit runs, is enrolled and osqueryd is up; returns the status."""
    status: dict[str, object] = wait_for(
        lambda: (status := world.status()).get("enrolled") is True and world.osqueryd_pid() is not None and status,
        timeout=60,
        what="orbit enrolled with osqueryd running",
    )
    return status
