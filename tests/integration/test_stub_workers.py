"""fleet-stub with several worker processes (``serve --workers N``, ADR 0019), as real processes.

Which worker served an answer is in its ``X-Fleet-Stub-Worker`` header; the workers' processes are the children of
the pid in ``server.json``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import ssl
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import httpx
import psutil
import pytest

from tests.support.agents import host_details
from tests.support.stub_process import STUB, StubProcess, clean_env

SECRET = "workers-secret-1"
WORKER = "x-fleet-stub-worker"
DEADLINE = 60.0


def _context(info: dict[str, object]) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(info["ca_cert"]))


def _client(info: dict[str, object], **kwargs: object) -> httpx.Client:
    return httpx.Client(base_url=str(info["url"]), verify=_context(info), trust_env=False, timeout=30, **kwargs)  # type: ignore[arg-type]


def _admin(info: dict[str, object]) -> httpx.Client:
    return _client(info, headers={"Authorization": f"Bearer {info['admin_token']}"})


def _metrics(info: dict[str, object]) -> dict[str, float]:
    """Every sample of /metrics, keyed by its name with labels."""
    with _admin(info) as admin:
        text = admin.get("/metrics").text
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def _workers(stub: StubProcess) -> set[int]:
    return {child.pid for child in psutil.Process(stub.proc.pid).children()}


def _wait_for(predicate: object, what: str, timeout: float = DEADLINE) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(predicate) and predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _enroll(client: httpx.Client, hardware_uuid: str) -> str:
    body = {"enroll_secret": SECRET, "host_identifier": hardware_uuid, "host_details": host_details(hardware_uuid)}
    answer = client.post("/api/osquery/enroll", json=body)
    assert answer.status_code == 200, answer.text
    key: str = answer.json()["node_key"]
    return key


def _start(tmp_path: Path, workers: int, *extra: str, env: dict[str, str] | None = None) -> StubProcess:
    return StubProcess(
        tmp_path / "data", "--workers", str(workers), *extra, env=env or clean_env(FLEET_STUB_ENROLL_SECRET=SECRET)
    )


def test_requests_land_on_several_workers_and_metrics_sum_them(tmp_path: Path) -> None:
    stub = _start(tmp_path, 3)
    try:
        info = stub.wait_ready()
        assert info["pid"] == stub.proc.pid  # the parent owns server.json
        assert len(_workers(stub)) == 3
        served: Counter[str] = Counter()
        for _ in range(40):  # a new connection each: the kernel spreads them over the workers' sockets
            with _client(info) as client:
                answer = client.head("/api/fleet/orbit/ping")
                assert answer.status_code == 200
                served[answer.headers[WORKER]] += 1
        assert set(served) <= {"1", "2", "3"}
        assert len(served) >= 2, served
        samples = _metrics(info)
        assert samples['fleet_stub_http_requests_total{endpoint="orbit_ping",status="200"}'] == 40
        per_worker = {k: v for k, v in samples.items() if k.startswith("fleet_stub_worker_requests_total{")}
        assert sorted(per_worker) == [f'fleet_stub_worker_requests_total{{worker="{n}"}}' for n in (1, 2, 3)]
        assert sum(per_worker.values()) >= 40
        assert samples["fleet_stub_workers"] == 3
        assert samples["fleet_stub_metrics_complete"] == 1
    finally:
        assert stub.stop() == 0
    out, _err = stub.output()
    assert out.count("listening on") == 1


def test_live_query_posted_on_one_worker_is_answered_through_another(tmp_path: Path) -> None:
    stub = _start(tmp_path, 2, "--live-query-timeout", "30")
    try:
        info = stub.wait_ready()
        with _client(info) as enroller:
            node_key = _enroll(enroller, str(uuid.uuid4()))
        admin = _admin(info)
        hosts = admin.get("/api/latest/fleet/hosts")
        admin_worker = hosts.headers[WORKER]
        host_id = hosts.json()["hosts"][0]["id"]
        # a host connection served by the other worker (new connections until the hash puts one there)
        host = None
        for _ in range(200):
            candidate = _client(info)
            read = candidate.post("/api/osquery/distributed/read", json={"node_key": node_key})
            assert read.status_code == 200
            if read.headers[WORKER] != admin_worker:
                host = candidate
                break
            candidate.close()
        assert host is not None, "no connection reached the second worker"
        answer: dict[str, httpx.Response] = {}

        def ask() -> None:
            answer["response"] = admin.post(f"/api/latest/fleet/hosts/{host_id}/query", json={"query": "SELECT 7"})

        caller = threading.Thread(target=ask)
        caller.start()
        query_name = ""
        deadline = time.monotonic() + DEADLINE
        while not query_name and time.monotonic() < deadline:
            read = host.post("/api/osquery/distributed/read", json={"node_key": node_key})
            queries = read.json()["queries"]
            query_name = next((name for name in queries if name.startswith("fleet_distributed_query_")), "")
            if not query_name:
                time.sleep(0.05)
        assert query_name, "the query never reached the host"
        written = host.post(
            "/api/osquery/distributed/write",
            json={"node_key": node_key, "queries": {query_name: [{"seven": "7"}]}, "statuses": {query_name: 0}},
        )
        assert written.status_code == 200
        caller.join(DEADLINE)
        assert not caller.is_alive()
        response = answer["response"]
        assert response.headers[WORKER] == admin_worker != written.headers[WORKER]
        result = response.json()
        assert result["status"] == "online" and result["rows"] == [{"seven": "7"}]
        assert _metrics(info)["fleet_stub_live_query_wakeups_from_other_workers_total"] == 1
        host.close()
        admin.close()
    finally:
        assert stub.stop() == 0


def test_sigterm_stops_every_worker_and_removes_server_json(tmp_path: Path) -> None:
    stub = _start(tmp_path, 3)
    info = stub.wait_ready()
    workers = _workers(stub)
    assert len(workers) == 3
    with _client(info) as client:  # a keep-alive connection stays open: it must not hold the stop
        assert client.head("/api/fleet/orbit/ping").status_code == 200
        assert stub.stop(signal.SIGTERM) == 0
    assert all(_gone(pid) for pid in workers)
    assert not (tmp_path / "data" / "server.json").exists()
    log = (tmp_path / "data" / "fleet-stub.log").read_text()
    assert all(f"worker={n} event=worker_stopped" in log for n in (1, 2, 3))  # each worker logged into the file


def test_a_killed_worker_is_replaced_and_the_server_keeps_serving(tmp_path: Path) -> None:
    stub = _start(tmp_path, 2)
    try:
        info = stub.wait_ready()
        server_json = tmp_path / "data" / "server.json"
        written = server_json.stat()
        before = server_json.read_bytes()
        for _ in range(10):
            with _client(info) as client:
                assert client.head("/api/fleet/orbit/ping").status_code == 200
        counted = _metrics(info)['fleet_stub_http_requests_total{endpoint="orbit_ping",status="200"}']
        assert counted == 10
        workers = _workers(stub)
        victim = sorted(workers)[0]
        os.kill(victim, signal.SIGKILL)
        _wait_for(lambda: len(_workers(stub) - workers) == 1 and len(_workers(stub)) == 2, "a replacement worker")
        for _ in range(20):  # connections hashed to the replaced worker's socket waited in its queue
            with _client(info) as client:
                assert client.head("/api/fleet/orbit/ping").status_code == 200
        samples = _metrics(info)
        assert samples["fleet_stub_worker_restarts_total"] == 1
        # what the killed worker had counted (and reported) is still in the sums: counters never go back
        assert samples['fleet_stub_http_requests_total{endpoint="orbit_ping",status="200"}'] == counted + 20
        assert stub.proc.poll() is None
        after = server_json.stat()
        assert (after.st_ino, after.st_mtime_ns) == (written.st_ino, written.st_mtime_ns)  # written once
        assert server_json.read_bytes() == before
    finally:
        assert stub.stop() == 0
    out, err = stub.output()
    assert out.count("listening on") == 1
    assert "event=worker_exited worker=" in err and "code=-9" in err


def test_workers_stop_when_the_parent_is_killed(tmp_path: Path) -> None:
    stub = _start(tmp_path, 2)
    stub.wait_ready()
    workers = _workers(stub)
    stub.stop(signal.SIGKILL)
    _wait_for(lambda: all(_gone(pid) for pid in workers), "the orphaned workers to stop")


def test_a_port_held_by_a_server_with_workers_is_refused(tmp_path: Path) -> None:
    first = _start(tmp_path, 2)
    try:
        port = str(first.wait_ready()["url"]).rsplit(":", 1)[1]
        # SO_REUSEPORT would let a second server's sockets join the first one's: the port must be refused instead
        result = subprocess.run(
            [*STUB, "serve", "--data-dir", str(tmp_path / "b"), "--listen", f"127.0.0.1:{port}", "--workers", "2"],
            capture_output=True,
            text=True,
            env=clean_env(),
            timeout=60,
            check=False,
        )
        assert result.returncode == 2, result
        assert "cannot listen on" in result.stderr and "Traceback" not in result.stderr
    finally:
        assert first.stop() == 0


def test_shared_listening_socket_serves_too_and_limits_are_split(tmp_path: Path) -> None:
    env = clean_env(FLEET_STUB_ENROLL_SECRET=SECRET, FLEET_STUB_WORKER_BALANCE="shared")
    stub = _start(tmp_path, 2, "--max-connections", "9", env=env)
    try:
        info = stub.wait_ready()
        for _ in range(10):
            with _client(info) as client:
                assert client.head("/api/fleet/orbit/ping").status_code == 200
        assert _metrics(info)["fleet_stub_workers"] == 2
    finally:
        assert stub.stop() == 0
    _out, err = stub.output()
    assert "balance=shared" in err
    assert err.count("event=connection_limits cap=5 ") == 2  # --max-connections is for the whole server


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--workers", "0"], {}, "--workers must be between 1 and 64"),
        (["--workers", "65"], {}, "--workers must be between 1 and 64"),
        (["--workers", "two"], {}, "--workers must be a whole number or auto"),
        ([], {"FLEET_STUB_WORKERS": "-1"}, "FLEET_STUB_WORKERS must be between 1 and 64"),
        (["--workers", "2"], {"FLEET_STUB_WORKER_BALANCE": "round-robin"}, "FLEET_STUB_WORKER_BALANCE must be one of"),
    ],
)
def test_bad_worker_settings_exit_2_with_a_clear_message(
    tmp_path: Path, args: list[str], env: dict[str, str], message: str
) -> None:
    result = subprocess.run(
        [*STUB, "serve", "--data-dir", str(tmp_path / "d"), "--listen", "127.0.0.1:0", *args],
        capture_output=True,
        text=True,
        env=clean_env(**env),
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result
    assert message in result.stderr and "Traceback" not in result.stderr


FAILING_WORKERS = """
import logging, socket, sys
from server_stub.worker_pool import WorkerPool
logging.basicConfig(level=logging.INFO)
listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen(8)
def broken(index, _listener, _channel):
    print(f"worker {index} cannot start", file=sys.stderr, flush=True)
    return 3
pool = WorkerPool(2, [listener], broken, lambda: print("READY", flush=True), lambda: None, 10.0)
sys.exit(pool.run())
"""


def test_a_worker_failing_at_start_fails_the_start() -> None:
    result = subprocess.run(
        [sys.executable, "-c", FAILING_WORKERS], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 1, result
    assert "READY" not in result.stdout
    assert re.search(r"event=workers_failed reason=worker \d exited with 3 during start-up", result.stderr)


def test_load_processes_against_workers_merges_one_summary(tmp_path: Path) -> None:
    stub = _start(tmp_path, 2)
    try:
        info = stub.wait_ready()
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "osquery_sim",
                "load",
                "--hosts",
                "30",
                "--processes",
                "3",
                "--tls_hostname",
                str(info["url"]).removeprefix("https://"),
                "--tls_server_certs",
                str(info["ca_cert"]),
                "--duration",
                "6",
                "--with-orbit",
                "--ramp",
                "1",
                "--progress_interval",
                "2",
            ],
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
            env={**clean_env(ENROLL_SECRET=SECRET, FLEET_ADMIN_TOKEN=str(info["admin_token"]))},
        )
        assert result.returncode == 0, result.stderr
        summary = json.loads(result.stdout)
        assert summary["processes"] == 3 and summary["hosts"] == 30 and summary["enrolled"] == 30
        assert summary["errors"] == 0
        lines = summary["log_lines"]
        assert lines["checked_against_server"] is True
        assert lines["lost"] == 0 and lines["duplicated"] == 0 and lines["acknowledged"] >= 30
        endpoints = summary["endpoints"]
        assert endpoints["/api/v1/osquery/enroll"]["requests"] == 30
        assert endpoints["/api/fleet/orbit/enroll"]["requests"] == 30
        assert "latency_samples" not in summary
        assert "enrolled=30/30" in result.stderr and "processes=3" in result.stderr
        with _admin(info) as admin:
            hosts = admin.get("/api/latest/fleet/hosts").json()["hosts"]
        assert len({h["hostname"] for h in hosts}) == 30  # host numbers continue across the processes
    finally:
        assert stub.stop() == 0
