"""The installer: atomic switch, previous version kept, rollback, adoption, exec check, archives, disk full."""

from __future__ import annotations

import errno
import hashlib
import io
import os
import tarfile
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

import pytest

from tuf_updates.errors import FailureKind, InstallError, LocalStorageError
from tuf_updates.exec_check import run_help
from tuf_updates.installer import TargetInstaller
from tuf_updates.repository_client import TargetInfo
from tuf_updates.targets import TargetSpec, target_spec

OSQUERYD = target_spec("osqueryd", "linux", "stable")
DESKTOP = target_spec("desktop", "linux", "stable")


def _script(text: str) -> bytes:
    return f"#!/bin/sh\n{text}\n".encode()


def _info(spec: TargetSpec, data: bytes, version: str) -> TargetInfo:
    hashes = {"sha256": hashlib.sha256(data).hexdigest(), "sha512": hashlib.sha512(data).hexdigest()}
    return TargetInfo(spec.path, len(data), MappingProxyType(hashes), version)


def _desktop_archive(executable: bytes, *, extra: str = "lib.so") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data, mode in (
            ("fleet-desktop/fleet-desktop", executable, 0o755),
            (f"fleet-desktop/{extra}", b"so", 0o644),
        ):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


class Recorder:
    def __init__(self, fail: bool = False) -> None:
        self.calls: list[tuple[Path, dict[str, str]]] = []
        self.fail = fail

    def __call__(self, executable: Path, env: Mapping[str, str]) -> None:
        self.calls.append((executable, dict(env)))
        if self.fail:
            raise InstallError(f"exec check: {executable.name} --help exited 1")


@pytest.fixture
def checks() -> Recorder:
    return Recorder()


@pytest.fixture
def installer(tmp_path: Path, checks: Recorder) -> TargetInstaller:
    return TargetInstaller(tmp_path / "root", exec_check=checks, system="Linux", machine="x86_64", base_env={})


def _stage(installer: TargetInstaller, spec: TargetSpec, data: bytes) -> Path:
    installer.staging_dir.mkdir(parents=True, exist_ok=True)
    staged = installer.staging_dir / spec.file_name
    staged.write_bytes(data)
    return staged


def _install(installer: TargetInstaller, spec: TargetSpec, data: bytes, version: str) -> TargetInfo:
    info = _info(spec, data, version)
    installer.install(spec, info, _stage(installer, spec, data))
    return info


def _listing(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*"))


def test_install_puts_the_binary_at_fleets_path_and_records_it(installer: TargetInstaller, checks: Recorder) -> None:
    data = _script("echo osqueryd 5.1.0")
    info = _install(installer, OSQUERYD, data, "5.1.0")
    executable = installer.executable_path(OSQUERYD)
    assert executable == installer.root_dir / "bin/osqueryd/linux/stable/osqueryd"
    assert executable.read_bytes() == data and os.access(executable, os.X_OK)
    assert not executable.is_symlink()
    installed = installer.installed(OSQUERYD)
    assert installed is not None and installed.version == "5.1.0" and installed.hashes == info.hashes
    assert installer.installed_hash(OSQUERYD, "sha512") == info.hashes["sha512"]
    assert installer.previous(OSQUERYD) is None
    assert [call[0].name for call in checks.calls] == ["osqueryd"]
    assert list(installer.staging_dir.iterdir()) == []  # the staged download is consumed


def test_updates_keep_exactly_the_previous_version_and_roll_back(installer: TargetInstaller) -> None:
    versions = {v: _script(f"echo {v}") for v in ("1.0.0", "1.1.0", "1.2.0")}
    for version, data in versions.items():
        _install(installer, OSQUERYD, data, version)
    executable = installer.executable_path(OSQUERYD)
    assert executable.read_bytes() == versions["1.2.0"]
    assert executable.with_name("osqueryd.previous").read_bytes() == versions["1.1.0"]
    assert len(list((executable.parent / ".versions").iterdir())) == 2  # 1.0.0 was tidied away
    result = installer.rollback(OSQUERYD)
    assert (result.current.version, result.previous and result.previous.version) == ("1.1.0", "1.2.0")
    assert executable.read_bytes() == versions["1.1.0"]
    current = installer.installed(OSQUERYD)
    assert current is not None and current.version == "1.1.0"
    assert installer.installed_hash(OSQUERYD, "sha256") == hashlib.sha256(versions["1.1.0"]).hexdigest()
    installer.rollback(OSQUERYD)  # and forward again
    assert executable.read_bytes() == versions["1.2.0"]


def test_rollback_without_a_previous_version(installer: TargetInstaller) -> None:
    with pytest.raises(InstallError, match="no previous version"):
        installer.rollback(OSQUERYD)
    _install(installer, OSQUERYD, _script("echo 1"), "1")
    with pytest.raises(InstallError, match="no previous version"):
        installer.rollback(OSQUERYD)


def test_reinstalling_the_same_version_changes_nothing(installer: TargetInstaller) -> None:
    _install(installer, OSQUERYD, _script("echo 1"), "1")
    _install(installer, OSQUERYD, _script("echo 2"), "2")
    _install(installer, OSQUERYD, _script("echo 2"), "2")
    previous = installer.previous(OSQUERYD)
    assert previous is not None and previous.version == "1"


def test_a_package_placed_binary_is_adopted_as_previous(installer: TargetInstaller) -> None:
    executable = installer.executable_path(OSQUERYD)
    executable.parent.mkdir(parents=True)
    packaged = _script("echo from the package")
    executable.write_bytes(packaged)
    assert installer.installed(OSQUERYD) is None
    assert installer.installed_hash(OSQUERYD, "sha256") == hashlib.sha256(packaged).hexdigest()
    _install(installer, OSQUERYD, _script("echo new"), "2.0.0")
    previous = installer.previous(OSQUERYD)
    assert previous is not None and previous.version is None
    assert previous.hashes["sha256"] == hashlib.sha256(packaged).hexdigest()
    installer.rollback(OSQUERYD)
    assert executable.read_bytes() == packaged


def test_a_binary_replaced_behind_our_back_is_rehashed(installer: TargetInstaller) -> None:
    _install(installer, OSQUERYD, _script("echo 1"), "1")
    executable = installer.executable_path(OSQUERYD)
    replacement = executable.with_name("other")
    replacement.write_bytes(_script("echo tampered"))
    os.replace(replacement, executable)
    assert installer.installed_hash(OSQUERYD, "sha256") == hashlib.sha256(_script("echo tampered")).hexdigest()
    assert installer.installed(OSQUERYD) is None  # no longer one of our recorded versions


def test_a_failed_exec_check_changes_nothing(tmp_path: Path) -> None:
    installer = TargetInstaller(tmp_path / "root", exec_check=Recorder(), system="Linux", machine="x86_64")
    _install(installer, OSQUERYD, _script("echo good"), "1")
    failing = TargetInstaller(tmp_path / "root", exec_check=Recorder(fail=True), system="Linux", machine="x86_64")
    before = _listing(failing.root_dir)
    with pytest.raises(InstallError, match="exited 1"):
        _install(failing, OSQUERYD, _script("exit 1"), "2")
    assert failing.executable_path(OSQUERYD).read_bytes() == _script("echo good")
    assert _listing(failing.root_dir) == before  # no incoming leftovers, staged file gone


def test_the_exec_check_is_skipped_for_a_foreign_platform(installer: TargetInstaller, checks: Recorder) -> None:
    arm = target_spec("osqueryd", "linux-arm64", "stable")
    _install(installer, arm, b"\x7fELF aarch64", "5.1.0")
    mac = target_spec("orbit", "windows", "stable")
    _install(installer, mac, b"MZ windows", "1.0.0")
    assert checks.calls == []
    assert installer.executable_path(arm).read_bytes() == b"\x7fELF aarch64"


def test_archives_are_extracted_and_switched_by_link(installer: TargetInstaller, checks: Recorder) -> None:
    first, second = _script("echo desktop 1"), _script("echo desktop 2")
    _install(installer, DESKTOP, _desktop_archive(first), "1.0.0")
    info = _install(installer, DESKTOP, _desktop_archive(second, extra="other.so"), "1.1.0")
    channel = installer.channel_dir(DESKTOP)
    executable = installer.executable_path(DESKTOP)
    assert executable == channel / "fleet-desktop" / "fleet-desktop"
    assert executable.read_bytes() == second and (channel / "fleet-desktop").is_symlink()
    assert (channel / "fleet-desktop.previous" / "fleet-desktop").read_bytes() == first
    assert installer.installed_hash(DESKTOP, "sha256") == info.hashes["sha256"]
    # Desktop on Linux is checked with LD_LIBRARY_PATH pointing at its own directory
    checked, env = checks.calls[-1]
    assert checked.name == "fleet-desktop" and env["LD_LIBRARY_PATH"] == str(checked.parent)
    installer.rollback(DESKTOP)
    assert executable.read_bytes() == first
    assert not (channel / "desktop.tar.gz").exists()


def test_a_package_extracted_desktop_directory_is_adopted(installer: TargetInstaller) -> None:
    channel = installer.channel_dir(DESKTOP)
    (channel / "fleet-desktop").mkdir(parents=True)
    (channel / "fleet-desktop" / "fleet-desktop").write_bytes(_script("echo packaged"))
    assert installer.installed_hash(DESKTOP, "sha256") is None  # unknown: the runner will fetch the target
    _install(installer, DESKTOP, _desktop_archive(_script("echo new")), "2.0.0")
    assert installer.executable_path(DESKTOP).read_bytes() == _script("echo new")
    installer.rollback(DESKTOP)
    assert installer.executable_path(DESKTOP).read_bytes() == _script("echo packaged")


def test_a_package_shipped_archive_is_recognised_by_its_hash_and_not_fetched_again(installer: TargetInstaller) -> None:
    """A package ships desktop.tar.gz beside what it extracted (orbitctl package does): its hash is the installed
    hash, so a first start does not download the same 30 MB again."""
    archive = _desktop_archive(_script("echo packaged"))
    channel = installer.channel_dir(DESKTOP)
    (channel / "fleet-desktop").mkdir(parents=True)
    (channel / "fleet-desktop" / "fleet-desktop").write_bytes(_script("echo packaged"))
    (channel / "desktop.tar.gz").write_bytes(archive)
    assert installer.installed_hash(DESKTOP, "sha256") == hashlib.sha256(archive).hexdigest()
    assert installer.installed_hash(DESKTOP, "sha512") == hashlib.sha512(archive).hexdigest()
    (channel / "fleet-desktop" / "fleet-desktop").unlink()  # the extracted program is gone: not installed
    assert installer.installed_hash(DESKTOP, "sha256") is None


def test_an_archive_without_the_executable_is_refused(installer: TargetInstaller) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        info = tarfile.TarInfo("something-else/binary")
        tar.addfile(info, io.BytesIO(b""))
    with pytest.raises(InstallError, match="fleet-desktop/fleet-desktop is missing"):
        _install(installer, DESKTOP, buffer.getvalue(), "1.0.0")
    assert not installer.executable_path(DESKTOP).exists()


def test_disk_full_while_installing_is_a_clean_error(
    installer: TargetInstaller, monkeypatch: pytest.MonkeyPatch
) -> None:
    _install(installer, OSQUERYD, _script("echo 1"), "1")
    before = _listing(installer.root_dir)

    def full(path: Path, data: dict[str, object]) -> None:
        path.with_name(".half-written.tmp").write_bytes(b"{")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("tuf_updates.installer.write_json_atomic", full)
    with pytest.raises(LocalStorageError) as caught:
        _install(installer, OSQUERYD, _script("echo 2"), "2")
    assert caught.value.kind is FailureKind.DISK_FULL and "disk full" in str(caught.value)
    assert installer.executable_path(OSQUERYD).read_bytes() == _script("echo 1")
    assert _listing(installer.root_dir) == before


def test_recover_cleans_leftovers_and_restores_a_missing_binary(installer: TargetInstaller) -> None:
    _install(installer, OSQUERYD, _script("echo 1"), "1")
    _install(installer, OSQUERYD, _script("echo 2"), "2")
    channel = installer.channel_dir(OSQUERYD)
    (channel / ".osqueryd.1234abcd.incoming").write_bytes(b"half")
    (channel / ".versions" / ".deadbeef.0000.incoming").mkdir()
    (channel / "osqueryd").unlink()  # e.g. a Windows swap interrupted between its two renames
    installer.recover(OSQUERYD)
    assert installer.executable_path(OSQUERYD).read_bytes() == _script("echo 1")  # what .previous held
    assert sorted(p.name for p in channel.iterdir()) == [".lock", ".versions", "osqueryd", "osqueryd.previous"]
    assert len(list((channel / ".versions").iterdir())) == 2


def test_the_real_exec_check(tmp_path: Path) -> None:
    good, bad, slow = (tmp_path / name for name in ("good", "bad", "slow"))
    good.write_bytes(_script('[ "$1" = --help ] && exit 0; exit 3'))
    bad.write_bytes(_script("echo broken >&2; exit 2"))
    slow.write_bytes(_script("sleep 30"))
    for path in (good, bad, slow):
        path.chmod(0o755)
    check = run_help(timeout=0.3)
    check(good, {"PATH": os.environ["PATH"]})
    with pytest.raises(InstallError, match="exited 2: broken"):
        check(bad, {"PATH": os.environ["PATH"]})
    with pytest.raises(InstallError, match=r"did not finish in 0\.3 s"):
        check(slow, {"PATH": os.environ["PATH"]})
    with pytest.raises(InstallError, match="cannot run"):
        check(tmp_path / "missing", {})
