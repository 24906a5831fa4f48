"""Load mode's bookkeeping: the per-endpoint window (SIGUSR1) and the event-loop health figures."""

from __future__ import annotations

import asyncio
import gc
import time

from osquery_sim.load_stats import LoadStats
from osquery_sim.loop_health import LoopHealth


def test_a_window_reset_clears_endpoint_figures_but_not_the_totals() -> None:
    stats = LoadStats()
    stats.observe("/read", 5.0, True)
    stats.observe("/read", 0.1, False)
    stats.reset_window()
    stats.observe("/read", 0.002, True)
    assert stats.total_requests == 3 and stats.total_errors == 1
    summary = stats.summary()["/read"]
    assert summary["requests"] == 1 and summary["errors"] == 0
    assert summary["p99_ms"] == 2.0  # the 5 s before the reset is not in the window


def test_loop_lag_and_gc_time_are_measured_and_reset_on_take() -> None:
    async def scenario() -> tuple[float, float, float, float]:
        health = LoopHealth()
        health.start()
        stop = asyncio.Event()
        watcher = asyncio.create_task(health.watch(stop))
        await asyncio.sleep(0.1)
        time.sleep(0.3)  # the loop is blocked: the ticker overshoots
        gc.collect()
        await asyncio.sleep(0.1)
        lag, in_gc = health.take()
        again = health.take()
        stop.set()
        await watcher
        health.close()
        return lag, in_gc, *again

    lag, in_gc, lag_after, gc_after = asyncio.run(scenario())
    assert lag >= 0.2
    assert in_gc > 0
    assert lag_after < 0.2 and gc_after == 0.0


def test_close_unhooks_the_collector_callback() -> None:
    health = LoopHealth()
    health.start()
    health.close()
    health.close()  # twice is harmless
    gc.collect()
    assert health.take() == (0.0, 0.0)
