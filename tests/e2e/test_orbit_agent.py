"""orbit end to end: fleet-stub + a TUF repository from ``orbitctl updates`` + orbit (run as a service would run it)
+ osqueryd-sim published as the osqueryd target. Each test asserts what a user or an admin would see."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import psutil
import pytest

from tests.e2e.conftest import running
from tests.support.orbit_world import OrbitWorld, wait_for

pytestmark = pytest.mark.timeout(240)


def one_host(world: OrbitWorld) -> dict[str, object]:
    hosts = world.hosts()
    assert len(hosts) == 1, hosts
    return hosts[0]


def test_enroll_gives_one_host_with_orbit_and_osquery_data(world: OrbitWorld) -> None:
    service = world.start_service()
    status = running(world)
    assert status["version"] == "1.0.0"
    host = wait_for(
        lambda: (
            (hosts := world.hosts()) and hosts[0].get("osquery_version") and hosts[0].get("orbit_version") and hosts[0]
        ),
        timeout=60,
        what="osquery and orbit data on the host (orbit_info served through orbit's osquery extension)",
    )
    assert host["osquery_version"] == "5.14.1+sim"
    assert host["orbit_version"] == "1.0.0"
    assert len(world.hosts()) == 1  # orbit's and osquery's enrollments are one host record
    key = world.root / "secret-orbit-node-key.txt"
    assert key.stat().st_mode & 0o777 == 0o600
    assert not key.read_text().endswith("\n")
    # the secret is in no process's argv, and reaches osqueryd only through its environment
    osqueryd = psutil.Process(world.osqueryd_pid())
    for process in (psutil.Process(service.pid), osqueryd):
        assert not any("e2e-enroll-secret" in part for part in process.cmdline())
    assert osqueryd.environ().get("ENROLL_SECRET") == "e2e-enroll-secret-0123456789"
    assert "ORBIT_ENROLL_SECRET" not in osqueryd.environ()
    assert "e2e-enroll-secret" not in service.log()
    # osqueryd's command line is Fleet's: v1 endpoints, the stub's CA, protected flags after the flagfile
    argv = osqueryd.cmdline()
    assert "--enroll_tls_endpoint=/api/v1/osquery/enroll" in argv
    assert argv[argv.index("--tls_server_certs") + 1] == world.ca
    assert argv[-4:] == ["--host-identifier", "uuid", "--database_path", str(world.root / "osquery.db")]
    # the orbit binary it runs is the one TUF verified, in Fleet's layout
    assert (world.root / "bin" / "osqueryd" / "linux" / "stable" / "osqueryd").is_file()
    # orbit doctor agrees
    doctor = subprocess.run(
        [sys.executable, "-m", "orbit", "doctor", "--json", *world.orbit_args()],
        capture_output=True,
        text=True,
        env=world.orbit_env(),
        timeout=60,
        check=False,
    )
    report = json.loads(doctor.stdout)
    verdicts = {check["name"]: check["status"] for check in report["checks"]}
    assert verdicts["agent"] == "pass" and verdicts["enrolled"] == "pass" and verdicts["osqueryd"] == "pass", report
    assert doctor.returncode == 0, report


def test_killed_osqueryd_is_replaced_and_orbit_stays(world: OrbitWorld) -> None:
    service = world.start_service()
    running(world)
    orbit_pid = service.pid
    first = world.osqueryd_pid()
    assert first is not None
    os.kill(first, signal.SIGKILL)
    second = wait_for(lambda: (pid := world.osqueryd_pid()) not in (None, first) and pid, timeout=20)
    assert psutil.pid_exists(second)
    assert service.pid == orbit_pid and len(service.starts) == 1
    status = world.status()
    assert status["children"]["osqueryd"]["restarts"] == 1


def test_crash_looping_osqueryd_backs_off_and_orbit_stays_up(world: OrbitWorld) -> None:
    service = world.start_service("--", "--sim_crash_after", "0.3")
    wait_for(
        lambda: (world.status().get("children") or {}).get("osqueryd", {}).get("breaker") == "open",
        timeout=90,
        what="the crash-loop breaker to open",
    )
    child = world.status()["children"]["osqueryd"]
    assert child["consecutive_failures"] >= 5
    assert child["state"] in ("backing_off", "running", "starting")
    assert len(service.starts) == 1 and service.pid is not None  # orbit never exited
    assert "event=child_exited name=osqueryd" in service.log()


def test_flags_from_the_server_restart_only_osqueryd(world: OrbitWorld) -> None:
    service = world.start_service()
    running(world)
    orbit_pid, first = service.pid, world.osqueryd_pid()
    with world.admin() as admin:
        response = admin.patch(
            "/api/latest/fleet/config",
            json={"agent_options": {"config": {}, "command_line_flags": {"distributed_interval": 7, "verbose": True}}},
        )
        assert response.status_code == 200, response.text
    flags = world.root / "osquery.flags"
    wait_for(lambda: flags.is_file() and "--distributed_interval=7" in flags.read_text(), what="osquery.flags")
    assert flags.read_text() == "--distributed_interval=7\n--verbose=true\n"
    assert flags.stat().st_mode & 0o777 == 0o600
    second = wait_for(lambda: (pid := world.osqueryd_pid()) not in (None, first) and pid, what="osqueryd restart")
    argv = psutil.Process(second).cmdline()
    assert argv[argv.index("--flagfile") + 1] == str(flags)
    assert service.pid == orbit_pid and len(service.starts) == 1
    mtime = flags.stat().st_mtime_ns
    # unchanged flags on later polls: no rewrite, no restart
    wait_for(lambda: world.status()["config"]["polls"] >= 4, what="more config polls")
    assert flags.stat().st_mtime_ns == mtime and world.osqueryd_pid() == second


def test_new_osqueryd_is_installed_and_running_after_one_check(world: OrbitWorld) -> None:
    service = world.start_service()
    running(world)
    orbit_pid, first = service.pid, world.osqueryd_pid()
    build = world.publish_osqueryd("5.15.0")
    service.signal(signal.SIGHUP)  # check now instead of in 15 minutes
    installed = world.root / "bin" / "osqueryd" / "linux" / "stable" / "osqueryd"
    wait_for(lambda: installed.read_bytes() == build.read_bytes(), timeout=60, what="the new osqueryd installed")
    wait_for(lambda: (pid := world.osqueryd_pid()) not in (None, first) and pid, what="osqueryd restarted")
    assert service.pid == orbit_pid and len(service.starts) == 1
    targets = world.status()["updates"]["last_check"]["targets"]
    assert {"target": "osqueryd/linux/stable/osqueryd", "outcome": "installed", "version": "5.15.0", "error": None} in (
        targets
    )
    # the server sees the update: the new osqueryd reports the version it was published as
    with world.admin() as admin:
        live = admin.post(
            f"/api/latest/fleet/hosts/{world.hosts()[0]['id']}/query",
            json={"query": "SELECT version FROM osquery_info"},
        )
    assert live.json()["rows"] == [{"version": "5.15.0+sim"}], live.text


def test_tampered_target_is_rejected_and_nothing_changes(world: OrbitWorld) -> None:
    service = world.start_service()
    running(world)
    first = world.osqueryd_pid()
    world.publish_osqueryd("5.15.0")
    for path in (world.repo / "repository" / "targets" / "osqueryd" / "linux" / "stable").iterdir():
        with path.open("r+b") as handle:  # same length, one byte different
            data = handle.read()
            handle.seek(len(data) // 2)
            handle.write(b"X" if data[len(data) // 2 : len(data) // 2 + 1] != b"X" else b"Y")
    installed = world.root / "bin" / "osqueryd" / "linux" / "stable" / "osqueryd"
    before = installed.read_bytes()
    service.signal(signal.SIGHUP)
    report = wait_for(
        lambda: (
            any(
                t["outcome"] == "failed" and t["version"] == "5.15.0"
                for t in ((world.status().get("updates") or {}).get("last_check") or {}).get("targets", [])
            )
            and world.status()["updates"]["last_check"]
        ),
        timeout=60,
        what="a failed update check",
    )
    failed = next(t for t in report["targets"] if t["outcome"] == "failed")
    assert "hash" in failed["error"].lower() or "length" in failed["error"].lower(), failed
    assert installed.read_bytes() == before
    assert world.osqueryd_pid() == first
    assert not list((world.root / "staging").iterdir())


def test_self_update_to_a_good_orbit_is_confirmed(world: OrbitWorld) -> None:
    service = world.start_service()
    running(world)
    pid = service.pid
    build = world.publish_orbit("1.1.0")
    service.signal(signal.SIGHUP)
    wait_for(lambda: world.status().get("version") == "1.1.0", timeout=90, what="orbit 1.1.0 running")
    wait_for(lambda: world.status().get("start_kind") == "confirmed", timeout=60, what="the trial confirmed")
    assert service.pid == pid  # exec'd in place: the service manager saw no exit
    link = world.root / "bin" / "orbit" / "orbit"
    assert link.read_bytes() == build.read_bytes()
    assert not (world.root / "state" / "trial-boot.json").exists()
    running(world)
    # the trial's outcome reaches the stub (it advertises update_outcomes) and leaves orbit's queue
    sent = wait_for(lambda: world.server_outcomes("orbit"), timeout=60, what="the outcome stored by the stub")
    assert {"version": "1.1.0", "previous_version": "1.0.0", "outcome": "confirmed"}.items() <= sent[-1].items()
    wait_for(lambda: not queued_outcomes(world, "orbit"), timeout=60, what="orbit's queue emptied")


def queued_outcomes(world: OrbitWorld, target: str) -> list[dict[str, object]]:
    path = world.root / "state" / "update-outcomes.json"
    return [item for item in json.loads(path.read_text()) if item["target"] == target] if path.exists() else []


def test_broken_orbit_is_rolled_back_and_not_retried(world: OrbitWorld) -> None:
    service = world.start_service()
    running(world)
    # passes the installer's `--help` check, then fails at every start
    broken = 'case "$1" in --help) echo "usage: orbit"; exit 0;; esac\necho "orbit 2.0.0: broken build" >&2\nexit 1\n'
    world.publish_orbit("2.0.0", body=broken)
    service.signal(signal.SIGHUP)
    wait_for(lambda: 1 in service.exits, timeout=90, what="the broken orbit to exit")
    status = wait_for(
        lambda: (status := world.status()).get("quarantined") and status.get("pid") == service.pid and status,
        timeout=90,
        what="the old orbit running again with the bad version quarantined",
    )
    assert status["version"] == "1.0.0"
    assert status["quarantined"][0]["version"] == "2.0.0"
    assert status["rollbacks"][0]["failed_version"] == "2.0.0"
    running(world)
    link = world.root / "bin" / "orbit" / "orbit"
    assert b"orbit 1.0.0" in link.read_bytes()
    starts = len(service.starts)
    service.signal(signal.SIGHUP)  # a new check must not try 2.0.0 again
    wait_for(
        lambda: any(
            t["outcome"] == "quarantined"
            for t in ((world.status().get("updates") or {}).get("last_check") or {}).get("targets", [])
        ),
        timeout=60,
        what="the quarantined outcome",
    )
    assert len(service.starts) == starts
    assert "event=self_update_rolled_back" in service.log()
    [outcome] = wait_for(lambda: world.server_outcomes("orbit"), timeout=60, what="the rollback reported")
    assert outcome["outcome"] == "rolled_back" and outcome["version"] == "2.0.0"
    assert outcome["previous_version"] == "1.0.0" and outcome["channel"] == "stable"
    assert "exited before it was confirmed healthy" in str(outcome["reason"])
