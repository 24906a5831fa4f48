"""Fleet's TUF target names (docs/reference/fleet-api.md §6, docs/reference/orbit-behaviour.md §7.2); pure, no I/O.

A target is ``<name>/<platform>/<channel>/<file>``; ``.tar.gz`` targets carry the executable at a fixed sub-path
once extracted. The local install directory of a target is ``bin/<name>/<platform>/<channel>/`` under orbit's root.
"""

from __future__ import annotations

import platform as host
import re
from dataclasses import dataclass
from enum import StrEnum


class TargetName(StrEnum):
    ORBIT = "orbit"
    OSQUERYD = "osqueryd"
    DESKTOP = "desktop"


class Platform(StrEnum):
    LINUX = "linux"
    LINUX_ARM64 = "linux-arm64"
    MACOS = "macos"
    MACOS_APP = "macos-app"
    WINDOWS = "windows"
    WINDOWS_ARM64 = "windows-arm64"


class UnknownTargetError(ValueError):
    """A name, platform or channel that Fleet's layout does not have."""


_FILES: dict[tuple[TargetName, Platform], str] = {
    (TargetName.ORBIT, Platform.LINUX): "orbit",
    (TargetName.ORBIT, Platform.LINUX_ARM64): "orbit",
    (TargetName.ORBIT, Platform.MACOS): "orbit",
    (TargetName.ORBIT, Platform.WINDOWS): "orbit.exe",
    (TargetName.ORBIT, Platform.WINDOWS_ARM64): "orbit.exe",
    (TargetName.OSQUERYD, Platform.LINUX): "osqueryd",
    (TargetName.OSQUERYD, Platform.LINUX_ARM64): "osqueryd",
    (TargetName.OSQUERYD, Platform.MACOS_APP): "osqueryd.app.tar.gz",
    (TargetName.OSQUERYD, Platform.WINDOWS): "osqueryd.exe",
    (TargetName.OSQUERYD, Platform.WINDOWS_ARM64): "osqueryd.exe",
    (TargetName.DESKTOP, Platform.LINUX): "desktop.tar.gz",
    (TargetName.DESKTOP, Platform.LINUX_ARM64): "desktop.tar.gz",
    (TargetName.DESKTOP, Platform.MACOS): "desktop.app.tar.gz",
    (TargetName.DESKTOP, Platform.WINDOWS): "fleet-desktop.exe",
    (TargetName.DESKTOP, Platform.WINDOWS_ARM64): "fleet-desktop.exe",
}

# the executable inside an extracted archive, relative to the directory it is extracted into
_ARCHIVE_EXECUTABLES: dict[str, str] = {
    "osqueryd.app.tar.gz": "osquery.app/Contents/MacOS/osqueryd",
    "desktop.app.tar.gz": "Fleet Desktop.app/Contents/MacOS/fleet-desktop",
    "desktop.tar.gz": "fleet-desktop/fleet-desktop",
}

_CHANNEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


@dataclass(frozen=True)
class TargetSpec:
    """One tracked target: which component, for which platform, on which channel."""

    name: TargetName
    platform: Platform
    channel: str

    def __post_init__(self) -> None:
        if (self.name, self.platform) not in _FILES:
            valid = ", ".join(p.value for n, p in _FILES if n == self.name)
            raise UnknownTargetError(f"{self.name} is not published for {self.platform}: use one of {valid}")
        validate_channel(self.channel)

    @property
    def file_name(self) -> str:
        return _FILES[(self.name, self.platform)]

    @property
    def path(self) -> str:
        """The TUF target path, ``<name>/<platform>/<channel>/<file>``."""
        return f"{self.name}/{self.platform}/{self.channel}/{self.file_name}"

    @property
    def is_archive(self) -> bool:
        return self.file_name.endswith(".tar.gz")

    @property
    def executable(self) -> str:
        """The executable relative to the install directory: the file itself, or its path inside the archive."""
        return _ARCHIVE_EXECUTABLES.get(self.file_name, self.file_name)

    @property
    def install_parts(self) -> tuple[str, str, str]:
        """``(name, platform, channel)``: the directories under ``bin/`` that hold this target."""
        return (str(self.name), str(self.platform), self.channel)

    def __str__(self) -> str:
        return self.path


def parse_name(name: str) -> TargetName:
    try:
        return TargetName(name)
    except ValueError:
        valid = ", ".join(n.value for n in TargetName)
        raise UnknownTargetError(f"unknown target name {name!r}: expected one of {valid}") from None


def parse_platform(value: str) -> Platform:
    try:
        return Platform(value)
    except ValueError:
        valid = ", ".join(p.value for p in Platform)
        raise UnknownTargetError(f"unknown platform {value!r}: expected one of {valid}") from None


def validate_channel(channel: str) -> str:
    if not _CHANNEL.fullmatch(channel) or ".." in channel:
        raise UnknownTargetError(
            f"invalid channel {channel!r}: use letters, digits, '.', '_' or '-' (e.g. stable, edge, 1.38)"
        )
    return channel


def target_spec(name: str, platform: str, channel: str) -> TargetSpec:
    """Validate ``(name, platform, channel)`` against Fleet's layout, with a clear message for each mistake."""
    return TargetSpec(parse_name(name), parse_platform(platform), channel)


def file_name(name: str, platform: str) -> str:
    return target_spec(name, platform, "stable").file_name


def _arch_suffix(machine: str) -> str:
    return "-arm64" if machine.lower() in ("arm64", "aarch64", "armv8l", "arm64e") else ""


def host_platform(name: str, *, system: str | None = None, machine: str | None = None) -> Platform:
    """The platform directory of ``name`` on this machine (or on the given ``system``/``machine``).

    macOS has one universal binary per component: ``macos`` for orbit and Desktop, ``macos-app`` for osqueryd.
    """
    parsed = parse_name(name)
    os_name = (system if system is not None else host.system()).lower()
    arch = _arch_suffix(machine if machine is not None else host.machine())
    if os_name == "darwin":
        return Platform.MACOS_APP if parsed is TargetName.OSQUERYD else Platform.MACOS
    if os_name == "linux":
        return Platform(f"linux{arch}")
    if os_name == "windows":
        return Platform(f"windows{arch}")
    raise UnknownTargetError(f"unsupported operating system {os_name!r}: expected Linux, Darwin or Windows")


def is_native(platform: Platform, *, system: str | None = None, machine: str | None = None) -> bool:
    """Whether binaries of ``platform`` can run here (so an exec check makes sense)."""
    os_name = (system if system is not None else host.system()).lower()
    arch = _arch_suffix(machine if machine is not None else host.machine())
    if os_name == "darwin":
        return platform in (Platform.MACOS, Platform.MACOS_APP)
    if os_name == "linux":
        return platform.value == f"linux{arch}"
    if os_name == "windows":
        return platform.value == f"windows{arch}"
    return False
