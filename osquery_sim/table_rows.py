"""Rows of the sim's tables that follow from values alone: identity, runtime facts, flags, clocks.

Owns ``SimRuntime`` (what ``osquery_info`` reports about the running sim), ``OsqueryFlag``/``RegistryPlugin`` (rows of
``osquery_flags``/``osquery_registry``) and one pure builder per table. Builders return rows keyed by osquery column
name with values as osquery's generators set them (mostly strings); a column they leave out is NULL, exactly like a
key osquery's generator does not set. Rows from the live machine (processes, interfaces, users) are in ``live_rows``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass

from osquery_sim.identity import SimIdentity
from osquery_sim.table_values import RawValue

RawRow = dict[str, RawValue]

# osquery's PlatformType bits (osquery/utils/info/platform_type.h).
_POSIX, _WINDOWS, _BSD, _LINUX, _OSX, _FREEBSD = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20


def platform_mask_for(system: str) -> int:
    """osquery_info.platform_mask for a ``sys.platform`` value (Linux builds report 9 = posix | linux)."""
    if system.startswith("linux"):
        return _POSIX | _LINUX
    if system == "darwin":
        return _POSIX | _OSX
    if system in ("win32", "cygwin"):
        return _WINDOWS
    if system.startswith("freebsd"):
        return _POSIX | _BSD | _FREEBSD
    return _POSIX


@dataclass(frozen=True)
class SimRuntime:
    """What osquery_info says about this process; ``version`` must show it is a simulator (e.g. ``5.14.1+sim``)."""

    version: str
    instance_id: str
    pid: int
    start_time: int
    config_hash: str = ""
    config_valid: bool = False
    extensions: str = "inactive"
    watcher: int = -1
    build_platform: str = "linux"
    build_distro: str = "centos7"
    platform_mask: int = platform_mask_for(sys.platform)


@dataclass(frozen=True)
class OsqueryFlag:
    """One row of osquery_flags."""

    name: str
    type: str
    description: str
    default_value: str
    value: str
    shell_only: bool = False


@dataclass(frozen=True)
class RegistryPlugin:
    """A non-table plugin listed by osquery_registry (the sim's tables are added automatically)."""

    registry: str
    name: str
    active: bool = True
    internal: bool = False
    owner_uuid: int = 0  # the extension providing it (0: osquery core)


DEFAULT_PLUGINS: tuple[RegistryPlugin, ...] = (
    RegistryPlugin("config", "filesystem", active=False),
    RegistryPlugin("config", "tls"),
    RegistryPlugin("distributed", "tls"),
    RegistryPlugin("enroll", "tls"),
    RegistryPlugin("logger", "filesystem", active=False),
    RegistryPlugin("logger", "tls"),
    RegistryPlugin("sql", "sql", internal=True),
)


def _flag(value: bool) -> str:
    return "1" if value else "0"


def system_info_rows(identity: SimIdentity) -> list[RawRow]:
    row: RawRow = {
        "hostname": identity.hostname,
        "computer_name": identity.computer_name,
        "local_hostname": identity.local_hostname,
        "uuid": identity.uuid,
        "cpu_type": identity.cpu_type,
        "cpu_subtype": identity.cpu_subtype,
        "cpu_brand": identity.cpu_brand,
        "cpu_physical_cores": identity.cpu_physical_cores,
        "cpu_logical_cores": identity.cpu_logical_cores,
        "cpu_sockets": identity.cpu_sockets,
        "physical_memory": identity.physical_memory,
        "hardware_vendor": identity.hardware_vendor,
        "hardware_model": identity.hardware_model,
        "hardware_version": identity.hardware_version,
        "hardware_serial": identity.hardware_serial,
        "board_vendor": identity.board_vendor,
        "board_model": identity.board_model,
        "board_version": identity.board_version,
        "board_serial": identity.board_serial,
    }
    if identity.cpu_microcode:
        row["cpu_microcode"] = identity.cpu_microcode
    return [row]


def os_version_rows(identity: SimIdentity) -> list[RawRow]:
    return [
        {
            "name": identity.os_name,
            "version": identity.os_version or None,
            "major": identity.os_major,
            "minor": identity.os_minor,
            "patch": identity.os_patch,
            "build": identity.os_build or None,
            "platform": identity.os_platform,
            "platform_like": identity.os_platform_like or None,
            "codename": identity.os_codename or None,
            "arch": identity.os_arch,
            "pid_with_namespace": "0",
        }
    ]


def osquery_info_rows(identity: SimIdentity, runtime: SimRuntime) -> list[RawRow]:
    return [
        {
            "pid": runtime.pid,
            "uuid": identity.uuid,
            "instance_id": runtime.instance_id,
            "version": runtime.version,
            "config_hash": runtime.config_hash,
            "config_valid": _flag(runtime.config_valid),
            "extensions": runtime.extensions,
            "build_platform": runtime.build_platform,
            "build_distro": runtime.build_distro,
            "start_time": runtime.start_time,
            "watcher": runtime.watcher,
            "platform_mask": runtime.platform_mask,
        }
    ]


def kernel_info_rows(identity: SimIdentity) -> list[RawRow]:
    row: RawRow = {"arguments": identity.kernel_arguments}
    for column, value in (
        ("version", identity.kernel_version),
        ("path", identity.kernel_path),
        ("device", identity.kernel_device),
    ):
        if value:
            row[column] = value
    return [row]


def platform_info_rows(identity: SimIdentity) -> list[RawRow]:
    """One row from the BIOS DMI strings, none when they cannot be read (as osquery without SMBIOS access)."""
    if not identity.bios_readable:
        return []
    return [
        {
            "vendor": identity.bios_vendor,
            "version": identity.bios_version,
            "date": identity.bios_date,
            "revision": identity.bios_revision,
            "extra": "",
            "firmware_type": identity.firmware_type,
            "volume_size": "0",
        }
    ]


def uptime_rows(seconds: float) -> list[RawRow]:
    total = int(seconds)
    if total < 0:
        return []
    return [
        {
            "days": total // 86400,
            "hours": total // 3600 % 24,
            "minutes": total // 60 % 60,
            "seconds": total % 60,
            "total_seconds": total,
        }
    ]


def time_rows(now: float, local_timezone: str) -> list[RawRow]:
    """The time table: UTC fields, ``timestamp`` in asctime form with `` UTC``, ISO 8601 twice."""
    unix = int(now)
    utc = time.gmtime(unix)
    iso = time.strftime("%Y-%m-%dT%H:%M:%SZ", utc)
    return [
        {
            "weekday": time.strftime("%A", utc),
            "year": utc.tm_year,
            "month": utc.tm_mon,
            "day": utc.tm_mday,
            "hour": utc.tm_hour,
            "minutes": utc.tm_min,
            "seconds": utc.tm_sec,
            "timezone": "UTC",
            "local_timezone": local_timezone or "UTC",
            "unix_time": unix,
            "timestamp": time.asctime(utc) + " UTC",
            "datetime": iso,
            "iso_8601": iso,
        }
    ]


def registry_rows(table_names: Iterable[str], plugins: Iterable[RegistryPlugin]) -> list[RawRow]:
    """osquery_registry: the plugins plus one active ``table`` plugin per sim table, sorted like osquery's maps."""
    entries = [*plugins, *(RegistryPlugin("table", name) for name in table_names)]
    return [
        {
            "registry": plugin.registry,
            "name": plugin.name,
            "owner_uuid": str(plugin.owner_uuid),
            "internal": _flag(plugin.internal),
            "active": _flag(plugin.active),
        }
        for plugin in sorted(entries, key=lambda plugin: (plugin.registry, plugin.name))
    ]


def flag_rows(flags: Iterable[OsqueryFlag]) -> list[RawRow]:
    """osquery_flags, which skips single-character flags such as ``-S`` and ``-L``."""
    return [
        {
            "name": flag.name,
            "type": flag.type,
            "description": flag.description,
            "default_value": flag.default_value,
            "value": flag.value,
            "shell_only": _flag(flag.shell_only),
        }
        for flag in sorted(flags, key=lambda flag: flag.name)
        if len(flag.name) > 2
    ]
