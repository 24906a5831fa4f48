"""The parent of a fleet-stub with several workers (``serve --workers N``, ADR 0019).

It forks the workers (each serves the port on its own event loop and its own SQLite connection), and then only
supervises and relays; it never serves a request:

* **ready**: once every worker says it is serving, ``on_ready`` runs once (``server.json`` with the parent's pid,
  ``listening on …``); a worker that exits before that fails the start (exit 1).
* **restarts**: a worker that exits is started again — at once if it had run ``STABLE_AFTER`` seconds, else after a
  delay doubling from 0.1 s to 10 s (``worker_shares.restart_delay``). Its listening socket stays open in the
  parent meanwhile, so connections wait in its queue.
* **signals**: SIGTERM/SIGINT are passed to every worker (a second one too: they stop at once), the parent closes
  its listening sockets, waits for them (SIGKILL after the grace time) and returns 0; SIGHUP runs ``on_reload``
  here, once. Workers notice the parent's end of their channel closing and stop: they never outlive it.
* **messages** (``worker_channel``): ``pub`` is relayed to every other worker; ``scrape`` asks every other worker
  for its figures and answers with them, with the figures of workers that were replaced (summed, so counters
  never go back) and the restart count.

No asyncio here: the loop is a ``selectors`` loop over the channels and a self-pipe for signals, so that forking a
worker never copies a running event loop.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import selectors
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from server_stub.metrics import Metrics
from server_stub.worker_channel import ChannelError, FrameReader, Message, encode, int_field
from server_stub.worker_shares import STABLE_AFTER, restart_delay

log = logging.getLogger(__name__)

WAKE_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD)
STARTUP_TIMEOUT = 120.0
SCRAPE_WAIT = 1.5
MAX_PENDING_OUT = 16 * 1024 * 1024

# what runs in a forked worker: (index, its listening socket, its end of the channel) → exit code
RunWorker = Callable[[int, socket.socket, socket.socket], int]


@dataclass
class _Slot:
    index: int
    listener: socket.socket
    pid: int | None = None
    channel: socket.socket | None = None
    reader: FrameReader = field(default_factory=FrameReader)
    out: bytearray = field(default_factory=bytearray)
    ready: bool = False
    started_at: float = 0.0
    quick_exits: int = 0
    restart_at: float | None = None
    last: dict[str, object] | None = None  # the last figures it sent
    writing: bool = False  # the selector also waits for room to write


@dataclass
class _Scrape:
    requester: _Slot
    request: int
    waiting: set[int]
    deadline: float


class WorkerPool:
    def __init__(
        self,
        count: int,
        listeners: list[socket.socket],
        run_worker: RunWorker,
        on_ready: Callable[[], None],
        on_reload: Callable[[], None],
        grace: float,
    ) -> None:
        self._slots = [_Slot(i + 1, listeners[i] if len(listeners) > 1 else listeners[0]) for i in range(count)]
        self._listeners = listeners
        self._run_worker = run_worker
        self._on_ready = on_ready
        self._on_reload = on_reload
        self._grace = grace
        self._selector = selectors.DefaultSelector()
        self._signals: list[int] = []
        self._wake_r = self._wake_w = -1
        self._announced = False
        self._stopping = False
        self._stop_deadline: float | None = None
        self._failure: str | None = None
        self._retired = Metrics()
        self._retired_any = False
        self._scrapes: dict[int, _Scrape] = {}
        self._scrape_ids = itertools.count(1)
        self.restarts = 0

    # --- the loop --------------------------------------------------------------------------------------------------

    def run(self) -> int:
        """Start the workers and supervise them until stopped; 0 after a signal, 1 when the start failed."""
        self._wake_r, self._wake_w = os.pipe()
        for fd in (self._wake_r, self._wake_w):
            os.set_blocking(fd, False)
        previous_wakeup = signal.set_wakeup_fd(self._wake_w)
        previous = {sig: signal.signal(sig, self._on_signal) for sig in WAKE_SIGNALS}
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        started = time.monotonic()
        try:
            for slot in self._slots:
                self._spawn(slot)
            while not (self._stopping and all(slot.pid is None for slot in self._slots)):
                now = time.monotonic()
                if not self._announced and not self._stopping and now - started > STARTUP_TIMEOUT:
                    self._fail(f"the workers were not ready after {STARTUP_TIMEOUT:g} s")
                for key, mask in self._selector.select(self._timeout(now)):
                    if key.data is None:
                        self._drain_wakeups()
                    else:
                        self._io(key.data, mask)
                self._handle_signals()
                self._reap()
                self._due(time.monotonic())
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            signal.set_wakeup_fd(previous_wakeup)
            self._selector.close()
            for fd in (self._wake_r, self._wake_w):
                os.close(fd)
            for slot in self._slots:
                if slot.channel is not None:
                    slot.channel.close()
        if self._failure:
            log.error("event=workers_failed reason=%s", self._failure)
            return 1
        return 0

    @property
    def failure(self) -> str | None:
        return self._failure

    def _on_signal(self, signum: int, _frame: object) -> None:
        self._signals.append(signum)

    def _drain_wakeups(self) -> None:
        with contextlib.suppress(BlockingIOError, InterruptedError):
            while os.read(self._wake_r, 512):
                pass

    def _timeout(self, now: float) -> float | None:
        moments = [slot.restart_at for slot in self._slots if slot.restart_at is not None]
        moments += [scrape.deadline for scrape in self._scrapes.values()]
        if self._stop_deadline is not None:
            moments.append(self._stop_deadline)
        if not self._announced:
            moments.append(now + 1.0)
        return max(0.0, min(moments) - now) if moments else None

    def _handle_signals(self) -> None:
        pending, self._signals = self._signals, []
        for signum in pending:
            if signum in (signal.SIGTERM, signal.SIGINT):
                self._stop()
            elif signum == signal.SIGHUP:
                try:
                    self._on_reload()
                except Exception:
                    log.exception("event=config_reload_failed")

    def _due(self, now: float) -> None:
        for slot in self._slots:
            if slot.restart_at is not None and slot.restart_at <= now:
                slot.restart_at = None
                self.restarts += 1
                self._spawn(slot)
        for number, scrape in list(self._scrapes.items()):
            if scrape.deadline <= now:
                self._answer_scrape(number)
        if self._stop_deadline is not None and now >= self._stop_deadline:
            self._stop_deadline = None
            for slot in self._slots:
                if slot.pid is not None:
                    log.warning("event=worker_killed worker=%d pid=%d reason=grace_time_over", slot.index, slot.pid)
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(slot.pid, signal.SIGKILL)

    # --- workers ---------------------------------------------------------------------------------------------------

    def _spawn(self, slot: _Slot) -> None:
        parent_end, child_end = socket.socketpair()
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, WAKE_SIGNALS)
        try:
            pid = os.fork()
        except OSError as exc:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
            parent_end.close()
            child_end.close()
            log.error("event=worker_fork_failed worker=%d error=%s", slot.index, exc)
            slot.quick_exits += 1
            slot.restart_at = time.monotonic() + restart_delay(slot.quick_exits)
            return
        if pid == 0:  # the worker: never returns into the parent's code
            code = 1
            try:
                self._become_worker(slot, parent_end, blocked)
                code = self._run_worker(slot.index, slot.listener, child_end)
            except BaseException:
                traceback.print_exc(file=sys.stderr)
            finally:
                os._exit(code)
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        child_end.close()
        parent_end.setblocking(False)
        slot.pid, slot.channel, slot.reader, slot.out, slot.writing = pid, parent_end, FrameReader(), bytearray(), False
        slot.ready, slot.started_at = False, time.monotonic()
        self._selector.register(parent_end, selectors.EVENT_READ, slot)
        log.info("event=worker_started worker=%d pid=%d", slot.index, pid)

    def _become_worker(self, slot: _Slot, parent_end: socket.socket, blocked: set[int | signal.Signals]) -> None:
        """In the forked child: the parent's signal handling and descriptors are not the worker's."""
        signal.set_wakeup_fd(-1)
        for sig in WAKE_SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        self._selector.close()
        os.close(self._wake_r)
        os.close(self._wake_w)
        parent_end.close()
        for other in self._slots:
            if other.channel is not None:
                other.channel.close()
        for sock in self._listeners:
            if sock is not slot.listener:
                sock.close()

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            slot = next((s for s in self._slots if s.pid == pid), None)
            if slot is not None:
                self._exited(slot, os.waitstatus_to_exitcode(status))

    def _exited(self, slot: _Slot, code: int) -> None:
        now = time.monotonic()
        lived = now - slot.started_at
        pid, slot.pid, slot.ready = slot.pid, None, False
        self._drop_channel(slot)
        if slot.last is not None:
            figures = slot.last.get("metrics")
            if isinstance(figures, dict):
                self._retired.absorb(figures)
                self._retired_any = True
            slot.last = None
        for number, scrape in list(self._scrapes.items()):
            scrape.waiting.discard(slot.index)
            if scrape.requester is slot:
                del self._scrapes[number]
            elif not scrape.waiting:
                self._answer_scrape(number)
        if self._stopping:
            log.info("event=worker_stopped worker=%d pid=%s code=%d", slot.index, pid, code)
            return
        if not self._announced:
            self._fail(f"worker {slot.index} exited with {code} during start-up (its error is logged above)")
            return
        slot.quick_exits = 0 if lived >= STABLE_AFTER else slot.quick_exits + 1
        delay = restart_delay(slot.quick_exits)
        slot.restart_at = now + delay
        log.warning(
            "event=worker_exited worker=%d pid=%s code=%d lived_s=%.1f restart_in_s=%.1f",
            slot.index,
            pid,
            code,
            lived,
            delay,
        )

    def _fail(self, reason: str) -> None:
        self._failure = self._failure or reason
        self._stop()

    def _stop(self) -> None:
        if self._stopping:  # a second signal: pass it on, uvicorn then stops at once
            self._signal_all(signal.SIGTERM)
            return
        self._stopping = True
        self._stop_deadline = time.monotonic() + self._grace
        for slot in self._slots:
            slot.restart_at = None
        self._signal_all(signal.SIGTERM)
        for sock in self._listeners:  # with the workers' own copies closing, new connections are refused at once
            sock.close()
        log.info("event=stopping workers=%d", sum(1 for s in self._slots if s.pid is not None))

    def _signal_all(self, sig: signal.Signals) -> None:
        for slot in self._slots:
            if slot.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(slot.pid, sig)

    # --- the channels ----------------------------------------------------------------------------------------------

    def _io(self, slot: _Slot, mask: int) -> None:
        if mask & selectors.EVENT_WRITE:
            self._flush(slot)
        if mask & selectors.EVENT_READ and slot.channel is not None:
            try:
                data = slot.channel.recv(256 * 1024)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                data = b""
            if not data:
                self._drop_channel(slot)
                return
            try:
                messages = slot.reader.feed(data)
            except ChannelError as exc:
                log.error("event=worker_channel_broken worker=%d error=%s", slot.index, exc)
                self._drop_channel(slot)
                if slot.pid is not None:
                    os.kill(slot.pid, signal.SIGTERM)
                return
            for message in messages:
                self._handle(slot, message)

    def _handle(self, slot: _Slot, message: Message) -> None:
        kind = message["t"]
        if kind == "ready":
            slot.ready = True
            log.info("event=worker_ready worker=%d pid=%s", slot.index, slot.pid)
            if not self._announced and not self._stopping and all(s.ready for s in self._slots):
                self._announced = True
                self._on_ready()
        elif kind == "pub":
            for other in self._slots:
                if other is not slot and other.ready:
                    self._send(other, message)
        elif kind == "scrape":
            data = message.get("data")
            if isinstance(data, dict):
                slot.last = data
            self._start_scrape(slot, int_field(message, "req") or 0)
        elif kind == "snap":
            data = message.get("data")
            if isinstance(data, dict):
                slot.last = data
            number = int_field(message, "req") or 0
            scrape = self._scrapes.get(number)
            if scrape is not None:
                scrape.waiting.discard(slot.index)
                if not scrape.waiting:
                    self._answer_scrape(number)

    def _start_scrape(self, requester: _Slot, request: int) -> None:
        number = next(self._scrape_ids)
        asked = [s for s in self._slots if s is not requester and s.ready and s.channel is not None]
        self._scrapes[number] = _Scrape(requester, request, {s.index for s in asked}, time.monotonic() + SCRAPE_WAIT)
        for slot in asked:
            self._send(slot, {"t": "snap?", "req": number})
        if not asked:
            self._answer_scrape(number)

    def _answer_scrape(self, number: int) -> None:
        scrape = self._scrapes.pop(number, None)
        if scrape is None:
            return
        others = [s for s in self._slots if s is not scrape.requester]
        data: list[Mapping[str, object]] = [s.last for s in others if s.last is not None]
        if self._retired_any:
            data.append({"metrics": self._retired.snapshot()})
        missing = len(scrape.waiting) + sum(1 for s in others if not s.ready)
        self._send(
            scrape.requester,
            {
                "t": "scraped",
                "req": scrape.request,
                "data": data,
                "missing": missing,
                "restarts": self.restarts,
                "workers": len(self._slots),
            },
        )

    def _send(self, slot: _Slot, message: Mapping[str, object]) -> None:
        if slot.channel is None:
            return
        slot.out += encode(message)
        if len(slot.out) > MAX_PENDING_OUT:
            log.error("event=worker_channel_stuck worker=%d pending_bytes=%d", slot.index, len(slot.out))
            self._drop_channel(slot)
            return
        self._flush(slot)

    def _flush(self, slot: _Slot) -> None:
        channel = slot.channel
        if channel is None:
            return
        try:
            while slot.out:
                sent = channel.send(slot.out)
                del slot.out[:sent]
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            self._drop_channel(slot)
            return
        if bool(slot.out) != slot.writing:
            slot.writing = bool(slot.out)
            self._selector.modify(channel, selectors.EVENT_READ | (selectors.EVENT_WRITE if slot.writing else 0), slot)

    def _drop_channel(self, slot: _Slot) -> None:
        if slot.channel is None:
            return
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(slot.channel)
        slot.channel.close()
        slot.channel, slot.out, slot.ready = None, bytearray(), False
