"""``make demo``: start the embedded fleet-stub and show it answering like Fleet does.

It starts ``fleet-stub serve`` on a free port with a fresh data directory under ``.demo/``, enrolls a host through
the osquery TLS API (as osqueryd would) and through the orbit API (as orbit would), shows that both land on one
host record, answers a policy, registers a Fleet Desktop token and fetches the device summary; then it runs
osqueryd-sim with the command line orbit builds, answers a live query through it, and runs a few hundred
simulated hosts with ``osqueryd-sim load``; finally it stops everything it started and prints where to look next.
Later issues add orbit itself, TUF updates, the tray and the installers.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

from osquery_bin_manager.launch_args import FleetConnection, LaunchSpec, build_args, child_environment

ROOT = Path(__file__).resolve().parent.parent
DEMO_DIR = ROOT / ".demo"
SECRET = "demo-enroll-secret"  # noqa: S105 - a throwaway demo secret
console = Console()


def start_stub(data_dir: Path) -> tuple[subprocess.Popen[str], dict[str, str]]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "server_stub",
            "serve",
            "--data-dir",
            str(data_dir),
            "--listen",
            "127.0.0.1:0",
            "--enroll-secret",
            SECRET,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    deadline = time.monotonic() + 30
    info_path = data_dir / "server.json"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"fleet-stub exited early with code {proc.returncode}")
        if info_path.is_file():
            info = json.loads(info_path.read_text())
            if info.get("pid") == proc.pid:
                return proc, info
        time.sleep(0.05)
    proc.kill()
    raise SystemExit("fleet-stub did not become ready within 30 s")


def step(title: str) -> None:
    console.print(f"[bold cyan]▶ {title}[/]")


def simulate_hosts(client: httpx.Client, info: dict[str, str], admin_headers: dict[str, str]) -> None:
    """osqueryd-sim as orbit would launch it, a live query answered by it, then a few hundred simulated hosts."""
    step("osqueryd-sim: started with the command line orbit builds (Fleet's flags, secret only in the environment)")
    client.patch(
        "/api/latest/fleet/config",
        headers=admin_headers,
        json={
            "agent_options": {
                "config": {
                    "options": {"distributed_interval": 2, "logger_tls_period": 2},
                    "schedule": {"uptime": {"query": "SELECT * FROM uptime", "interval": 2}},
                }
            }
        },
    )
    root = DEMO_DIR / "sim"
    root.mkdir(parents=True, exist_ok=True)
    spec = LaunchSpec(
        root_dir=root,
        fleet=FleetConnection(url=info["url"], certificate=Path(info["ca_cert"])),
        passthrough=("--sim_hostname=demo-sim", f"--sim_uuid={uuid.uuid4()}"),
    )
    env = {**child_environment(SECRET, "linux"), "PATH": os.environ.get("PATH", "")}
    with (root / "osqueryd.log").open("wb") as sim_log:
        sim = subprocess.Popen(
            [sys.executable, "-m", "osquery_sim", *build_args(spec)], env=env, stdout=sim_log, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 30
        host: dict[str, object] | None = None
        while time.monotonic() < deadline and host is None:
            hosts = client.get("/api/latest/fleet/hosts", headers=admin_headers).json()["hosts"]
            host = next((h for h in hosts if h["hostname"] == "demo-sim"), None)
            time.sleep(0.2)
        if host is None:
            console.print("  [red]osqueryd-sim did not enroll[/]")
            return
        console.print(f"  enrolled as host {host['id']} ({host['osquery_version']})")
        step("admin: live query on osqueryd-sim — SELECT name, version, platform FROM os_version")
        answer = client.post(
            f"/api/latest/fleet/hosts/{host['id']}/query",
            headers=admin_headers,
            json={"query": "SELECT name, version, platform FROM os_version"},
        ).json()
        console.print(f"  status={answer['status']} rows={answer['rows']}")
        step("osqueryd-sim load: 300 simulated hosts with orbit traffic for 8 s")
        load = subprocess.run(
            [
                sys.executable,
                "-m",
                "osquery_sim",
                "load",
                "--hosts",
                "300",
                "--tls_hostname",
                info["url"].removeprefix("https://"),
                "--tls_server_certs",
                info["ca_cert"],
                "--duration",
                "8",
                "--with-orbit",
                "--ramp",
                "2",
                "--admin_token",
                info["admin_token"],
                "--progress_interval",
                "4",
            ],
            env={**os.environ, "ENROLL_SECRET": SECRET},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        summary = json.loads(load.stdout) if load.stdout.strip() else {}
        lines = summary.get("log_lines", {})
        console.print(
            f"  {summary.get('enrolled')} hosts enrolled, {summary.get('requests')} requests "
            f"({summary.get('requests_per_second')} req/s), errors {summary.get('errors')}, log lines acknowledged "
            f"{lines.get('acknowledged')}, lost {lines.get('lost')}, duplicated {lines.get('duplicated')}"
        )
        total = len(client.get("/api/latest/fleet/hosts", headers=admin_headers).json()["hosts"])
        console.print(f"  fleet-stub now knows {total} hosts")
    finally:
        sim.send_signal(signal.SIGTERM)
        sim.wait(30)


def run_demo() -> int:
    shutil.rmtree(DEMO_DIR, ignore_errors=True)
    data_dir = DEMO_DIR / "stub"
    step("starting fleet-stub (HTTPS, self-signed CA, SQLite)")
    proc, info = start_stub(data_dir)
    try:
        console.print(f"  listening on [green]{info['url']}[/], CA {info['ca_cert']}")
        context = ssl.create_default_context(cafile=info["ca_cert"])
        admin_headers = {"Authorization": f"Bearer {info['admin_token']}"}
        with httpx.Client(base_url=info["url"], verify=context, trust_env=False, timeout=30) as client:
            hardware_uuid = str(uuid.uuid4()).upper()
            step("orbit: HEAD /api/fleet/orbit/ping")
            ping = client.head("/api/fleet/orbit/ping")
            console.print(f"  {ping.status_code}, X-Fleet-Capabilities: {ping.headers.get('x-fleet-capabilities')}")
            step("orbit: POST /api/fleet/orbit/enroll")
            orbit_key = client.post(
                "/api/fleet/orbit/enroll",
                json={
                    "enroll_secret": SECRET,
                    "hardware_uuid": hardware_uuid,
                    "hostname": "demo-laptop",
                    "platform": "ubuntu",
                    "computer_name": "demo-laptop",
                },
            ).json()["orbit_node_key"]
            console.print("  orbit node key issued")
            step("osqueryd: POST /api/v1/osquery/enroll with host_details (same hardware UUID)")
            node_key = client.post(
                "/api/v1/osquery/enroll",
                json={
                    "enroll_secret": SECRET,
                    "host_identifier": hardware_uuid,
                    "host_details": {
                        "system_info": {"uuid": hardware_uuid, "hostname": "demo-laptop"},
                        "os_version": {"platform": "ubuntu", "name": "Ubuntu", "version": "24.04"},
                        "osquery_info": {"version": "5.14.1"},
                    },
                },
            ).json()["node_key"]
            config = client.post("/api/v1/osquery/config", json={"node_key": node_key}).json()
            console.print(f"  osquery config options: {config.get('options')}")
            step("admin: define a policy; osqueryd answers it through distributed read/write")
            client.post(
                "/api/latest/fleet/global/policies",
                headers=admin_headers,
                json={
                    "name": "Disk encryption enabled",
                    "query": "SELECT 1 FROM disk_encryption WHERE encrypted = 1",
                    "resolution": "Turn on full-disk encryption in Settings.",
                },
            )
            read = client.post("/api/v1/osquery/distributed/read", json={"node_key": node_key}).json()
            names = sorted(read["queries"])
            console.print(f"  distributed/read handed out: {', '.join(names)}")
            answers: dict[str, list[dict[str, str]]] = {n: [] for n in names if n.startswith("fleet_policy_query_")}
            client.post(
                "/api/v1/osquery/distributed/write",
                json={"node_key": node_key, "queries": answers, "statuses": dict.fromkeys(answers, 0)},
            )
            step("orbit registers a Fleet Desktop token; the tray's summary call")
            token = str(uuid.uuid4())
            client.post("/api/fleet/orbit/device_token", json={"orbit_node_key": orbit_key, "device_auth_token": token})
            summary = client.get(f"/api/latest/fleet/device/{token}/desktop").json()
            console.print(f"  failing policies on this device: [red]{summary['failing_policies_count']}[/]")
            hosts = client.get("/api/latest/fleet/hosts", headers=admin_headers).json()["hosts"]
            table = Table(title="fleet-stub hosts (one record for orbit + osquery)")
            for column in ("id", "hostname", "platform", "osquery_version", "status", "uuid"):
                table.add_column(column)
            for host in hosts:
                table.add_row(
                    *(str(host.get(c)) for c in ("id", "hostname", "platform", "osquery_version", "status", "uuid"))
                )
            console.print(table)
            console.print(f"  My device page: {info['url']}/device/{token}")
            simulate_hosts(client, info, admin_headers)
    finally:
        step("stopping fleet-stub (SIGTERM, graceful)")
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
        console.print(f"  exited with code {code}")
    console.print(
        f"\n[bold]Next:[/] state and logs in {data_dir} (fleet-stub.sqlite3, logs/, fleet-stub.log); "
        "run it yourself with\n  .venv/bin/fleet-stub serve --data-dir .demo/stub --enroll-secret "
        f"{SECRET}\nand read README.md and docs/architecture.md."
    )
    return 0 if code == 0 else 1


def main() -> int:
    try:
        return run_demo()
    except KeyboardInterrupt:
        console.print("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
