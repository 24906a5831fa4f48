"""The declarative configuration file: applied at start, idempotent, re-read on SIGHUP, errors change nothing."""

from __future__ import annotations

import signal
import ssl
import subprocess
import time
from pathlib import Path

import httpx

from tests.support.stub_process import STUB, StubProcess, clean_env

CONFIG = """
[global]
enroll_secrets = ["gitops-global"]
agent_options = { config = { options = { distributed_interval = 7, logger_tls_period = 5 } } }

[[teams]]
name = "Servers"
enroll_secrets = ["gitops-servers"]
orbit_notifications = { renew_enrollment_profile = false }

[teams.agent_options]
update_channels = { osqueryd = "edge", orbit = "stable" }
command_line_flags = { verbose = true }
config = { options = { distributed_interval = 3 } }

[[policies]]
name = "Has a hostname"
query = "SELECT 1 FROM system_info WHERE hostname != ''"
resolution = "Set a hostname."
"""


def _client(info: dict[str, object]) -> httpx.Client:
    context = ssl.create_default_context(cafile=str(info["ca_cert"]))
    return httpx.Client(
        base_url=str(info["url"]),
        verify=context,
        trust_env=False,
        timeout=30,
        headers={"Authorization": f"Bearer {info['admin_token']}"},
    )


def _enroll(client: httpx.Client, secret: str) -> httpx.Response:
    return client.post("/api/osquery/enroll", json={"enroll_secret": secret, "host_identifier": secret + "-host"})


def _wait_for(predicate: object, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached")


def _logged(data: Path, event: str) -> int:
    """How many times the stub's log file (``<data dir>/fleet-stub.log``) has recorded ``event``."""
    log = data / "fleet-stub.log"
    return log.read_text().count(f"event={event} ") if log.is_file() else 0


def _reload(stub: StubProcess, data: Path, event: str = "config_applied") -> None:
    """SIGHUP, then wait until the stub has logged that it applied the file again (or refused it)."""
    before = _logged(data, event)
    stub.proc.send_signal(signal.SIGHUP)
    _wait_for(lambda: _logged(data, event) > before)


def test_config_file_applies_teams_secrets_options_and_policies(tmp_path: Path) -> None:
    config = tmp_path / "fleet.toml"
    config.write_text(CONFIG)
    stub = StubProcess(tmp_path / "data", "--config", str(config))
    try:
        info = stub.wait_ready()
        with _client(info) as client:
            global_key = _enroll(client, "gitops-global").json()["node_key"]
            server_key = _enroll(client, "gitops-servers").json()["node_key"]
            global_config = client.post("/api/osquery/config", json={"node_key": global_key}).json()
            team_config = client.post("/api/osquery/config", json={"node_key": server_key}).json()
            assert global_config["options"]["distributed_interval"] == 7
            assert team_config["options"]["distributed_interval"] == 3
            policies = client.get("/api/latest/fleet/global/policies").json()["policies"]
            assert [p["name"] for p in policies] == ["Has a hostname"]
            orbit = client.post(
                "/api/fleet/orbit/enroll",
                json={"enroll_secret": "gitops-servers", "hardware_uuid": "gitops-servers-host"},
            ).json()["orbit_node_key"]
            orbit_config = client.post("/api/fleet/orbit/config", json={"orbit_node_key": orbit}).json()
            assert orbit_config["update_channels"] == {"osqueryd": "edge", "orbit": "stable"}
            assert orbit_config["command_line_startup_flags"] == {"verbose": True}
    finally:
        assert stub.stop() == 0


def test_sighup_reapplies_and_a_broken_file_changes_nothing(tmp_path: Path) -> None:
    config = tmp_path / "fleet.toml"
    config.write_text(CONFIG)
    stub = StubProcess(tmp_path / "data", "--config", str(config))
    try:
        info = stub.wait_ready()
        with _client(info) as client:
            teams_before = client.get("/api/latest/fleet/teams").json()["teams"]
            _reload(stub, tmp_path / "data")  # unchanged file: idempotent
            assert client.get("/api/latest/fleet/teams").json()["teams"] == teams_before
            assert len(client.get("/api/latest/fleet/global/policies").json()["policies"]) == 1

            config.write_text(CONFIG.replace('"gitops-servers"', '"rotated-secret"').replace("Has a hostname", "Named"))
            _reload(stub, tmp_path / "data")
            assert "node_key" in _enroll(client, "rotated-secret").json()
            assert _enroll(client, "gitops-servers").status_code == 401  # removed from the file → revoked
            names = [p["name"] for p in client.get("/api/latest/fleet/global/policies").json()["policies"]]
            assert names == ["Named"]

            config.write_text("[[teams]]\nname = 42\n")
            _reload(stub, tmp_path / "data", "config_reload_failed")
            assert stub.proc.poll() is None  # still serving
            assert "node_key" in _enroll(client, "rotated-secret").json()
    finally:
        assert stub.stop() == 0
    _, err = stub.output()
    assert "config_reload_failed" in err


def test_admin_created_objects_survive_a_reload(tmp_path: Path) -> None:
    config = tmp_path / "fleet.json"
    config.write_text('{"global": {"enroll_secrets": ["json-secret"]}}')
    stub = StubProcess(tmp_path / "data", "--config", str(config))
    try:
        info = stub.wait_ready()
        with _client(info) as client:
            created = client.post("/api/latest/fleet/global/policies", json={"name": "Manual", "query": "SELECT 1"})
            assert created.status_code == 200
            _reload(stub, tmp_path / "data")
            names = [p["name"] for p in client.get("/api/latest/fleet/global/policies").json()["policies"]]
            assert names == ["Manual"]
            assert "node_key" in _enroll(client, "json-secret").json()
    finally:
        assert stub.stop() == 0


def test_invalid_config_file_at_start_exits_2(tmp_path: Path) -> None:
    for text, message in [
        ("[global\n", "fleet.toml"),
        ("[[teams]]\nname = 'A'\n[[teams]]\nname = 'A'\n", "declared twice"),
        ("[global]\nagent_options = { bogus = 1 }\n", "unknown agent options key"),
        ("[[policies]]\nname = 'P'\nquery = 'SELECT 1'\nteam = 'Nope'\n", "must name a team"),
        ("surprise = 1\n", "unknown top-level key"),
    ]:
        config = tmp_path / "fleet.toml"
        config.write_text(text)
        result = subprocess.run(
            [*STUB, "serve", "--data-dir", str(tmp_path / "d"), "--listen", "127.0.0.1:0", "--config", str(config)],
            capture_output=True,
            text=True,
            env=clean_env(),
            timeout=60,
            check=False,
        )
        assert result.returncode == 2, (text, result.stderr)
        assert message in result.stderr, (text, result.stderr)
