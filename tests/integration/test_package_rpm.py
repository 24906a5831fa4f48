"""``packager.formats.rpm``: the .rpm checked by RPM's own tools — ``rpm -K`` (digests; a flipped byte is
caught), ``rpm -qip`` (header fields, fixed build host and date), ``rpm -qlvp`` (modes, owners, links),
``rpm -qp --scripts`` (which scriptlets exist), ``rpmlint`` with the documented filters — and the lifecycle with
the real ``rpm --root`` in the scratch root of tests/support/dpkg_root.py: install → ``-V`` → upgrade → erase,
asserting the systemctl calls RPM's ``$1`` semantics must produce. Also reproducibility and write failures."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import stat
import subprocess
from pathlib import Path

import pytest

from packager.formats import rpm
from packager.formats.linux_service import LinuxPackageError
from packager.formats.output_file import PackageOutputError
from packager.package.staged import StagedPackage
from tests.support.dpkg_root import build_with_file_size_limit, make_scratch_root, run_tool, verify_unit
from tests.support.staged_package import EPOCH, SECRET, make_staged

INSTALL = ["systemctl daemon-reload", "systemctl enable orbit.service", "systemctl restart orbit.service"]
ERASE = ["systemctl stop orbit.service", "systemctl disable orbit.service", "pkill -x fleet-desktop"]
DEFERRED = "systemd-run --on-active=60 --timer-property=AccuracySec=1s /usr/bin/systemctl"
# Only for the stand-in binaries of the tests: "arch-dependent package without any ELF binary".
STAND_IN_ONLY_FILTERS = ("no-binary$",)


def _build(base: Path, *, version: str = "1.2.3", arch: str = "amd64", **changes: object) -> tuple[StagedPackage, Path]:
    staged = make_staged(base / "stage", "linux", arch, version=version, payload_bytes=len(version) * 1000)
    staged = dataclasses.replace(staged, **changes)  # type: ignore[arg-type]
    outfile = base / rpm.package_filename(staged)
    result = rpm.build(staged, outfile)
    assert result.path == outfile
    assert result.size == outfile.stat().st_size
    assert result.sha256 == hashlib.sha256(outfile.read_bytes()).hexdigest()
    return staged, outfile


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[StagedPackage, Path]:
    return _build(tmp_path_factory.mktemp("rpm"))


@pytest.fixture(scope="module")
def upgrade(tmp_path_factory: pytest.TempPathFactory) -> tuple[StagedPackage, Path]:
    return _build(tmp_path_factory.mktemp("rpm-upgrade"), version="1.2.4", secret="rotated-secret-4567")


def test_digests_verify_and_tampering_is_caught(built: tuple[StagedPackage, Path], tmp_path: Path) -> None:
    _staged, package = built
    assert package.name == "fleet-osquery-1.2.3-1.x86_64.rpm"
    checked = run_tool("rpm", "-K", "--nosignature", package)
    assert checked.stdout.strip().endswith("digests OK")
    tampered = tmp_path / package.name
    data = bytearray(package.read_bytes())
    data[-100] ^= 0xFF  # inside the compressed payload
    tampered.write_bytes(bytes(data))
    result = run_tool("rpm", "-K", "--nosignature", tampered, check=False)
    assert result.returncode != 0 and "NOT OK" in result.stdout


def test_header_fields(built: tuple[StagedPackage, Path]) -> None:
    _staged, package = built
    lines = run_tool("rpm", "-qip", package).stdout.splitlines()
    fields = dict(line.split(":", 1) for line in lines[: lines.index("Description :")])
    info = {key.strip(): value.strip() for key, value in fields.items()}
    assert info["Name"] == "fleet-osquery"
    assert info["Version"] == "1.2.3"
    assert info["Release"] == "1"
    assert info["Architecture"] == "x86_64"
    assert info["Build Host"] == rpm.BUILD_HOST
    assert info["Build Date"] == "Tue Nov 14 22:13:20 2023"  # SOURCE_DATE_EPOCH, UTC
    assert info["License"] == "Apache-2.0"
    assert info["Summary"] == "Fleet osquery -- runtime and autoupdater"
    assert info["Packager"] == "Fleet Device Management <engineering@fleetdm.com>"
    assert info["Signature"] == "(none)"


def _listing(package: Path) -> dict[str, tuple[str, str, str, str]]:
    """``rpm -qlvp``: path → (mode string, owner, group, link target or "")."""
    entries = {}
    for line in run_tool("rpm", "-qlvp", package).stdout.splitlines():
        mode, _links, owner, group, _size, _month, _day, _year, rest = line.split(None, 8)
        name, _, target = rest.partition(" -> ")
        entries[name] = (mode, owner, group, target)
    return entries


def test_file_list_modes_and_owners(built: tuple[StagedPackage, Path]) -> None:
    staged, package = built
    entries = _listing(package)
    assert {(owner, group) for _mode, owner, group, _target in entries.values()} == {("root", "root")}
    expected = {
        "/etc/default/orbit": ("-rw-------", ""),
        "/usr/lib/systemd/system/orbit.service": ("-rw-r--r--", ""),
        "/opt/orbit": ("drwxr-xr-x", ""),
        "/opt/orbit/bin/orbit/orbit": ("lrwxrwxrwx", "linux/stable/orbit"),
        "/usr/local/bin/orbit": ("lrwxrwxrwx", "/opt/orbit/bin/orbit/orbit"),
        "/var/log/orbit": ("drwxr-xr-x", ""),
        "/var/log/osquery": ("drwxr-xr-x", ""),
    }
    for path, (mode, target) in expected.items():
        assert (entries[path][0], entries[path][3]) == (mode, target), path
    for item in staged.files:
        assert entries[f"/opt/orbit/{item.path}"][0] == stat.filemode(stat.S_IFREG | item.mode)
    # rpm owns the agent's tree and the log directories, not the system's /etc, /usr, /usr/local/bin …
    assert not {"/etc", "/etc/default", "/usr/local/bin", "/usr/lib/systemd/system", "/var/log"} & set(entries)
    flags = run_tool("rpm", "-qp", "--qf", "[%{FILENAMES} %{FILEFLAGS:fflags}\n]", package).stdout
    assert "/etc/default/orbit \n" in flags  # not %config: replaced on upgrade (ADR 0006)


def test_scriptlets(built: tuple[StagedPackage, Path], tmp_path: Path) -> None:
    _staged, package = built
    scripts = run_tool("rpm", "-qp", "--scripts", package).stdout
    headers = [line for line in scripts.splitlines() if line.endswith(":") and "scriptlet" in line]
    # rpm-rs records no interpreter, so rpm runs each with its default, /bin/sh (-qpR lists /bin/sh for them)
    assert headers == ["preuninstall scriptlet:", "postuninstall scriptlet:", "posttrans scriptlet:"]
    preun = scripts.split("preuninstall scriptlet:\n")[1].split("postuninstall scriptlet:")[0]
    postun = scripts.split("postuninstall scriptlet:\n")[1].split("posttrans scriptlet:")[0]
    posttrans = scripts.split("posttrans scriptlet:\n")[1]
    assert preun.startswith("#!/bin/sh\n") and 'case "$1" in\n    0)\n        deactivate_service' in preun
    assert 'case "$1" in\n    0)\n        # shellcheck disable=SC2086\n        rm -rf $PURGE_PATHS' in postun
    assert "\nactivate_service\n" in posttrans
    assert run_tool("rpm", "-qpR", package).stdout.splitlines().count("/bin/sh") == 3
    for name, text in (("preun", preun), ("postun", postun), ("posttrans", posttrans)):
        (tmp_path / name).write_text(text)
        result = run_tool("shellcheck", "-s", "sh", tmp_path / name, check=False)
        assert result.returncode == 0, result.stdout


def _rpmlint(package: Path, config: Path, filters: tuple[str, ...]) -> tuple[int, str]:
    config.write_text("Filters = [\n" + "".join(f"    {json.dumps(item)},\n" for item in filters) + "]\n")
    result = run_tool("rpmlint", "-c", config, package, check=False)
    return result.returncode, result.stdout


def test_rpmlint_is_clean_except_the_documented_filters(built: tuple[StagedPackage, Path], tmp_path: Path) -> None:
    _staged, package = built
    code, output = _rpmlint(package, tmp_path / "rpmlint.toml", rpm.RPMLINT_FILTERS + STAND_IN_ONLY_FILTERS)
    assert code == 0 and "0 errors, 0 warnings" in output, output
    code, output = _rpmlint(package, tmp_path / "none.toml", ())  # the check can fail
    assert code != 0 and "dir-or-file-in-opt" in output and "non-conffile-in-etc" in output


def test_install_upgrade_erase(
    built: tuple[StagedPackage, Path], upgrade: tuple[StagedPackage, Path], tmp_path: Path
) -> None:
    _staged, package = built
    upgraded, package_2 = upgrade
    root = make_scratch_root(tmp_path / "root")

    root.rpm("-i", "--nodeps", package)
    assert root.take_calls() == INSTALL  # from %posttrans
    assert root.rpm("-q", "fleet-osquery").stdout.strip() == "fleet-osquery-1.2.3-1.x86_64"
    assert root.rpm("-V", "--nodeps", "fleet-osquery").stdout == ""
    environment = root.host("/etc/default/orbit")
    assert stat.S_IMODE(environment.stat().st_mode) == 0o600
    assert f"ORBIT_ENROLL_SECRET={SECRET}\n" in environment.read_text()
    assert os.readlink(root.host("/usr/local/bin/orbit")) == "/opt/orbit/bin/orbit/orbit"
    assert verify_unit(root) == ""
    root.host("/opt/orbit/secret-orbit-node-key.txt").write_text("node-key")  # the agent's own state

    root.rpm("-U", "--nodeps", package_2)
    calls = root.take_calls()
    assert calls == INSTALL  # old %preun/%postun ran with $1 = 1: no stop, no disable, nothing removed
    assert root.rpm("-q", "fleet-osquery").stdout.strip() == "fleet-osquery-1.2.4-1.x86_64"
    assert "ORBIT_ENROLL_SECRET=rotated-secret-4567\n" in environment.read_text()
    orbit = upgraded.file("bin/orbit/linux/stable/orbit")
    assert orbit is not None
    assert root.host("/opt/orbit/bin/orbit/linux/stable/orbit").read_bytes() == orbit.source.read_bytes()
    assert root.host("/opt/orbit/secret-orbit-node-key.txt").read_text() == "node-key"

    root.rpm("-e", "--nodeps", "fleet-osquery")
    assert root.take_calls() == [*ERASE, "systemctl daemon-reload"]
    assert root.rpm("-q", "fleet-osquery", check=False).returncode != 0
    for gone in ("/opt/orbit", "/var/log/orbit", "/etc/default/orbit", "/usr/local/bin/orbit",
                 "/usr/lib/systemd/system/orbit.service"):  # fmt: skip
        assert not os.path.lexists(root.host(gone)), gone


def test_without_systemd_running_nothing_is_started(built: tuple[StagedPackage, Path], tmp_path: Path) -> None:
    root = make_scratch_root(tmp_path / "root", systemd_running=False)
    root.rpm("-i", "--nodeps", built[1])
    assert root.take_calls() == ["systemctl enable orbit.service"]
    root.rpm("-e", "--nodeps", "fleet-osquery")
    assert root.take_calls() == ["systemctl disable orbit.service", "pkill -x fleet-desktop"]


def test_failing_systemctl_does_not_fail_the_transaction(built: tuple[StagedPackage, Path], tmp_path: Path) -> None:
    root = make_scratch_root(tmp_path / "root", systemctl="failing")
    installed = root.rpm("-i", "--nodeps", built[1])
    assert "fleet-osquery: 'systemctl restart orbit.service' failed" in installed.stderr
    assert root.take_calls() == INSTALL
    root.rpm("-e", "--nodeps", "fleet-osquery")
    assert not root.host("/opt/orbit").exists()


def test_inside_orbit_the_restart_and_stop_are_deferred(
    built: tuple[StagedPackage, Path], upgrade: tuple[StagedPackage, Path], tmp_path: Path
) -> None:
    root = make_scratch_root(tmp_path / "root", inside_orbit=True)
    root.rpm("-i", "--nodeps", built[1])
    root.rpm("-U", "--nodeps", upgrade[1])
    assert root.take_calls() == [*INSTALL[:2], f"{DEFERRED} restart orbit.service"] * 2
    root.rpm("-e", "--nodeps", "fleet-osquery")
    assert root.take_calls() == [
        f"{DEFERRED} stop orbit.service",
        "systemctl disable orbit.service",
        "pkill -x fleet-desktop",
        "systemctl daemon-reload",
    ]


def test_arm64_package(tmp_path: Path) -> None:
    _staged, package = _build(tmp_path, arch="arm64")
    assert package.name == "fleet-osquery-1.2.3-1.aarch64.rpm"
    assert run_tool("rpm", "-qp", "--qf", "%{ARCH}", package).stdout == "aarch64"


def test_builds_are_reproducible(tmp_path: Path) -> None:
    first = _build(tmp_path / "a")[1].read_bytes()
    staged, second = _build(tmp_path / "b")
    for item in staged.files:  # other source paths, other mtimes: same bytes
        os.utime(item.source, (1, 1))
    again = rpm.build(staged, tmp_path / "again.rpm").path.read_bytes()
    assert first == second.read_bytes() == again
    assert rpm.build(dataclasses.replace(staged, secret="other"), tmp_path / "c.rpm").path.read_bytes() != first
    later = rpm.build(dataclasses.replace(staged, source_date_epoch=EPOCH + 1), tmp_path / "d.rpm")
    assert later.path.read_bytes() != first


def _leftovers(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir() if path.name.startswith("."))


def test_unwritable_outfile_is_a_clear_error(built: tuple[StagedPackage, Path], tmp_path: Path) -> None:
    staged, _package = built
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    with pytest.raises(PackageOutputError, match=r"cannot write .*not-a-directory/x\.rpm"):
        rpm.build(staged, blocker / "x.rpm")
    (tmp_path / "a-directory.rpm").mkdir()
    with pytest.raises(PackageOutputError, match="it is a directory"):
        rpm.build(staged, tmp_path / "a-directory.rpm")
    assert _leftovers(tmp_path) == []


def test_failure_while_writing_leaves_the_old_package_alone(tmp_path: Path) -> None:
    staged = make_staged(tmp_path / "stage", "linux")
    staged.files[0].source.write_bytes(os.urandom(2_000_000))
    outfile = tmp_path / "fleet-osquery.rpm"
    outfile.write_bytes(b"previous package")
    result = build_with_file_size_limit("rpm", staged, outfile, tmp_path / "staged.pickle")
    assert result.returncode == 3, result.stdout + result.stderr
    assert result.stdout.startswith(f"PackageOutputError cannot write {outfile}")
    assert outfile.read_bytes() == b"previous package"
    assert _leftovers(tmp_path) == []


def test_invalid_input_is_refused(tmp_path: Path) -> None:
    staged = make_staged(tmp_path / "stage", "linux")
    for bad, message in [
        (dataclasses.replace(staged, version="1.2.3-rc1"), "not an RPM version"),
        (dataclasses.replace(staged, version="v1"), "not an RPM version"),
        (dataclasses.replace(staged, arch="riscv64"), "no RPM architecture"),
        (dataclasses.replace(staged, platform="windows"), "linux staging"),
        (dataclasses.replace(staged, secret="two\nlines"), "line breaks"),
    ]:
        with pytest.raises(LinuxPackageError, match=message):
            rpm.build(bad, tmp_path / "x.rpm")
    staged.files[1].source.unlink()
    with pytest.raises(PackageOutputError, match="cannot read"):
        rpm.build(staged, tmp_path / "x.rpm")
    assert list(tmp_path.glob("*.rpm")) == []


def test_the_rpm_never_owns_the_systems_directories(built: tuple[StagedPackage, Path], tmp_path: Path) -> None:
    """``rpm -e`` removes the directories a package owns when they are empty: /opt and /usr/local/bin are the
    system's (the filesystem package's), never ours."""
    _staged, package = built
    listed = subprocess.run(["rpm", "-qlp", str(package)], capture_output=True, text=True, check=True).stdout.split()
    assert not {"/opt", "/usr", "/usr/local", "/usr/local/bin", "/etc", "/var", "/var/log"} & set(listed), listed
    root = make_scratch_root(tmp_path / "root")
    for system_dir in ("/opt", "/usr/local/bin"):
        root.host(system_dir).mkdir(parents=True, exist_ok=True)
    root.rpm("-i", "--nodeps", package)
    root.rpm("-e", "--nodeps", "fleet-osquery")
    assert root.host("/opt").is_dir() and root.host("/usr/local/bin").is_dir()
