"""``orbitctl package``: flag validation and the shared pipeline (TUF fetch, staged layout) before any format."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from orbit.options import MIN_UPDATE_INTERVAL
from packager.package.fetch import FetchError
from packager.package.package_options import (
    MIN_UPDATE_INTERVAL_S,
    PackageOptions,
    PackageOptionsError,
    add_parser,
    validate,
)
from packager.package.stage import stage_package
from tests.support.orbit_world import OrbitWorld, orbitctl

ORBITCTL = [sys.executable, "-m", "packager"]


def parse(*argv: str) -> argparse.Namespace:
    top = argparse.ArgumentParser()
    add_parser(top.add_subparsers(dest="command"))
    return top.parse_args(["package", *argv])


def options(*argv: str, env: dict[str, str] | None = None) -> PackageOptions:
    return validate(parse(*argv), env or {})


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--type", "deb", "--fleet-url", "https://f", "--update-roots", "{}"], "must be given together"),
        (
            ["--type", "deb", "--insecure", "--fleet-certificate", "x.pem", "--update-roots", "{}"],
            "--insecure excludes",
        ),
        (["--type", "pkg", "--arch", "arm64", "--update-roots", "{}"], "pkg is universal"),
        (["--type", "msi", "--arch", "arm64", "--update-roots", "{}"], "x64 only"),
        (["--type", "deb", "--outfile", "agent.rpm", "--update-roots", "{}"], "must end with .deb"),
        (["--type", "rpm", "--end-user-email", "nope", "--update-roots", "{}"], "not an email address"),
        (["--type", "deb", "--osquery-db", "relative/db", "--update-roots", "{}"], "absolute path"),
        (["--type", "deb"], "--update-roots is required"),
        (["--type", "deb", "--update-interval", "soon", "--update-roots", "{}"], "--update-interval"),
        (["--type", "deb", "--update-interval", "5s", "--update-roots", "{}"], "orbit refuses less than 60s"),
        (
            ["--type", "deb", "--fleet-tls-client-certificate", "c.pem", "--update-roots", "{}"],
            "must be given together",
        ),
    ],
)
def test_fleetctl_validation_rules(argv: list[str], message: str) -> None:
    with pytest.raises(PackageOptionsError, match=message):
        options(*argv)


def test_the_update_interval_floor_is_orbits() -> None:
    """A package must never carry an interval the installed orbit rejects at start (the field test found one)."""
    assert MIN_UPDATE_INTERVAL_S == MIN_UPDATE_INTERVAL
    assert options("--type", "deb", "--update-interval", "1m", "--update-roots", "{}").update_interval == "1m"


def test_the_secret_can_come_from_the_environment() -> None:
    parsed = options(
        "--type", "deb", "--fleet-url", "https://f", "--update-roots", "{}", env={"ORBITCTL_ENROLL_SECRET": "s3cr3t"}
    )
    assert "s3cr3t" not in repr(parsed)


def test_invalid_flags_exit_2_with_the_reason() -> None:
    result = subprocess.run(
        [*ORBITCTL, "package", "--type", "pkg", "--arch", "arm64", "--update-roots", "{}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "pkg is universal" in result.stderr


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrbitWorld]:
    built = OrbitWorld(tmp_path_factory.mktemp("package-world"))
    built.publish_osqueryd("5.14.1")
    built.publish_orbit("1.4.2")
    try:
        yield built
    finally:
        built.close()


def package_args(world: OrbitWorld, kind: str = "deb", *extra: str) -> argparse.Namespace:
    return parse(
        "--type",
        kind,
        "--fleet-url",
        world.url,
        "--enroll-secret",
        "pkg-secret-123",
        "--fleet-certificate",
        world.ca,
        "--update-url",
        world.tuf_url,
        "--update-tls-certificate",
        world.ca,
        "--update-roots",
        str(world.root_json),
        *extra,
    )


def test_stage_fetches_verified_targets_and_embeds_the_metadata(world: OrbitWorld, tmp_path: Path) -> None:
    staged = stage_package(validate(package_args(world), {}), tmp_path, {"SOURCE_DATE_EPOCH": "1700000000"})
    paths = {item.path.as_posix(): item for item in staged.files}
    orbit = paths["bin/orbit/linux/stable/orbit"]
    assert orbit.mode == 0o755
    assert orbit.source.read_bytes() == world.orbit_build("1.4.2").read_bytes()
    assert (
        paths["bin/osqueryd/linux/stable/osqueryd"].source.read_bytes() == world.osqueryd_build("5.14.1").read_bytes()
    )
    assert staged.version == "1.4.2"  # the orbit target's signed custom version
    assert staged.source_date_epoch == 1_700_000_000
    store = json.loads(paths["updates-metadata.json"].source.read_bytes())
    assert set(store) == {"root.json", "targets.json", "snapshot.json", "timestamp.json"}
    assert store["root.json"]["signed"] == json.loads(world.root_json.read_text())["signed"]
    assert paths["updates-metadata.json"].mode == 0o600 and "tuf-metadata.json" in paths
    assert paths["osquery.flags"].source.read_bytes() == b""
    assert paths["fleet.pem"].source.read_bytes() == Path(world.ca).read_bytes()
    assert [(link.path.as_posix(), link.target) for link in staged.symlinks] == [
        ("bin/orbit/orbit", "linux/stable/orbit")
    ]
    assert staged.secret == "pkg-secret-123"
    assert "pkg-secret-123" not in json.dumps(dict(staged.orbit_env))
    assert "secret.txt" not in paths  # Linux keeps the secret in /etc/default/orbit
    assert staged.orbit_env["ORBIT_FLEET_CERTIFICATE"] == "/opt/orbit/fleet.pem"


def test_a_target_missing_for_the_platform_is_reported(world: OrbitWorld, tmp_path: Path) -> None:
    # only linux targets are published: a macOS package cannot be built, and the message says which target
    with pytest.raises(FetchError, match="orbit/macos/stable/orbit is not published"):
        stage_package(validate(package_args(world, "pkg"), {}), tmp_path, {})


def test_a_repository_signed_with_another_root_is_refused(world: OrbitWorld, tmp_path: Path) -> None:
    other = OrbitWorld.__new__(OrbitWorld)
    other.repo = tmp_path / "other-repo"
    orbitctl("init", "--path", str(other.repo))
    foreign_root = tmp_path / "foreign-root.json"
    foreign_root.write_text(orbitctl("roots", "--path", str(other.repo)))
    args = package_args(world)
    args.update_roots = str(foreign_root)
    with pytest.raises(FetchError, match="TUF repository"):
        stage_package(validate(args, {}), tmp_path / "work", {})


def test_a_tampered_target_is_refused(world: OrbitWorld, tmp_path: Path) -> None:
    world.publish_osqueryd("5.14.2", "beta")
    for path in (world.repo / "repository" / "targets" / "osqueryd" / "linux" / "beta").iterdir():
        data = bytearray(path.read_bytes())
        data[-2] ^= 0x01
        path.write_bytes(bytes(data))
    with pytest.raises(FetchError, match="osqueryd/linux/beta/osqueryd"):
        stage_package(validate(package_args(world, "deb", "--osqueryd-channel", "beta"), {}), tmp_path, {})


def test_unwritable_outfile_fails_clearly(world: OrbitWorld, tmp_path: Path) -> None:
    env = {**os.environ, "ORBITCTL_ENROLL_SECRET": "pkg-secret-123"}
    result = subprocess.run(
        [
            *ORBITCTL,
            "package",
            "--type",
            "deb",
            "--fleet-url",
            world.url,
            "--update-url",
            world.tuf_url,
            "--update-tls-certificate",
            world.ca,
            "--update-roots",
            str(world.root_json),
            "--outfile",
            str(tmp_path / "missing-dir" / "agent.deb"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert result.returncode == 1
    assert "not a writable directory" in result.stderr
    assert "pkg-secret-123" not in result.stderr + result.stdout


def test_the_target_cache_saves_downloads_and_is_verified_on_every_use(
    world: OrbitWorld, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """--cache-dir: the second build copies the binaries from the cache (no download), a cache entry whose bytes
    no longer match the signed hashes is removed and the target downloaded again, and the package is the same."""
    cache = tmp_path / "cache"
    epoch = {"SOURCE_DATE_EPOCH": "1700000000"}
    seen: list[str] = []

    def stage(run: str) -> dict[str, bytes]:
        staged = stage_package(
            validate(package_args(world, "deb", "--cache-dir", str(cache)), {}),
            tmp_path / run,
            epoch,
            progress=lambda name, _size: seen.append(name),
        )
        return {item.path.as_posix(): item.source.read_bytes() for item in staged.files if "bin/" in str(item.path)}

    first = stage("first")
    assert seen == ["orbit/linux/stable/orbit", "osqueryd/linux/stable/osqueryd"]
    assert cache.stat().st_mode & 0o777 == 0o700
    assert all(entry.stat().st_mode & 0o777 == 0o600 for entry in cache.iterdir())
    assert len(list(cache.iterdir())) == 2
    seen.clear()
    assert stage("second") == first
    assert seen == ["orbit/linux/stable/orbit (cached)", "osqueryd/linux/stable/osqueryd (cached)"]
    for entry in cache.iterdir():  # someone changes the cached bytes (same length)
        data = bytearray(entry.read_bytes())
        data[0] ^= 0xFF
        entry.write_bytes(bytes(data))
    seen.clear()
    assert stage("third") == first  # the signed bytes, downloaded again
    assert seen == ["orbit/linux/stable/orbit", "osqueryd/linux/stable/osqueryd"]
    assert "does not match its signed hashes" in caplog.text
    assert not list((tmp_path / "third").rglob("*.part"))


def test_a_cache_dir_that_is_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(PackageOptionsError, match="is not a directory"):
        options("--type", "deb", "--update-roots", "{}", "--cache-dir", str(tmp_path / "file"))
    env = {"ORBITCTL_CACHE_DIR": str(tmp_path / "file")}
    with pytest.raises(PackageOptionsError, match="is not a directory"):
        options("--type", "deb", "--update-roots", "{}", env=env)
