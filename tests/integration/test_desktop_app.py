"""fleet-desktop as a process against a real fleet-stub over TLS on loopback.

A host is set up the way orbit does it (orbit enrolls, osqueryd enrolls with the same hardware UUID, orbit registers
the Desktop token) and fleet-desktop gets exactly orbit's environment contract. ``status --json`` is checked for
each server situation; then the real app runs without any display: it must stay up, fall back to notifications,
refuse a second instance and exit 0 on SIGTERM.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.agents import host_id_for_uuid, orbit_enroll, osquery_enroll
from tests.support.stub_server import RunningStub, running_stub

pytestmark = pytest.mark.timeout(120)

OFFLINE_TITLE = "🛜🚫 Your computer is not connected to Fleet."
VERSION = "3.14.15"


@dataclass(frozen=True)
class Device:
    hardware_uuid: str
    host_id: int
    node_key: str
    orbit_key: str
    token: str


def enroll_device(stub: RunningStub) -> Device:
    with stub.client() as client, stub.admin() as admin:
        hardware_uuid = str(uuid.uuid4()).upper()
        orbit_key = orbit_enroll(client, hardware_uuid)
        node_key = osquery_enroll(client, hardware_uuid, hostname="desktop-host")
        token = str(uuid.uuid4())
        register_token(client, orbit_key, token)
        return Device(hardware_uuid, host_id_for_uuid(admin, hardware_uuid), node_key, orbit_key, token)


def register_token(client: httpx.Client, orbit_key: str, token: str) -> None:
    response = client.post(
        "/api/fleet/orbit/device_token", json={"orbit_node_key": orbit_key, "device_auth_token": token}
    )
    assert response.status_code == 200, response.text


def fail_policies(stub: RunningStub, device: Device, names: list[str]) -> None:
    """Define global policies and answer them "fail" through distributed read/write, as osqueryd would."""
    with stub.client() as client, stub.admin() as admin:
        ids = []
        for name in names:
            created = admin.post(
                "/api/latest/fleet/global/policies",
                json={"name": name, "query": f"SELECT 1 WHERE '{uuid.uuid4().hex}' = '';", "platform": ""},
            )
            assert created.status_code == 200, created.text
            ids.append(created.json()["policy"]["id"])
        read = client.post("/api/v1/osquery/distributed/read", json={"node_key": device.node_key})
        assert read.status_code == 200
        queries = {f"fleet_policy_query_{i}": [] for i in ids}
        statuses = dict.fromkeys(queries, 0)
        written = client.post(
            "/api/v1/osquery/distributed/write",
            json={"node_key": device.node_key, "queries": queries, "statuses": statuses, "messages": {}},
        )
        assert written.status_code == 200 and written.json() == {}


def fleet_desktop_argv() -> list[str]:
    script = Path(sys.executable).with_name("fleet-desktop")
    return [str(script)] if script.exists() else [sys.executable, "-m", "desktop_tray"]


def desktop_env(stub_url: str, ca: Path | None, token_path: Path, home: Path, **extra: str) -> dict[str, str]:
    """orbit's environment contract for fleet-desktop, in a session with no display at all."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "XDG_STATE_HOME": str(home / "state"),
        "NO_PROXY": "127.0.0.1,localhost",
        "PYTHONUNBUFFERED": "1",
        "FLEET_DESKTOP_FLEET_URL": stub_url,
        "FLEET_DESKTOP_DEVICE_IDENTIFIER_PATH": str(token_path),
        "FLEET_DESKTOP_FLEET_TLS_CLIENT_CERTIFICATE": "",
        "FLEET_DESKTOP_FLEET_TLS_CLIENT_KEY": "",
        "FLEET_DESKTOP_ALTERNATIVE_BROWSER_HOST": "",
        "FLEET_DESKTOP_TUF_UPDATE_ROOT": str(home),
        "FLEET_DESKTOP_BUILD_VERSION": VERSION,
    }
    if ca is not None:
        env["FLEET_DESKTOP_FLEET_ROOT_CA"] = str(ca)
    env.update(extra)
    return env


def status(env: dict[str, str]) -> dict[str, Any]:
    done = subprocess.run(
        [*fleet_desktop_argv(), "status", "--json"], capture_output=True, env=env, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr.decode()
    lines = done.stdout.decode("utf-8").splitlines()
    assert len(lines) == 1, lines
    document: dict[str, Any] = json.loads(lines[0])
    assert set(document) == {"state", "items", "failing_policies"}
    for item in document["items"]:
        assert set(item) == {"title", "enabled", "visible"}
    return document


def menu(document: dict[str, Any]) -> list[tuple[str, bool, bool]]:
    return [(i["title"], i["enabled"], i["visible"]) for i in document["items"]]


def connecting_menu() -> list[tuple[str, bool, bool]]:
    return [
        (f"Fleet Desktop v{VERSION}", False, True),
        ("Connecting...", False, True),
        (OFFLINE_TITLE, False, False),
        ("Self-service", False, False),
        ("About Fleet", False, True),
    ]


def connected_menu(title: str) -> list[tuple[str, bool, bool]]:
    return [
        (f"Fleet Desktop v{VERSION}", False, True),
        (title, True, True),
        (OFFLINE_TITLE, False, False),
        ("Self-service", False, False),  # the stub answers self_service: false
        ("About Fleet", True, True),
    ]


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


# --- status --json --------------------------------------------------------------------------------------------


def test_bad_token_is_connecting_and_the_registered_one_connects(stub: RunningStub, home: Path) -> None:
    device = enroll_device(stub)
    token_path = home / "identifier"
    token_path.write_text(str(uuid.uuid4()))  # a token the server has never seen
    env = desktop_env(stub.url, stub.ca_path, token_path, home)
    document = status(env)
    assert document["state"] == "connecting"
    assert menu(document) == connecting_menu()
    assert document["failing_policies"] == 0
    token_path.write_text(device.token)
    document = status(env)
    assert document["state"] == "connected"
    assert menu(document) == connected_menu("🟢 My device")
    assert document["failing_policies"] == 0


def test_failing_policies_show_in_the_badge(stub: RunningStub, home: Path) -> None:
    device = enroll_device(stub)
    token_path = home / "identifier"
    token_path.write_text(device.token + "\n")
    fail_policies(stub, device, ["Firewall on", "Disk encrypted"])
    document = status(desktop_env(stub.url, stub.ca_path, token_path, home))
    assert document["state"] == "connected"
    assert menu(document) == connected_menu("🔴 My device (2)")
    assert document["failing_policies"] == 2


def test_deleted_host_goes_back_to_connecting(stub: RunningStub, home: Path) -> None:
    device = enroll_device(stub)
    token_path = home / "identifier"
    token_path.write_text(device.token)
    env = desktop_env(stub.url, stub.ca_path, token_path, home)
    assert status(env)["state"] == "connected"
    with stub.admin() as admin:
        assert admin.delete(f"/api/latest/fleet/hosts/{device.host_id}").status_code == 200
    document = status(env)
    assert document["state"] == "connecting"
    assert menu(document) == connecting_menu()


def test_stopped_server_is_offline(tmp_path: Path, home: Path) -> None:
    token_path = home / "identifier"
    with running_stub(tmp_path / "stub") as stub:
        device = enroll_device(stub)
        token_path.write_text(device.token)
        env = desktop_env(stub.url, stub.ca_path, token_path, home)
        assert status(env)["state"] == "connected"
    document = status(env)  # the server is gone: connection refused
    assert document["state"] == "offline"
    assert menu(document) == [
        (f"Fleet Desktop v{VERSION}", False, True),
        ("My device", False, False),
        (OFFLINE_TITLE, False, True),
        ("Self-service", False, False),
        ("About Fleet", False, False),
    ]
    assert document["failing_policies"] == 0


def test_trust_settings_apply(stub: RunningStub, home: Path) -> None:
    device = enroll_device(stub)
    token_path = home / "identifier"
    token_path.write_text(device.token)
    # without the CA the self-signed server is not trusted: no connection → offline
    untrusted = desktop_env(stub.url, None, token_path, home, SSL_CERT_FILE=str(home / "none.pem"))
    assert status(untrusted)["state"] == "offline"
    insecure = desktop_env(stub.url, None, token_path, home, FLEET_DESKTOP_INSECURE="1")
    assert status(insecure)["state"] == "connected"


def test_missing_token_file_is_connecting(stub: RunningStub, home: Path) -> None:
    document = status(desktop_env(stub.url, stub.ca_path, home / "absent", home))
    assert document["state"] == "connecting"


# --- the running app ------------------------------------------------------------------------------------------


NOTIFY_SEND = """#!/bin/sh
printf '%s\\n' "$*" >> "$(dirname "$0")/notifications.log"
"""


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def read_json(path: Path) -> dict[str, Any]:
    try:
        loaded: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return loaded


@pytest.fixture
def app_env(stub: RunningStub, home: Path) -> Iterator[tuple[dict[str, str], Device, Path]]:
    device = enroll_device(stub)
    token_path = home / "identifier"
    token_path.write_text(device.token)
    bin_dir = home / "bin"
    bin_dir.mkdir()
    notify = bin_dir / "notify-send"
    notify.write_text(NOTIFY_SEND)
    notify.chmod(0o755)
    env = desktop_env(stub.url, stub.ca_path, token_path, home, PATH=f"{bin_dir}:{os.environ.get('PATH', '/usr/bin')}")
    yield env, device, bin_dir


def test_app_without_a_display_falls_back_to_notifications(
    stub: RunningStub, home: Path, app_env: tuple[dict[str, str], Device, Path]
) -> None:
    env, device, bin_dir = app_env
    fleet_dir = home / "state" / "Fleet"
    status_path = fleet_dir / "fleet-desktop.status.json"
    process = subprocess.Popen(
        fleet_desktop_argv(), env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:

        def settled() -> bool:
            current = read_json(status_path)
            return current.get("state") == "connected" and current.get("tray") != "starting"

        wait_for(settled, "the app to connect and settle its tray")
        current = read_json(status_path)
        assert current["pid"] == process.pid
        assert current["tray"] == "notifications" and current["notifications"] is True
        assert current["items"][1] == {"title": "🟢 My device", "enabled": True, "visible": True}
        notifications = bin_dir / "notifications.log"
        wait_for(lambda: "Connected to Fleet" in notifications.read_text(errors="replace"), "a notification")
        text = notifications.read_text()
        assert "No system tray is available" in text
        assert device.token not in text

        # a second instance for the same user is refused, the first keeps running
        second = subprocess.run(fleet_desktop_argv(), env=env, capture_output=True, timeout=60, check=False)
        assert second.returncode == 1
        assert b"already running" in second.stderr and str(process.pid).encode() in second.stderr
        assert process.poll() is None

        # orbit rotates the token: register first, then write the file; the app re-checks and stays connected
        new_token = str(uuid.uuid4())
        with stub.client() as client:
            register_token(client, device.orbit_key, new_token)
        Path(env["FLEET_DESKTOP_DEVICE_IDENTIFIER_PATH"]).write_text(new_token)
        log_path = fleet_dir / "fleet-desktop.log"
        assert "event=token_file_changed" not in log_path.read_text()

        def states_since_the_change() -> list[str]:
            text = log_path.read_text()
            if "event=token_file_changed" not in text:
                return []
            after = text.split("event=token_file_changed", 1)[1]
            return [
                line.split("state=", 1)[1].split()[0] for line in after.splitlines() if "event=state_changed" in line
            ]

        wait_for(lambda: states_since_the_change()[-1:] == ["connected"], "the new token to validate")
        assert states_since_the_change() == ["connecting", "connected"]
        assert read_json(status_path)["state"] == "connected"

        # policies start failing; the app learns it at its next summary poll (not waited for here), while a
        # one-shot status run sees it at once, next to the running app
        fail_policies(stub, device, ["Screen lock"])
        assert status(env)["failing_policies"] == 1

        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
    _stdout, stderr = process.communicate(timeout=10)
    assert b"event=tray_unavailable" in stderr  # warnings also reach stderr (orbit's log of its child)
    log_text = (fleet_dir / "fleet-desktop.log").read_text()
    assert "event=tray_unavailable" in log_text and "fallback=notifications" in log_text
    assert "event=signal_received signal=SIGTERM" in log_text and "event=stop" in log_text
    assert device.token not in log_text and new_token not in log_text
    assert (fleet_dir / "fleet-desktop.err").read_text().startswith("fleet-desktop started at")
    # the lock is free again
    again = subprocess.Popen(fleet_desktop_argv(), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: read_json(status_path).get("pid") == again.pid, "a new instance to start")
        again.send_signal(signal.SIGINT)
        assert again.wait(timeout=30) == 0
    finally:
        if again.poll() is None:
            again.kill()
            again.wait(10)


def test_app_with_the_dummy_backend_and_no_notify_send(
    home: Path, app_env: tuple[dict[str, str], Device, Path]
) -> None:
    """``PYSTRAY_BACKEND=dummy`` imports but cannot run: the icon fails, the app carries on with logged messages."""
    env, _device, bin_dir = app_env
    (bin_dir / "notify-send").unlink()
    status_path = home / "custom-status.json"
    env = {**env, "PYSTRAY_BACKEND": "dummy", "FLEET_DESKTOP_STATUS_FILE": str(status_path)}
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if not shutil.which("notify-send", path=p))
    process = subprocess.Popen(fleet_desktop_argv(), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:

        def settled() -> bool:
            current = read_json(status_path)
            return current.get("state") == "connected" and current.get("tray") != "starting"

        wait_for(settled, "the app to connect and settle its tray")
        current = read_json(status_path)
        assert (current["tray"], current["backend"], current["notifications"]) == ("notifications", "dummy", True)
        log_text = (home / "state" / "Fleet" / "fleet-desktop.log").read_text()
        assert "event=tray_failed backend=dummy" in log_text
        assert "notify-send is not installed" in log_text
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)


def test_app_refuses_to_start_without_configuration(home: Path) -> None:
    env = {"PATH": os.environ.get("PATH", "/usr/bin"), "HOME": str(home), "XDG_STATE_HOME": str(home / "state")}
    done = subprocess.run(fleet_desktop_argv(), env=env, capture_output=True, timeout=60, check=False)
    assert done.returncode == 2
    assert b"FLEET_DESKTOP_FLEET_URL" in done.stderr and b"FLEET_DESKTOP_DEVICE_IDENTIFIER_PATH" in done.stderr
