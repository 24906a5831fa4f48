from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.stub_server import FakeClock, RunningStub, running_stub


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def stub(tmp_path: Path, clock: FakeClock) -> Iterator[RunningStub]:
    """A fleet-stub over real TLS on loopback with an injected clock and short live-query timeout."""
    with running_stub(tmp_path / "stub", clock=clock, live_query_timeout=5.0) as running:
        yield running
