"""The host as osquery's Linux tables describe it: DMI, os-release, hostname, CPU, memory, kernel, firmware.

Owns ``SimIdentity`` (one frozen value with every machine fact the sim's static tables show) and
``machine_identity``, which reads the real machine through a root directory (tests pass a fake tree) and then applies
the ``--sim_*`` overrides of a simulated identity. Parsing follows osquery's own readers (``system_info``,
``os_version``, ``kernel_info``, ``platform_info`` on Linux), quirks included. A missing or unreadable file only
leaves its fields empty; nothing here raises for the machine's sake.
"""

from __future__ import annotations

import os
import platform
import re
import socket
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import psutil

# osquery ignores these well-known placeholder product UUIDs (kPlaceholderHardwareUUIDList, osquery/core/system.cpp).
PLACEHOLDER_UUIDS = frozenset(
    {
        "00000000-0000-0000-0000-000000000000",
        "03000200-0400-0500-0006-000700080009",
        "03020100-0504-0706-0809-0a0b0c0d0e0f",
        "10000000-0000-8000-0040-000000000000",
    }
)
OVERRIDE_KEYS = frozenset(
    {
        "uuid",
        "hostname",
        "computer_name",
        "hardware_serial",
        "hardware_model",
        "hardware_vendor",
        "os_platform",
        "os_platform_like",
        "os_name",
        "os_version",
        "os_codename",
    }
)
# Namespace for the stable host UUID derived from /etc/machine-id (never the raw id: machine-id(5) asks apps to hash).
_MACHINE_ID_NAMESPACE = uuid.UUID("5b0f3c1e-8d2a-4c61-9e57-0a6f4d2b9c13")
_DMI = "sys/class/dmi/id"
_OS_RELEASE_KEYS = {
    "NAME": "name",
    "VERSION": "version",
    "BUILD_ID": "build",
    "ID": "platform",
    "ID_LIKE": "platform_like",
    "VERSION_CODENAME": "codename",
    "VERSION_ID": "_id",
}
_REDHAT_VERSION = re.compile(r"([\w+\s]+) .* ([0-9]+)\.([0-9]+)\.?(\w+)?")
_LEADING_VERSION = re.compile(r"([0-9]+)(?:\.([0-9]+))?(?:\.([0-9]+))?")


@dataclass(frozen=True)
class SimIdentity:
    """Machine facts as osquery reports them; strings stay as osquery reads them (``os_minor`` may be ``"04"``)."""

    uuid: str
    hostname: str
    computer_name: str
    local_hostname: str
    hardware_serial: str = ""
    hardware_model: str = ""
    hardware_vendor: str = ""
    hardware_version: str = ""
    board_vendor: str = ""
    board_model: str = ""
    board_version: str = ""
    board_serial: str = ""
    cpu_type: str = ""
    cpu_subtype: str = "0"
    cpu_brand: str = ""
    cpu_microcode: str = ""
    cpu_physical_cores: int = -1
    cpu_logical_cores: int = -1
    cpu_sockets: int | None = None
    physical_memory: int = -1
    os_platform: str = "posix"
    os_platform_like: str = ""
    os_name: str = "Unknown"
    os_version: str = ""
    os_major: str = "0"
    os_minor: str = "0"
    os_patch: str = "0"
    os_build: str = ""
    os_codename: str = ""
    os_arch: str = ""
    kernel_version: str = ""
    kernel_arguments: str = ""
    kernel_path: str = ""
    kernel_device: str = ""
    bios_readable: bool = False
    bios_vendor: str = ""
    bios_version: str = ""
    bios_date: str = ""
    bios_revision: str = ""
    firmware_type: str = "unknown"


# --- reading the machine -----------------------------------------------------------------------------------------


def read_text(root: Path, relative: str) -> str | None:
    """The file's text under ``root`` (``relative`` has no leading slash), or None when missing or unreadable."""
    try:
        data = (root / relative).read_bytes()
    except (OSError, ValueError):
        return None
    return data.decode("utf-8", errors="replace")


def _clean(raw: str | None) -> str:
    """osquery's treatment of a sysfs value: drop newlines, trim, cut at the first NUL."""
    if raw is None:
        return ""
    return raw.replace("\n", "").strip().split("\x00", 1)[0]


def host_uuid(root: Path, fallback_seed: str) -> str:
    """DMI product UUID as read (placeholders ignored), else a stable UUID derived from the machine id.

    osquery itself stores a random UUID in its database when DMI gives none (``getHostUUID``); the sim has no
    database here, so it derives a stable one from ``/etc/machine-id`` (or D-Bus's copy, or ``fallback_seed``).
    """
    product_uuid = _clean(read_text(root, f"{_DMI}/product_uuid"))
    if product_uuid and product_uuid.lower() not in PLACEHOLDER_UUIDS:
        return product_uuid
    for relative in ("etc/machine-id", "var/lib/dbus/machine-id"):
        machine_id = _clean(read_text(root, relative))
        if machine_id:
            return str(uuid.uuid5(_MACHINE_ID_NAMESPACE, machine_id))
    return str(uuid.uuid5(_MACHINE_ID_NAMESPACE, "hostname:" + fallback_seed))


def system_hostnames() -> tuple[str, str]:
    """(fqdn, hostname) as osquery's getFqdn/getHostname: gethostname, then getaddrinfo's AI_CANONNAME."""
    name = socket.gethostname().strip()
    try:
        infos = socket.getaddrinfo(name, None, flags=socket.AI_CANONNAME)
    except (OSError, UnicodeError):
        return name, name
    canonical = infos[0][3] if infos else ""
    return (canonical or name), name


def _split(text: str, delimiters: str) -> list[str]:
    """osquery::split(s, delims): split on any delimiter, drop empty pieces, trim each piece."""
    pieces = re.split("[" + re.escape(delimiters) + "]", text)
    return [piece.strip() for piece in pieces if piece]


def _split_limit(text: str, delimiter: str, occurrences: int) -> list[str]:
    """osquery::split(s, delim, occurrences): the first ``occurrences`` pieces, the rest joined by ``delim``."""
    pieces = _split(text, delimiter)
    if len(pieces) <= occurrences:
        return pieces
    return [*pieces[:occurrences], delimiter.join(pieces[occurrences:])]


def parse_os_release(content: str) -> dict[str, str]:
    """``/etc/os-release`` into os_version columns as osquery's genOSRelease reads it (incl. major/minor/patch)."""
    row: dict[str, str] = {}
    for line in _split(content, "\n"):
        fields = _split_limit(line, "=", 1)
        if len(fields) != 2:
            continue
        key, value = fields
        column = _OS_RELEASE_KEYS.get(key)
        if column is None:
            if "CODENAME" not in key:
                continue
            column = "codename"  # some distros invent their own *_CODENAME key
        if value.startswith('"'):
            value = value[1:-1]
        row[column] = value
        if column == "_id":
            parts = _split_limit(value, ".", 2)
            for name, part in zip(("major", "minor", "patch"), parts, strict=False):
                row[name] = part
    row.pop("_id", None)
    return row


def parse_redhat_release(content: str) -> dict[str, str]:
    """The legacy ``/etc/redhat-release`` / ``gentoo-release`` pass of osquery's os_version (after os-release)."""
    text = " ".join(content.split())
    row = {"version": text, "build": ""}
    match = _REDHAT_VERSION.search(text)
    if match is not None:
        row.update(name=match[1], major=match[2], minor=match[3], patch=match[4] or "0")
    return row


def os_facts(root: Path) -> dict[str, str]:
    """os_version's columns for the machine under ``root``, with osquery's defaults."""
    facts = {"name": "Unknown", "major": "0", "minor": "0", "patch": "0", "platform": "posix"}
    os_release = read_text(root, "etc/os-release")
    if os_release:
        facts.update(parse_os_release(os_release))
    facts["arch"] = platform.machine()
    for relative, family in (("etc/redhat-release", "rhel"), ("etc/gentoo-release", "gentoo")):
        legacy = read_text(root, relative)
        if legacy is not None:
            facts.update(platform=family, platform_like=family)
            facts.update(parse_redhat_release(legacy))
            break
    return facts


def parse_cpuinfo(content: str) -> dict[str, str]:
    """``/proc/cpuinfo`` lines osquery's system_info reads: model (subtype), microcode, siblings, and the brand."""
    found: dict[str, str] = {}
    for line in _split(content, "\n"):
        if line.startswith("model name"):
            found["brand"] = line.partition(":")[2].strip()
            continue
        details = _split(line, ":")
        if len(details) != 2:
            continue
        if line.startswith("model\t"):
            found["subtype"] = details[1]
        elif line.startswith("microcode"):
            found["microcode"] = details[1]
        elif line.startswith("siblings"):
            found["siblings"] = details[1]
    return found


def _cpu_sockets(logical: int, siblings: str | None) -> int | None:
    if siblings is None:
        return None
    per_socket = int(siblings) if siblings.isdigit() else 0
    return logical // per_socket if logical > 0 and per_socket > 0 else -1


def physical_memory() -> int:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return int(psutil.virtual_memory().total)


def kernel_facts(root: Path) -> dict[str, str]:
    """kernel_info's columns from ``/proc/cmdline`` and ``/proc/version`` the way osquery splits them."""
    facts: dict[str, str] = {}
    cmdline = read_text(root, "proc/cmdline")
    if cmdline is not None:
        others: list[str] = []
        for argument in _split(cmdline, " "):
            if argument.startswith("BOOT_IMAGE="):
                facts["path"] = argument[len("BOOT_IMAGE=") :]
            elif argument.startswith("root="):
                facts["device"] = argument[len("root=") :]
            else:
                others.append(argument)
        facts["arguments"] = " ".join(others)
    signature = read_text(root, "proc/version")
    if signature is not None:
        details = _split(signature, " ")
        if len(details) > 2 and details[1] == "version":
            facts["version"] = details[2]
    return facts


def _dmi(root: Path, name: str) -> str | None:
    raw = read_text(root, f"{_DMI}/{name}")
    return None if raw is None else _clean(raw)


def hardware_facts(root: Path) -> dict[str, str]:
    """System and board strings from DMI (Lenovo keeps the model in the version field; osquery swaps them)."""
    names = {
        "hardware_vendor": "sys_vendor",
        "hardware_model": "product_name",
        "hardware_version": "product_version",
        "hardware_serial": "product_serial",
        "board_vendor": "board_vendor",
        "board_model": "board_name",
        "board_version": "board_version",
        "board_serial": "board_serial",
    }
    facts = {field: _dmi(root, name) or "" for field, name in names.items()}
    if facts["hardware_vendor"].lower() == "lenovo":
        facts["hardware_model"], facts["hardware_version"] = facts["hardware_version"], facts["hardware_model"]
    return facts


def bios_facts(root: Path) -> dict[str, str]:
    vendor = _dmi(root, "bios_vendor")
    if vendor is None:
        return {}
    return {
        "bios_vendor": vendor,
        "bios_version": _dmi(root, "bios_version") or "",
        "bios_date": _dmi(root, "bios_date") or "",
        "bios_revision": _dmi(root, "bios_release") or "",
        "firmware_type": "uefi" if (root / "sys/firmware/efi").is_dir() else "bios",
    }


# --- building the identity -----------------------------------------------------------------------------------------


def machine_identity(
    overrides: Mapping[str, str],
    *,
    root: Path = Path("/"),
    hostnames: Callable[[], tuple[str, str]] = system_hostnames,
) -> SimIdentity:
    """The real machine's identity read under ``root``, then ``overrides`` (keys in OVERRIDE_KEYS) applied."""
    fqdn, short_name = hostnames()
    os_values = os_facts(root)
    cpu = parse_cpuinfo(read_text(root, "proc/cpuinfo") or "")
    logical = os.cpu_count() or -1
    kernel = kernel_facts(root)
    hardware = hardware_facts(root)
    bios = bios_facts(root)
    identity = SimIdentity(
        uuid=host_uuid(root, fqdn),
        hostname=fqdn,
        computer_name=short_name,
        local_hostname=fqdn,
        hardware_serial=hardware["hardware_serial"],
        hardware_model=hardware["hardware_model"],
        hardware_vendor=hardware["hardware_vendor"],
        hardware_version=hardware["hardware_version"],
        board_vendor=hardware["board_vendor"],
        board_model=hardware["board_model"],
        board_version=hardware["board_version"],
        board_serial=hardware["board_serial"],
        cpu_type=platform.machine(),
        cpu_subtype=cpu.get("subtype", "0"),
        cpu_brand=cpu.get("brand", ""),
        cpu_microcode=cpu.get("microcode", ""),
        cpu_physical_cores=psutil.cpu_count(logical=False) or logical,
        cpu_logical_cores=logical,
        cpu_sockets=_cpu_sockets(logical, cpu.get("siblings")),
        physical_memory=physical_memory(),
        os_platform=os_values.get("platform", ""),
        os_platform_like=os_values.get("platform_like", ""),
        os_name=os_values.get("name", ""),
        os_version=os_values.get("version", ""),
        os_major=os_values.get("major", ""),
        os_minor=os_values.get("minor", ""),
        os_patch=os_values.get("patch", ""),
        os_build=os_values.get("build", ""),
        os_codename=os_values.get("codename", ""),
        os_arch=os_values.get("arch", ""),
        kernel_version=kernel.get("version", ""),
        kernel_arguments=kernel.get("arguments", ""),
        kernel_path=kernel.get("path", ""),
        kernel_device=kernel.get("device", ""),
        bios_readable=bool(bios),
        bios_vendor=bios.get("bios_vendor", ""),
        bios_version=bios.get("bios_version", ""),
        bios_date=bios.get("bios_date", ""),
        bios_revision=bios.get("bios_revision", ""),
        firmware_type=bios.get("firmware_type", "unknown"),
    )
    return apply_overrides(identity, overrides)


def apply_overrides(identity: SimIdentity, overrides: Mapping[str, str]) -> SimIdentity:
    """A simulated identity: non-empty overrides replace the machine's values; unknown keys are a ValueError.

    ``hostname`` also sets ``local_hostname`` and, unless given, ``computer_name``. ``os_version`` also sets
    major/minor/patch from its leading ``N.N.N``. A different ``os_platform`` drops the machine's platform_like and
    codename unless ``os_platform_like`` / ``os_codename`` are given too.
    """
    unknown = sorted(set(overrides) - OVERRIDE_KEYS)
    if unknown:
        raise ValueError(f"unknown identity override(s): {', '.join(unknown)}")
    given = {key: value for key, value in overrides.items() if value != ""}
    hostname = given.get("hostname")
    platform_changed = given.get("os_platform", identity.os_platform) != identity.os_platform
    major, minor, patch = identity.os_major, identity.os_minor, identity.os_patch
    if "os_version" in given:
        match = _LEADING_VERSION.search(given["os_version"])
        parts = match.groups() if match is not None else (None, None, None)
        major, minor, patch = (part or "0" for part in parts)
    return replace(
        identity,
        uuid=given.get("uuid", identity.uuid),
        hostname=hostname or identity.hostname,
        local_hostname=hostname or identity.local_hostname,
        computer_name=given.get("computer_name", hostname or identity.computer_name),
        hardware_serial=given.get("hardware_serial", identity.hardware_serial),
        hardware_model=given.get("hardware_model", identity.hardware_model),
        hardware_vendor=given.get("hardware_vendor", identity.hardware_vendor),
        os_platform=given.get("os_platform", identity.os_platform),
        os_platform_like=given.get("os_platform_like", "" if platform_changed else identity.os_platform_like),
        os_codename=given.get("os_codename", "" if platform_changed else identity.os_codename),
        os_name=given.get("os_name", identity.os_name),
        os_version=given.get("os_version", identity.os_version),
        os_major=major,
        os_minor=minor,
        os_patch=patch,
    )
