"""``orbitctl package`` end to end for every format: binaries fetched from a real TUF repository over TLS, the
installer built, read back by an independent tool, and rebuilt byte for byte with the same SOURCE_DATE_EPOCH."""

from __future__ import annotations

import io
import os
import plistlib
import re
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.orbit_world import OrbitWorld

ORBITCTL = [sys.executable, "-m", "packager"]
pytestmark = pytest.mark.timeout(300)


def app_archive(tmp: Path, top: str, executable: str, body: bytes) -> Path:
    archive = tmp / f"{top}.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        parts = executable.split("/")
        for depth in range(1, len(parts)):
            folder = tarfile.TarInfo("/".join(parts[:depth]))
            folder.type, folder.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(folder)
        member = tarfile.TarInfo(executable)
        member.size, member.mode = len(body), 0o755
        tar.addfile(member, io.BytesIO(body))
    return archive


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrbitWorld]:
    base = tmp_path_factory.mktemp("package-all")
    built = OrbitWorld(base)
    built.publish_orbit("1.4.2")
    built.publish_osqueryd("5.14.1")
    for platform in ("macos", "windows"):
        suffix = ".exe" if platform == "windows" else ""
        orbit = base / f"orbit-{platform}{suffix}"
        orbit.write_bytes(f"orbit for {platform}\n".encode())
        built.publish_to("orbit", orbit, "1.4.2", platform)
    osqueryd_exe = base / "osqueryd.exe"
    osqueryd_exe.write_bytes(b"osqueryd for windows\n")
    built.publish_to("osqueryd", osqueryd_exe, "5.14.1", "windows")
    app = app_archive(base, "osqueryd.app", "osquery.app/Contents/MacOS/osqueryd", b"osqueryd for macos\n")
    built.publish_to("osqueryd", app, "5.14.1", "macos-app")
    try:
        yield built
    finally:
        built.close()


def package(
    world: OrbitWorld, kind: str, outfile: Path, tmpdir: Path | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ORBITCTL_ENROLL_SECRET": "e2e-package-secret", "SOURCE_DATE_EPOCH": "1700000000"}
    if tmpdir is not None:
        env["TMPDIR"] = str(tmpdir)
    return subprocess.run(
        [
            *ORBITCTL,
            "package",
            "--type",
            kind,
            "--fleet-url",
            world.url,
            "--fleet-certificate",
            world.ca,
            "--update-url",
            world.tuf_url,
            "--update-tls-certificate",
            world.ca,
            "--update-roots",
            str(world.root_json),
            "--enable-scripts",
            "--outfile",
            str(outfile),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
        check=False,
    )


def listing(kind: str, path: Path) -> str:
    if kind == "deb":
        command = ["dpkg-deb", "-c", str(path)]
    elif kind == "rpm":
        command = ["rpm", "-qlp", str(path)]
    else:
        command = ["7z", "l", str(path)]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=True).stdout


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("deb", "./opt/orbit/bin/osqueryd/linux/stable/osqueryd"),
        ("rpm", "/opt/orbit/bin/osqueryd/linux/stable/osqueryd"),
        ("pkg", "base.pkg"),
        ("msi", ".cab"),
    ],
)
def test_every_format_builds_from_tuf_reads_back_and_is_reproducible(
    world: OrbitWorld, tmp_path: Path, kind: str, expected: str
) -> None:
    first, second = tmp_path / f"one.{kind}", tmp_path / f"two.{kind}"
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    result = package(world, kind, first, scratch)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(first)
    assert re.search(r"^built \S+ \(\d+ bytes, sha256 [0-9a-f]{64}\)$", result.stderr, re.MULTILINE), result.stderr
    assert "e2e-package-secret" not in result.stdout + result.stderr
    assert expected in listing(kind, first)
    assert first.stat().st_mode & 0o777 == 0o600  # it carries the enroll secret
    assert package(world, kind, second).returncode == 0
    assert first.read_bytes() == second.read_bytes()
    assert list(scratch.iterdir()) == []  # nothing left behind in the temp dir (TUF metadata, staging)


def generic_package(world: OrbitWorld, kind: str, outfile: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """What README "Deploying with an MDM" builds: no Fleet URL and no enroll secret in the package."""
    env = {key: value for key, value in os.environ.items() if key != "ORBITCTL_ENROLL_SECRET"}
    env["SOURCE_DATE_EPOCH"] = "1700000000"
    argv = [*ORBITCTL, "package", "--type", kind, "--update-url", world.tuf_url]
    argv += ["--update-tls-certificate", str(world.ca), "--update-roots", str(world.root_json)]
    return subprocess.run(
        [*argv, *extra, "--outfile", str(outfile)], capture_output=True, text=True, env=env, timeout=240, check=False
    )


def test_the_mdm_pkg_reads_its_configuration_from_the_profile(world: OrbitWorld, tmp_path: Path) -> None:
    out = tmp_path / "fleetd-base.pkg"
    result = generic_package(world, "pkg", out, "--use-system-configuration")
    assert result.returncode == 0, result.stderr
    assert out.stat().st_mode & 0o777 == 0o644  # no secret inside
    extracted = tmp_path / "x"
    extracted.mkdir()
    subprocess.run(["bsdtar", "-xf", str(out), "-C", str(extracted)], check=True, timeout=60)
    payload = tmp_path / "payload"
    payload.mkdir()
    subprocess.run(["bsdtar", "-xpf", str(extracted / "base.pkg/Payload"), "-C", str(payload)], check=True, timeout=60)
    plist = plistlib.loads((payload / "Library/LaunchDaemons/com.fleetdm.orbit.plist").read_bytes())
    environment = plist["EnvironmentVariables"]
    assert environment["ORBIT_USE_SYSTEM_CONFIGURATION"] == "true"
    assert "ORBIT_FLEET_URL" not in environment and "ORBIT_ENROLL_SECRET_PATH" not in environment
    assert not (payload / "opt/orbit/secret.txt").exists()
    assert (payload / "opt/orbit/bin/uninstall").stat().st_mode & 0o777 == 0o755


def test_the_mdm_msi_has_no_url_and_prints_its_product_code(world: OrbitWorld, tmp_path: Path) -> None:
    out = tmp_path / "fleetd-base.msi"
    result = generic_package(world, "msi", out)
    assert result.returncode == 0, result.stderr
    match = re.search(r"^product code (\{[0-9A-F-]{36}\}) \(msiexec /x \1 /qn removes it\)$", result.stderr, re.M)
    assert match, result.stderr
    properties = subprocess.run(
        ["msiinfo", "export", str(out), "Property"], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert f"ProductCode\t{match.group(1)}" in properties
    assert "FLEET_URL\t" not in properties and "FLEET_SECRET\tdummy" in properties
