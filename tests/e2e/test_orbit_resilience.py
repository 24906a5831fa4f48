"""orbit end to end, continued: outages, host deletion, expired metadata, scripts, server-pinned channels and the
Fleet Desktop child (a stand-in tray that records what it was given)."""

from __future__ import annotations

import io
import json
import os
import signal
import tarfile
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psutil
import pytest

from tests.e2e.conftest import running
from tests.support.orbit_world import OrbitWorld, ServiceManager, orbitctl, wait_for

pytestmark = pytest.mark.timeout(240)


def test_server_outage_keeps_everything_running_and_recovers(world: OrbitWorld) -> None:
    service = world.start_service()
    running(world)
    orbit_pid, osqueryd = service.pid, world.osqueryd_pid()
    world.stop_stub()
    # an outage spanning several polls and backoffs: with ORBIT_DEV_CONFIG_MAX_BACKOFF=4, the third failure comes
    # after waits of 2 s and 4 s (the cap)
    wait_for(lambda: world.status()["config"]["failures"] >= 3, timeout=60, what="failing config polls")
    assert service.pid == orbit_pid and world.osqueryd_pid() == osqueryd
    assert world.status()["enrolled"] is False or world.status()["config"]["failures"] >= 2
    world.start_stub()  # same port, same data
    wait_for(lambda: world.status()["config"]["failures"] == 0, timeout=60, what="config polls succeeding again")
    assert service.pid == orbit_pid and world.osqueryd_pid() == osqueryd
    assert world.status()["enrolled"] is True
    assert len(world.hosts()) == 1


def test_deleted_host_re_enrolls(world: OrbitWorld) -> None:
    service = world.start_service()
    running(world)
    key_file = world.root / "secret-orbit-node-key.txt"
    old_key = key_file.read_text()
    (host,) = world.hosts()
    with world.admin() as admin:
        assert admin.delete(f"/api/latest/fleet/hosts/{host['id']}").status_code == 200
    wait_for(lambda: key_file.read_text() != old_key, timeout=60, what="a new node key")
    assert key_file.stat().st_mode & 0o777 == 0o600
    hosts = wait_for(world.hosts, timeout=30, what="the host back on the server")
    assert len(hosts) == 1 and hosts[0]["id"] != host["id"]
    status = wait_for(lambda: (s := world.status()).get("enrolled") is True and s, what="enrolled again")
    assert status["reenrollments"] >= 1
    assert len(service.starts) == 1


def test_expired_metadata_keeps_the_installed_binaries_running(tmp_path: Path) -> None:
    world = OrbitWorld(tmp_path)
    try:
        world.publish_osqueryd("5.14.1")
        world.publish_orbit("1.0.0")
        world.install_package("1.0.0")
        service = world.start_service()
        running(world)
        service.stop()
        # a new version is published, but the timestamp it comes with is valid for 3 seconds only
        world.publish_osqueryd("5.15.0", extra=("--timestamp-expires", str(3 / 86400)))
        timestamp = json.loads((world.repo / "repository" / "timestamp.json").read_text())
        expires = datetime.fromisoformat(timestamp["signed"]["expires"].replace("Z", "+00:00"))
        wait_for(lambda: datetime.now(UTC) > expires, timeout=10, what="the published timestamp to expire")
        installed = world.root / "bin" / "osqueryd" / "linux" / "stable" / "osqueryd"
        before = installed.read_bytes()
        service = world.start_service()
        status = running(world)
        assert status["updates"]["last_check"]["error_kind"] is not None
        assert "expired" in status["updates"]["last_check"]["error"].lower()
        assert installed.read_bytes() == before
        # a fresh timestamp (what the publisher's cron does) lets the update through
        orbitctl("timestamp", "--path", str(world.repo))
        service.signal(signal.SIGHUP)
        wait_for(lambda: installed.read_bytes() != before, timeout=60, what="the update after re-signing")
    finally:
        world.close()


def test_script_queued_on_the_server_runs_and_its_result_is_visible(world: OrbitWorld) -> None:
    world.start_service("--enable-scripts")
    running(world)
    (host,) = world.hosts()
    with world.admin() as admin:
        response = admin.post(
            "/api/latest/fleet/scripts/run",
            json={"host_id": host["id"], "script_contents": "echo hello from $(id -un)\necho oops >&2\nexit 3\n"},
        )
        assert response.status_code == 202, response.text
        execution_id = response.json()["execution_id"]

        def result() -> dict[str, object] | None:
            body = admin.get(f"/api/latest/fleet/scripts/results/{execution_id}").json()
            return body if body.get("exit_code") is not None else None

        body = wait_for(result, timeout=60, what="the script result")
    assert body["exit_code"] == 3
    assert "hello from" in str(body["output"]) and "oops" in str(body["output"])


def test_scripts_are_refused_without_enable_scripts(world: OrbitWorld) -> None:
    world.start_service()
    running(world)
    (host,) = world.hosts()
    with world.admin() as admin:
        execution_id = admin.post(
            "/api/latest/fleet/scripts/run", json={"host_id": host["id"], "script_contents": "touch /tmp/never"}
        ).json()["execution_id"]
        body = wait_for(
            lambda: (
                (b := admin.get(f"/api/latest/fleet/scripts/results/{execution_id}").json()).get("exit_code")
                is not None
                and b
            ),
            timeout=60,
        )
    assert body["exit_code"] == -2
    assert "Scripts are disabled" in str(body["output"])


def test_server_pinned_osqueryd_channel_switches_only_osqueryd(world: OrbitWorld) -> None:
    service = world.start_service()
    running(world)
    orbit_pid, first = service.pid, world.osqueryd_pid()
    edge = world.publish_osqueryd("5.16.0-edge", "edge")
    with world.admin() as admin:
        response = admin.patch(
            "/api/latest/fleet/config",
            json={"agent_options": {"config": {}, "update_channels": {"osqueryd": "edge"}}},
        )
        assert response.status_code == 200, response.text
    overrides = world.root / "server-overrides.json"
    wait_for(overrides.is_file, timeout=30, what="server-overrides.json")
    pinned = json.loads(overrides.read_text())
    assert pinned["osqueryd-channel"] == "edge" and pinned["orbit-channel"] == "stable"
    assert pinned["fallback-osqueryd-path"].endswith("bin/osqueryd/linux/stable/osqueryd")
    assert overrides.stat().st_mode & 0o777 == 0o600
    second = wait_for(lambda: (pid := world.osqueryd_pid()) not in (None, first) and pid, timeout=60)
    assert psutil.Process(second).cmdline()[0:3] != []
    edge_path = world.root / "bin" / "osqueryd" / "linux" / "edge" / "osqueryd"
    wait_for(edge_path.is_file, timeout=30)
    assert edge_path.read_bytes() == edge.read_bytes()
    assert service.pid == orbit_pid and len(service.starts) == 1


def desktop_archive(tmp_path: Path, record: Path) -> Path:
    """A stand-in tray in the Linux desktop target's layout: records its environment and uid, then waits."""
    script = (
        "#!/bin/sh\n"
        'if [ "$1" = "--help" ]; then echo "fleet-desktop stand-in"; exit 0; fi\n'
        f'env | grep -E "^(FLEET_DESKTOP_|DISPLAY=|HOME=)" > "{record}.tmp"; id -u >> "{record}.tmp"\n'
        f'mv "{record}.tmp" "{record}"\n'
        "exec sleep 600\n"
    ).encode()
    archive = tmp_path / "desktop.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        folder = tarfile.TarInfo("fleet-desktop")
        folder.type, folder.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(folder)
        member = tarfile.TarInfo("fleet-desktop/fleet-desktop")
        member.size, member.mode = len(script), 0o755
        tar.addfile(member, io.BytesIO(script))
    return archive


def test_fleet_desktop_gets_a_registered_token_and_is_respawned(world: OrbitWorld, tmp_path: Path) -> None:
    record = tmp_path / "desktop-env.txt"
    world.publish("desktop", desktop_archive(tmp_path, record), "1.0.0")
    env = world.orbit_env(DISPLAY=":42", ORBIT_DEV_DESKTOP_CURRENT_SESSION="1")
    service = world.start_service("--fleet-desktop", env=env)
    running(world)
    token_file = world.root / "identifier"
    wait_for(token_file.is_file, what="the device token")
    token = token_file.read_text()
    assert uuid.UUID(token).version == 4 and token_file.stat().st_mode & 0o777 == 0o644
    with httpx.Client(verify=world.ca_context(), timeout=20) as client:
        assert client.get(f"{world.url}/api/latest/fleet/device/{token}/desktop").status_code == 200
    wait_for(record.is_file, timeout=60, what="fleet-desktop started")
    seen = record.read_text()
    assert f"FLEET_DESKTOP_FLEET_URL={world.url}" in seen
    assert f"FLEET_DESKTOP_DEVICE_IDENTIFIER_PATH={token_file}" in seen
    assert "DISPLAY=:42" in seen
    assert token not in seen  # the token travels by file only
    desktop = world.status()["children"]["fleet-desktop"]
    assert desktop["state"] == "running"
    record.unlink()
    os.kill(desktop["pid"], signal.SIGKILL)
    wait_for(record.is_file, timeout=30, what="fleet-desktop respawned")
    assert len(service.starts) == 1


def test_insecure_mode_reaches_the_server_through_the_local_proxy(world: OrbitWorld) -> None:
    """--insecure: nobody verifies the server, yet osqueryd (which always verifies) enrolls via orbit's proxy."""
    link = world.root / "bin" / "orbit" / "orbit"
    args = ["--root-dir", str(world.root), "--fleet-url", world.url, "--insecure"]
    args += ["--update-url", world.tuf_url, "--update-roots", str(world.root_json)]
    world.service = ServiceManager([str(link), *args], world.orbit_env(), world.base / "orbit.log")
    running(world)
    osqueryd = psutil.Process(world.osqueryd_pid())
    argv = osqueryd.cmdline()
    proxy_cert = world.root / "proxy" / "fleet.crt"
    assert argv[argv.index("--tls_server_certs") + 1] == str(proxy_cert)
    tls_hostname = next(arg for arg in argv if arg.startswith("--tls_hostname="))
    assert tls_hostname.startswith("--tls_hostname=localhost:")
    assert proxy_cert.stat().st_mode & 0o777 == 0o644
    assert (world.root / "proxy" / "fleet.key").stat().st_mode & 0o777 == 0o600
    host = wait_for(lambda: (hosts := world.hosts()) and hosts[0].get("osquery_version") and hosts[0], timeout=60)
    assert host["osquery_version"] == "5.14.1+sim"
