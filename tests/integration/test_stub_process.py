"""fleet-stub as a process: the CLI contract, server.json, signals, restarts and crashes."""

from __future__ import annotations

import json
import os
import signal
import ssl
import stat
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

from tests.support.agents import host_details
from tests.support.stub_process import STUB, StubProcess, clean_env

SECRET = "process-secret-1"


def _client(info: dict[str, object]) -> httpx.Client:
    context = ssl.create_default_context(cafile=str(info["ca_cert"]))
    return httpx.Client(base_url=str(info["url"]), verify=context, trust_env=False, timeout=30)


def _enroll(client: httpx.Client, hardware_uuid: str) -> str:
    body = {"enroll_secret": SECRET, "host_identifier": hardware_uuid, "host_details": host_details(hardware_uuid)}
    key: str = client.post("/api/osquery/enroll", json=body).json()["node_key"]
    return key


def test_serve_contract_server_json_and_sigterm(tmp_path: Path) -> None:
    data = tmp_path / "data"
    stub = StubProcess(data, f"--enroll-secret={SECRET}")
    try:
        info = stub.wait_ready()
        assert set(info) == {"url", "ca_cert", "pid", "admin_token"}
        assert str(info["url"]).startswith("https://127.0.0.1:")
        assert info["ca_cert"] == str(data / "tls" / "ca.pem")
        assert stat.S_IMODE((data / "server.json").stat().st_mode) == 0o600
        assert stat.S_IMODE((data / "tls" / "ca-key.pem").stat().st_mode) == 0o600
        assert stat.S_IMODE(data.stat().st_mode) == 0o700
        with _client(info) as client:
            assert client.head("/api/fleet/orbit/ping").status_code == 200
    finally:
        code = stub.stop(signal.SIGTERM)
    out, _ = stub.output()
    assert code == 0
    assert f"listening on {info['url']}" in out
    assert not (data / "server.json").exists()


def test_restart_reuses_ca_admin_token_and_state(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = StubProcess(data, f"--enroll-secret={SECRET}")
    info = first.wait_ready()
    ca_before = (data / "tls" / "ca.pem").read_bytes()
    hardware_uuid = str(uuid.uuid4())
    with _client(info) as client:
        key = _enroll(client, hardware_uuid)
    assert first.stop() == 0
    second = StubProcess(data, f"--enroll-secret={SECRET}")
    try:
        info2 = second.wait_ready()
        assert (data / "tls" / "ca.pem").read_bytes() == ca_before
        assert info2["admin_token"] == info["admin_token"]
        with _client(info2) as client:
            assert client.post("/api/osquery/config", json={"node_key": key}).status_code == 200
    finally:
        assert second.stop() == 0


def test_kill_9_loses_no_acknowledged_log_lines(tmp_path: Path) -> None:
    data = tmp_path / "data"
    stub = StubProcess(data, f"--enroll-secret={SECRET}")
    info = stub.wait_ready()
    acknowledged = 0
    with _client(info) as client:
        key = _enroll(client, str(uuid.uuid4()))
        for batch in range(20):
            lines = [{"name": "q", "counter": batch * 10 + i, "columns": {"i": str(i)}} for i in range(10)]
            response = client.post("/api/osquery/log", json={"node_key": key, "log_type": "result", "data": lines})
            if response.status_code == 200:
                acknowledged += len(lines)
    stub.stop(signal.SIGKILL)
    assert stub.proc.returncode == -signal.SIGKILL
    restarted = StubProcess(data, f"--enroll-secret={SECRET}")
    try:
        info2 = restarted.wait_ready()
        headers = {"Authorization": f"Bearer {info2['admin_token']}"}
        with _client(info2) as admin:
            hosts = admin.get("/api/latest/fleet/hosts", headers=headers).json()["hosts"]
            assert hosts[0]["log_counts"]["result"] == acknowledged == 200
            stored = admin.get(f"/api/latest/fleet/hosts/{hosts[0]['id']}/logs/result", headers=headers).text
            assert sorted(json.loads(line)["counter"] for line in stored.splitlines()) == list(range(200))
            # the node key issued before the crash still works
            assert admin.post("/api/osquery/config", json={"node_key": key}).status_code == 200
    finally:
        restarted.stop()


def test_environment_variables_configure_serve(tmp_path: Path) -> None:
    data = tmp_path / "env-data"
    env = clean_env(
        FLEET_STUB_DATA_DIR=str(data),
        FLEET_STUB_ENROLL_SECRET="env-secret-1,env-secret-2:Servers",
        FLEET_STUB_ADMIN_TOKEN="admin-token-from-env",
    )
    proc = subprocess.Popen([*STUB, "serve", "--listen", "127.0.0.1:0"], env=env, stdout=subprocess.PIPE, text=True)
    stub = StubProcess.__new__(StubProcess)
    stub.data_dir, stub.proc = data, proc
    try:
        info = stub.wait_ready()
        assert info["admin_token"] == "admin-token-from-env"
        with _client(info) as client:
            for secret in ("env-secret-1", "env-secret-2"):
                body = {"enroll_secret": secret, "host_identifier": secret}
                assert "node_key" in client.post("/api/osquery/enroll", json=body).json()
            teams = client.get("/api/latest/fleet/teams", headers={"Authorization": "Bearer admin-token-from-env"})
            assert [t["name"] for t in teams.json()["teams"]] == ["Servers"]
    finally:
        assert stub.stop() == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--listen", "nonsense"], "invalid --listen"),
        (["--listen", "127.0.0.1:99999"], "port out of range"),
        (["--tls-cert", "/nonexistent.pem"], "--tls-cert and --tls-key must be given together"),
        (["--tls-cert", "/nonexistent.pem", "--tls-key", "/nonexistent.key"], "TLS file not found"),
        (["--config", "/nonexistent.toml"], "cannot read"),
        (["--admin-token", "short"], "at least 8 characters"),
    ],
)
def test_bad_serve_arguments_exit_2_with_a_clear_message(tmp_path: Path, args: list[str], message: str) -> None:
    result = subprocess.run(
        [*STUB, "serve", "--data-dir", str(tmp_path / "d"), *args],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    stub = StubProcess(tmp_path / "a", f"--enroll-secret={SECRET}")
    try:
        port = str(stub.wait_ready()["url"]).rsplit(":", 1)[1]
        result = subprocess.run(
            [*STUB, "serve", "--data-dir", str(tmp_path / "b"), "--listen", f"127.0.0.1:{port}"],
            capture_output=True,
            text=True,
            env=clean_env(),
            timeout=60,
            check=False,
        )
        assert result.returncode == 2 and "cannot listen on" in result.stderr
    finally:
        stub.stop()


def test_admin_cli_hosts_and_query(tmp_path: Path) -> None:
    data = tmp_path / "data"
    stub = StubProcess(data, f"--enroll-secret={SECRET}", "--live-query-timeout", "2")
    try:
        info = stub.wait_ready()
        with _client(info) as client:
            _enroll(client, "CLI-UUID-1")
        listed = subprocess.run(
            [*STUB, "hosts", "--data-dir", str(data), "--json"], capture_output=True, text=True, timeout=60, check=True
        )
        hosts = json.loads(listed.stdout)["hosts"]
        assert [h["uuid"] for h in hosts] == ["CLI-UUID-1"]
        table = subprocess.run([*STUB, "hosts", "--data-dir", str(data)], capture_output=True, text=True, check=True)
        assert "HOSTNAME" in table.stdout and "test-host" in table.stdout
        query = subprocess.run(
            [*STUB, "query", "--data-dir", str(data), "--host", str(hosts[0]["id"]), "SELECT 1"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert query.returncode == 1  # nobody answers: reported offline, not a crash
        assert json.loads(query.stdout)["results"][0]["status"] == "offline"
    finally:
        stub.stop()


def test_admin_cli_without_a_running_server(tmp_path: Path) -> None:
    result = subprocess.run(
        [*STUB, "hosts", "--data-dir", str(tmp_path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 1
    assert "no running fleet-stub found" in result.stderr


def test_module_and_console_script_agree() -> None:
    version = subprocess.run([*STUB, "--version"], capture_output=True, text=True, check=True).stdout
    script = Path(sys.executable).parent / "fleet-stub"
    if script.exists():
        assert subprocess.run([str(script), "--version"], capture_output=True, text=True, check=True).stdout == version
    assert version.startswith("fleet-stub ")
    assert os.access(sys.executable, os.X_OK)


def test_tuf_repo_is_announced_in_server_json(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "timestamp.json").write_text('{"signed": {}}')
    stub = StubProcess(tmp_path / "data", "--tuf-repo", str(repo))
    try:
        info = stub.wait_ready()
        assert info["tuf_url"] == f"{info['url']}/tuf"
        with _client(info) as client:
            assert client.get("/tuf/timestamp.json").text == '{"signed": {}}'
    finally:
        assert stub.stop() == 0


def test_sigterm_does_not_wait_for_idle_keep_alive_clients(tmp_path: Path) -> None:
    stub = StubProcess(tmp_path / "data")
    info = stub.wait_ready()
    client = _client(info)  # left open on purpose, like an agent between polls
    try:
        assert client.head("/api/fleet/orbit/ping").status_code == 200
        began = time.monotonic()
        assert stub.stop(signal.SIGTERM, timeout=15) == 0
        assert time.monotonic() - began < 10
    finally:
        client.close()


def test_a_secret_on_the_command_line_is_warned_about_and_a_file_is_not(tmp_path: Path) -> None:
    secrets = tmp_path / "secrets.txt"
    secrets.write_text(f"{SECRET}\n")
    argv_stub = StubProcess(tmp_path / "a", f"--enroll-secret={SECRET}")
    file_stub = StubProcess(tmp_path / "b", "--enroll-secret-file", str(secrets))
    try:
        argv_stub.wait_ready()
        file_stub.wait_ready()
    finally:
        argv_stub.stop()
        file_stub.stop()
    assert "visible to every local user" in argv_stub.output()[1]
    assert "visible to every local user" not in file_stub.output()[1]
