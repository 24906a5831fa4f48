"""Long-running agent tasks ("actors") kept alive: one that returns or raises is logged and started again with
backoff; only the agent's stop event ends them (unlike Fleet's run group, where the first actor to finish ends all).

``retry_until_done`` is the one retry loop of start-up steps that must succeed before the actors start.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

from orbit.children.restart_policy import RestartPolicy, RestartTracker

log = logging.getLogger(__name__)

T = TypeVar("T")


# How long an actor may take to end by itself once the agent stops, before it is cancelled. The whole stop
# (actors, then children: SIGTERM, then SIGKILL) must fit in 2 s, what a service manager or an uninstall waits for.
STOP_GRACE_S = 0.3


class Stopped(Exception):
    """The agent's stop event was set before the awaited work finished (the work was cancelled)."""


async def until_stopped(work: Awaitable[T], stop: asyncio.Event, *, grace: float = 0.0) -> T:
    """Await ``work`` unless ``stop`` is set first: then give it ``grace`` seconds to finish by itself, cancel it
    and raise ``Stopped``. Any wait, however long (an enrollment backoff, a 60 s first config poll, a stalled
    download awaited from a thread), so ends within ``grace`` of the stop signal."""
    task = asyncio.ensure_future(work)
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait((task, stopper), return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        task.cancel()
        raise
    finally:
        stopper.cancel()
    if not task.done() and grace > 0:
        await asyncio.wait((task,), timeout=grace)
    if task.done():
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    raise Stopped


async def keep_running(
    name: str,
    factory: Callable[[], Awaitable[object]],
    stop: asyncio.Event,
    *,
    policy: RestartPolicy | None = None,
    stops_itself: bool = False,
    finite: bool = False,
) -> None:
    """Run ``factory()`` until ``stop``, restarting it with backoff when it fails or returns. On stop it gets
    ``STOP_GRACE_S`` to end by itself and is then cancelled — except an actor that ``stops_itself`` (a supervisor,
    which must stop its child in order and is never cut short). A ``finite`` actor (the trial-boot monitor) has a job
    that ends: its normal return ends it quietly; only a failure restarts it."""
    tracker = RestartTracker(policy or RestartPolicy(first_delay=1.0, max_delay=300.0))
    while not stop.is_set():
        began = time.monotonic()
        try:
            if stops_itself:
                await factory()
            else:
                await until_stopped(factory(), stop, grace=STOP_GRACE_S)
        except Stopped:
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("event=actor_failed actor=%s", name)
        else:
            if stop.is_set():
                return
            if finite:
                log.info("event=actor_done actor=%s", name)
                return
            log.warning("event=actor_returned actor=%s", name)
        delay = tracker.record_exit(time.monotonic() - began)
        try:
            await asyncio.wait_for(stop.wait(), timeout=delay)
        except TimeoutError:
            continue


async def retry_until_done(
    attempt: Callable[[], Awaitable[T | None]],
    sleep: Callable[[float], Awaitable[bool]],
    delays: Iterator[float],
    on_failure: Callable[[float], None],
) -> T | None:
    """Call ``attempt`` until it returns a value, waiting the next of ``delays`` between tries; ``None`` as soon as
    ``sleep`` reports the stop signal (``sleep`` returns True when stopping, so no wait outlives a stop)."""
    for delay in delays:
        result = await attempt()
        if result is not None:
            return result
        on_failure(delay)
        if await sleep(delay):
            return None
    return None


class DaemonThreadExecutor(concurrent.futures.ThreadPoolExecutor):
    """The agent's ``asyncio.to_thread`` executor: each job on its own daemon thread.

    A job that blocks (a download stalled inside a read timeout, ``osqueryd -S`` hanging until its timeout) is
    abandoned when the agent stops instead of holding the process: neither ``asyncio.run``'s executor shutdown nor
    the interpreter's exit waits for it. Everything such a job writes is atomic or swept at the next start, the
    same guarantee as a ``kill -9``.
    """

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[T]:
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def work() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:
                future.set_exception(exc)
            else:
                future.set_result(result)

        threading.Thread(target=work, name=f"orbit-{getattr(fn, '__name__', 'job')}", daemon=True).start()
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Nothing to join: the threads are daemons and end with their job or with the process."""
