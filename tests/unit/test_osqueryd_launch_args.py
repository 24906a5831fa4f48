"""The osqueryd command line orbit builds: Fleet's flags in Fleet's order, protected flags after the flagfile."""

from __future__ import annotations

import json
import uuid
from pathlib import Path, PurePosixPath

import pytest

from osquery_bin_manager.host_info import HostInfoError, parse_host_info
from osquery_bin_manager.launch_args import FleetConnection, LaunchError, LaunchSpec, build_args, child_environment

ROOT = PurePosixPath("/opt/orbit")


def test_typical_linux_command_line_matches_fleets() -> None:
    spec = LaunchSpec(
        root_dir=ROOT,
        fleet=FleetConnection(url="https://fleet.example.com"),
        certs_bundle=ROOT / "certs.pem",
        flagfile=ROOT / "osquery.flags",
    )
    args = build_args(spec)
    assert args[:5] == [
        "--pidfile=/opt/orbit/osquery.pid",
        "--extensions_socket=/opt/orbit/orbit-osquery.em",
        "--logger_path=/opt/orbit/osquery_log",
        "--enroll_secret_env",
        "ENROLL_SECRET",
    ]
    assert "--tls_hostname=fleet.example.com" in args
    assert "--enroll_tls_endpoint=/api/v1/osquery/enroll" in args
    assert "--distributed_tls_max_attempts=10" in args and "--carver_block_size=2000000" in args
    tail = args[args.index("--tls_server_certs") :]
    assert tail == [
        "--tls_server_certs",
        "/opt/orbit/certs.pem",
        "--force",
        "--flagfile",
        "/opt/orbit/osquery.flags",
        "--host-identifier",
        "uuid",
        "--database_path",
        "/opt/orbit/osquery.db",
    ]
    assert args.index("--host_identifier=uuid") < args.index("--flagfile") < args.index("--host-identifier")


def test_url_prefix_port_certificates_mtls_debug_and_passthrough() -> None:
    spec = LaunchSpec(
        root_dir=ROOT,
        fleet=FleetConnection(
            url="https://fleet.example.com:8443/fleet/",
            certificate=Path("/etc/fleet.pem"),
            client_cert=Path("/opt/orbit/fleet_client.crt"),
            client_key=Path("/opt/orbit/fleet_client.key"),
        ),
        certs_bundle=ROOT / "certs.pem",
        debug=True,
        host_identifier="instance",
        database_path=PurePosixPath("/var/db/osquery.db"),
        extensions_autoload=ROOT / "extensions.load",
        passthrough=("--verbose=false",),
    )
    args = build_args(spec)
    assert "--tls_hostname=fleet.example.com:8443" in args
    assert "--config_tls_endpoint=/fleet/api/v1/osquery/config" in args
    assert args[args.index("--tls_server_certs") + 1] == "/etc/fleet.pem"  # the Fleet certificate wins
    assert args[args.index("--tls_client_cert") + 1] == "/opt/orbit/fleet_client.crt"
    assert args[-7:] == [
        "--host-identifier",
        "instance",
        "--database_path",
        "/var/db/osquery.db",
        "--extensions_autoload",
        "/opt/orbit/extensions.load",
        "--verbose=false",
    ]
    assert args[-1] == "--verbose=false"
    assert args.index("--verbose") < args.index("--host-identifier")


def test_insecure_mode_uses_the_local_proxy() -> None:
    spec = LaunchSpec(
        root_dir=ROOT,
        fleet=FleetConnection(url="https://fleet.example.com", insecure_proxy_port=41234),
        proxy_certificate=ROOT / "proxy" / "fleet.crt",
    )
    args = build_args(spec)
    assert "--tls_hostname=localhost:41234" in args
    assert args[args.index("--tls_server_certs") + 1] == "/opt/orbit/proxy/fleet.crt"


def test_without_fleet_and_on_windows() -> None:
    args = build_args(LaunchSpec(root_dir=PurePosixPath("C:/Program Files/Orbit"), platform="windows"))
    assert "--extensions_socket=\\\\.\\pipe\\orbit-osquery-extension" in args
    assert not any(a.startswith("--tls_hostname") for a in args) and "--enroll_secret_env" not in args


def test_invalid_inputs() -> None:
    with pytest.raises(LaunchError):
        build_args(LaunchSpec(root_dir=ROOT, host_identifier="hostname"))
    with pytest.raises(LaunchError):
        build_args(LaunchSpec(root_dir=ROOT, fleet=FleetConnection(url="fleet.example.com")))


def test_the_secret_travels_only_in_the_environment() -> None:
    spec = LaunchSpec(root_dir=ROOT, fleet=FleetConnection(url="https://f.example.com"))
    assert not any("s3cret" in a for a in build_args(spec))
    assert child_environment("s3cret", "linux") == {"ENROLL_SECRET": "s3cret"}
    assert child_environment("s3cret", "windows", "C:") == {"ENROLL_SECRET": "s3cret", "SystemDrive": "C:"}
    assert child_environment(None, "linux") == {}


def test_host_info_parsing() -> None:
    row = {"uuid": str(uuid.uuid4()), "hostname": "h", "platform": "ubuntu", "osquery_version": "5.14.1"}
    info = parse_host_info(json.dumps([row]))
    assert info.hardware_uuid == row["uuid"] and info.platform == "ubuntu"
    for bad in ("", "not json", "[]", json.dumps([row, row]), json.dumps([{"uuid": ""}]), "{}"):
        with pytest.raises(HostInfoError):
            parse_host_info(bad)
