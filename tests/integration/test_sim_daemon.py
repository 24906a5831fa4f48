"""osqueryd-sim as orbit runs it, against a real fleet-stub over TLS."""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.sim_process import SIM, SimProcess, orbit_style_args, wait_for
from tests.support.stub_process import StubProcess
from tests.support.stub_server import GLOBAL_SECRET, RunningStub, running_stub

FAST_OPTIONS = {
    "config": {
        "options": {"distributed_interval": 1, "logger_tls_period": 1, "schedule_splay_percent": 0},
        "schedule": {"clock": {"query": "SELECT unix_time FROM time", "interval": 1}},
        "decorators": {"load": ["SELECT uuid AS host_uuid FROM system_info"]},
    }
}


@pytest.fixture
def fast_stub(tmp_path: Path) -> Iterator[RunningStub]:
    with running_stub(tmp_path / "stub", live_query_timeout=20.0) as running:
        with running.admin() as admin:
            assert admin.patch("/api/latest/fleet/config", json={"agent_options": FAST_OPTIONS}).status_code == 200
        yield running


def _hosts(admin: httpx.Client) -> list[dict[str, object]]:
    hosts: list[dict[str, object]] = admin.get("/api/latest/fleet/hosts").json()["hosts"]
    return hosts


def _sim(tmp_path: Path, stub: RunningStub, *extra: str, name: str = "sim", secret: str = GLOBAL_SECRET) -> SimProcess:
    root = tmp_path / name
    root.mkdir(exist_ok=True)
    args = orbit_style_args(root, stub.url, stub.ca_path, f"--sim_uuid={uuid.uuid4()}", *extra)
    return SimProcess(args, secret=secret, log_path=root / "sim.log")


def test_enrolls_loads_config_logs_and_answers_a_live_query(tmp_path: Path, fast_stub: RunningStub) -> None:
    sim = _sim(tmp_path, fast_stub, "--sim_hostname=sim-host-1")
    try:
        with fast_stub.admin() as admin:
            hosts = wait_for(lambda: _hosts(admin))
            assert isinstance(hosts, list)
            host = hosts[0]
            assert host["hostname"] == "sim-host-1"
            assert str(host["osquery_version"]).endswith("+sim")
            host_id = host["id"]
            wait_for(
                lambda: admin.get(f"/api/latest/fleet/hosts/{host_id}").json()["host"]["log_counts"]["result"] >= 2
            )
            answer = admin.post(
                f"/api/latest/fleet/hosts/{host_id}/query", json={"query": "SELECT hostname FROM system_info"}
            ).json()
            assert answer["status"] == "online" and answer["error"] is None
            assert answer["rows"] == [{"hostname": "sim-host-1"}]
            failing = admin.post(
                f"/api/latest/fleet/hosts/{host_id}/query", json={"query": "SELECT * FROM nope"}
            ).json()
            assert failing["status"] == "online" and failing["error"] == "no such table: nope"
            lines = admin.get(f"/api/latest/fleet/hosts/{host_id}/logs/result").text.splitlines()
            first = json.loads(lines[0])
            assert first["name"] == "clock" and first["action"] == "added" and first["counter"] == 0
            assert first["decorations"]["host_uuid"] == host["uuid"]
            status = admin.get(f"/api/latest/fleet/hosts/{host_id}/logs/status").text.splitlines()
            assert any("osqueryd-sim" in json.loads(line)["message"] for line in status)
    finally:
        assert sim.stop() == 0
    assert not (tmp_path / "sim" / "osquery.pid").exists()
    assert not (tmp_path / "sim" / "orbit-osquery.em").exists()
    assert (tmp_path / "sim" / "osquery_log" / "osqueryd.results.log").stat().st_size > 0


def test_reenrolls_after_the_host_is_deleted(tmp_path: Path, fast_stub: RunningStub) -> None:
    sim = _sim(tmp_path, fast_stub)
    try:
        with fast_stub.admin() as admin:
            first = wait_for(lambda: _hosts(admin))
            assert isinstance(first, list)
            admin.delete(f"/api/latest/fleet/hosts/{first[0]['id']}")
            second = wait_for(lambda: [h for h in _hosts(admin) if h["id"] != first[0]["id"]])
            assert isinstance(second, list) and second[0]["uuid"] == first[0]["uuid"]
    finally:
        sim.stop()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _counters(results_log: Path) -> list[int]:
    """Counters the sim logged locally (its filesystem logger sees every result line)."""
    return [int(json.loads(line)["counter"]) for line in results_log.read_text().splitlines()]


def test_no_log_line_is_lost_or_duplicated_across_a_server_outage(tmp_path: Path) -> None:
    port = _free_port()
    data = tmp_path / "stub"
    config = tmp_path / "fleet.json"
    config.write_text(json.dumps({"global": {"enroll_secrets": ["outage-secret"], "agent_options": FAST_OPTIONS}}))
    listen = ["--listen", f"127.0.0.1:{port}", "--config", str(config)]
    stub = StubProcess.__new__(StubProcess)
    stub.__init__(data, *listen)  # type: ignore[misc]
    info = stub.wait_ready()
    root = tmp_path / "sim"
    root.mkdir()
    ca = Path(str(info["ca_cert"]))
    args = orbit_style_args(
        root, f"https://127.0.0.1:{port}", ca, "--logger_tls_backoff_max=2", f"--sim_uuid={uuid.uuid4()}"
    )
    sim = SimProcess(args, secret="outage-secret", log_path=root / "sim.log")
    headers = {"Authorization": f"Bearer {info['admin_token']}"}
    context = ssl.create_default_context(cafile=str(ca))
    client = httpx.Client(base_url=str(info["url"]), verify=context, trust_env=False, timeout=30, headers=headers)
    try:
        wait_for(lambda: client.get("/api/latest/fleet/hosts").json()["hosts"])
        host_id = client.get("/api/latest/fleet/hosts").json()["hosts"][0]["id"]
        wait_for(lambda: client.get(f"/api/latest/fleet/hosts/{host_id}").json()["host"]["log_counts"]["result"] >= 4)
        client.close()
        assert stub.stop() == 0  # the server goes away for a while; the sim keeps producing results
        wait_for(lambda: b"log_send_failed" in (root / "sim.log").read_bytes(), timeout=20)
        outage_counter = max(_counters(root / "osquery_log" / "osqueryd.results.log"))
        stub = StubProcess(data, *listen)
        stub.wait_ready()
        client = httpx.Client(base_url=str(info["url"]), verify=context, trust_env=False, timeout=30, headers=headers)

        def all_lines() -> list[dict[str, object]]:
            text = client.get(f"/api/latest/fleet/hosts/{host_id}/logs/result").text
            return [json.loads(line) for line in text.splitlines()]

        wait_for(lambda: max((int(str(x["counter"])) for x in all_lines()), default=-1) > outage_counter + 1)
        sim.stop()
        lines = all_lines()
        keys = [(line["counter"], line["action"], json.dumps(line["columns"], sort_keys=True)) for line in lines]
        assert len(keys) == len(set(keys)), "a log line was stored twice"
        added = sorted({int(str(line["counter"])) for line in lines if line["action"] == "added"})
        assert added == list(range(added[-1] + 1)), "a result was lost"
        assert added[-1] > outage_counter + 1
    finally:
        client.close()
        sim.kill()
        stub.stop()


def test_pidfile_held_by_a_live_process_refuses_start_unless_forced(tmp_path: Path, fast_stub: RunningStub) -> None:
    root = tmp_path / "sim"
    root.mkdir()
    holder = subprocess.Popen([*SIM[:1], "-c", "import time; time.sleep(60)"])
    try:
        (root / "osquery.pid").write_text(f"{holder.pid}\n")
        args = [a for a in orbit_style_args(root, fast_stub.url, fast_stub.ca_path) if a != "--force"]
        refused = subprocess.run([*SIM, *args], capture_output=True, text=True, timeout=60, check=False)
        assert refused.returncode == 78
        assert "Could not create pidfile" in refused.stdout + refused.stderr
        forced = _sim(tmp_path, fast_stub)
        with fast_stub.admin() as admin:
            wait_for(lambda: _hosts(admin))
        assert forced.stop() == 0
    finally:
        holder.kill()
        holder.wait()


def test_enrollment_that_never_succeeds_exits_78(tmp_path: Path, fast_stub: RunningStub) -> None:
    sim = _sim(tmp_path, fast_stub, "--tls_enroll_max_attempts=2", "--tls_enroll_max_interval=1", secret="wrong")
    assert sim.proc.wait(60) == 78


def test_shell_reports_the_same_instance_id_as_the_database(tmp_path: Path) -> None:
    db = tmp_path / "osquery.db"
    query = ["-S", "--json", f"--database_path={db}", "SELECT instance_id, version FROM osquery_info"]
    first = json.loads(subprocess.run([*SIM, *query], capture_output=True, text=True, check=True, timeout=60).stdout)
    again = json.loads(subprocess.run([*SIM, *query], capture_output=True, text=True, check=True, timeout=60).stdout)
    assert first == again and len(first) == 1
    assert first[0]["version"] == "5.14.1+sim"
    uuid.UUID(first[0]["instance_id"])


def test_node_key_and_instance_survive_a_restart_and_secret_file_works(tmp_path: Path, fast_stub: RunningStub) -> None:
    root = tmp_path / "sim"
    root.mkdir()
    secret_file = tmp_path / "secret.txt"
    secret_file.write_text(f"  {GLOBAL_SECRET}\n")  # osquery trims whitespace
    base = orbit_style_args(root, fast_stub.url, fast_stub.ca_path, f"--sim_uuid={uuid.uuid4()}")
    args = [a for a in base if a not in ("--enroll_secret_env", "ENROLL_SECRET")]
    args.insert(0, f"--enroll_secret_path={secret_file}")
    with fast_stub.admin() as admin:
        first = SimProcess(args, secret=None, log_path=root / "first.log")
        hosts = wait_for(lambda: _hosts(admin))
        assert isinstance(hosts, list)
        enrolled_at = hosts[0]["last_enrolled_at"]
        # the server lists the host as soon as it answered the enroll; the sim stores the key right after that
        wait_for(lambda: b"config_applied" in (root / "first.log").read_bytes())
        assert first.stop() == 0
        second = SimProcess(args, secret=None, log_path=root / "second.log")
        try:
            wait_for(lambda: b"config_applied" in (root / "second.log").read_bytes())
            assert b"event=enrolled" not in (root / "second.log").read_bytes()  # the cached key was reused
            again = _hosts(admin)
            assert len(again) == 1 and again[0]["last_enrolled_at"] == enrolled_at
        finally:
            assert second.stop() == 0
