"""fleet-stub's pacing of the cyclic collector (server_stub.collector): long-lived objects frozen every minute, thawed
for one full pass every hour, and the task ends on its stop signal."""

from __future__ import annotations

import asyncio
import gc
import weakref

import pytest

from server_stub import collector
from server_stub.collector import CollectorPacing, keep_collector_paced


def test_freeze_every_minute_and_thaw_every_hour() -> None:
    pacing = CollectorPacing(0.0, freeze_every=60, thaw_every=3600)
    assert pacing.step(30) is None
    assert pacing.step(60) == "freeze"
    assert pacing.step(90) is None
    assert pacing.step(120) == "freeze"
    assert pacing.step(3599) == "freeze"
    assert pacing.step(3600) == "thaw"
    assert pacing.step(3630) is None  # a thaw freezes again: the next freeze a minute later
    assert pacing.step(3660) == "freeze"


def test_frozen_objects_are_still_freed_by_their_reference_count() -> None:
    class Node:
        pass

    gc.disable()
    try:
        node = Node()
        alive = weakref.ref(node)
        collector.freeze()
        assert gc.get_freeze_count() > 0
        del node
        assert alive() is None
    finally:
        gc.unfreeze()
        gc.enable()


def test_a_cycle_formed_after_freezing_is_freed_by_the_thaw() -> None:
    class Node:
        other: object = None

    gc.disable()
    try:
        first, second = Node(), Node()
        alive = weakref.ref(first)
        collector.freeze()
        first.other, second.other = second, first  # a cycle among frozen objects
        del first, second
        gc.collect()
        assert alive() is not None  # out of the collector's sight
        collector.thaw_and_collect()
        assert alive() is None
        assert gc.get_freeze_count() > 0  # frozen again
    finally:
        gc.unfreeze()
        gc.enable()


def test_the_task_acts_on_its_schedule_and_ends_on_stop(monkeypatch: pytest.MonkeyPatch) -> None:
    done: list[str] = []
    monkeypatch.setattr(collector, "freeze", lambda: done.append("freeze"))
    monkeypatch.setattr(collector, "thaw_and_collect", lambda: done.append("thaw"))
    young: list[None] = []
    monkeypatch.setattr(collector, "collect_young", lambda: young.append(None))
    now = [0.0]

    async def scenario() -> None:
        stop = asyncio.Event()
        paced = keep_collector_paced(stop, freeze_every=0.04, thaw_every=1.0, clock=lambda: now[0])
        task = asyncio.create_task(paced)
        await asyncio.sleep(0)  # the task starts and reads the clock at 0
        for expected, moment in enumerate((0.05, 0.10, 1.2), start=1):
            now[0] = moment
            for _ in range(3000):  # it looks every 0.04 s (real time); generous on a loaded machine
                if len(done) == expected:
                    break
                await asyncio.sleep(0.01)
        stop.set()
        await asyncio.wait_for(task, 30)

    asyncio.run(scenario())
    assert done == ["freeze", "freeze", "thaw"]
    assert len(young) >= 3  # the young generation on every look, whatever else is due


def test_a_young_pass_walks_only_what_was_allocated_since() -> None:
    gc.collect()
    gc.disable()
    try:
        kept = [[n] for n in range(5000)]  # survives into generation 1
        collector.collect_young()
        assert len(gc.get_objects(0)) < 100
        fresh = [[n] for n in range(50)]
        assert len(gc.get_objects(0)) >= 50
        collector.collect_young()
        assert len(gc.get_objects(0)) < 100 and len(kept) + len(fresh) == 5050
    finally:
        gc.enable()
