"""The SCM handshake of ServiceHost, driven by a fake service control manager."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import pytest

from orbit.windows_service import (
    ERROR_SERVICE_SPECIFIC_ERROR,
    EXIT_MAIN_FAILED,
    EXIT_RESTART_REQUESTED,
    SERVICE_ACCEPT_SHUTDOWN,
    SERVICE_ACCEPT_STOP,
    SERVICE_NAME,
    ControlHandler,
    ServiceControlCode,
    ServiceHost,
    ServiceState,
    ServiceStatus,
    windows_service_control,
)

pytestmark = pytest.mark.timeout(20)


class FakeScm:
    """Like SCM: ``service_main`` on its own thread; controls delivered from another thread (the test's)."""

    def __init__(self) -> None:
        self.statuses: list[ServiceStatus] = []
        self.handler: ControlHandler | None = None
        self.names: list[str] = []
        self._changed = threading.Condition()

    def run_dispatcher(self, name: str, service_main: Callable[[], None]) -> None:
        self.names.append(name)
        thread = threading.Thread(target=service_main, daemon=True)
        thread.start()
        thread.join(15)
        assert not thread.is_alive()

    def register_handler(self, name: str, handler: ControlHandler) -> None:
        assert not self.statuses, "the handler must be registered before the first status"
        self.names.append(name)
        self.handler = handler

    def set_status(self, status: ServiceStatus) -> None:
        with self._changed:
            self.statuses.append(status)
            self._changed.notify_all()

    def wait_for(self, state: ServiceState, count: int = 1) -> None:
        with self._changed:
            assert self._changed.wait_for(lambda: sum(s.state is state for s in self.statuses) >= count, 10)

    def send(self, code: int) -> bool:
        assert self.handler is not None
        return self.handler(code)

    def states(self) -> list[tuple[ServiceState, int]]:
        return [(s.state, s.checkpoint) for s in self.statuses]


def run_host(scm: FakeScm, host: ServiceHost, controller: Callable[[], None]) -> int:
    """Run the host as the dispatcher would, with ``controller`` acting as SCM from the outside."""
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(host.run()), daemon=True)
    thread.start()
    controller()
    thread.join(15)
    assert not thread.is_alive()
    return result[0]


def test_start_run_stop_with_checkpoints_while_main_winds_down() -> None:
    scm = FakeScm()
    stopped_after_signal = threading.Event()

    async def main(stop: asyncio.Event) -> None:
        await stop.wait()
        await asyncio.sleep(0.35)  # children take a while to stop
        stopped_after_signal.set()

    host = ServiceHost(scm, main, pending_interval=0.1)

    def controller() -> None:
        scm.wait_for(ServiceState.RUNNING)
        assert scm.send(ServiceControlCode.STOP) is True

    assert run_host(scm, host, controller) == 0
    assert stopped_after_signal.is_set()
    assert scm.names == [SERVICE_NAME, SERVICE_NAME] and SERVICE_NAME == "Fleet osquery"
    states = scm.states()
    assert states[:2] == [(ServiceState.START_PENDING, 1), (ServiceState.RUNNING, 0)]
    pending = [checkpoint for state, checkpoint in states if state is ServiceState.STOP_PENDING]
    assert len(pending) >= 3 and pending == list(range(1, len(pending) + 1))
    assert states[-1] == (ServiceState.STOPPED, 0) and len(states) == 3 + len(pending)
    running, final = scm.statuses[1], scm.statuses[-1]
    assert running.controls_accepted == SERVICE_ACCEPT_STOP | SERVICE_ACCEPT_SHUTDOWN
    assert scm.statuses[0].controls_accepted == 0 and scm.statuses[0].wait_hint_ms > 0
    assert all(s.wait_hint_ms > 0 for s in scm.statuses if s.state is ServiceState.STOP_PENDING)
    assert (final.win32_exit_code, final.service_exit_code) == (0, 0)


def test_shutdown_is_a_stop_and_other_controls_are_not_handled() -> None:
    scm = FakeScm()

    async def main(stop: asyncio.Event) -> None:
        await stop.wait()

    def controller() -> None:
        scm.wait_for(ServiceState.RUNNING)
        assert scm.send(0x3) is False  # CONTINUE: not accepted, nothing happens
        assert scm.send(ServiceControlCode.INTERROGATE) is True
        assert scm.statuses[-1].state is ServiceState.RUNNING and len(scm.statuses) == 3
        scm.send(ServiceControlCode.SHUTDOWN)

    assert run_host(scm, ServiceHost(scm, main), controller) == 0
    assert scm.statuses[-1].state is ServiceState.STOPPED and scm.statuses[-1].win32_exit_code == 0


def test_failing_main_reports_a_service_specific_error() -> None:
    scm = FakeScm()

    async def main(stop: asyncio.Event) -> None:
        await asyncio.sleep(0.05)
        raise RuntimeError("cannot open the root directory")

    assert run_host(scm, ServiceHost(scm, main), lambda: None) == EXIT_MAIN_FAILED
    final = scm.statuses[-1]
    assert final.state is ServiceState.STOPPED
    assert (final.win32_exit_code, final.service_exit_code) == (ERROR_SERVICE_SPECIFIC_ERROR, EXIT_MAIN_FAILED)
    assert ServiceState.STOP_PENDING not in [s.state for s in scm.statuses]


def test_main_ending_by_itself_asks_scm_for_a_restart() -> None:
    scm = FakeScm()

    async def main(stop: asyncio.Event) -> None:
        await asyncio.sleep(0.05)  # e.g. a self-update was installed

    assert run_host(scm, ServiceHost(scm, main), lambda: None) == EXIT_RESTART_REQUESTED
    assert [s.state for s in scm.statuses] == [ServiceState.START_PENDING, ServiceState.RUNNING, ServiceState.STOPPED]
    assert scm.statuses[-1].win32_exit_code == ERROR_SERVICE_SPECIFIC_ERROR


def test_a_stop_during_start_pending_is_not_lost() -> None:
    saw_stop: list[bool] = []

    class EarlyStopScm(FakeScm):
        def set_status(self, status: ServiceStatus) -> None:
            super().set_status(status)
            if status.state is ServiceState.START_PENDING:
                self.send(ServiceControlCode.STOP)  # arrives before the event loop exists

    scm = EarlyStopScm()

    async def main(stop: asyncio.Event) -> None:
        saw_stop.append(stop.is_set())
        await stop.wait()

    assert run_host(scm, ServiceHost(scm, main), lambda: None) == 0
    assert saw_stop == [True]
    assert ServiceState.RUNNING not in [s.state for s in scm.statuses]
    assert scm.statuses[-1].state is ServiceState.STOPPED


def test_the_real_control_manager_exists_only_on_windows() -> None:
    with pytest.raises(OSError, match="only on Windows"):
        windows_service_control()
