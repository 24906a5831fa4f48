"""Rows read from the live machine at query time: processes, interface addresses, users, uptime, local timezone.

Owns the psutil and ``/etc/passwd`` adapters behind the sim's live tables. Each collector returns rows keyed by
osquery column name, filling what osquery's Linux generator fills. A process that vanishes mid-read is skipped,
an attribute psutil is not allowed to read is left NULL, and an unreadable file yields no rows; nothing raises.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import psutil

from osquery_sim.identity import read_text
from osquery_sim.table_rows import RawRow

log = logging.getLogger(__name__)

T = TypeVar("T")

# psutil's status names back to the /proc/<pid>/stat state letters osquery reports.
_STATE_LETTERS = {
    "running": "R",
    "sleeping": "S",
    "disk-sleep": "D",
    "stopped": "T",
    "tracing-stop": "t",
    "zombie": "Z",
    "dead": "X",
    "wake-kill": "K",
    "waking": "W",
    "parked": "P",
    "idle": "I",
}


def _attempt(read: Callable[[], T]) -> T | None:
    """One attribute of a process: None when access is denied, the process is gone, or the OS refuses."""
    try:
        return read()
    except (psutil.Error, OSError, ValueError):
        return None


def _cgroup_path(pid: int) -> str | None:
    content = read_text(Path("/proc"), f"{pid}/cgroup")
    if not content:
        return None
    first = content.split("\n", 1)[0]
    parts = first.split(":", 2)
    return parts[2] if len(parts) == 3 else None


def _process_row(process: psutil.Process) -> RawRow | None:
    with process.oneshot():
        try:
            name = process.name()
        except psutil.NoSuchProcess:
            return None
        except psutil.Error:
            name = ""
        pid = process.pid
        exe = _attempt(process.exe) or ""
        cmdline = _attempt(process.cmdline)
        uids = _attempt(process.uids)
        gids = _attempt(process.gids)
        memory = _attempt(process.memory_info)
        times = _attempt(process.cpu_times)
        created = _attempt(process.create_time)
        io = _attempt(process.io_counters)
        row: RawRow = {
            "pid": pid,
            "name": name,
            "path": exe,
            "cmdline": " ".join(cmdline).strip() if cmdline is not None else "",
            "state": _STATE_LETTERS.get(_attempt(process.status) or ""),
            "cwd": _attempt(process.cwd) or "",
            "root": _attempt(lambda: os.readlink(f"/proc/{pid}/root")) or "",
            "uid": uids.real if uids else None,
            "euid": uids.effective if uids else None,
            "suid": uids.saved if uids else None,
            "gid": gids.real if gids else None,
            "egid": gids.effective if gids else None,
            "sgid": gids.saved if gids else None,
            "on_disk": -1 if not exe else int(os.path.exists(exe)),
            "wired_size": "0",
            "resident_size": memory.rss if memory else None,
            "total_size": memory.vms if memory else None,
            "user_time": round(times.user * 1000) if times else None,
            "system_time": round(times.system * 1000) if times else None,
            "start_time": int(created) if created is not None else -1,
            "parent": _attempt(process.ppid),
            "pgroup": _attempt(lambda: os.getpgid(pid)),
            "threads": _attempt(process.num_threads),
            "nice": _attempt(process.nice),
            "cgroup_path": _cgroup_path(pid),
        }
        if io is not None:
            row["disk_bytes_read"] = io.read_bytes
            row["disk_bytes_written"] = io.write_bytes
        return row


def process_rows() -> list[RawRow]:
    """The processes table as osquery's Linux generator fills it."""
    rows: list[RawRow] = []
    for process in psutil.process_iter():
        try:
            row = _process_row(process)
        except psutil.Error:
            continue
        if row is not None:
            rows.append(row)
    return rows


def interface_address_rows() -> list[RawRow]:
    """interface_addresses: every IPv4/IPv6 address (no scope suffix), broadcast or point-to-point, type unknown."""
    try:
        interfaces = psutil.net_if_addrs()
    except (OSError, psutil.Error) as exc:
        log.warning("event=interfaces_unreadable error=%s", exc)
        return []
    rows: list[RawRow] = []
    for interface, addresses in interfaces.items():
        for address in addresses:
            if address.family not in (socket.AF_INET, socket.AF_INET6):
                continue
            row: RawRow = {
                "interface": interface,
                "address": address.address.split("%", 1)[0],
                "type": "unknown",
            }
            if address.netmask:
                row["mask"] = address.netmask
            if address.broadcast:
                row["broadcast"] = address.broadcast
            elif address.ptp:
                row["point_to_point"] = address.ptp
            rows.append(row)
    return rows


def _signed32(value: int) -> int:
    value &= 0xFFFFFFFF
    return value - 0x1_0000_0000 if value & 0x8000_0000 else value


def user_rows(root: Path) -> list[RawRow]:
    """users from ``<root>/etc/passwd`` (osquery's default, local accounts only: include_remote 0)."""
    content = read_text(root, "etc/passwd")
    if content is None:
        log.warning("event=passwd_unreadable root=%s", root)
        return []
    rows: list[RawRow] = []
    for line in content.splitlines():
        fields = line.split(":")
        if len(fields) != 7 or line.startswith(("#", "+", "-")):
            continue
        username, _password, uid_text, gid_text, gecos, directory, shell = fields
        if not (uid_text.isdigit() and gid_text.isdigit()):
            continue
        uid, gid = int(uid_text), int(gid_text)
        rows.append(
            {
                "uid": uid,
                "gid": gid,
                "uid_signed": _signed32(uid),
                "gid_signed": _signed32(gid),
                "username": username,
                "description": gecos,
                "directory": directory,
                "shell": shell,
                "pid_with_namespace": "0",
                "include_remote": "0",
            }
        )
    return rows


def uptime_seconds() -> float:
    """Seconds since boot, as sysinfo(2)'s uptime that osquery reads (CLOCK_BOOTTIME where there is one)."""
    boottime = getattr(time, "CLOCK_BOOTTIME", None)
    try:
        if isinstance(boottime, int):
            return time.clock_gettime(boottime)
        return time.time() - psutil.boot_time()
    except (OSError, psutil.Error):
        return -1.0


def local_timezone(now: float) -> str:
    return time.strftime("%Z", time.localtime(now))
