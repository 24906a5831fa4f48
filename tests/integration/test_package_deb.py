"""``packager.formats.deb``: the .deb checked by Debian's own tools — ``dpkg-deb -I/-f/-c/-x/-e`` (control
fields, file list, modes, owners, md5sums), ``lintian`` (fails on any error or warning that the shipped overrides
do not cover), ``shellcheck`` on the maintainer scripts, ``systemd-analyze verify`` on the installed unit, and
the whole lifecycle with the real ``dpkg --root`` in a scratch root whose stub ``systemctl`` records each call
(tests/support/dpkg_root.py): install → upgrade → remove → purge, plus hosts without systemd, without or with a
failing systemctl, and a package manager running inside orbit's own cgroup. Also the shared ``linux_service``
text (environment file quoting, validation), reproducibility and failures while writing."""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import shutil
import stat
import subprocess
from pathlib import Path, PurePosixPath

import pytest

from packager.formats import deb, linux_service
from packager.formats.linux_service import SYSTEM_DIRS, LinuxPackageError, ServiceConfigError
from packager.formats.output_file import PackageOutputError
from packager.package.staged import StagedFile, StagedPackage, StagedSymlink
from tests.support.dpkg_root import (
    ScratchRoot,
    build_with_file_size_limit,
    make_scratch_root,
    run_tool,
    verify_unit,
)
from tests.support.staged_package import EPOCH, SECRET, make_staged

INSTALL = ["systemctl daemon-reload", "systemctl enable orbit.service", "systemctl restart orbit.service"]
REMOVE = ["systemctl stop orbit.service", "systemctl disable orbit.service", "pkill -x fleet-desktop"]
RELOAD = ["systemctl daemon-reload"]
DEFERRED = "systemd-run --on-active=60 --timer-property=AccuracySec=1s /usr/bin/systemctl"


def _build(base: Path, *, version: str = "1.2.3", arch: str = "amd64", **changes: object) -> tuple[StagedPackage, Path]:
    staged = make_staged(base / "stage", "linux", arch, version=version, payload_bytes=len(version) * 1000)
    staged = dataclasses.replace(staged, **changes)  # type: ignore[arg-type]
    outfile = base / deb.package_filename(staged)
    result = deb.build(staged, outfile)
    assert result.path == outfile
    assert result.size == outfile.stat().st_size
    assert result.sha256 == hashlib.sha256(outfile.read_bytes()).hexdigest()
    return staged, outfile


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[StagedPackage, Path]:
    return _build(tmp_path_factory.mktemp("deb"))


@pytest.fixture(scope="module")
def upgrade(tmp_path_factory: pytest.TempPathFactory) -> tuple[StagedPackage, Path]:
    return _build(tmp_path_factory.mktemp("deb-upgrade"), version="1.2.4", secret="rotated-secret-4567")


def _listing(package: Path) -> dict[str, tuple[str, str, str]]:
    """``dpkg-deb -c``: path → (mode string, owner/group, link target or "")."""
    entries = {}
    for line in run_tool("dpkg-deb", "-c", package).stdout.splitlines():
        mode, owner, _size, date, time_, rest = line.split(None, 5)
        assert (date, time_) == ("2023-11-14", "22:13"), line  # every mtime is SOURCE_DATE_EPOCH
        name, _, target = rest.partition(" -> ")
        entries[name] = (mode, owner, target)
    return entries


def test_control_fields(built: tuple[StagedPackage, Path], tmp_path: Path) -> None:
    _staged, package = built
    info = run_tool("dpkg-deb", "-I", package).stdout
    for member in ("control", "md5sums", "preinst", "postinst", "prerm", "postrm"):
        assert f" {member} " in info
    assert "conffiles" not in info  # /etc/default/orbit is replaced on upgrade, never prompted for (ADR 0006)
    fields = {
        name: run_tool("dpkg-deb", "-f", package, name).stdout.strip()
        for name in ("Package", "Version", "Architecture", "Maintainer", "Section", "Priority", "Installed-Size")
    }
    assert fields == {
        "Package": "fleet-osquery",
        "Version": "1.2.3",
        "Architecture": "amd64",
        "Maintainer": "Fleet Device Management <engineering@fleetdm.com>",
        "Section": "admin",
        "Priority": "optional",
        "Installed-Size": str(_installed_size(package, tmp_path / "x")),
    }
    description = run_tool("dpkg-deb", "-f", package, "Description").stdout
    assert description.startswith("Fleet osquery -- runtime and autoupdater\n")
    assert all(len(line) <= 80 for line in description.splitlines())


def _installed_size(package: Path, into: Path) -> int:
    """dpkg-gencontrol's rule, recomputed over what ``dpkg-deb -x`` extracts."""
    run_tool("dpkg-deb", "-x", package, into)
    total = 1
    system_dirs = {into / str(path).lstrip("/") for path in SYSTEM_DIRS}  # not in the package: the preinst makes them
    for directory, dirs, files in os.walk(into):
        for name in files + [d for d in dirs if os.path.islink(os.path.join(directory, d))]:
            total += math.ceil(os.lstat(os.path.join(directory, name)).st_size / 1024)
        real_dirs = [Path(directory, d) for d in dirs if not os.path.islink(os.path.join(directory, d))]
        total += sum(1 for d in real_dirs if d not in system_dirs)
    return total


def test_file_list_modes_and_owners(built: tuple[StagedPackage, Path]) -> None:
    staged, package = built
    entries = _listing(package)
    assert {owner for _mode, owner, _target in entries.values()} == {"root/root"}
    expected = {
        "./etc/default/orbit": ("-rw-------", ""),
        "./usr/lib/systemd/system/orbit.service": ("-rw-r--r--", ""),
        "./opt/orbit/bin/orbit/linux/stable/orbit": ("-rwxr-xr-x", ""),
        "./opt/orbit/bin/osqueryd/linux/stable/osqueryd": ("-rwxr-xr-x", ""),
        "./opt/orbit/updates-metadata.json": ("-rw-------", ""),
        "./opt/orbit/osquery.flags": ("-rw-------", ""),
        "./opt/orbit/fleet.pem": ("-rw-r--r--", ""),
        "./opt/orbit/bin/orbit/orbit": ("lrwxrwxrwx", "linux/stable/orbit"),
        "./usr/local/bin/orbit": ("lrwxrwxrwx", "/opt/orbit/bin/orbit/orbit"),
        "./var/log/orbit/": ("drwxr-xr-x", ""),
        "./var/log/osquery/": ("drwxr-xr-x", ""),
        "./usr/share/lintian/overrides/fleet-osquery": ("-rw-r--r--", ""),
    }
    for path, (mode, target) in expected.items():
        assert entries[path][0] == mode and entries[path][2] == target, (path, entries.get(path))
    for item in staged.files:  # every staged file, with its staged mode
        assert entries[f"./opt/orbit/{item.path}"][0] == stat.filemode(stat.S_IFREG | item.mode)
    names = list(entries)
    for name in names:  # every parent precedes its children (dpkg needs them to unpack)
        parent = name.rstrip("/").rsplit("/", 1)[0] + "/"
        if parent.rstrip("/").removeprefix(".") in {str(path) for path in SYSTEM_DIRS}:
            continue  # the system's own directory: not in the package, the preinst makes sure it exists
        assert name == "./" or names.index(parent) < names.index(name)


def test_md5sums_match_the_data(built: tuple[StagedPackage, Path], tmp_path: Path) -> None:
    _staged, package = built
    run_tool("dpkg-deb", "-x", package, tmp_path / "data")
    run_tool("dpkg-deb", "-e", package, tmp_path / "control")
    listed: dict[str, str] = {}
    for line in (tmp_path / "control/md5sums").read_text().splitlines():
        digest, name = line.split("  ", 1)
        listed[name] = digest
    regular = {
        str(path.relative_to(tmp_path / "data"))
        for path in (tmp_path / "data").rglob("*")
        if path.is_file() and not path.is_symlink()
    }
    assert set(listed) == regular
    for name, digest in listed.items():
        assert hashlib.md5((tmp_path / "data" / name).read_bytes()).hexdigest() == digest
    environment = (tmp_path / "data/etc/default/orbit").read_text()
    assert f"ORBIT_ENROLL_SECRET={SECRET}\n" in environment
    assert "ORBIT_FLEET_URL=https://fleet.example.com\n" in environment
    unit = (tmp_path / "data/usr/lib/systemd/system/orbit.service").read_text()
    for directive in ("Restart=always", "RestartSec=1", "StartLimitIntervalSec=0", "KillMode=control-group"):
        assert f"\n{directive}\n" in unit
    assert "\nExecStart=/opt/orbit/bin/orbit/orbit\n" in unit
    assert "\nEnvironmentFile=/etc/default/orbit\n" in unit


def test_maintainer_scripts_pass_shellcheck(built: tuple[StagedPackage, Path], tmp_path: Path) -> None:
    _staged, package = built
    run_tool("dpkg-deb", "-e", package, tmp_path)
    for script in ("postinst", "prerm", "postrm"):
        path = tmp_path / script
        assert stat.S_IMODE(path.stat().st_mode) == 0o755
        assert path.read_text().startswith("#!/bin/sh\n")
        result = run_tool("shellcheck", "-s", "sh", path, check=False)
        assert result.returncode == 0, result.stdout


def test_lintian_is_clean_except_the_shipped_overrides(built: tuple[StagedPackage, Path]) -> None:
    _staged, package = built
    result = run_tool("lintian", "--fail-on", "error,warning", package, check=False)
    problems = [line for line in result.stdout.splitlines() if line[:2] in ("E:", "W:")]
    assert result.returncode == 0 and not problems, result.stdout


def test_lintian_is_clean_with_a_real_elf_binary(tmp_path: Path) -> None:
    """Stand-in shell scripts hide the binary checks; a real (Debian-built) dynamically linked ELF passes too."""
    staged = make_staged(tmp_path / "stage", "linux")
    interpreter = Path(os.path.realpath(shutil.which("gzip") or "/bin/gzip"))  # Essential, dynamically linked
    files = tuple(
        dataclasses.replace(item, source=interpreter) if item.path.name == "orbit" else item for item in staged.files
    )
    package = deb.build(dataclasses.replace(staged, files=files), tmp_path / "real.deb").path
    result = run_tool("lintian", "--fail-on", "error,warning", package, check=False)
    assert result.returncode == 0, result.stdout


def test_lintian_fails_without_the_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The lintian check can fail: without the shipped overrides the layout's policy tags are reported."""
    monkeypatch.setattr(deb, "LINTIAN_OVERRIDES", ())
    _staged, package = _build(tmp_path)
    result = run_tool("lintian", "--fail-on", "error,warning", package, check=False)
    assert result.returncode != 0
    for tag in ("dir-or-file-in-opt", "file-in-usr-local", "file-in-etc-not-marked-as-conffile"):
        assert tag in result.stdout


def test_unit_passes_systemd_analyze_verify(built: tuple[StagedPackage, Path], tmp_path: Path) -> None:
    _staged, package = built
    root = make_scratch_root(tmp_path / "root")
    root.dpkg("-i", package)
    assert verify_unit(root) == ""
    root.host("/opt/orbit/bin/orbit/linux/stable/orbit").unlink()  # the verifier does notice a missing ExecStart
    assert "/opt/orbit/bin/orbit/orbit" in verify_unit(root)


def _status(root: ScratchRoot) -> str:
    result = run_tool(
        "dpkg-query", f"--admindir={root.path}/var/lib/dpkg", "-W", "-f=${Status} ${Version}", "fleet-osquery",
        check=False,
    )  # fmt: skip
    return result.stdout if result.returncode == 0 else "not installed"


def test_install_upgrade_remove_purge(
    built: tuple[StagedPackage, Path], upgrade: tuple[StagedPackage, Path], tmp_path: Path
) -> None:
    _staged, package = built
    upgraded, package_2 = upgrade
    root = make_scratch_root(tmp_path / "root")

    root.dpkg("-i", package)
    assert root.take_calls() == INSTALL
    assert _status(root) == "install ok installed 1.2.3"
    assert os.readlink(root.host("/opt/orbit/bin/orbit/orbit")) == "linux/stable/orbit"
    assert os.readlink(root.host("/usr/local/bin/orbit")) == "/opt/orbit/bin/orbit/orbit"
    environment = root.host("/etc/default/orbit")
    assert stat.S_IMODE(environment.stat().st_mode) == 0o600
    assert f"ORBIT_ENROLL_SECRET={SECRET}\n" in environment.read_text()
    assert stat.S_IMODE(root.host("/usr/lib/systemd/system/orbit.service").stat().st_mode) == 0o644
    assert root.host("/var/log/orbit").is_dir() and root.host("/var/log/osquery").is_dir()
    verified = root.dpkg("--verify", "fleet-osquery")
    assert verified.stdout == ""

    # What the running agent writes, and an admin's edit of the generated environment file.
    root.host("/opt/orbit/secret-orbit-node-key.txt").write_text("node-key")
    root.host("/var/log/orbit/orbit.log").write_text("log")
    environment.write_text(environment.read_text() + "ORBIT_DEBUG=true\n")

    upgraded_run = root.dpkg("-i", package_2)  # stdin is /dev/null: a conffile prompt would fail here
    calls = root.take_calls()
    assert calls == INSTALL  # the running agent is restarted, never stopped or disabled
    assert not any("stop" in call or "disable" in call for call in calls)
    assert "conffile" not in upgraded_run.stdout + upgraded_run.stderr
    assert _status(root) == "install ok installed 1.2.4"
    assert "ORBIT_ENROLL_SECRET=rotated-secret-4567\n" in environment.read_text()  # the new package's settings
    assert "ORBIT_DEBUG" not in environment.read_text()
    orbit = upgraded.file("bin/orbit/linux/stable/orbit")
    assert orbit is not None
    assert root.host("/opt/orbit/bin/orbit/linux/stable/orbit").read_bytes() == orbit.source.read_bytes()
    assert root.host("/opt/orbit/secret-orbit-node-key.txt").read_text() == "node-key"

    root.dpkg("-r", "fleet-osquery")
    assert root.take_calls() == REMOVE + RELOAD
    assert _status(root) == "deinstall ok config-files 1.2.4"
    for gone in ("/etc/default/orbit", "/usr/lib/systemd/system/orbit.service", "/usr/local/bin/orbit"):
        assert not os.path.lexists(root.host(gone)), gone
    assert not root.host("/opt/orbit/bin/orbit/linux/stable/orbit").exists()
    assert root.host("/opt/orbit/secret-orbit-node-key.txt").exists()  # state stays until purge (Debian)

    root.dpkg("--purge", "fleet-osquery")
    assert root.take_calls() == RELOAD
    assert _status(root) == "not installed"
    for gone in ("/opt/orbit", "/var/log/orbit", "/etc/default/orbit", "/usr/local/bin/orbit"):
        assert not os.path.lexists(root.host(gone)), gone
    # the system's unowned directories stay, empty or not: the package never lists them (directories that other
    # packages list, such as /etc/default, are shared in dpkg's database and stay while those packages do)
    for kept in ("/opt", "/usr/local", "/usr/local/bin"):
        assert root.host(kept).is_dir(), kept


def test_the_package_never_owns_the_systems_unowned_directories(
    built: tuple[StagedPackage, Path], tmp_path: Path
) -> None:
    """/opt and /usr/local/bin are listed by no Debian package: a .deb listing them owns them alone, and
    ``dpkg -r``/``-P`` deletes them when empty. The preinst creates them instead."""
    _staged, package = built
    listed = subprocess.run(["dpkg-deb", "--contents", str(package)], capture_output=True, text=True, check=True)
    paths = {line.split()[-1].rstrip("/") for line in listed.stdout.splitlines() if " -> " not in line}
    assert not {"./opt", "./usr/local", "./usr/local/bin"} & paths, sorted(paths)
    root = make_scratch_root(tmp_path / "root")
    for system_dir in ("/opt", "/usr/local/bin"):  # a clean root where they are missing: the preinst makes them
        assert not root.host(system_dir).exists()
    root.dpkg("-i", package)
    root.take_calls()
    assert os.readlink(root.host("/usr/local/bin/orbit")) == "/opt/orbit/bin/orbit/orbit"
    root.dpkg("--purge", "fleet-osquery")
    assert root.host("/opt").is_dir() and root.host("/usr/local/bin").is_dir()


@pytest.mark.parametrize(
    ("setup", "install_calls", "remove_calls"),
    [
        # a container or an image build: enable (offline, as deb-systemd-helper does), never start or stop
        ({"systemd_running": False}, ["systemctl enable orbit.service"], ["systemctl disable orbit.service"]),
        ({"systemctl": "missing"}, [], []),
        # a failing systemctl is reported but does not fail the package operation
        ({"systemctl": "failing"}, INSTALL, REMOVE[:2]),
    ],
    ids=["no-systemd-running", "no-systemctl", "failing-systemctl"],
)
def test_lifecycle_without_a_working_systemd(
    built: tuple[StagedPackage, Path],
    tmp_path: Path,
    setup: dict[str, object],
    install_calls: list[str],
    remove_calls: list[str],
) -> None:
    _staged, package = built
    root = make_scratch_root(tmp_path / "root", **setup)  # type: ignore[arg-type]
    installed = root.dpkg("-i", package)
    assert root.take_calls() == install_calls
    assert _status(root) == "install ok installed 1.2.3"
    if setup.get("systemctl") == "failing":
        assert "fleet-osquery: 'systemctl restart orbit.service' failed" in installed.stderr
    root.dpkg("--purge", "fleet-osquery")
    calls = root.take_calls()
    assert [call for call in calls if call != "systemctl daemon-reload"] == [*remove_calls, "pkill -x fleet-desktop"]
    assert not root.host("/opt/orbit").exists()


def test_inside_orbit_the_restart_and_stop_are_deferred(
    built: tuple[StagedPackage, Path], upgrade: tuple[StagedPackage, Path], tmp_path: Path
) -> None:
    """dpkg run by a Fleet script is in orbit's cgroup: restarting orbit.service inline would kill dpkg."""
    root = make_scratch_root(tmp_path / "root", inside_orbit=True)
    root.dpkg("-i", built[1])
    assert root.take_calls() == [*INSTALL[:2], f"{DEFERRED} restart orbit.service"]
    root.dpkg("-i", upgrade[1])
    assert root.take_calls() == [*INSTALL[:2], f"{DEFERRED} restart orbit.service"]
    root.dpkg("--purge", "fleet-osquery")
    calls = root.take_calls()
    assert calls[:3] == [f"{DEFERRED} stop orbit.service", "systemctl disable orbit.service", "pkill -x fleet-desktop"]
    assert "systemctl stop orbit.service" not in calls


def test_service_disabled_package_only_restarts_a_running_agent(tmp_path: Path) -> None:
    _staged, package = _build(tmp_path, service=False)
    root = make_scratch_root(tmp_path / "root")
    root.dpkg("-i", package)
    assert root.take_calls() == ["systemctl daemon-reload", "systemctl try-restart orbit.service"]


def test_arm64_package(tmp_path: Path) -> None:
    _staged, package = _build(tmp_path, arch="arm64")
    assert package.name == "fleet-osquery_1.2.3_arm64.deb"
    assert run_tool("dpkg-deb", "-f", package, "Architecture").stdout.strip() == "arm64"


def test_builds_are_reproducible(tmp_path: Path) -> None:
    first = _build(tmp_path / "a")[1].read_bytes()
    staged, second_path = _build(tmp_path / "b")
    for item in staged.files:  # other source paths and mtimes, reversed env order: same bytes
        os.utime(item.source, (1, 1))
    reordered = dataclasses.replace(staged, orbit_env=dict(reversed(list(staged.orbit_env.items()))))
    again = deb.build(reordered, tmp_path / "again.deb").path.read_bytes()
    assert first == second_path.read_bytes() == again
    changed = deb.build(dataclasses.replace(staged, secret="another-secret"), tmp_path / "changed.deb")
    assert changed.path.read_bytes() != first
    later = deb.build(dataclasses.replace(staged, source_date_epoch=EPOCH + 1), tmp_path / "later.deb")
    assert later.path.read_bytes() != first


def test_output_is_private_when_it_carries_the_secret(built: tuple[StagedPackage, Path], tmp_path: Path) -> None:
    _staged, package = built
    assert stat.S_IMODE(package.stat().st_mode) == 0o600
    _s, public = _build(tmp_path, secret=None)
    assert stat.S_IMODE(public.stat().st_mode) == 0o644


def _leftovers(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir() if path.name.endswith(".part"))


def test_unwritable_outfile_is_a_clear_error(built: tuple[StagedPackage, Path], tmp_path: Path) -> None:
    staged, _package = built
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    with pytest.raises(PackageOutputError, match=r"cannot write .*not-a-directory/x\.deb"):
        deb.build(staged, blocker / "x.deb")
    (tmp_path / "a-directory.deb").mkdir()
    with pytest.raises(PackageOutputError, match="it is a directory"):
        deb.build(staged, tmp_path / "a-directory.deb")
    assert _leftovers(tmp_path) == []


def test_missing_source_fails_before_writing(tmp_path: Path) -> None:
    staged = make_staged(tmp_path / "stage", "linux")
    staged.files[0].source.unlink()
    with pytest.raises(PackageOutputError, match="cannot read"):
        deb.build(staged, tmp_path / "x.deb")
    assert not (tmp_path / "x.deb").exists() and _leftovers(tmp_path) == []


def test_failure_while_writing_leaves_the_old_package_alone(tmp_path: Path) -> None:
    """A file-size limit (like a full disk) hits in the middle of data.tar.gz: the error names the outfile, the
    partial file is gone and the previous package is intact."""
    staged = make_staged(tmp_path / "stage", "linux")
    staged.files[0].source.write_bytes(os.urandom(2_000_000))  # incompressible, so the output really grows
    outfile = tmp_path / "fleet-osquery.deb"
    outfile.write_bytes(b"previous package")
    result = build_with_file_size_limit("deb", staged, outfile, tmp_path / "staged.pickle")
    assert result.returncode == 3, result.stdout + result.stderr
    assert result.stdout.startswith(f"PackageOutputError cannot write {outfile}: File too large")
    assert outfile.read_bytes() == b"previous package"
    assert _leftovers(tmp_path) == []


def test_invalid_input_is_refused(tmp_path: Path) -> None:
    staged = make_staged(tmp_path / "stage", "linux")
    orbit = staged.files[0]
    escaping = StagedFile(PurePosixPath("../etc/x"), orbit.source, 0o644)
    cases: list[tuple[StagedPackage, str]] = [
        (dataclasses.replace(staged, version="1.2.3 beta"), "not a Debian version"),
        (dataclasses.replace(staged, version="v1.2.3"), "not a Debian version"),
        (dataclasses.replace(staged, platform="macos"), "linux staging"),
        (dataclasses.replace(staged, name="Fleet/osquery"), "package name"),
        (dataclasses.replace(staged, extra={"maintainer": "x <a@b>\nDepends: evil"}), "control field Maintainer"),
        (dataclasses.replace(staged, arch="386"), "architecture"),
        (dataclasses.replace(staged, agent_root=PurePosixPath("/")), "agent root"),
        (dataclasses.replace(staged, agent_root=PurePosixPath("/opt/my orbit")), "agent root"),
        (dataclasses.replace(staged, files=(*staged.files, escaping)), "relative path"),
        (dataclasses.replace(staged, files=(*staged.files, dataclasses.replace(orbit, mode=0o4755))), "set-id"),
        (dataclasses.replace(staged, files=(*staged.files, orbit)), "staged twice"),
        (dataclasses.replace(staged, symlinks=(StagedSymlink(PurePosixPath("bin/x"), "a\nb"),)), "symlink target"),
        (dataclasses.replace(staged, symlinks=()), "the service runs"),
        (dataclasses.replace(staged, secret="line\nbreak"), "line breaks"),
        (dataclasses.replace(staged, secret="it's"), "quotes"),
        (dataclasses.replace(staged, secret="   "), "empty"),
        (dataclasses.replace(staged, orbit_env={"ORBIT X": "1"}), "not a valid environment variable name"),
        (dataclasses.replace(staged, orbit_env={"ORBIT_ENROLL_SECRET": "s"}), "belongs in StagedPackage.secret"),
    ]  # fmt: skip
    for bad, message in cases:
        with pytest.raises(LinuxPackageError, match=message):
            deb.build(bad, tmp_path / "x.deb")
    assert list(tmp_path.glob("*.deb")) == [] and _leftovers(tmp_path) == []


def test_environment_file_means_the_same_to_sh(tmp_path: Path) -> None:
    """Values that need it are single-quoted: literal for systemd's EnvironmentFile= parser and for sh."""
    values = {
        "ORBIT_PLAIN": "https://fleet.example.com:8080/path?x=1",
        "ORBIT_SPACES": "a b  c",
        "ORBIT_SHELLY": 'x$HOME;`id`"\\#*',
        "ORBIT_EMPTY": "",
    }
    text = linux_service.env_file(values, "s3cr3t with space")
    assert text.splitlines()[-1] == "ORBIT_ENROLL_SECRET='s3cr3t with space'"
    assert "ORBIT_PLAIN=https://fleet.example.com:8080/path?x=1" not in text  # '?' is quoted too
    names = [line.split("=", 1)[0] for line in text.splitlines() if not line.startswith("#")]
    assert names == [*sorted(values), "ORBIT_ENROLL_SECRET"]
    path = tmp_path / "orbit"
    path.write_text(text)
    for name, value in {**values, "ORBIT_ENROLL_SECRET": "s3cr3t with space"}.items():
        shown = subprocess.run(
            ["sh", "-c", f'. "$1"; printf %s "${name}"', "sh", path], capture_output=True, text=True, check=True
        ).stdout
        assert shown == value, name
    with pytest.raises(ServiceConfigError):
        linux_service.env_file({"ORBIT_X": "a'b"}, None)
