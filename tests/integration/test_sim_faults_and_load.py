"""osqueryd-sim's fault knobs (for testing orbit's supervision) and its load mode."""

from __future__ import annotations

import json
import signal
import subprocess
import time
import uuid
from pathlib import Path

import psutil
import pytest

from tests.support.sim_process import SIM, SimProcess, orbit_style_args, wait_for
from tests.support.stub_process import StubProcess
from tests.support.stub_server import GLOBAL_SECRET, RunningStub, running_stub


def _sim(tmp_path: Path, stub: RunningStub, *extra: str) -> SimProcess:
    root = tmp_path / "sim"
    root.mkdir(exist_ok=True)
    args = orbit_style_args(root, stub.url, stub.ca_path, f"--sim_uuid={uuid.uuid4()}", *extra)
    return SimProcess(args, secret=GLOBAL_SECRET, log_path=root / "sim.log")


def _enrolled(stub: RunningStub) -> bool:
    with stub.admin() as admin:
        return bool(admin.get("/api/latest/fleet/hosts").json()["hosts"])


def _logged(tmp_path: Path, event: str) -> bool:
    """Whether the sim has logged ``event`` (its output goes to ``sim/sim.log``)."""
    log = tmp_path / "sim" / "sim.log"
    return log.is_file() and f"event={event}".encode() in log.read_bytes()


def test_sigterm_stops_gracefully(tmp_path: Path, stub: RunningStub) -> None:
    sim = _sim(tmp_path, stub)
    wait_for(lambda: _enrolled(stub))
    wait_for((tmp_path / "sim" / "orbit-osquery.em").exists)
    assert sim.stop(signal.SIGTERM) == 0
    assert not (tmp_path / "sim" / "osquery.pid").exists()


def test_crash_after_exits_with_the_given_code_and_leaves_the_pidfile(tmp_path: Path, stub: RunningStub) -> None:
    sim = _sim(tmp_path, stub, "--sim_crash_after=1", "--sim_exit_code=3")
    assert sim.proc.wait(30) == 3
    assert (tmp_path / "sim" / "osquery.pid").exists()  # a crash does not clean up; the next start uses --force


def test_ignore_sigterm_needs_sigkill(tmp_path: Path, stub: RunningStub) -> None:
    sim = _sim(tmp_path, stub, "--sim_ignore_sigterm")
    wait_for(lambda: _enrolled(stub))
    sim.proc.send_signal(signal.SIGTERM)
    wait_for(lambda: _logged(tmp_path, "sigterm_ignored"), timeout=60)  # the handler ran, and returned
    assert sim.proc.poll() is None
    assert sim.stop(signal.SIGINT) == 0  # SIGINT is still honoured


def test_hang_ignores_every_polite_signal(tmp_path: Path, stub: RunningStub) -> None:
    sim = _sim(tmp_path, stub, "--sim_hang_after=0.5")
    wait_for(lambda: _logged(tmp_path, "sim_hang"), timeout=60)  # logged just before its loop stops for good
    for sig in (signal.SIGTERM, signal.SIGINT):
        sim.proc.send_signal(sig)
    with pytest.raises(subprocess.TimeoutExpired):
        sim.proc.wait(2)
    assert sim.stop(signal.SIGKILL) == -signal.SIGKILL


def test_slow_start_delays_enrollment(tmp_path: Path, stub: RunningStub) -> None:
    started = time.monotonic()
    sim = _sim(tmp_path, stub, "--sim_slow_start=2")
    try:
        wait_for(lambda: _enrolled(stub))
        assert time.monotonic() - started >= 2  # not before the slow start is over
    finally:
        sim.stop()


def test_memory_growth(tmp_path: Path, stub: RunningStub) -> None:
    sim = _sim(tmp_path, stub, "--sim_memory_growth_mb_per_min=1200")
    try:
        process = psutil.Process(sim.proc.pid)
        wait_for(lambda: _enrolled(stub))
        before = process.memory_info().rss
        # 1 200 MB/min is 20 MB a second: 30 MB more within a minute, however loaded the machine is
        wait_for(lambda: process.memory_info().rss - before > 30 * 1024 * 1024, timeout=60)
    finally:
        sim.stop()


def test_unknown_flag_fails_start_like_osquery(tmp_path: Path) -> None:
    result = subprocess.run([*SIM, "--no_such_flag=1"], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 1
    assert "ERROR: unknown command line flag 'no_such_flag'" in result.stderr


def test_version_and_help(tmp_path: Path) -> None:
    version = subprocess.run([*SIM, "--version"], capture_output=True, text=True, timeout=60, check=True)
    assert version.stdout.strip() == "osqueryd version 5.14.1+sim"
    usage = subprocess.run([*SIM, "--help"], capture_output=True, text=True, timeout=60, check=True)
    assert "--tls_hostname" in usage.stdout and "simulator" in usage.stdout


def test_load_mode_with_orbit_reports_no_loss(stub: RunningStub) -> None:
    result = subprocess.run(
        [
            *SIM,
            "load",
            "--hosts",
            "25",
            "--tls_hostname",
            stub.url.removeprefix("https://"),
            "--tls_server_certs",
            str(stub.ca_path),
            f"--enroll_secret={GLOBAL_SECRET}",
            "--duration",
            "6",
            "--duration-after-enrollment",  # on a busy machine 25 enrollments may take more than the 6 s
            "--with-orbit",
            "--ramp",
            "1",
            f"--admin_token={stub.admin_token}",
            "--progress_interval",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["enrolled"] == 25
    assert summary["errors"] == 0
    lines = summary["log_lines"]
    assert lines["checked_against_server"] is True
    assert lines["lost"] == 0 and lines["duplicated"] == 0 and lines["acknowledged"] >= 25
    endpoints = summary["endpoints"]
    assert endpoints["/api/v1/osquery/enroll"]["requests"] == 25
    assert endpoints["/api/fleet/orbit/enroll"]["requests"] == 25
    assert endpoints["/api/fleet/orbit/device_token"]["requests"] == 25
    assert "enrolled=25/25" in result.stderr
    with stub.admin() as admin:
        hosts = admin.get("/api/latest/fleet/hosts").json()["hosts"]
    assert len(hosts) == 25  # orbit and osquery traffic of one simulated host land on one record
    assert len({h["hostname"] for h in hosts}) == 25


@pytest.mark.parametrize("after_enrollment", [True, False], ids=["after-enrollment", "from-start"])
def test_duration_after_enrollment_waits_for_a_server_that_comes_late(tmp_path: Path, after_enrollment: bool) -> None:
    """``--duration-after-enrollment``: the run's seconds start once every host is in, so a server that is down at
    first (or a busy machine) does not end a short run with hosts still enrolling. Without it, the same run ends
    before the server is up, with nobody enrolled."""
    data = tmp_path / "data"
    first = StubProcess(data, f"--enroll-secret={GLOBAL_SECRET}")
    info = first.wait_ready()  # makes the CA the load trusts, and a port the second start listens on again
    assert first.stop() == 0
    address = str(info["url"]).removeprefix("https://")
    argv = [*SIM, "load", "--hosts", "5", "--tls_hostname", address, "--tls_server_certs", str(info["ca_cert"])]
    argv += [f"--enroll_secret={GLOBAL_SECRET}", "--duration", "1", "--ramp", "0.2", "--progress_interval", "0.5"]
    load = subprocess.Popen(
        [*argv, *(["--duration-after-enrollment"] if after_enrollment else [])],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    second: StubProcess | None = None
    try:
        assert load.stderr is not None
        for line in load.stderr:  # the first progress line with a failed enrollment: the server was down for it
            if "errors=" in line and "errors=0 " not in line:
                break
        if after_enrollment:
            second = StubProcess(data, f"--enroll-secret={GLOBAL_SECRET}", "--listen", address)
            second.wait_ready()
        out, _ = load.communicate(timeout=120)
    finally:
        if load.poll() is None:
            load.kill()
            load.wait()
        if second is not None:
            second.stop()
    assert load.returncode == 0
    summary = json.loads(out)
    assert summary["enrolled"] == (5 if after_enrollment else 0), summary


def test_load_mode_against_a_dead_server_ends_on_time_and_reports_errors(tmp_path: Path) -> None:
    import socket  # noqa: PLC0415

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens once closed
    began = time.monotonic()
    result = subprocess.run(
        [
            *SIM,
            "load",
            "--hosts",
            "20",
            "--tls_hostname",
            f"127.0.0.1:{port}",
            "--enroll_secret=x",
            "--duration",
            "3",
            "--ramp",
            "0.5",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert time.monotonic() - began < 30
    summary = json.loads(result.stdout)
    assert summary["enrolled"] == 0 and summary["errors"] > 0
    assert summary["log_lines"]["lost"] == 0  # nothing was produced that could be lost


@pytest.mark.parametrize("takes_outcomes", [True, False], ids=["fleet-stub", "like-real-fleet"])
def test_load_hosts_follow_pinned_versions_and_a_share_fails(tmp_path: Path, takes_outcomes: bool) -> None:
    """``--with-orbit`` hosts run the osqueryd version the server pins (the server sees it in osquery_info); the
    deterministic share chosen by ``--fail-fraction-on`` goes back to the baseline. Outcomes go to a server that
    advertises ``update_outcomes``; one that does not (a real Fleet server) receives none."""
    from osquery_sim.agent_updates import FailureRule, UpdateBehaviour  # noqa: PLC0415 - the sim's own rule

    hosts = 12
    capabilities = ("orbit_endpoints", "token_rotation", *(("update_outcomes",) if takes_outcomes else ()))
    with running_stub(tmp_path / "stub", detail_update_interval=1.0, capabilities=capabilities) as stub:
        with stub.admin() as admin:
            answer = admin.patch(
                "/api/latest/fleet/config",
                json={"agent_options": {"config": {}, "update_channels": {"osqueryd": "5.15.0"}}},
            )
            assert answer.status_code == 200, answer.text
        result = subprocess.run(
            [
                *SIM,
                "load",
                "--hosts",
                str(hosts),
                "--tls_hostname",
                stub.url.removeprefix("https://"),
                "--tls_server_certs",
                str(stub.ca_path),
                f"--enroll_secret={GLOBAL_SECRET}",
                "--duration",
                "12",
                "--ramp",
                "0.5",
                "--distributed_interval",
                "1",
                "--with-orbit",
                "--orbit-config-interval",
                "1",
                "--stable-period",
                "2",
                "--failure-after",
                "1",
                "--fail-fraction-on",
                "osqueryd:5.15.0=0.5",
                "--seed",
                "pin-test",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        summary = json.loads(result.stdout)
        behaviour = UpdateBehaviour({}, (FailureRule("5.15.0", 0.5, "osqueryd"),), seed="pin-test")
        uuids = [str(uuid.uuid5(uuid.NAMESPACE_URL, f"osqueryd-sim/pin-test/{i}")) for i in range(hosts)]
        failing = {u for u in uuids if behaviour.fails(u, "osqueryd", "5.15.0")}
        assert 0 < len(failing) < hosts  # the seed gives both kinds
        versions = summary["agent_updates"]["versions"]["osqueryd"]
        # the failing share crash-loops on 5.15.0 until the server pins another version (none does here)
        assert versions["5.15.0"] == {"ever_ran": hosts, "running": hosts, "failed": len(failing)}
        if takes_outcomes:
            assert summary["agent_updates"]["outcomes_sent"] == hosts  # one outcome per host: confirmed or crash_loop
            assert summary["agent_updates"]["outcomes_unsent"] == 0
            assert summary["endpoints"]["/api/fleet/orbit/update_outcomes"]["errors"] == 0
        else:
            assert summary["agent_updates"]["outcomes_sent"] == 0  # no capability, nothing sent …
            assert summary["agent_updates"]["outcomes_unsent"] == hosts  # … and nothing lost
            assert "/api/fleet/orbit/update_outcomes" not in summary["endpoints"]
        with stub.admin() as admin:
            seen = {h["uuid"]: h for h in admin.get("/api/latest/fleet/hosts").json()["hosts"]}
        assert {seen[u]["osquery_version"] for u in uuids} == {"5.15.0+sim"}
        assert {seen[u]["orbit_version"] for u in uuids} == {"1.0.0"}  # orbit_info served like orbit's extension
