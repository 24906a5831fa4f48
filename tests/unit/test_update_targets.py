"""Fleet's target names, paths and platforms (docs/reference/fleet-api.md §6)."""

from __future__ import annotations

import pytest

from tuf_updates.targets import (
    Platform,
    TargetName,
    TargetSpec,
    UnknownTargetError,
    file_name,
    host_platform,
    is_native,
    target_spec,
)

FILES = [
    ("orbit", "linux", "orbit"),
    ("orbit", "linux-arm64", "orbit"),
    ("orbit", "macos", "orbit"),
    ("orbit", "windows", "orbit.exe"),
    ("orbit", "windows-arm64", "orbit.exe"),
    ("osqueryd", "linux", "osqueryd"),
    ("osqueryd", "linux-arm64", "osqueryd"),
    ("osqueryd", "macos-app", "osqueryd.app.tar.gz"),
    ("osqueryd", "windows", "osqueryd.exe"),
    ("desktop", "linux", "desktop.tar.gz"),
    ("desktop", "linux-arm64", "desktop.tar.gz"),
    ("desktop", "macos", "desktop.app.tar.gz"),
    ("desktop", "windows", "fleet-desktop.exe"),
]


@pytest.mark.parametrize(("name", "platform", "expected"), FILES)
def test_file_names_follow_fleet(name: str, platform: str, expected: str) -> None:
    assert file_name(name, platform) == expected
    spec = target_spec(name, platform, "stable")
    assert spec.path == f"{name}/{platform}/stable/{expected}"
    assert spec.install_parts == (name, platform, "stable")


def test_executables_inside_archives() -> None:
    assert target_spec("osqueryd", "macos-app", "stable").executable == "osquery.app/Contents/MacOS/osqueryd"
    assert target_spec("desktop", "macos", "edge").executable == "Fleet Desktop.app/Contents/MacOS/fleet-desktop"
    assert target_spec("desktop", "linux", "stable").executable == "fleet-desktop/fleet-desktop"
    assert target_spec("desktop", "linux-arm64", "1.2").is_archive
    plain = target_spec("orbit", "windows", "stable")
    assert plain.executable == "orbit.exe" and not plain.is_archive


def test_unknown_names_platforms_and_channels_are_explained() -> None:
    with pytest.raises(UnknownTargetError, match=r"unknown target name 'osquery'.*orbit, osqueryd, desktop"):
        target_spec("osquery", "linux", "stable")
    with pytest.raises(UnknownTargetError, match="unknown platform 'darwin'"):
        target_spec("orbit", "darwin", "stable")
    with pytest.raises(UnknownTargetError, match=r"osqueryd is not published for macos: use one of .*macos-app"):
        target_spec("osqueryd", "macos", "stable")
    with pytest.raises(UnknownTargetError, match="desktop is not published for macos-app"):
        TargetSpec(TargetName.DESKTOP, Platform.MACOS_APP, "stable")
    for channel in ("", "../stable", "a/b", "..", ".hidden", "x" * 65, "st able"):
        with pytest.raises(UnknownTargetError, match="invalid channel"):
            target_spec("orbit", "linux", channel)
    assert target_spec("orbit", "linux", "1.38.1").channel == "1.38.1"


def test_host_platform_per_component() -> None:
    assert host_platform("orbit", system="Linux", machine="x86_64") is Platform.LINUX
    assert host_platform("desktop", system="Linux", machine="aarch64") is Platform.LINUX_ARM64
    assert host_platform("osqueryd", system="Darwin", machine="arm64") is Platform.MACOS_APP
    assert host_platform("orbit", system="Darwin", machine="x86_64") is Platform.MACOS
    assert host_platform("orbit", system="Windows", machine="AMD64") is Platform.WINDOWS
    assert host_platform("orbit", system="Windows", machine="ARM64") is Platform.WINDOWS_ARM64
    with pytest.raises(UnknownTargetError, match="unsupported operating system 'freebsd'"):
        host_platform("orbit", system="FreeBSD", machine="amd64")


def test_native_platforms() -> None:
    assert is_native(Platform.LINUX, system="Linux", machine="x86_64")
    assert not is_native(Platform.LINUX_ARM64, system="Linux", machine="x86_64")
    assert not is_native(Platform.MACOS_APP, system="Linux", machine="x86_64")
    assert is_native(Platform.MACOS_APP, system="Darwin", machine="arm64")
    assert is_native(Platform.WINDOWS, system="Windows", machine="AMD64")
    assert not is_native(Platform.WINDOWS, system="Linux", machine="x86_64")
