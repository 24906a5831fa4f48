"""orbit's osquery extension against osqueryd-sim's extension manager: real processes, real Unix sockets.

The two sides share no code; these tests are where they meet. The sim runs as a subprocess; orbit's
``ExtensionServer`` runs in this process on its own event loop thread (or in a child process when it must crash).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from orbit.extension import ExtensionServer, FleetdLogsTable, OrbitInfoTable, RingBufferLogHandler
from orbit.extension.extension_client import ManagerClient
from orbit.extension.osquery_api import ExtensionInfo as OrbitExtensionInfo
from orbit.extension.osquery_api import ExtensionResponse, no_args, register_args
from orbit.extension.thrift_codec import ApplicationError, MessageType, encode_message
from orbit.extension.thrift_socket import ThriftTransportError, call
from tests.support.sim_process import SIM, SimProcess, orbit_style_args, wait_for
from tests.support.stub_server import GLOBAL_SECRET, RunningStub, running_stub

EXTENSION_NAME = "com.fleetdm.orbit.osquery_extension.v1"
REPO = Path(__file__).resolve().parents[2]
STUB_OPTIONS = {
    "config": {
        "options": {"distributed_interval": 1, "logger_tls_period": 1, "schedule_splay_percent": 0},
        "schedule": {"orbit_version": {"query": "SELECT version FROM orbit_info", "interval": 1}},
    }
}
REGISTRY_SQL = "SELECT name, owner_uuid, internal, active FROM osquery_registry WHERE registry='table' AND name='%s'"
CHILD_EXTENSION = """
import asyncio, sys
from pathlib import Path
from orbit.extension import ExtensionServer, FleetdLogsTable, OrbitInfoTable, RingBufferLogHandler
server = ExtensionServer(Path(sys.argv[1]), [OrbitInfoTable(lambda: {"version": sys.argv[2]})], ping_interval=0.5)
asyncio.run(server.run(asyncio.Event()))
"""


class BackgroundExtension:
    """Runs ``ExtensionServer.run`` on an event loop in a thread, like orbit's agent runs its actors."""

    def __init__(self, server: ExtensionServer) -> None:
        self.server = server
        self.error: BaseException | None = None
        self._started = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._main, name="extension", daemon=True)

    def _main(self) -> None:
        async def run() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            self._started.set()
            await self.server.run(self._stop)

        try:
            asyncio.run(run())
        except BaseException as exc:  # surfaced by stop()
            self.error = exc
            self._started.set()

    def __enter__(self) -> BackgroundExtension:
        self._thread.start()
        assert self._started.wait(10)
        return self

    def stop(self) -> float:
        """Set the stop event; returns how long ``run`` took to return."""
        assert self._loop is not None and self._stop is not None
        started = time.monotonic()
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)
        assert not self._thread.is_alive(), "ExtensionServer.run did not return after stop"
        assert self.error is None, f"ExtensionServer.run raised {self.error!r}"
        return time.monotonic() - started

    def __exit__(self, *exc_info: object) -> None:
        if self._thread.is_alive():
            self.stop()


@contextlib.contextmanager
def captured_logs(name: str) -> Iterator[list[str]]:
    messages: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())

    handler = Collect(logging.DEBUG)
    logger = logging.getLogger(name)
    previous = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    try:
        yield messages
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    """A short directory for sockets: ``<socket>.<uuid>`` must fit in sun_path (108 bytes) whatever the test name."""
    path = Path(tempfile.mkdtemp(prefix="ext", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def manager(socket_path: Path) -> ManagerClient:
    return ManagerClient(socket_path, timeout=10.0)


def sim_query(socket_path: Path, sql: str) -> ExtensionResponse:
    """A query through the sim's extension manager (``ExtensionManager.query``)."""
    return asyncio.run(manager(socket_path).query(sql))


def registered_names(socket_path: Path) -> list[str] | None:
    """Names the sim's manager lists (None while it is not answering, e.g. restarting)."""
    try:
        return [info.name for info in asyncio.run(manager(socket_path).extensions()).values()]
    except ThriftTransportError:
        return None


def plain_sim(root: Path, socket_path: Path, *extra: str, log_name: str = "sim.log") -> SimProcess:
    """The sim without remote plugins: only its extension manager talks to the outside."""
    root.mkdir(parents=True, exist_ok=True)
    args = [
        f"--pidfile={root}/osquery.pid",
        f"--database_path={root}/osquery.db",
        f"--extensions_socket={socket_path}",
        "--extensions_interval=1",
        "--extensions_timeout=1",
        "--force",
        *extra,
    ]
    return SimProcess(args, log_path=root / log_name)


def wait_for_manager(socket_path: Path) -> None:
    def answers() -> bool:
        if not socket_path.exists():
            return False
        try:
            return asyncio.run(manager(socket_path).ping()).ok
        except Exception:
            return False

    wait_for(answers, timeout=30)


# --- through Fleet: distributed, detail and scheduled queries -----------------------------------------------------


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[RunningStub]:
    with running_stub(tmp_path / "stub", live_query_timeout=20.0, detail_update_interval=1.0) as running:
        with running.admin() as admin:
            assert admin.patch("/api/latest/fleet/config", json={"agent_options": STUB_OPTIONS}).status_code == 200
        yield running


def _live(admin: httpx.Client, host_id: object, sql: str) -> dict[str, Any]:
    answer: dict[str, Any] = admin.post(f"/api/latest/fleet/hosts/{host_id}/query", json={"query": sql}).json()
    assert answer["status"] == "online", answer
    return answer


def test_orbit_info_reaches_fleet_through_the_sim_and_vanishes_when_orbit_stops(
    tmp_path: Path, fleet: RunningStub, socket_dir: Path
) -> None:
    socket_path = socket_dir / "osquery.em"
    root = tmp_path / "sim"
    root.mkdir()
    args = orbit_style_args(root, fleet.url, fleet.ca_path, f"--sim_uuid={uuid.uuid4()}")
    args = [a for a in args if not a.startswith("--extensions_socket=")]
    args += [f"--extensions_socket={socket_path}", "--extensions_interval=1", "--extensions_timeout=1"]
    sim = SimProcess(args, secret=GLOBAL_SECRET, log_path=root / "sim.log")
    values = {"version": "9.8.7", "enrolled": "true", "orbit_channel": "stable"}
    try:
        with fleet.admin() as admin:
            hosts = wait_for(lambda: admin.get("/api/latest/fleet/hosts").json()["hosts"])
            assert isinstance(hosts, list)
            host_id = hosts[0]["id"]
            before = _live(admin, host_id, "SELECT version FROM orbit_info")
            assert before["error"] == "no such table: orbit_info"

            ring = RingBufferLogHandler()
            orbit_log = logging.getLogger("tests.orbit.agent")
            orbit_log.addHandler(ring)
            orbit_log.warning("event=update_failed target=osqueryd", extra={"attempt": 3})
            orbit_log.removeHandler(ring)
            tables = [OrbitInfoTable(lambda: dict(values)), FleetdLogsTable(ring)]
            server = ExtensionServer(socket_path, tables, ping_interval=0.5)
            with BackgroundExtension(server) as extension:
                wait_for(lambda: server.registered, timeout=30)
                answer = _live(admin, host_id, "SELECT version, enrolled, orbit_channel, uptime FROM orbit_info")
                assert answer["error"] is None
                assert answer["rows"] == [
                    {"version": "9.8.7", "enrolled": "true", "orbit_channel": "stable", "uptime": ""}
                ]
                listed = _live(admin, host_id, REGISTRY_SQL % "orbit_info")
                assert listed["rows"] == [
                    {"name": "orbit_info", "owner_uuid": str(server.uuid), "internal": "0", "active": "1"}
                ]

                logs = _live(admin, host_id, "SELECT level, message, error, payload FROM fleetd_logs")
                assert logs["error"] is None
                assert logs["rows"] == [
                    {
                        "level": "warn",
                        "message": "event=update_failed target=osqueryd",
                        "error": "",
                        "payload": '{"attempt": 3}',
                    }
                ]

                values["version"] = "9.8.8"  # generated per query: the next detail query sees the new value
                wait_for(
                    lambda: admin.get(f"/api/latest/fleet/hosts/{host_id}").json()["host"]["orbit_version"] == "9.8.8",
                    timeout=30,
                )

                def scheduled_versions() -> set[str]:
                    text = admin.get(f"/api/latest/fleet/hosts/{host_id}/logs/result").text
                    lines = [json.loads(line) for line in text.splitlines()]
                    return {line["columns"]["version"] for line in lines if line["name"] == "orbit_version"}

                wait_for(lambda: "9.8.8" in scheduled_versions(), timeout=30)
                assert extension.stop() < 3.0  # stop is honoured promptly (and deregisters)

            assert _live(admin, host_id, REGISTRY_SQL % "orbit_info")["rows"] == []
            gone = _live(admin, host_id, "SELECT version FROM orbit_info")
            assert gone["error"] == "no such table: orbit_info" and gone["rows"] == []
    finally:
        assert sim.stop() == 0
    assert not socket_path.exists()


# --- restarts, crashes, refusals ---------------------------------------------------------------------------------


def test_extension_reregisters_by_itself_after_osqueryd_is_killed_and_restarted(
    tmp_path: Path, socket_dir: Path
) -> None:
    socket_path = socket_dir / "osquery.em"
    sim = plain_sim(tmp_path / "sim", socket_path, log_name="first.log")
    second_log = tmp_path / "sim" / "second.log"
    try:
        wait_for_manager(socket_path)
        # A long ping interval: only noticing the replaced manager socket can reveal the restart below.
        server = ExtensionServer(
            socket_path, [OrbitInfoTable(lambda: {"version": "5.5.5"})], ping_interval=3600, poll=0.1
        )
        with BackgroundExtension(server):
            wait_for(lambda: server.registered, timeout=30)
            assert sim_query(socket_path, "SELECT version FROM orbit_info").rows == ({"version": "5.5.5"},)

            sim.kill()  # SIGKILL: no cleanup, the manager socket file stays behind...
            assert socket_path.exists()
            sim = plain_sim(tmp_path / "sim", socket_path, log_name="second.log")  # ...until the new one binds
            wait_for(lambda: registered_names(socket_path) == [EXTENSION_NAME], timeout=30)
            answer = sim_query(socket_path, "SELECT version FROM orbit_info")
            assert answer.status.ok and answer.rows == ({"version": "5.5.5"},)

            # The manager forgets the extension while its socket stays: found by the periodic extensions() check.
            server.ping_interval = 0.2
            forgotten = asyncio.run(manager(socket_path).deregister(server.uuid or 0))
            assert forgotten.ok
            wait_for(lambda: second_log.read_bytes().count(b"event=extension_registered") == 2, timeout=15)
            wait_for(lambda: server.registered, timeout=10)
            assert sim_query(socket_path, "SELECT version FROM orbit_info").rows == ({"version": "5.5.5"},)

            sim.kill()  # and a plain crash with no restart is noticed too (the manager stops answering)
            wait_for(lambda: not server.registered, timeout=15)
            sim = plain_sim(tmp_path / "sim", socket_path, log_name="third.log")
            wait_for(lambda: server.registered, timeout=30)
            assert registered_names(socket_path) == [EXTENSION_NAME]

            assert sim.stop() == 0  # graceful: osqueryd removes its socket and tells its extensions to shut down
            wait_for(lambda: not server.registered, timeout=10)
            assert not socket_path.exists()
            sim = plain_sim(tmp_path / "sim", socket_path, log_name="fourth.log")
            wait_for(lambda: server.registered, timeout=30)
    finally:
        assert sim.stop() == 0


def test_a_vanished_extension_is_dropped_and_its_successor_registers(tmp_path: Path, socket_dir: Path) -> None:
    socket_path = socket_dir / "osquery.em"
    sim = plain_sim(tmp_path / "sim", socket_path)

    def child(version: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen([SIM[0], "-c", CHILD_EXTENSION, str(socket_path), version], cwd=REPO)

    first = child("from-child")
    second: subprocess.Popen[bytes] | None = None
    try:
        wait_for_manager(socket_path)
        wait_for(lambda: registered_names(socket_path) == [EXTENSION_NAME], timeout=30)
        assert sim_query(socket_path, "SELECT version FROM orbit_info").rows == ({"version": "from-child"},)

        # A new orbit while osqueryd still lists the old one: refused as a duplicate, retried until the watcher
        # notices the old one is gone (here: killed without deregistering).
        server = ExtensionServer(
            socket_path, [OrbitInfoTable(lambda: {"version": "successor"})], retry_delay=0.2, ping_interval=0.5
        )
        with captured_logs("orbit.extension.extension_server") as logs, BackgroundExtension(server):
            wait_for(lambda: any("Duplicate extension registered" in m for m in logs), timeout=15)
            assert not server.registered
            first.kill()
            first.wait(10)
            wait_for(lambda: server.registered, timeout=15)
            assert sim_query(socket_path, "SELECT version FROM orbit_info").rows == ({"version": "successor"},)

        # Without a successor, a crashed extension's table simply goes away.
        wait_for(lambda: registered_names(socket_path) == [], timeout=10)
        second = child("second-child")
        wait_for(lambda: registered_names(socket_path) == [EXTENSION_NAME], timeout=30)
        second.kill()
        second.wait(10)
        wait_for(lambda: registered_names(socket_path) == [], timeout=15)
        gone = sim_query(socket_path, "SELECT version FROM orbit_info")
        assert (gone.status.code, gone.status.message) == (1, "no such table: orbit_info")
        listed = sim_query(socket_path, "SELECT name FROM osquery_registry WHERE name = 'orbit_info'")
        assert listed.status.ok and listed.rows == ()
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait(10)
        assert sim.stop() == 0


def test_the_manager_refuses_a_table_the_sim_already_has(tmp_path: Path, socket_dir: Path) -> None:
    socket_path = socket_dir / "osquery.em"
    sim = plain_sim(tmp_path / "sim", socket_path)
    try:
        wait_for_manager(socket_path)
        route = [{"id": "column", "name": "pid", "type": "BIGINT", "op": "0"}]
        status = asyncio.run(manager(socket_path).register(OrbitExtensionInfo("x"), {"table": {"processes": route}}))
        assert (status.code, status.message) == (1, "Failed adding registry broadcast")
        status = asyncio.run(manager(socket_path).register(OrbitExtensionInfo("y", sdk_version="1.0.0"), {}))
        assert (status.code, status.message) == (1, "Incompatible extension SDK version")
        assert registered_names(socket_path) == []
        unknown = asyncio.run(manager(socket_path).deregister(4242))
        assert (unknown.code, unknown.message) == (1, "No extension UUID registered")
        options = asyncio.run(manager(socket_path).options())
        assert options["extensions_socket"] == str(socket_path) and options["extensions_interval"] == "1"
        assert sim_query(socket_path, "SELECT extensions FROM osquery_info").rows == ({"extensions": "active"},)
    finally:
        assert sim.stop() == 0


# --- hostile and absent peers ---------------------------------------------------------------------------------------


def _send_and_wait_for_close(socket_path: Path, data: bytes) -> bytes:
    """Send ``data``, half-close, and read until the sim closes the connection (bounded)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(str(socket_path))
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
        return received


def test_garbage_on_the_manager_socket_does_not_hurt_the_sim(tmp_path: Path, socket_dir: Path) -> None:
    socket_path = socket_dir / "osquery.em"
    sim = plain_sim(tmp_path / "sim", socket_path)
    register = encode_message(
        "registerExtension", MessageType.CALL, 1, register_args(OrbitExtensionInfo("half"), {"table": {}})
    )
    garbage = [
        b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
        random.Random(1234).randbytes(4096),
        register[: len(register) // 2],  # a real call cut in the middle
        b"\x80\x01\x00\x01\x7f\xff\xff\xff",  # a 2 GiB method name
        b"\x80\x01\x00\x01\x00\x00\x00\x04ping\x00\x00\x00\x01" + b"\x0c\x00\x01" * 100,  # nesting bomb
        b"\x80\x01\x00\x01\x00\x00\x00\x04ping\x00\x00\x00\x01\x0f\x00\x01\x0b\x7f\xff\xff\xff",  # huge list
    ]
    try:
        wait_for_manager(socket_path)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as idle:
            idle.connect(str(socket_path))  # a client that never says anything holds one thread, not the manager
            for data in garbage:
                assert _send_and_wait_for_close(socket_path, data) == b""
            with pytest.raises(ApplicationError) as unknown:
                asyncio.run(call(socket_path, "frobnicate", no_args(), timeout=10))
            assert unknown.value.kind == ApplicationError.UNKNOWN_METHOD
            assert asyncio.run(manager(socket_path).ping()).ok
            assert sim_query(socket_path, "SELECT 1 AS one").rows == ({"one": "1"},)
        assert sim.proc.poll() is None
        assert b"extension_client_dropped" in (tmp_path / "sim" / "sim.log").read_bytes()
    finally:
        assert sim.stop() == 0


def test_disable_extensions_means_no_manager_and_the_extension_just_waits(tmp_path: Path, socket_dir: Path) -> None:
    socket_path = socket_dir / "osquery.em"
    sim = plain_sim(tmp_path / "sim", socket_path, "--disable_extensions")
    log_path = tmp_path / "sim" / "sim.log"
    try:
        wait_for(lambda: b"running_without_remote_plugins" in log_path.read_bytes(), timeout=30)
        assert not socket_path.exists()
        server = ExtensionServer(socket_path, [OrbitInfoTable(dict)], socket_wait=0.3, poll=0.05)
        with captured_logs("orbit.extension.extension_server") as logs, BackgroundExtension(server) as extension:
            wait_for(lambda: any("extension_socket_unavailable" in m for m in logs), timeout=10)
            assert not server.registered
            assert extension.stop() < 3.0
    finally:
        assert sim.stop() == 0
