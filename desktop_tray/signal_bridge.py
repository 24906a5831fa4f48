"""SIGTERM / SIGINT / SIGQUIT / SIGHUP → a clean quit, even while the main thread sits inside a GUI main loop.

Two paths bring the signal number to a small watcher thread, because neither is reliable alone:

* ``signal.set_wakeup_fd``: CPython's C-level handler writes it to our socket at once (PyGObject may swap in its
  own wakeup fd while its loop runs);
* the Python-level handler, which runs when the main thread returns to the interpreter (PyGObject makes sure it
  does while its loop runs), writes it to the same socket — and does nothing else: a handler that took a lock
  could deadlock on the thread it interrupted.

The watcher runs ``quick`` (set the stop events) and, once, ``on_signal`` on a fresh thread (it stops the tray from
outside); if the process has not finished ``grace`` seconds later, it exits hard: a tray backend can hang its own
shutdown (python-stack.md §2, pitfall 3). ``reinstall()`` puts the handlers back (pystray's gtk backend resets
SIGINT to SIG_DFL); it must run on the main thread.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import socket
import threading
from collections.abc import Callable
from types import FrameType

log = logging.getLogger(__name__)

STOP_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGTERM", "SIGINT", "SIGQUIT", "SIGHUP") if hasattr(signal, name)
)
HARD_EXIT_GRACE = 10.0


class SignalBridge:
    def __init__(
        self,
        on_signal: Callable[[int], None],
        *,
        quick: Callable[[], None],
        finished: threading.Event,
        grace: float = HARD_EXIT_GRACE,
    ) -> None:
        """``quick`` and ``on_signal`` run off the signal handler (watcher / stopper threads). Construct on the main
        thread."""
        self._on_signal = on_signal
        self._quick = quick
        self._finished = finished
        self._grace = grace
        self._triggered = False
        self._trigger_lock = threading.Lock()
        self._reader, self._writer = socket.socketpair()
        self._reader.setblocking(False)
        self._writer.setblocking(False)
        self._closed = threading.Event()
        self._old_handlers: dict[int, object] = {}
        for signum in STOP_SIGNALS:
            self._old_handlers[signum] = signal.signal(signum, self._handle)
        self._old_wakeup = signal.set_wakeup_fd(self._writer.fileno(), warn_on_full_buffer=False)
        self._thread = threading.Thread(target=self._watch, name="fleet-desktop-signals", daemon=True)
        self._thread.start()

    def reinstall(self) -> None:
        """Main thread only: restore our handlers where a library replaced them."""
        for signum in STOP_SIGNALS:
            with contextlib.suppress(ValueError, OSError):
                if signal.getsignal(signum) != self._handle:
                    signal.signal(signum, self._handle)
                    log.info("event=signal_handler_restored signal=%s", signal.Signals(signum).name)

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        # no locks in a signal handler (it may interrupt a thread holding one): hand the signal to the watcher
        with contextlib.suppress(OSError):
            self._writer.send(bytes([signum]))

    def _trigger(self, signum: int) -> None:
        with self._trigger_lock:
            if self._triggered or self._closed.is_set():
                return
            self._triggered = True
        threading.Thread(target=self._stop, args=(signum,), name="fleet-desktop-stopper", daemon=True).start()

    def _stop(self, signum: int) -> None:
        log.info("event=signal_received signal=%s", signal.Signals(signum).name)
        try:
            self._on_signal(signum)
        except Exception:
            log.exception("event=stop_failed")
        if not self._finished.wait(self._grace) and not self._closed.is_set():
            log.error("event=shutdown_stuck action=hard_exit grace=%.0fs", self._grace)
            logging.shutdown()
            os._exit(0)

    def _watch(self) -> None:
        while not self._closed.is_set():
            try:
                readable, _, _ = select.select([self._reader], [], [])  # close() writes a byte to wake it
                if not readable:
                    continue
                data = self._reader.recv(64)
            except (OSError, ValueError):
                return
            for signum in data:
                if signum in STOP_SIGNALS:
                    self._quick()
                    self._trigger(signum)

    def close(self) -> None:
        self._closed.set()
        with contextlib.suppress(OSError):
            self._writer.send(b"\0")  # wake the watcher's select at once
        with contextlib.suppress(ValueError, OSError):
            signal.set_wakeup_fd(self._old_wakeup)
        for signum, handler in self._old_handlers.items():
            with contextlib.suppress(ValueError, OSError, TypeError):
                signal.signal(signum, handler)  # type: ignore[arg-type]
        self._thread.join(2.0)
        self._reader.close()
        self._writer.close()
