"""fleet-desktop as orbit runs it, against a running fleet-stub: a host with a Desktop token and policies, the
token file, and the environment orbit passes (docs/reference/orbit-behaviour.md §10.2, docs/contracts.md).

The host is set up the way the agents do it: orbit enrolls, osqueryd enrolls with the same hardware UUID, orbit
registers the token, policies are made with the admin API and answered as osqueryd answers them (a row = pass,
no rows = fail). Used by the real-tray tests, the browser tests and ``benchmarks/tray_idle.py``.
"""

from __future__ import annotations

import json
import shutil
import stat
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.support.agents import orbit_enroll, osquery_enroll
from tests.support.stub_server import RunningStub

HOSTNAME = "laptop-42"


@dataclass(frozen=True)
class Policy:
    name: str
    passing: bool
    resolution: str = ""


DEFAULT_POLICIES = (
    Policy("Disk encrypted", True, "Enable full-disk encryption."),
    Policy("Firewall on", False, "Run ufw enable as root."),
)


@dataclass(frozen=True)
class Device:
    hardware_uuid: str
    node_key: str
    orbit_key: str
    token: str
    policy_ids: dict[str, int]


def enroll_device(
    stub: RunningStub, *, hostname: str = HOSTNAME, policies: tuple[Policy, ...] = DEFAULT_POLICIES
) -> Device:
    with stub.client() as client, stub.admin() as admin:
        ids: dict[str, int] = {}
        for policy in policies:
            response = admin.post(
                "/api/latest/fleet/global/policies",
                json={
                    "name": policy.name,
                    "query": f"SELECT 1 WHERE '{uuid.uuid4().hex}' != '';",
                    "description": "",
                    "resolution": policy.resolution,
                    "platform": "",
                },
            )
            assert response.status_code == 200, response.text
            ids[policy.name] = int(response.json()["policy"]["id"])
        hardware_uuid = str(uuid.uuid4()).upper()
        orbit_key = orbit_enroll(client, hardware_uuid)
        node_key = osquery_enroll(client, hardware_uuid, hostname=hostname)
        token = str(uuid.uuid4())
        response = client.post(
            "/api/fleet/orbit/device_token", json={"orbit_node_key": orbit_key, "device_auth_token": token}
        )
        assert response.status_code == 200, response.text
        if policies:
            answer_policies(client, node_key, {ids[p.name]: p.passing for p in policies})
    return Device(hardware_uuid, node_key, orbit_key, token, ids)


def answer_policies(client: httpx.Client, node_key: str, passing: dict[int, bool]) -> None:
    """As osqueryd: read the policy queries, then write a row for a pass and no rows for a fail."""
    read = client.post("/api/v1/osquery/distributed/read", json={"node_key": node_key})
    assert read.status_code == 200, read.text
    names = {f"fleet_policy_query_{pid}": ok for pid, ok in passing.items()}
    assert set(names) <= set(read.json()["queries"]), read.json()
    response = client.post(
        "/api/v1/osquery/distributed/write",
        json={
            "node_key": node_key,
            "queries": {name: ([{"1": "1"}] if ok else []) for name, ok in names.items()},
            "statuses": dict.fromkeys(names, 0),
            "messages": dict.fromkeys(names, ""),
        },
    )
    assert response.status_code == 200, response.text


def fleet_desktop_command() -> list[str]:
    """The console script orbit launches (``.venv/bin/fleet-desktop``), else ``python -m desktop_tray``."""
    script = Path(sys.executable).with_name("fleet-desktop")
    if script.is_file():
        return [str(script)]
    found = shutil.which("fleet-desktop")
    return [found] if found else [sys.executable, "-m", "desktop_tray"]


@dataclass(frozen=True)
class DesktopFiles:
    token_file: Path  # FLEET_DESKTOP_DEVICE_IDENTIFIER_PATH: the token, as orbit writes it
    status_file: Path  # FLEET_DESKTOP_STATUS_FILE: the running app's state mirror
    browser_log: Path  # one line per URL the app asked the browser to open
    browser: Path  # the recording "browser" ($BROWSER)


def desktop_files(directory: Path, token: str) -> DesktopFiles:
    directory.mkdir(parents=True, exist_ok=True)
    token_file = directory / "identifier"
    token_file.write_text(token)
    browser_log = directory / "browser.log"
    browser = directory / "record-browser.sh"
    # Python's webbrowser (which fleet-desktop uses) runs $BROWSER with the URL as its argument
    browser.write_text(f"#!/bin/sh\nprintf '%s\\n' \"$*\" >> '{browser_log}'\n")
    browser.chmod(browser.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return DesktopFiles(token_file, directory / "fleet-desktop.status.json", browser_log, browser)


def desktop_env(stub: RunningStub, files: DesktopFiles, *, backend: str | None = None) -> dict[str, str]:
    """The variables orbit passes (the rest of the environment comes from the X session)."""
    env = {
        "FLEET_DESKTOP_FLEET_URL": stub.url,
        "FLEET_DESKTOP_DEVICE_IDENTIFIER_PATH": str(files.token_file),
        "FLEET_DESKTOP_FLEET_ROOT_CA": str(stub.ca_path),
        "FLEET_DESKTOP_STATUS_FILE": str(files.status_file),
        "BROWSER": str(files.browser),
        "NO_PROXY": "127.0.0.1,localhost,::1",
        "PYTHONUNBUFFERED": "1",
    }
    if backend is not None:
        env["PYSTRAY_BACKEND"] = backend
    return env


def read_status(path: Path) -> dict[str, object]:
    """The app's status mirror, or {} while it does not exist (written atomically, so never half-read)."""
    try:
        loaded: dict[str, object] = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    return loaded


def opened_urls(files: DesktopFiles) -> list[str]:
    return files.browser_log.read_text().splitlines() if files.browser_log.exists() else []
