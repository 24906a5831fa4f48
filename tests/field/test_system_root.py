"""tests/field/system_root.py at work: a clean Debian 12 root from Debian's archive, booted under systemd-nspawn with
its own systemd as PID 1, where a unit with EnvironmentFile=/Restart=always starts, comes back after ``kill -9``
and stops on ``systemctl stop``, and where dpkg runs maintainer scripts for real. Then our real .deb and .rpm, built
by ``orbitctl package`` from frozen release builds (``make demo FROZEN=1``'s, or ``FIELD_DEB`` / ``FIELD_RPM``):
installed by apt-get / rpm, orbit started by systemd from the unit the package ships, back after ``kill -9``, gone
after purge. Those packages point at the demo's fleet-stub, which is stopped by then, so nothing enrolls here:
enrollment, updates, rollback, upgrades and removal are test_field_lifecycle.py's.

Needs root, mmdebstrap, systemd-container and zstd, and the Debian archive on the first run (the root is cached
in build/cache/field-roots/); skipped otherwise."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.field.system_root import (
    BootedSystem,
    booted,
    extract_root,
    missing_prerequisites,
    root_tarball,
    run_chrooted,
    set_hostname,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class FieldPackages:
    deb: Path
    rpm: Path


@pytest.fixture(scope="module")
def field_packages(tmp_path_factory: pytest.TempPathFactory) -> FieldPackages:
    """The .deb and .rpm of ``make demo FROZEN=1`` (frozen orbit, osqueryd-sim and fleet-desktop fetched through TUF
    by ``orbitctl package``), unless ``FIELD_DEB`` and ``FIELD_RPM`` name others."""
    given_deb, given_rpm = os.environ.get("FIELD_DEB"), os.environ.get("FIELD_RPM")
    if given_deb and given_rpm:
        return FieldPackages(Path(given_deb).resolve(), Path(given_rpm).resolve())
    out = tmp_path_factory.mktemp("field-packages")
    drop = ("FLEET_STUB_", "ORBIT_", "ORBITCTL_", "FLEET_DESKTOP_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env.update(TMPDIR=str(out), DEMO_DIST_DIR=str(out / "dist"), NO_PROXY="127.0.0.1,localhost")
    result = subprocess.run(
        [sys.executable, "-m", "build_scripts.demo", "--frozen"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=850,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    (deb,) = (out / "dist").glob("*.deb")
    (rpm,) = (out / "dist").glob("*.rpm")
    return FieldPackages(deb, rpm)


UNIT = """\
[Unit]
Description=field probe
[Service]
Type=simple
EnvironmentFile=/etc/default/probe
ExecStart=/bin/sh -c 'echo "start $GREETING" >> /var/log/probe.log; exec sleep infinity'
Restart=always
RestartSec=1
[Install]
WantedBy=multi-user.target
"""
POSTINST_ENABLE_NOW = """\
#!/bin/sh
set -e
if [ "$1" = configure ]; then systemctl enable --now probe.service; fi
"""


@pytest.fixture(scope="module")
def tarball() -> Path:
    missing = missing_prerequisites()
    if missing:
        if os.environ.get("CI"):  # CI installs them (build_scripts/apt-packages.txt): missing there is a failure
            pytest.fail("needs " + ", ".join(missing))
        pytest.skip("needs " + ", ".join(missing))
    return root_tarball()


@pytest.fixture
def root(tarball: Path, tmp_path: Path) -> Iterator[Path]:
    """A fresh root per test, deleted afterwards (~200 MB each; pytest keeps its last three tmp trees)."""
    extracted = extract_root(tarball, tmp_path)
    set_hostname(extracted, "field")
    yield extracted
    shutil.rmtree(extracted, ignore_errors=True)


@pytest.fixture
def system(root: Path) -> Iterator[BootedSystem]:
    with booted(root) as running:
        yield running


def wait_for(predicate: Callable[[], object], timeout: float = 20, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def probe_deb(base: Path) -> Path:
    """A package whose postinst says ``systemctl enable --now`` (what most third-party packages do)."""
    tree = base / "probe"
    for path, text, mode in (
        (
            "DEBIAN/control",
            "Package: probe\nVersion: 1.0\nArchitecture: all\nMaintainer: t <t@example.com>\n"
            "Description: field probe\n",
            0o644,
        ),
        ("DEBIAN/postinst", POSTINST_ENABLE_NOW, 0o755),
        ("lib/systemd/system/probe.service", UNIT, 0o644),
        ("etc/default/probe", "GREETING=from-deb\n", 0o600),
    ):
        file = tree / path
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(text)
        file.chmod(mode)
    out = base / "probe_1.0_all.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "-b", str(tree), str(out)], check=True, capture_output=True)
    return out


def test_the_root_boots_to_a_running_systemd(system: BootedSystem) -> None:
    assert system.run(["cat", "/proc/1/comm"]).stdout.strip() == "systemd"
    assert system.run(["systemd-detect-virt", "--container"], check=False).stdout.strip() == "systemd-nspawn"
    assert system.run(["sh", "-c", ". /etc/os-release; echo $VERSION_CODENAME"]).stdout.strip() == "bookworm"
    assert system.boot_seconds < 30


def test_a_unit_starts_at_boot_restarts_after_kill_9_and_stops(root: Path) -> None:
    (root / "etc/systemd/system/probe.service").write_text(UNIT)
    (root / "etc/default/probe").write_text("GREETING=hello\n")
    (root / "etc/systemd/system/multi-user.target.wants/probe.service").symlink_to("/etc/systemd/system/probe.service")
    with booted(root) as system:
        assert system.show("probe.service", "ActiveState")["ActiveState"] == "active"
        first = int(system.show("probe.service", "MainPID")["MainPID"])
        system.run(["kill", "-9", str(first)])
        wait_for(lambda: system.show("probe.service", "NRestarts")["NRestarts"] == "1", what="a restart")
        wait_for(lambda: system.show("probe.service", "ActiveState")["ActiveState"] == "active", what="active again")
        assert int(system.show("probe.service", "MainPID")["MainPID"]) not in (0, first)
        system.systemctl("stop", "probe.service")
        assert system.systemctl("is-active", "probe.service", check=False).stdout.strip() == "inactive"
        assert system.run(["pgrep", "-x", "sleep"], check=False).returncode == 1
        assert system.host_path("/var/log/probe.log").read_text() == "start hello\nstart hello\n"
        assert "code=killed, status=9/KILL" in system.journal("probe.service")


def test_postinst_enable_now_starts_the_unit_in_a_booted_system(system: BootedSystem, tmp_path: Path) -> None:
    deb = probe_deb(tmp_path)
    shutil.copy(deb, system.host_path("/var/tmp"))
    system.run(["apt-get", "install", "-y", f"/var/tmp/{deb.name}"])
    assert system.systemctl("is-active", "probe.service").stdout.strip() == "active"
    assert system.systemctl("is-enabled", "probe.service").stdout.strip() == "enabled"


def test_postinst_enable_now_fails_the_install_in_a_plain_chroot(root: Path, tmp_path: Path) -> None:
    """Without a booted systemd, ``systemctl enable`` works offline but ``--now`` fails: dpkg leaves the package
    half-configured. (Our own scripts guard start/restart by /run/systemd/system and succeed.)"""
    deb = probe_deb(tmp_path)
    shutil.copy(deb, root / "var/tmp")
    result = run_chrooted(root, ["dpkg", "-i", f"/var/tmp/{deb.name}"], check=False)
    assert result.returncode == 1
    assert "System has not been booted with systemd" in result.stdout + result.stderr
    assert (root / "etc/systemd/system/multi-user.target.wants/probe.service").is_symlink()
    status = run_chrooted(root, ["dpkg-query", "-W", "-f=${Status}", "probe"]).stdout
    assert status == "install ok half-configured"


def test_our_deb_installs_starts_orbit_survives_kill_9_and_purges(
    system: BootedSystem, field_packages: FieldPackages
) -> None:
    deb = field_packages.deb
    shutil.copy(deb, system.host_path("/var/tmp"))
    system.run(["apt-get", "install", "-y", f"/var/tmp/{deb.name}"])
    assert system.systemctl("is-enabled", "orbit.service").stdout.strip() == "enabled"
    wait_for(lambda: system.show("orbit.service", "ActiveState")["ActiveState"] == "active", what="orbit active")
    first = int(system.show("orbit.service", "MainPID")["MainPID"])
    system.run(["kill", "-9", str(first)])
    wait_for(lambda: system.show("orbit.service", "NRestarts")["NRestarts"] == "1", what="orbit restarted")
    wait_for(lambda: system.show("orbit.service", "ActiveState")["ActiveState"] == "active", what="orbit active")
    system.run(["apt-get", "purge", "-y", "fleet-osquery"])
    assert system.systemctl("is-active", "orbit.service", check=False).stdout.strip() in ("inactive", "unknown")
    assert not system.host_path("/opt/orbit").exists()


def test_our_rpm_installs_into_a_debian_root_with_rpm_root_and_starts_at_boot(
    root: Path, field_packages: FieldPackages
) -> None:
    """``rpm --root`` chroots for the scriptlets (so the root's /bin/sh and systemctl run); the root's Debian
    packages are not in the rpm database, hence ``--nodeps`` for the package's ``Requires: /bin/sh``."""
    assert shutil.which("rpm"), "needs rpm (build_scripts/apt-packages.txt installs it)"
    rpm = ["rpm", "--root", str(root), "--dbpath", "/var/lib/rpm"]
    subprocess.run([*rpm, "--initdb"], check=True)
    subprocess.run([*rpm, "-i", "--nodeps", str(field_packages.rpm)], check=True, capture_output=True)
    assert (root / "etc/systemd/system/multi-user.target.wants/orbit.service").is_symlink()
    with booted(root) as system:
        wait_for(lambda: system.show("orbit.service", "ActiveState")["ActiveState"] == "active", what="orbit active")
