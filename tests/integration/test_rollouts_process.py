"""Rollouts on fleet-stub as a real process (docs/adr/0017): the ``fleet-stub rollouts`` CLI, the state surviving a
``kill -9`` mid-rollout, and rollouts declared in the ``--config`` file (idempotent across restarts, never
redefined, never stopped by leaving the file)."""

from __future__ import annotations

import json
import signal
import ssl
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.support.agents import host_id_for_uuid
from tests.support.rollout_hosts import FakeOrbit, enroll_orbits, in_wave, publish_repository, rollout, wait_for
from tests.support.stub_process import STUB, StubProcess, clean_env

SECRET = "rollout-secret-1234"
TEAM_SECRET = "rollout-team-5678"


@pytest.fixture(scope="module")
def tuf_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return publish_repository(tmp_path_factory.mktemp("tuf") / "repository")


def _start(data: Path, tuf_repo: Path, *args: str) -> tuple[StubProcess, dict[str, object]]:
    env = clean_env(FLEET_STUB_ENROLL_SECRET=SECRET, FLEET_STUB_ROLLOUT_TICK="0.1")
    stub = StubProcess(data, "--tuf-repo", str(tuf_repo), *args, env=env, output_dir=data.parent / f"{data.name}-out")
    return stub, stub.wait_ready()


def _client(info: dict[str, object], *, admin: bool = False) -> httpx.Client:
    headers = {"Authorization": f"Bearer {info['admin_token']}"} if admin else {}
    context = ssl.create_default_context(cafile=str(info["ca_cert"]))
    return httpx.Client(base_url=str(info["url"]), verify=context, trust_env=False, timeout=30, headers=headers)


def _cli(data: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*STUB, *args[:1], *args[1:2], "--data-dir", str(data), *args[2:]]
        if args[0] == "rollouts"
        else [*STUB, args[0], "--data-dir", str(data), *args[1:]],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=clean_env(),
    )


def _pins(client: httpx.Client, orbits: list[FakeOrbit]) -> dict[str, dict[str, str]]:
    return {o.hardware_uuid: o.channels(client) for o in orbits}


def test_the_rollouts_cli(tmp_path: Path, tuf_repo: Path) -> None:
    data = tmp_path / "data"
    stub, info = _start(data, tuf_repo)
    try:
        with _client(info) as client, _client(info, admin=True) as admin:
            orbits = enroll_orbits(client, 6, secret=SECRET)
            created = _cli(
                data, "rollouts", "create", "--target", "orbit", "--version", "1.4.0", "--from-version", "1.3.0",
                "--waves", "50,100", "--soak", "1h30m", "--max-failed-percent", "20", "--min-healthy-percent", "75",
            )  # fmt: skip
            assert created.returncode == 0, created.stderr
            lines = created.stdout.splitlines()
            assert lines[0] == "rollout 1 orbit-1.4.0: orbit 1.3.0 → 1.4.0, every host: running, wave 1 of 2"
            assert "soak 5400 s per wave" in lines[1]
            assert "halts above 20 % failed" in lines[2] and "below 75 % healthy" in lines[2]
            assert any(line.split()[:3] == ["1", "50", "yes"] for line in lines)
            assert any(line.split()[:2] == ["total", "6"] for line in lines)
            first = in_wave(orbits, 1, [50, 100], 0)
            assert all(o.channels(client)["orbit"] == "1.4.0" for o in first)

            listed = _cli(data, "rollouts", "list")
            assert listed.returncode == 0
            assert listed.stdout.splitlines()[0].split()[:6] == ["ID", "NAME", "TARGET", "FROM", "TO", "STATE"]
            assert listed.stdout.splitlines()[1].split()[:7] == [
                "1",
                "orbit-1.4.0",
                "orbit",
                "1.3.0",
                "1.4.0",
                "running",
                "1/2",
            ]

            status = json.loads(_cli(data, "rollouts", "status", "1", "--json").stdout)["rollout"]
            assert status["halt_rules"] == {"max_failed_percent": 20, "min_healthy_percent": 75}
            assert status["totals"]["targeted"] == 6
            as_listed = json.loads(_cli(data, "rollouts", "list", "--json").stdout)["rollouts"]
            assert [r["id"] for r in as_listed] == [1]

            assert "paused, wave 1 of 2" in _cli(data, "rollouts", "pause", "1").stdout.splitlines()[0]
            assert "running, wave 1 of 2" in _cli(data, "rollouts", "resume", "1").stdout.splitlines()[0]
            aborted = _cli(data, "rollouts", "abort", "1")
            assert "aborted" in aborted.stdout.splitlines()[0] and "events:" in aborted.stdout
            assert {o.channels(client)["orbit"] for o in orbits} == {"1.3.0"}

            host_id = host_id_for_uuid(admin, orbits[0].hardware_uuid)
            restart = _cli(data, "restart-osqueryd", "--host", str(host_id))
            assert restart.returncode == 0, restart.stderr
            request_id = json.loads(restart.stdout)["request_id"]
            assert orbits[0].notifications(client)["restart_osqueryd_request_id"] == request_id
            assert json.loads(_cli(data, "restart-osqueryd", "--team", "0").stdout)["host_count"] == 6

            # errors: the server's reason on stderr, exit 1; bad arguments: argparse's exit 2
            missing = _cli(data, "rollouts", "status", "99")
            assert missing.returncode == 1 and "HTTP 404 rollout 99 not found" in missing.stderr
            unpublished = _cli(data, "rollouts", "create", "--target", "orbit", "--version", "9.9.9")
            assert unpublished.returncode == 1 and "9.9.9 is not published for orbit" in unpublished.stderr
            for bad in (["--soak", "1x"], ["--waves", "1,ten"], ["--target", "kernel"]):
                args = ["rollouts", "create", "--target", "orbit", "--version", "1.4.0", *bad]
                result = _cli(data, *args)
                assert result.returncode == 2 and "error:" in result.stderr, bad
            assert _cli(data, "rollouts", "pause", "1").returncode == 1  # aborted is final: a 409
    finally:
        stub.stop()


def test_a_rollout_survives_kill_9_mid_way(tmp_path: Path, tuf_repo: Path) -> None:
    data = tmp_path / "data"
    stub, info = _start(data, tuf_repo)
    try:
        with _client(info) as client, _client(info, admin=True) as admin:
            orbits = enroll_orbits(client, 10, secret=SECRET)
            body = {"target": "orbit", "version": "1.4.0", "from_version": "1.3.0", "waves": [50, 100]}
            assert admin.post("/api/latest/fleet/rollouts", json={**body, "soak_seconds": 3600}).status_code == 200
            halting = {"target": "osqueryd", "version": "5.11.0", "from_version": "5.12.0", "waves": [100]}
            halted_id = admin.post("/api/latest/fleet/rollouts", json={**halting, "soak_seconds": 0}).json()["rollout"][
                "id"
            ]
            wait_for(lambda: rollout(admin, halted_id)["state"] == "halted")  # nobody healthy after a 0 s soak
            before_pins = _pins(client, orbits)
            before = rollout(admin, 1)
        stub.stop(signal.SIGKILL)
        stub, info = _start(data, tuf_repo)
        with _client(info) as client, _client(info, admin=True) as admin:
            after = rollout(admin, 1)
            for key in ("state", "current_wave", "wave_started_at", "created_at", "wave_status"):
                assert after[key] == before[key], key
            assert rollout(admin, halted_id)["state"] == "halted"
            assert _pins(client, orbits) == before_pins
            assert {p["osqueryd"] for p in before_pins.values()} == {"5.12.0"}  # halted: back on from_version
            assert {o.channels(client)["orbit"] for o in in_wave(orbits, 1, [50, 100], 0)} == {"1.4.0"}
            # and it is still driven: abort after the restart sends everyone back
            assert admin.post("/api/latest/fleet/rollouts/1/abort").json()["rollout"]["state"] == "aborted"
            assert {p["orbit"] for p in _pins(client, orbits).values()} == {"1.3.0"}
    finally:
        stub.stop()


CONFIG = """
[[teams]]
name = "Canaries"
enroll_secrets = ["{team_secret}"]

[[rollouts]]
name = "canary-orbit"
target = "orbit"
version = "1.4.0"
from_version = "1.3.0"
teams = ["Canaries"]
waves = [100]
soak_seconds = 3600
halt_rules = {{ max_failed_percent = 10, min_healthy_percent = 90 }}
"""


def _logged(data: Path, event: str) -> int:
    log = data / "fleet-stub.log"
    return log.read_text().count(f"event={event} ") if log.is_file() else 0


def _reload(stub: StubProcess, data: Path, event: str) -> None:
    before = _logged(data, event)
    stub.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: _logged(data, event) > before, what=f"{event} logged")


def test_rollouts_declared_in_the_config_file(tmp_path: Path, tuf_repo: Path) -> None:
    data = tmp_path / "data"
    config = tmp_path / "fleet.toml"
    config.write_text(CONFIG.format(team_secret=TEAM_SECRET))
    stub, info = _start(data, tuf_repo, "--config", str(config))
    try:
        with _client(info) as client, _client(info, admin=True) as admin:
            members = enroll_orbits(client, 2, secret=TEAM_SECRET)
            others = enroll_orbits(client, 2, secret=SECRET)
            (declared,) = admin.get("/api/latest/fleet/rollouts").json()["rollouts"]
            assert declared["name"] == "canary-orbit" and declared["source"] == "config"
            assert declared["halt_rules"] == {"max_failed_percent": 10, "min_healthy_percent": 90}
            assert {o.channels(client).get("orbit") for o in members} == {"1.4.0"}
            assert {o.channels(client).get("orbit") for o in others} == {None}
            assert admin.post(f"/api/latest/fleet/rollouts/{declared['id']}/pause").status_code == 200
        stub.stop()

        # the same file again: nothing new, and the runtime state (paused) is the rollout's own
        stub, info = _start(data, tuf_repo, "--config", str(config))
        with _client(info, admin=True) as admin:
            (again,) = admin.get("/api/latest/fleet/rollouts").json()["rollouts"]
            assert (again["id"], again["state"]) == (declared["id"], "paused")
            # SIGHUP with a redefinition: refused and logged, nothing changes
            config.write_text(CONFIG.format(team_secret=TEAM_SECRET).replace("waves = [100]", "waves = [50, 100]"))
            _reload(stub, data, "config_reload_failed")
            assert "never redefined" in (data / "fleet-stub.log").read_text()
            assert admin.get("/api/latest/fleet/rollouts").json()["rollouts"][0]["waves"] == [100]
            # left out of the file: it keeps going (only an admin stops a rollout)
            config.write_text(CONFIG.format(team_secret=TEAM_SECRET).split("[[rollouts]]")[0])
            _reload(stub, data, "config_applied")
            assert [r["state"] for r in admin.get("/api/latest/fleet/rollouts").json()["rollouts"]] == ["paused"]
        stub.stop()

        # a start with a redefinition is refused whole, with the reason
        config.write_text(CONFIG.format(team_secret=TEAM_SECRET).replace('version = "1.4.0"', 'version = "1.2.0"'))
        refused = StubProcess(data, "--tuf-repo", str(tuf_repo), "--config", str(config), env=clean_env())
        assert refused.proc.wait(60) == 2
        _out, err = refused.output()
        assert "rollouts: rollout 'canary-orbit' already exists with another definition" in err
        # a version the repository does not have is caught before the file changes anything
        config.write_text(
            CONFIG.format(team_secret=TEAM_SECRET).replace("canary-orbit", "next").replace('"1.4.0"', '"7.7.7"')
            + '\n[[teams]]\nname = "Never"\n'
        )
        refused = StubProcess(data, "--tuf-repo", str(tuf_repo), "--config", str(config), env=clean_env())
        assert refused.proc.wait(60) == 2
        assert "7.7.7 is not published for orbit" in refused.output()[1]
        stub, info = _start(data, tuf_repo)
        with _client(info, admin=True) as admin:
            assert "Never" not in {t["name"] for t in admin.get("/api/latest/fleet/teams").json()["teams"]}
    finally:
        stub.stop()
