"""The field path end to end (issue 16): frozen release builds → TUF repository → ``orbitctl package`` → installed
into a clean Debian 12 root by ``apt-get`` (the .deb) or by ``rpm`` inside the booted root (the .rpm) → orbit started
by the root's own systemd from the unit the package ships → enrolled with fleet-stub, osqueryd installed from TUF
and running, a new orbit taken by self-update, a broken orbit rolled back, package v1 → v2 from an OpenPGP-signed apt
repository (``orbitctl repo apt``, trusted by ``signed-by``) keeping the enrollment, remove stopping everything, purge
leaving no file of ours, reinstall from the repository enrolling again.

The stub and orbitctl run on the host (a Fleet server and an admin's workstation); the booted root shares the host's
network, so its orbit reaches the stub on 127.0.0.1. The only knob turned is a product option: the packages are
built with ``--update-interval 1m`` (orbit's floor) so that a published release is seen within a minute. Everything
else (the trial boot's 30 s healthy period, the config interval, systemd's ``RestartSec``) runs at its shipped value.

Needs root, mmdebstrap, systemd-container, zstd and rpm (build_scripts/apt-packages.txt), Debian's archive the first
time (roots are cached in build/cache/field-roots/), and PyInstaller builds (cached in build/cache/demo-frozen/).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.field.field_fleet import FieldFleet, field_fleet, wait_for
from tests.field.system_root import (
    BASE_PACKAGES,
    BootedSystem,
    RootSpec,
    booted,
    extract_root,
    missing_prerequisites,
    root_tarball,
    set_hostname,
)
from tests.support.openpgp_keys import ThrowawayKey, make_test_keys

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]

ORBIT_ROOT = "/opt/orbit"
NODE_KEY = f"{ORBIT_ROOT}/secret-orbit-node-key.txt"
OSQUERYD = f"{ORBIT_ROOT}/bin/osqueryd/linux/stable/osqueryd"
# paths whose contents change by themselves or belong to dpkg/apt/systemd bookkeeping, not to a package's files
_VOLATILE = ("proc", "sys", "dev", "run", "tmp", "var/tmp", "var/log", "var/cache", "var/lib/apt", "var/lib/dpkg")
_VOLATILE += ("var/lib/systemd", "var/lib/rpm", "etc/ld.so.cache")


def _prerequisites() -> None:
    missing = missing_prerequisites() + ([] if shutil.which("rpm") else ["rpm (apt-get install rpm)"])
    if missing:
        if os.environ.get("CI"):  # CI installs them (build_scripts/apt-packages.txt): missing there is a failure
            pytest.fail("needs " + ", ".join(missing))
        pytest.skip("needs " + ", ".join(missing))


@pytest.fixture
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FieldFleet]:
    _prerequisites()
    with field_fleet(tmp_path_factory.mktemp("field-fleet")) as running:
        yield running


def _fresh_root(tmp_path: Path, spec: RootSpec | None = None) -> Path:
    root = extract_root(root_tarball(spec), tmp_path)
    set_hostname(root, "field-host")
    return root


def files_of(root: Path) -> set[str]:
    """Every path in ``root`` outside the volatile and bookkeeping places (what a package could leave behind)."""
    found: set[str] = set()
    for directory, dirnames, filenames in os.walk(root):
        relative = Path(directory).relative_to(root).as_posix()
        dirnames[:] = [d for d in dirnames if f"{relative}/{d}".lstrip("./") not in _VOLATILE]
        found.update(f"{relative}/{name}".lstrip("./") for name in filenames + dirnames)
    return found


class Host:
    """The booted root as the test sees it: systemd's view of orbit, processes, files, and the stub's record."""

    def __init__(self, system: BootedSystem, fleet: FieldFleet) -> None:
        self.system = system
        self.fleet = fleet

    def journal(self) -> str:
        return self.system.journal("orbit.service")[-6000:]

    def active(self) -> bool:
        return self.system.show("orbit.service", "ActiveState")["ActiveState"] == "active"

    def pids(self, name: str) -> list[int]:
        """The processes called ``name``, one per program instance: a PyInstaller one-file build runs as its
        bootloader and a child of the same name, and only the bootloader (whose parent has another name) counts."""
        result = self.system.run(["ps", "-o", "pid=,ppid=", "-C", name], check=False)
        pairs = [tuple(int(word) for word in line.split()) for line in result.stdout.splitlines() if line.strip()]
        named = {pid for pid, _parent in pairs}
        return sorted(pid for pid, parent in pairs if parent not in named)

    def read(self, path: str) -> str:
        return self.system.host_path(path).read_text()

    def record(self) -> dict[str, Any] | None:
        """The stub's host record for this root (matched by hostname), or None."""
        for host in self.fleet.hosts():
            if host.get("hostname") == "field-host":
                return host
        return None

    def wait_record(self, what: str, timeout: float = 120, **expected: object) -> dict[str, Any]:
        def matches() -> dict[str, Any] | None:
            host = self.record()
            if host is not None and all(host.get(key) == value for key, value in expected.items()):
                return host
            return None

        return wait_for(matches, timeout, what, lambda: f"host: {self.record()}\njournal:\n{self.journal()}")

    def wait_running_osqueryd(self) -> int:
        """osqueryd (the frozen osqueryd-sim orbit installed) running under orbit; its PID."""

        def running() -> int | None:
            pids = self.pids("osqueryd")
            return pids[0] if len(pids) == 1 else None

        pid: int = wait_for(running, 60, "one osqueryd process", self.journal)
        return pid


def install_deb(system: BootedSystem, deb: Path) -> None:
    shutil.copy(deb, system.host_path("/var/tmp"))
    system.run(["apt-get", "install", "-y", "--allow-downgrades", f"/var/tmp/{deb.name}"])


APT_REPO = "/srv/fleet-apt"
APT_KEYRING = "/etc/apt/keyrings/fleet-osquery.asc"
APT_LIST = "fleet-osquery.list"


def publish_in_apt_repository(fleet: FieldFleet, system: BootedSystem, debs: list[Path], key: ThrowawayKey) -> None:
    """``orbitctl repo apt`` (OpenPGP-signed InRelease) into the root's /srv, and the root told to trust only that
    key for it (``signed-by``), as the README's "Deploying to real hosts" does on a real host."""
    fleet.orbitctl(
        "repo", "apt", "--dir", str(system.host_path(APT_REPO)), *(a for d in debs for a in ("--deb", str(d))),
        "--gpg-key", str(key.secret),
    )  # fmt: skip
    keyring = system.host_path(APT_KEYRING)
    keyring.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(key.public, keyring)
    keyring.chmod(0o644)
    line = f"deb [signed-by={APT_KEYRING}] file:{APT_REPO} stable main\n"
    system.host_path(f"/etc/apt/sources.list.d/{APT_LIST}").write_text(line)


def apt_install_from_repository(system: BootedSystem) -> None:
    """``apt-get update`` (of our repository only: the root's Debian sources are not the test's business and would
    make it depend on the network) then ``apt-get install fleet-osquery``: apt verifies InRelease against the key."""
    only_ours = ["-o", f"Dir::Etc::sourcelist=sources.list.d/{APT_LIST}", "-o", "Dir::Etc::sourceparts=-"]
    updated = system.run(["apt-get", *only_ours, "-o", "APT::Get::List-Cleanup=0", "update"])
    assert "NO_PUBKEY" not in updated.stdout + updated.stderr and "W:" not in updated.stdout + updated.stderr, updated
    system.run(["apt-get", *only_ours, "install", "-y", "fleet-osquery"])


@pytest.fixture
def apt_key(tmp_path_factory: pytest.TempPathFactory) -> ThrowawayKey:
    return make_test_keys(tmp_path_factory.mktemp("apt-key"))["ed25519"]


def test_deb_lifecycle_enroll_update_rollback_upgrade_remove_purge_reinstall(
    fleet: FieldFleet, apt_key: ThrowawayKey, tmp_path: Path
) -> None:
    v1 = fleet.package("deb", "1.0.0", tmp_path / "packages")
    root = _fresh_root(tmp_path)
    with booted(root) as system:
        host = Host(system, fleet)
        before = files_of(root)

        # 1. apt-get installs the package; its postinst starts orbit through the booted systemd
        install_deb(system, v1)
        wait_for(host.active, 60, "orbit.service active", host.journal)
        assert system.systemctl("is-enabled", "orbit.service").stdout.strip() == "enabled"

        # 2. enrolled: orbit's and osquery's enrollments meet in one host record with both versions
        record = host.wait_record("the host enrolled with orbit 1.0.0", orbit_version="1.0.0")
        assert record["osquery_version"].startswith("5.14.1"), record
        host_id = record["id"]
        node_key = host.read(NODE_KEY)
        assert (system.host_path(NODE_KEY).stat().st_mode & 0o777) == 0o600
        first_osqueryd = host.wait_running_osqueryd()
        assert system.host_path(OSQUERYD).is_file()

        # 3. a new orbit on stable: taken by self-update (trial boot, confirmed after its healthy period)
        fleet.publish_frozen("orbit", "orbit", "1.1.0")
        host.wait_record("orbit 1.1.0 reported by the host", timeout=240, orbit_version="1.1.0")
        wait_for(lambda: "event=self_update_confirmed version=1.1.0" in host.journal(), 120, "1.1.0 confirmed")
        assert host.active()
        assert host.pids("osqueryd"), "osqueryd runs under the updated orbit"

        # 4. package v1 -> v2 (built now: it carries orbit 1.1.0 from stable), published in the signed apt
        # repository and taken by apt-get install from it: same host, node key untouched
        v2 = fleet.package("deb", "1.1.0", tmp_path / "packages")
        publish_in_apt_repository(fleet, system, [v1, v2], apt_key)
        apt_install_from_repository(system)
        status = system.run(["dpkg-query", "-W", "-f=${Version}", "fleet-osquery"]).stdout
        assert status == "1.1.0"
        wait_for(host.active, 60, "orbit.service active after the upgrade", host.journal)
        assert host.read(NODE_KEY) == node_key
        again = host.wait_record("the host seen again after the upgrade", orbit_version="1.1.0")
        assert again["id"] == host_id
        assert len([h for h in fleet.hosts() if h.get("hostname") == "field-host"]) == 1
        host.wait_running_osqueryd()

        # 5. a broken orbit on stable: it dies at start, systemd brings back the previous one, which quarantines it
        restarts = int(system.show("orbit.service", "NRestarts")["NRestarts"])
        fleet.publish_broken_orbit("1.2.0")
        wait_for(
            lambda: "event=update_quarantined" in host.journal() and "version=1.2.0" in host.journal(),
            240,
            "the broken 1.2.0 quarantined",
            host.journal,
        )
        assert int(system.show("orbit.service", "NRestarts")["NRestarts"]) > restarts
        wait_for(host.active, 60, "orbit.service active after the rollback", host.journal)
        assert "1.2.0" in host.read(f"{ORBIT_ROOT}/state/quarantined-updates.json")
        host.wait_record("the host still on orbit 1.1.0", orbit_version="1.1.0")
        assert host.wait_running_osqueryd() != first_osqueryd

        # 6. remove: everything stops (orbit, osqueryd) and the package's files go (the unit, /etc/default/orbit,
        # which is not a conffile, as in Fleet's package); the agent's own state stays for a reinstall, as Debian
        # does for "remove" (our postrm deletes it on "purge")
        system.run(["apt-get", "remove", "-y", "fleet-osquery"])
        assert system.systemctl("is-active", "orbit.service", check=False).stdout.strip() != "active"
        assert host.pids("orbit") == [] and host.pids("osqueryd") == []
        assert not system.host_path("/etc/default/orbit").exists()
        assert not system.host_path("/usr/lib/systemd/system/orbit.service").exists()
        assert host.read(NODE_KEY) == node_key

        # 7. purge: not one file of ours left, no process
        system.run(["apt-get", "purge", "-y", "fleet-osquery"])
        apt_setup = tuple(path.lstrip("/") for path in (APT_REPO, APT_KEYRING, f"/etc/apt/sources.list.d/{APT_LIST}"))
        left = sorted(p for p in files_of(root) - before if not p.startswith(apt_setup) and p != "etc/apt/keyrings")
        assert left == [], f"left behind after purge: {left[:20]}"
        assert host.pids("orbit") == [] and host.pids("osqueryd") == []

        # 8. reinstall from the repository: a new enrollment (new node key), the same host record (same hardware UUID)
        apt_install_from_repository(system)
        assert system.run(["dpkg-query", "-W", "-f=${Version}", "fleet-osquery"]).stdout == "1.1.0"
        wait_for(host.active, 60, "orbit.service active after the reinstall", host.journal)
        wait_for(lambda: system.host_path(NODE_KEY).is_file(), 60, "a node key", host.journal)
        assert host.read(NODE_KEY) != node_key
        reinstalled = host.wait_record("the reinstalled host seen", orbit_version="1.1.0")
        assert reinstalled["id"] == host_id
        host.wait_running_osqueryd()


def test_rpm_installed_by_rpm_inside_the_booted_root_enrolls_upgrades_and_erases_clean(
    fleet: FieldFleet, tmp_path: Path
) -> None:
    """The .rpm through ``rpm`` running inside the booted root (Debian's rpm package; an rpm-based root cannot be
    built here: no Fedora/RHEL mirror is reachable), so the scriptlets talk to the root's systemd.
    ``--nodeps``: the root's Debian packages are not in the rpm database (``Requires: /bin/sh``)."""
    v1 = fleet.package("rpm", "1.0.0", tmp_path / "packages")
    v2 = fleet.package("rpm", "1.0.1", tmp_path / "packages")
    root = _fresh_root(tmp_path, RootSpec(packages=(*BASE_PACKAGES, "rpm")))
    with booted(root) as system:
        host = Host(system, fleet)
        system.run(["rpm", "--initdb"])
        before = files_of(root)
        for rpm in (v1, v2):
            shutil.copy(rpm, system.host_path("/var/tmp"))

        system.run(["rpm", "-i", "--nodeps", f"/var/tmp/{v1.name}"])
        wait_for(host.active, 60, "orbit.service active", host.journal)
        record = host.wait_record("the host enrolled", orbit_version="1.0.0")
        node_key = host.read(NODE_KEY)
        host.wait_running_osqueryd()

        system.run(["rpm", "-U", "--nodeps", f"/var/tmp/{v2.name}"])
        assert system.run(["rpm", "-q", "--qf", "%{VERSION}", "fleet-osquery"]).stdout == "1.0.1"
        wait_for(host.active, 60, "orbit.service active after rpm -U", host.journal)
        assert host.read(NODE_KEY) == node_key
        assert host.wait_record("the host seen after the upgrade", orbit_version="1.0.0")["id"] == record["id"]
        host.wait_running_osqueryd()

        system.run(["rpm", "-e", "--nodeps", "fleet-osquery"])
        assert system.systemctl("is-active", "orbit.service", check=False).stdout.strip() != "active"
        assert host.pids("orbit") == [] and host.pids("osqueryd") == []
        left = sorted(files_of(root) - before)
        assert left == [], f"left behind after rpm -e: {left[:20]}"
