"""``orbitctl updates``: a repository python-tuf's client trusts, and bad input that changes nothing."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from tuf.ngclient import Updater

ORBITCTL = [sys.executable, "-m", "packager"]
PASSPHRASES = {
    "ORBITCTL_ROOT_PASSPHRASE": "root-passphrase",
    "ORBITCTL_TARGETS_PASSPHRASE": "targets-passphrase",
    "ORBITCTL_SNAPSHOT_PASSPHRASE": "snapshot-passphrase",
    "ORBITCTL_TIMESTAMP_PASSPHRASE": "timestamp-passphrase",
}


def orbitctl(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("ORBITCTL_")}
    full_env.update(PASSPHRASES if env is None else env)
    return subprocess.run(
        [*ORBITCTL, "updates", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=120,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def ok(*args: str) -> str:
    result = orbitctl(*args)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = tmp_path / "repo"
    ok("init", "--path", str(path))
    return path


@pytest.fixture
def served(repo: Path) -> Iterator[str]:
    handler = partial(SimpleHTTPRequestHandler, directory=str(repo / "repository"))
    handler.log_message = lambda *args: None  # type: ignore[method-assign]
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def client(tmp_path: Path, url: str, trusted_root: bytes, name: str = "client") -> Updater:
    cache = tmp_path / name
    cache.mkdir(exist_ok=True)
    (cache / "targets").mkdir(exist_ok=True)
    return Updater(
        metadata_dir=str(cache),
        metadata_base_url=f"{url}/",
        target_dir=str(cache / "targets"),
        target_base_url=f"{url}/targets/",
        bootstrap=trusted_root,
    )


def tree_digest(path: Path) -> dict[str, str]:
    return {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


def test_init_layout_and_key_protection(repo: Path) -> None:
    names = {p.name for p in (repo / "repository").iterdir()}
    assert {"1.root.json", "1.targets.json", "1.snapshot.json", "timestamp.json", "root.json", "targets"} <= names
    for role in ("root", "targets", "snapshot", "timestamp"):
        key = repo / "keys" / f"{role}.key"
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
        assert b"ENCRYPTED PRIVATE KEY" in key.read_bytes()
    root = json.loads(ok("roots", "--path", str(repo)))
    assert root["signed"]["consistent_snapshot"] is True
    expires = datetime.fromisoformat(root["signed"]["expires"].replace("Z", "+00:00"))
    assert timedelta(days=364) < expires - datetime.now(UTC) <= timedelta(days=365)


def test_published_targets_download_and_verify_with_python_tuf(tmp_path: Path, repo: Path, served: str) -> None:
    trusted = ok("roots", "--path", str(repo)).encode()
    payload = os.urandom(50_000)
    (tmp_path / "orbit").write_bytes(payload)
    out = ok(
        "add",
        "--path",
        str(repo),
        "--target",
        str(tmp_path / "orbit"),
        "--name",
        "orbit",
        "--platform",
        "linux",
        "--version",
        "1.4.0",
        "-t",
        "1.4",
        "-t",
        "stable",
    )
    assert out.split() == [
        "published",
        "orbit/linux/1.4.0/orbit",
        "published",
        "orbit/linux/1.4/orbit",
        "published",
        "orbit/linux/stable/orbit",
    ]
    updater = client(tmp_path, served, trusted)
    updater.refresh()
    info = updater.get_targetinfo("orbit/linux/stable/orbit")
    assert info is not None and info.custom == {"version": "1.4.0"}
    path = updater.download_target(info)
    assert Path(path).read_bytes() == payload
    assert updater.get_targetinfo("orbit/linux/edge/orbit") is None
    # the plain Fleet-layout copy is there too
    assert (repo / "repository" / "targets" / "orbit" / "linux" / "stable" / "orbit").read_bytes() == payload


def test_archives_for_every_target_kind(tmp_path: Path, repo: Path, served: str) -> None:
    trusted = ok("roots", "--path", str(repo)).encode()
    kinds = [
        ("osqueryd", "macos-app", "osqueryd.app.tar.gz"),
        ("desktop", "linux", "desktop.tar.gz"),
        ("desktop", "windows", "fleet-desktop.exe"),
        ("orbit", "windows", "orbit.exe"),
    ]
    for name, platform, _ in kinds:
        source = tmp_path / f"{name}-{platform}"
        source.write_bytes(f"{name} {platform}".encode())
        ok(
            "add",
            "--path",
            str(repo),
            "--target",
            str(source),
            "--name",
            name,
            "--platform",
            platform,
            "--version",
            "5.14.1",
            "-t",
            "stable",
        )
    updater = client(tmp_path, served, trusted)
    updater.refresh()
    for name, platform, file_name in kinds:
        info = updater.get_targetinfo(f"{name}/{platform}/stable/{file_name}")
        assert info is not None
        assert Path(updater.download_target(info)).read_bytes() == f"{name} {platform}".encode()


def test_root_rotation_is_followed_by_clients_pinned_to_root_v1(tmp_path: Path, repo: Path, served: str) -> None:
    root_v1 = ok("roots", "--path", str(repo)).encode()
    (tmp_path / "bin").write_bytes(b"v1")
    ok(
        "add",
        "--path",
        str(repo),
        "--target",
        str(tmp_path / "bin"),
        "--name",
        "orbit",
        "--platform",
        "linux",
        "--version",
        "1.0.0",
        "-t",
        "stable",
    )
    ok("rotate", "--path", str(repo), "--role", "root")
    ok("rotate", "--path", str(repo), "--role", "targets")
    ok("rotate", "--path", str(repo), "--role", "snapshot")
    ok("rotate", "--path", str(repo), "--role", "timestamp")
    (tmp_path / "bin").write_bytes(b"v2")
    ok(
        "add",
        "--path",
        str(repo),
        "--target",
        str(tmp_path / "bin"),
        "--name",
        "orbit",
        "--platform",
        "linux",
        "--version",
        "1.0.1",
        "-t",
        "stable",
    )
    ok("timestamp", "--path", str(repo))
    updater = client(tmp_path, served, root_v1)
    updater.refresh()
    info = updater.get_targetinfo("orbit/linux/stable/orbit")
    assert info is not None and info.custom == {"version": "1.0.1"}
    assert Path(updater.download_target(info)).read_bytes() == b"v2"
    history = sorted(p.name for p in (tmp_path / "client" / "root_history").iterdir())
    assert history == ["1.root.json", "2.root.json", "3.root.json", "4.root.json", "5.root.json"]
    assert len(list((repo / "keys" / "retired").iterdir())) == 4


def test_timestamp_bumps_the_version_for_cron(repo: Path) -> None:
    before = json.loads((repo / "repository" / "timestamp.json").read_text())["signed"]["version"]
    assert "version 2" in ok("timestamp", "--path", str(repo), "--timestamp-expires", "1")
    after = json.loads((repo / "repository" / "timestamp.json").read_text())["signed"]
    assert after["version"] == before + 1
    expires = datetime.fromisoformat(after["expires"].replace("Z", "+00:00"))
    assert expires - datetime.now(UTC) <= timedelta(days=1)


@pytest.mark.parametrize(
    ("args", "env_change", "message"),
    [
        (["timestamp"], {"ORBITCTL_TIMESTAMP_PASSPHRASE": "wrong-passphrase"}, "wrong passphrase"),
        (["timestamp"], {"ORBITCTL_TIMESTAMP_PASSPHRASE": None}, "ORBITCTL_TIMESTAMP_PASSPHRASE"),
        (["add", "--name", "osqueryd", "--platform", "macos", "--version", "1.0.0"], {}, "use one of"),
        (["add", "--name", "orbit", "--platform", "linux", "--version", "latest"], {}, "invalid version"),
        (["add", "--name", "orbit", "--platform", "linux", "--version", "1.0.0", "-t", "a/b"], {}, "invalid channel"),
        (["rotate", "--role", "targets"], {"ORBITCTL_ROOT_PASSPHRASE": "wrong-passphrase"}, "wrong passphrase"),
    ],
)
def test_bad_input_is_a_clear_error_and_changes_nothing(
    tmp_path: Path, repo: Path, args: list[str], env_change: dict[str, str | None], message: str
) -> None:
    (tmp_path / "file").write_bytes(b"x")
    before = tree_digest(repo)
    env = dict(PASSPHRASES)
    for key, value in env_change.items():
        if value is None:
            env.pop(key)
        else:
            env[key] = value
    extra = ["--target", str(tmp_path / "file")] if args[0] == "add" else []
    result = orbitctl(args[0], "--path", str(repo), *args[1:], *extra, env=env)
    assert result.returncode == 1, result
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert tree_digest(repo) == before


def test_unknown_name_or_platform_is_rejected(tmp_path: Path, repo: Path) -> None:
    (tmp_path / "file").write_bytes(b"x")
    for bad in (["--name", "agent", "--platform", "linux"], ["--name", "orbit", "--platform", "solaris"]):
        result = orbitctl("add", "--path", str(repo), "--target", str(tmp_path / "file"), *bad, "--version", "1.0.0")
        assert result.returncode == 2 and "invalid choice" in result.stderr


def test_missing_key_and_uninitialized_repository(tmp_path: Path, repo: Path) -> None:
    (repo / "keys" / "timestamp.key").unlink()
    result = orbitctl("timestamp", "--path", str(repo))
    assert result.returncode == 1 and "the timestamp key is missing" in result.stderr
    empty = orbitctl("timestamp", "--path", str(tmp_path / "nothing"))
    assert empty.returncode == 1 and "not an initialized repository" in empty.stderr
    again = orbitctl("init", "--path", str(repo))
    assert again.returncode == 1 and "refusing to overwrite" in again.stderr


def test_a_version_is_immutable_but_channels_move(tmp_path: Path, repo: Path) -> None:
    source = tmp_path / "orbit"
    source.write_bytes(b"one")
    common = ["--path", str(repo), "--target", str(source), "--name", "orbit", "--platform", "linux"]
    ok("add", *common, "--version", "2.0.0", "-t", "stable")
    ok("add", *common, "--version", "2.0.0", "-t", "edge")  # same bytes: adding a channel is fine
    before = tree_digest(repo)
    source.write_bytes(b"two")
    refused = orbitctl("add", *common, "--version", "2.0.0", "-t", "stable")
    assert refused.returncode == 1 and "already published with different content" in refused.stderr
    assert tree_digest(repo) == before
    ok("add", *common, "--version", "2.0.1", "-t", "stable")
    targets = json.loads((repo / "repository" / "targets.json").read_text())["signed"]["targets"]
    assert targets["orbit/linux/stable/orbit"]["custom"] == {"version": "2.0.1"}
    assert targets["orbit/linux/edge/orbit"]["custom"] == {"version": "2.0.0"}
    assert targets["orbit/linux/2.0.0/orbit"]["length"] == 3


def test_leftovers_of_a_killed_add_are_swept_and_staging_stays_out_of_the_served_tree(
    repo: Path, tmp_path: Path
) -> None:
    targets = repo / "repository" / "targets"
    (targets / "osqueryd" / "linux" / "stable").mkdir(parents=True)
    leftovers = [
        targets / ".staging-abc123",  # an older orbitctl staged inside the served tree
        targets / "osqueryd" / "linux" / "stable" / ".osqueryd.k2j3",  # a half-placed target
        repo / "repository" / ".timestamp.json.0a1b2c.tmp",  # a half-written metadata file
        repo / ".staging" / ".staging-def456",
    ]
    for path in leftovers:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"partial")
    binary = tmp_path / "osqueryd"
    binary.write_bytes(b"#!/bin/sh\necho osqueryd\n")
    ok(
        "add",
        "--path",
        str(repo),
        "--target",
        str(binary),
        "--name",
        "osqueryd",
        "--platform",
        "linux",
        "--version",
        "5.15.0",
    )
    assert not any(path.exists() for path in leftovers)
    hidden = [p for p in (repo / "repository").rglob(".*")]
    assert hidden == [], hidden  # nothing half-done is ever served
    assert list((repo / ".staging").iterdir()) == []
