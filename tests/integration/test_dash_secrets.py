"""Every hand-off of a secret or token works with a value that starts with "-" (URL-safe base64 does, 1 in 64).

A secret given as a separate argv word (``--admin_token -abc``) is read by argparse as a flag; ours travel as
``--flag=value``, through the environment, or through a ``…-file`` option. Each form is exercised here with real
processes: fleet-stub serve, its admin CLI, osqueryd-sim load, orbitctl package's options, orbit's options and the
environment orbit hands osqueryd.
"""

from __future__ import annotations

import argparse
import json
import ssl
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from orbit.children.osqueryd_child import osqueryd_child
from orbit.children.restart_policy import RestartPolicy
from orbit.options import parse_options
from orbit.root_layout import RootLayout
from osquery_bin_manager.launch_args import LaunchSpec
from packager.cli import parser as orbitctl_parser
from packager.package.package_options import validate
from tests.support.stub_process import StubProcess, clean_env

ENROLL = "-dash-enroll-secret"
FILE_ENROLL = "-dash-secret-from-a-file"
ADMIN = "-dash-admin-token-0123456789"
SIM = [sys.executable, "-m", "osquery_sim"]


@pytest.fixture
def stub(tmp_path: Path) -> StubProcess:
    secrets = tmp_path / "secrets.txt"
    secrets.write_text(f"# one per line\n{FILE_ENROLL}\n")
    token = tmp_path / "admin-token"
    token.write_text(ADMIN + "\n")
    process = StubProcess(
        tmp_path / "stub",
        f"--enroll-secret={ENROLL}",
        "--enroll-secret-file",
        str(secrets),
        "--admin-token-file",
        str(token),
    )
    process.wait_ready()
    return process


def _load(stub: StubProcess, *args: str, seed: str, env: dict[str, str] | None = None) -> dict[str, object]:
    info = json.loads((stub.data_dir / "server.json").read_text())
    argv = [*SIM, "load", "--hosts", "2", "--duration", "3", "--ramp", "0.5", "--progress_interval", "1"]
    argv += ["--seed", seed]  # new hosts each run: the server's line counts are per host
    argv += ["--tls_hostname", str(info["url"]).removeprefix("https://"), "--tls_server_certs", str(info["ca_cert"])]
    result = subprocess.run(
        [*argv, *args], env=clean_env(**(env or {})), capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    summary: dict[str, object] = json.loads(result.stdout)
    return summary


def test_fleet_stub_takes_dash_secrets_and_tokens_as_flag_value_and_files(stub: StubProcess, tmp_path: Path) -> None:
    try:
        info = json.loads((stub.data_dir / "server.json").read_text())
        assert info["admin_token"] == ADMIN
        with httpx.Client(
            verify=ssl.create_default_context(cafile=str(info["ca_cert"])), headers={"Authorization": f"Bearer {ADMIN}"}
        ) as admin:
            assert admin.get(f"{info['url']}/api/latest/fleet/hosts").status_code == 200
        for secret in (ENROLL, FILE_ENROLL):
            with httpx.Client(verify=ssl.create_default_context(cafile=str(info["ca_cert"]))) as client:
                body = {"enroll_secret": secret, "host_identifier": f"host{secret}"}
                answer = client.post(f"{info['url']}/api/v1/osquery/enroll", json=body).json()
            assert answer.get("node_key"), answer
        # the admin CLI reads the token from server.json and sends it as a header
        hosts = subprocess.run(
            [sys.executable, "-m", "server_stub", "hosts", "--data-dir", str(stub.data_dir), "--json"],
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert hosts.returncode == 0, hosts.stderr
        assert len(json.loads(hosts.stdout)["hosts"]) == 2
    finally:
        stub.stop()


def test_osqueryd_sim_load_takes_dash_secrets_by_flag_value_environment_and_files(
    stub: StubProcess, tmp_path: Path
) -> None:
    secret_file, token_file = tmp_path / "enroll", tmp_path / "token"
    secret_file.write_text(FILE_ENROLL + "\n")
    token_file.write_text(ADMIN + "\n")
    try:
        by_flag = _load(stub, f"--enroll_secret={ENROLL}", f"--admin_token={ADMIN}", seed="flag")
        by_env = _load(stub, seed="env", env={"ENROLL_SECRET": ENROLL, "FLEET_ADMIN_TOKEN": ADMIN})
        files = ("--enroll_secret_path", str(secret_file), "--admin_token_file", str(token_file))
        by_file = _load(stub, *files, seed="file")
        for summary in (by_flag, by_env, by_file):
            assert summary["enrolled"] == 2, summary
            lines = summary["log_lines"]
            assert isinstance(lines, dict) and lines["checked_against_server"] is True  # the token was accepted
    finally:
        stub.stop()


def test_orbitctl_package_takes_a_dash_secret_by_flag_value_file_and_environment(tmp_path: Path) -> None:
    base = ["package", "--type", "deb", "--fleet-url", "https://fleet.example.com", "--update-roots", "{}"]
    secret_file = tmp_path / "secret"
    secret_file.write_text(ENROLL + "\n")
    forms: list[tuple[list[str], dict[str, str]]] = [
        ([f"--enroll-secret={ENROLL}"], {}),
        (["--enroll-secret-file", str(secret_file)], {}),
        ([], {"ORBITCTL_ENROLL_SECRET": ENROLL}),
    ]
    for extra, env in forms:
        args: argparse.Namespace = orbitctl_parser().parse_args([*base, *extra])
        assert validate(args, env).enroll_secret == ENROLL


def _not_launched() -> LaunchSpec:
    raise AssertionError("only the environment is looked at")


def test_orbit_takes_a_dash_secret_and_hands_it_to_osqueryd_in_the_environment(tmp_path: Path) -> None:
    assert parse_options([f"--enroll-secret={ENROLL}"], {}).enroll_secret == ENROLL
    assert parse_options([], {"ORBIT_ENROLL_SECRET": ENROLL}).enroll_secret == ENROLL
    layout = RootLayout(tmp_path)
    spec = osqueryd_child(layout, lambda: None, _not_launched, ENROLL, platform="linux", policy=RestartPolicy())
    env = spec.env()
    assert ENROLL in env.values()  # osqueryd reads it with --enroll_secret_env, never from argv
