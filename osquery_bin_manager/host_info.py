"""Host identity as Fleet's orbit reads it: ``osqueryd -S --database_path DB --json "<query>"``
(docs/reference/orbit-behaviour.md §2.1).

orbit's ``hardware_uuid`` must be osquery's ``system_info.uuid`` so that orbit's and osqueryd's enrollments land
on one host record. A non-zero exit (osquery sometimes exits 78) is tolerated as long as stdout is a JSON array
with exactly one row.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

HOST_INFO_QUERY = (
    "SELECT si.uuid AS uuid, si.hardware_serial AS hardware_serial, si.hostname AS hostname, "
    "si.computer_name AS computer_name, si.hardware_model AS hardware_model, os.platform AS platform, "
    "os.platform_like AS platform_like, os.version AS os_version, oi.instance_id AS instance_id, "
    "oi.version AS osquery_version FROM system_info si, os_version os, osquery_info oi"
)
DEFAULT_TIMEOUT = 60.0


class HostInfoError(RuntimeError):
    pass


@dataclass(frozen=True)
class HostInfo:
    hardware_uuid: str
    hardware_serial: str
    hostname: str
    computer_name: str
    hardware_model: str
    platform: str
    platform_like: str
    os_version: str
    instance_id: str
    osquery_version: str


def parse_host_info(stdout: str) -> HostInfo:
    try:
        rows = json.loads(stdout)
    except ValueError as exc:
        raise HostInfoError(f"osqueryd -S did not print JSON: {exc}") from None
    if not isinstance(rows, list) or len(rows) != 1 or not isinstance(rows[0], Mapping):
        count = len(rows) if isinstance(rows, list) else "no"
        raise HostInfoError(f"osqueryd -S returned {count} rows; expected exactly one")
    row = {str(k): str(v) if v is not None else "" for k, v in rows[0].items()}
    if not row.get("uuid"):
        raise HostInfoError("osqueryd reported an empty hardware UUID")
    return HostInfo(
        hardware_uuid=row["uuid"],
        hardware_serial=row.get("hardware_serial", ""),
        hostname=row.get("hostname", ""),
        computer_name=row.get("computer_name", ""),
        hardware_model=row.get("hardware_model", ""),
        platform=row.get("platform", ""),
        platform_like=row.get("platform_like", ""),
        os_version=row.get("os_version", ""),
        instance_id=row.get("instance_id", ""),
        osquery_version=row.get("osquery_version", ""),
    )


def read_host_info(osqueryd: Path, database_path: Path, *, timeout: float = DEFAULT_TIMEOUT) -> HostInfo:
    """Run the query (blocking; call it from a worker thread) and parse the single row."""
    argv = [str(osqueryd), "-S", "--database_path", str(database_path), "--json", HOST_INFO_QUERY]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env={}, check=False)
    except FileNotFoundError:
        raise HostInfoError(f"osqueryd doesn't exist at path {osqueryd}") from None
    except subprocess.TimeoutExpired:
        raise HostInfoError(f"osqueryd -S did not answer within {timeout:g} s") from None
    except OSError as exc:
        raise HostInfoError(f"cannot run {osqueryd}: {exc.strerror}") from None
    try:
        return parse_host_info(done.stdout)
    except HostInfoError as exc:
        detail = done.stderr.strip().splitlines()[-1:] if done.stderr else []
        raise HostInfoError(f"{exc} (exit {done.returncode}{': ' + detail[0] if detail else ''})") from None
