"""The Windows service handshake for orbit (service ``Fleet osquery``, docs/reference/orbit-behaviour.md §1.4, §9.3).

``ServiceHost`` (pure, tested with a fake) runs ``async main(stop_event)`` under a ``ServiceControl``: it reports
START_PENDING, then RUNNING once main is under way; a STOP, SHUTDOWN or PRESHUTDOWN control sets the stop event on
the event loop (``call_soon_threadsafe``: SCM calls the handler on the dispatcher thread); while main winds down it
reports STOP_PENDING with a rising checkpoint, then STOPPED.

Exit codes: 0 after a requested stop; ``ERROR_SERVICE_SPECIFIC_ERROR`` with ``main_failed_code`` when main raised,
or with ``restart_code`` when main returned by itself (orbit's self-update restart). Unlike Fleet, which exits
without reporting STOPPED so that SCM logs an unexpected termination (Event 7031, #11797), we always report
STOPPED; the installer enables failure actions for non-crash failures (``sc failureflag "Fleet osquery" 1``) so
SCM's recovery restarts the service after a non-zero exit code.

``Win32ServiceControl`` (``advapi32`` through ctypes; no pywin32) exists only on Windows.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import Protocol

log = logging.getLogger(__name__)

SERVICE_NAME = "Fleet osquery"

SERVICE_WIN32_OWN_PROCESS = 0x10
SERVICE_ACCEPT_STOP = 0x1
SERVICE_ACCEPT_SHUTDOWN = 0x4
NO_ERROR = 0
ERROR_CALL_NOT_IMPLEMENTED = 120
ERROR_SERVICE_SPECIFIC_ERROR = 1066
ERROR_FAILED_SERVICE_CONTROLLER_CONNECT = 1063  # StartServiceCtrlDispatcher outside SCM (run from a console)

EXIT_MAIN_FAILED = 1
EXIT_RESTART_REQUESTED = 3


class ServiceState(IntEnum):
    STOPPED = 1
    START_PENDING = 2
    STOP_PENDING = 3
    RUNNING = 4


class ServiceControlCode(IntEnum):
    STOP = 0x1
    INTERROGATE = 0x4
    SHUTDOWN = 0x5
    PRESHUTDOWN = 0xF


_STOP_CONTROLS = frozenset({ServiceControlCode.STOP, ServiceControlCode.SHUTDOWN, ServiceControlCode.PRESHUTDOWN})


@dataclass(frozen=True)
class ServiceStatus:
    state: ServiceState
    controls_accepted: int = 0
    win32_exit_code: int = NO_ERROR
    service_exit_code: int = 0
    checkpoint: int = 0
    wait_hint_ms: int = 0


ControlHandler = Callable[[int], bool]  # returns whether the control code is handled


class ServiceControl(Protocol):
    def run_dispatcher(self, name: str, service_main: Callable[[], None]) -> None:
        """Connect to SCM and block until the service stopped; SCM calls ``service_main`` on its own thread."""
        ...

    def register_handler(self, name: str, handler: ControlHandler) -> None:
        """Called first thing in ``service_main``; SCM then delivers control codes to ``handler``."""
        ...

    def set_status(self, status: ServiceStatus) -> None: ...


class ServiceHost:
    def __init__(
        self,
        control: ServiceControl,
        main: Callable[[asyncio.Event], Awaitable[None]],
        *,
        name: str = SERVICE_NAME,
        start_wait_hint: float = 30.0,
        stop_wait_hint: float = 15.0,  # covers one checkpoint interval; children get 10 s to stop
        pending_interval: float = 1.0,
        main_failed_code: int = EXIT_MAIN_FAILED,
        restart_code: int = EXIT_RESTART_REQUESTED,
    ) -> None:
        self._control = control
        self._main = main
        self.name = name
        self._start_hint_ms = int(start_wait_hint * 1000)
        self._stop_hint_ms = int(stop_wait_hint * 1000)
        self._pending_interval = pending_interval
        self._main_failed_code = main_failed_code
        self._restart_code = restart_code
        self._lock = threading.RLock()  # SCM may call the handler while a status is being reported
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._stop_requested = False
        self._last_status: ServiceStatus | None = None
        self.exit_code: int | None = None

    def run(self) -> int:
        """Run as the service (blocks until stopped); returns the service-specific exit code (0: clean stop)."""
        self._control.run_dispatcher(self.name, self.service_main)
        return self.exit_code if self.exit_code is not None else self._main_failed_code

    def _report(self, status: ServiceStatus) -> None:
        with self._lock:
            self._last_status = status
            self._control.set_status(status)
        log.info("event=service_status state=%s checkpoint=%d", status.state.name, status.checkpoint)

    def _on_control(self, code: int) -> bool:
        """SCM's handler (dispatcher thread)."""
        if code == ServiceControlCode.INTERROGATE:
            with self._lock:
                last = self._last_status
            if last is not None:
                self._report(last)
            return True
        if code not in _STOP_CONTROLS:
            return False
        log.info("event=service_control code=%d", code)
        with self._lock:
            self._stop_requested = True
            loop, event = self._loop, self._stop_event
        if loop is not None and event is not None:
            with contextlib.suppress(RuntimeError):  # the loop already closed: main is over anyway
                loop.call_soon_threadsafe(event.set)
        return True

    def service_main(self) -> None:
        self._control.register_handler(self.name, self._on_control)
        self._report(ServiceStatus(ServiceState.START_PENDING, checkpoint=1, wait_hint_ms=self._start_hint_ms))
        try:
            requested, failed = asyncio.run(self._serve())
        except Exception:
            log.exception("event=service_failed")
            requested, failed = False, True
        if failed:
            code = self._main_failed_code
        elif requested:
            code = 0
        else:
            code = self._restart_code
        self.exit_code = code
        self._report(
            ServiceStatus(
                ServiceState.STOPPED,
                win32_exit_code=ERROR_SERVICE_SPECIFIC_ERROR if code else NO_ERROR,
                service_exit_code=code,
            )
        )

    async def _serve(self) -> tuple[bool, bool]:
        """Returns (stop was requested, main failed)."""
        stop = asyncio.Event()
        with self._lock:
            self._loop = asyncio.get_running_loop()
            self._stop_event = stop
            if self._stop_requested:
                stop.set()
        task = asyncio.ensure_future(self._main(stop))
        await asyncio.sleep(0)  # main is under way
        if not stop.is_set() and not task.done():
            self._report(ServiceStatus(ServiceState.RUNNING, SERVICE_ACCEPT_STOP | SERVICE_ACCEPT_SHUTDOWN))
        stop_wait = asyncio.ensure_future(stop.wait())
        await asyncio.wait({task, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
        stop_wait.cancel()
        checkpoint = 0
        while not task.done():
            checkpoint += 1
            self._report(
                ServiceStatus(ServiceState.STOP_PENDING, checkpoint=checkpoint, wait_hint_ms=self._stop_hint_ms)
            )
            await asyncio.wait({task}, timeout=self._pending_interval)
        with self._lock:
            self._loop = None
            self._stop_event = None
            requested = self._stop_requested
        if task.cancelled():
            return requested, not requested
        error = task.exception()
        if error is not None:
            log.error("event=service_main_failed error=%r", error)
            return requested, True
        return requested, False


if sys.platform == "win32":  # pragma: no cover - exercised by the Windows CI runner only
    import ctypes
    from ctypes import wintypes

    class _ServiceStatusStruct(ctypes.Structure):
        _fields_ = (
            ("dwServiceType", wintypes.DWORD),
            ("dwCurrentState", wintypes.DWORD),
            ("dwControlsAccepted", wintypes.DWORD),
            ("dwWin32ExitCode", wintypes.DWORD),
            ("dwServiceSpecificExitCode", wintypes.DWORD),
            ("dwCheckPoint", wintypes.DWORD),
            ("dwWaitHint", wintypes.DWORD),
        )

    _SERVICE_MAIN = ctypes.WINFUNCTYPE(None, wintypes.DWORD, ctypes.POINTER(wintypes.LPWSTR))
    _HANDLER_EX = ctypes.WINFUNCTYPE(wintypes.DWORD, wintypes.DWORD, wintypes.DWORD, wintypes.LPVOID, wintypes.LPVOID)

    class _TableEntry(ctypes.Structure):
        _fields_ = (("lpServiceName", wintypes.LPWSTR), ("lpServiceProc", _SERVICE_MAIN))

    class Win32ServiceControl:
        """``StartServiceCtrlDispatcherW`` / ``RegisterServiceCtrlHandlerExW`` / ``SetServiceStatus``."""

        def __init__(self) -> None:
            self._advapi = ctypes.WinDLL("advapi32", use_last_error=True)
            self._advapi.RegisterServiceCtrlHandlerExW.restype = ctypes.c_void_p
            self._advapi.RegisterServiceCtrlHandlerExW.argtypes = (wintypes.LPCWSTR, _HANDLER_EX, wintypes.LPVOID)
            self._advapi.SetServiceStatus.argtypes = (ctypes.c_void_p, ctypes.POINTER(_ServiceStatusStruct))
            self._advapi.SetServiceStatus.restype = wintypes.BOOL
            self._handle: int | None = None
            self._keep: list[object] = []  # callbacks must outlive the dispatcher

        def run_dispatcher(self, name: str, service_main: Callable[[], None]) -> None:
            def entry(argc: int, argv: object) -> None:
                service_main()

            callback = _SERVICE_MAIN(entry)
            table = (_TableEntry * 2)(_TableEntry(name, callback), _TableEntry(None, _SERVICE_MAIN()))
            self._keep += [callback, table]
            if not self._advapi.StartServiceCtrlDispatcherW(table):
                raise ctypes.WinError(ctypes.get_last_error())

        def register_handler(self, name: str, handler: ControlHandler) -> None:
            def entry(control: int, event_type: int, event_data: object, context: object) -> int:
                return NO_ERROR if handler(int(control)) else ERROR_CALL_NOT_IMPLEMENTED

            callback = _HANDLER_EX(entry)
            self._keep.append(callback)
            handle = self._advapi.RegisterServiceCtrlHandlerExW(name, callback, None)
            if not handle:
                raise ctypes.WinError(ctypes.get_last_error())
            self._handle = int(handle)

        def set_status(self, status: ServiceStatus) -> None:
            if self._handle is None:
                raise RuntimeError("register_handler must come before set_status")
            raw = _ServiceStatusStruct(
                SERVICE_WIN32_OWN_PROCESS,
                int(status.state),
                status.controls_accepted,
                status.win32_exit_code,
                status.service_exit_code,
                status.checkpoint,
                status.wait_hint_ms,
            )
            if not self._advapi.SetServiceStatus(self._handle, ctypes.byref(raw)):
                raise ctypes.WinError(ctypes.get_last_error())

    def windows_service_control() -> ServiceControl:
        return Win32ServiceControl()

else:

    def windows_service_control() -> ServiceControl:
        raise OSError("the Windows service control manager exists only on Windows")
