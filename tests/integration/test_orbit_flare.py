"""``orbit flare``: the support bundle holds what support needs and no secret, even where a log leaked one."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
import tarfile
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.support.stub_process import clean_env

ENROLL = "-flare-enroll-secret-XYZ"
FILE_SECRET = "file-enroll-secret-ABCDEF"
NODE_KEY = "NODEKEY-0123456789abcdefghij"
DEVICE_TOKEN = "3f1c9a52-7d7e-4bb1-9a3e-0a1b2c3d4e5f"
BEARER = "admintoken-should-not-travel"


def _private_key_pem() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def _host(root: Path) -> dict[str, str]:
    """A root dir as a running host has it, with secrets in their files and some leaked into logs."""
    root.mkdir()
    client_key = _private_key_pem()
    secrets = {
        "enroll": ENROLL,
        "file secret": FILE_SECRET,
        "node key": NODE_KEY,
        "device token": DEVICE_TOKEN,
        "bearer": BEARER,
        "client key": client_key.splitlines()[1],
    }
    (root / "secret-orbit-node-key.txt").write_text(NODE_KEY)
    (root / "secret-orbit-node-key.txt").chmod(0o600)
    (root / "identifier").write_text(DEVICE_TOKEN)
    (root / "secret.txt").write_text(FILE_SECRET)
    (root / "fleet_client.key").write_text(client_key)
    (root / "update_client.key").write_text(_private_key_pem())
    (root / "state").mkdir()
    (root / "state" / "status.json").write_text(
        json.dumps({"version": "1.0.0", "children": {"osqueryd": {"restarts": 3, "last_exit_code": -9}}})
    )
    (root / "tuf").mkdir()
    (root / "tuf" / "root.json").write_text(json.dumps({"signed": {"version": 2, "expires": "2030-01-01T00:00:00Z"}}))
    (root / "orbit.log").write_text(
        "\n".join(
            [
                "INFO orbit.agent event=starting version=1.0.0",
                f"DEBUG leaked enroll_secret={ENROLL} by a careless debug line",
                f'DEBUG body {{"orbit_node_key": "{NODE_KEY}", "hostname": "laptop"}}',
                f"DEBUG GET /api/latest/fleet/device/{DEVICE_TOKEN}/desktop",
                f"DEBUG header Authorization: Bearer {BEARER}",
                f"DEBUG a key was printed:\n{client_key}",
                f"DEBUG secret.txt said {FILE_SECRET}",
                "INFO orbit event=exiting reason='signal SIGTERM'",
            ]
        )
        + "\n"
    )
    (root / "osquery_log").mkdir()
    (root / "osquery_log" / "osqueryd.results.log").write_text(json.dumps({"node_key": NODE_KEY, "rows": 1}) + "\n")
    return secrets


def test_the_bundle_has_the_diagnostics_and_no_secret(tmp_path: Path) -> None:
    root = tmp_path / "orbit-root"
    secrets = _host(root)
    output = tmp_path / "flare.tar.gz"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "orbit",
            "flare",
            "--root-dir",
            str(root),
            "--fleet-url",
            "https://127.0.0.1:9",  # nothing listens: doctor's server check fails fast, the flare goes on
            "--log-file",
            str(root / "orbit.log"),
            "--output",
            str(output),
        ],
        env=clean_env(ORBIT_ENROLL_SECRET=ENROLL),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert stat.S_IMODE(output.stat().st_mode) == 0o600
    with tarfile.open(output) as tar:
        members = {m.name.removeprefix("orbit-flare/"): tar.extractfile(m).read() for m in tar if m.isfile()}  # type: ignore[union-attr]
    for name in (
        "manifest.json",
        "doctor.json",
        "options.json",
        "status.json",
        "crashes.json",
        "versions.json",
        "root-listing.txt",
        "tuf/summary.json",
        "tuf/root.json",
        "logs/orbit.log",
        "logs/osqueryd.results.log",
    ):
        assert name in members, sorted(members)
    # not one secret, anywhere: content, names, not in a changed case either
    everything = b"\n".join([*members.values(), *(n.encode() for n in members)])
    for what, value in secrets.items():
        assert value.encode() not in everything, f"the {what} is in the bundle"
    assert b"PRIVATE KEY" not in everything
    # what support needs is still there, with the secrets marked
    log = members["logs/orbit.log"].decode()
    assert "event=starting version=1.0.0" in log and "event=exiting" in log
    assert "<redacted:enroll-secret>" in log and "<redacted:node-key>" in log and "<redacted:device-token>" in log
    options = json.loads(members["options.json"])
    assert options["enroll_secret"] == "<redacted>" and options["fleet_url"] == "https://127.0.0.1:9"
    listing = members["root-listing.txt"].decode()
    assert "-0600" in listing and "secret-orbit-node-key.txt" in listing  # modes and names, never contents
    crashes = json.loads(members["crashes.json"])
    assert crashes["children"]["osqueryd"]["restarts"] == 3
    assert json.loads(members["tuf/summary.json"])["root.json"] == {"version": 2, "expires": "2030-01-01T00:00:00Z"}
    checks = {check["name"] for check in json.loads(members["doctor.json"])["checks"]}
    assert "server" in checks
    manifest = json.loads(members["manifest.json"])
    assert "logs/orbit.log" in manifest["members"]
