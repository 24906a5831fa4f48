from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.stub_server import FakeClock, RunningStub, running_stub


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Start the ``slow`` tests first (PyInstaller builds, the demo, Wine, the real tray), the rest in their order.

    ``make test`` runs the suite with pytest-xdist, ``--dist loadfile --no-loadscope-reorder``: each file goes to
    one worker (so a module-scoped fixture such as the frozen build is made once) in this order, so that a long
    file does not start last and run alone at the end. Nothing else depends on the order.
    """
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def stub(tmp_path: Path, clock: FakeClock) -> Iterator[RunningStub]:
    """A fleet-stub over real TLS on loopback with an injected clock and short live-query timeout."""
    with running_stub(tmp_path / "stub", clock=clock, live_query_timeout=5.0) as running:
        yield running
