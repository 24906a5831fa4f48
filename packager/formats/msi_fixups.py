"""What wixl 0.101 cannot author, added to its MSI afterwards (docs/reference/packaging.md §6.2, §6.3; ADR 0007).

1. ``msibuild -q`` SQL (same libmsi as wixl):

   - ``MsiServiceConfigFailureActions``: restart the service 1 s after each of the first three failures, reset the
     count after a day; ``MsiServiceConfig`` ``SERVICE_CONFIG_FAILURE_ACTIONS_FLAG`` = 1, so a non-zero exit code
     (orbit's self-restart) counts as a failure too; ``MsiConfigureServices`` applies both (Windows Installer 5).
     Microsoft documents that action as unreliable for failure actions, so two deferred ``sc.exe failure`` /
     ``sc.exe failureflag`` actions set the same values (their exit codes ignored).
   - ``MsiLockPermissionsEx``: ``ORBITROOT`` SYSTEM and Administrators full control, Users read & execute (Fleet's
     directory ACL, protected and inherited by what orbit writes later); ``secret.txt`` and every other 0600 file
     SYSTEM and Administrators only.
   - The enroll secret from the ``FLEET_SECRET`` property: an immediate type-51 action hands
     ``<path>|<secret>`` to a deferred, non-impersonated JScript action that overwrites ``secret.txt`` (already
     installed with its private ACL). No process gets the secret on its command line, and ``MsiHiddenProperties``
     keeps both properties out of the installer log. Skipped when the property is empty or Fleet's ``dummy``.
   - ``SecureCustomProperties`` lists the public properties, so they reach the server side of a managed install.

2. An ``olefile`` rewrite of ``\\x05SummaryInformation``: PackageCode (PID 9) = the derived one, creation and save
   times (PIDs 12, 13) = ``SOURCE_DATE_EPOCH``, creating application (PID 18) fixed — the only bytes that differ
   between two wixl runs, so two builds become byte-identical.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import olefile  # type: ignore[import-untyped]  # olefile 0.47 ships no type information

from packager.formats import wxs

SUMMARY_STREAM = "\x05SummaryInformation"
CREATING_APPLICATION = "orbitctl"
# SDDL (docs/reference/packaging.md §3.5): owner/group SYSTEM, protected DACL.
ROOT_SDDL = "O:SYG:SYD:PAI(A;OICI;FA;;;SY)(A;OICI;FA;;;BA)(A;OICI;0x1200a9;;;BU)"
PRIVATE_SDDL = "O:SYG:SYD:PAI(A;;FA;;;SY)(A;;FA;;;BA)"
RESTART_DELAY_MS = 1000
RESTARTS = 3
RESET_PERIOD_S = 86400
SERVICE_CONFIG_FAILURE_ACTIONS_FLAG = 4
SC_ACTION_RESTART = 1
EVENT_INSTALL = 1

SET_SECRET_ACTION = "CA_SetWriteSecret"  # noqa: S105 - action names
WRITE_SECRET_ACTION = "CA_WriteSecret"  # noqa: S105
RECOVERY_ACTION = "CA_ServiceRecovery"
FAILURE_FLAG_ACTION = "CA_ServiceFailureFlag"
HIDDEN_PROPERTIES = (wxs.FLEET_SECRET, WRITE_SECRET_ACTION)

# Custom action types: 51 = set a property; 37 = JScript text; 34 = exe in a directory; +64 ignore the exit code;
# +1024 deferred (in script); +2048 no impersonation (runs as LocalSystem).
TYPE_SET_PROPERTY = 51
TYPE_DEFERRED_JSCRIPT = 37 + 1024 + 2048
TYPE_DEFERRED_EXE_IGNORE_EXIT = 34 + 64 + 1024 + 2048

# After InstallFiles (4000, secret.txt exists with its ACL) and before InstallServices (5800); the service actions
# between InstallServices and StartServices (5900).
SEQUENCE = {
    SET_SECRET_ACTION: 4090,
    WRITE_SECRET_ACTION: 4100,
    "MsiConfigureServices": 5850,
    RECOVERY_ACTION: 5860,
    FAILURE_FLAG_ACTION: 5870,
}
_SECRET_CONDITION = f'NOT Installed AND {wxs.FLEET_SECRET} AND {wxs.FLEET_SECRET} <> "{wxs.SECRET_PLACEHOLDER}"'
_INSTALLING = 'NOT REMOVE~="ALL"'

# Runs inside msiexec (deferred, as LocalSystem); data = "<path>|<secret>" (a Windows path never contains "|").
# No single quotes (SQL literal) and no brackets (kept plain even if a reader formats it).
WRITE_SECRET_SCRIPT = " ".join(
    (
        'var data = Session.Property("CustomActionData");',
        'var cut = data.indexOf("|");',
        'if (cut < 1) { throw new Error("CustomActionData is not path|secret"); }',
        'var fso = new ActiveXObject("Scripting.FileSystemObject");',
        "var file = fso.CreateTextFile(data.substring(0, cut), true, false);",
        "file.Write(data.substring(cut + 1));",
        "file.Close();",
    )
)


class MsiToolError(OSError):
    """msibuild failed, or the MSI is not what wixl should have written (the message has the tool's output)."""


@dataclass(frozen=True)
class FixupPlan:
    service_name: str
    service_component: str
    root_directory: str
    secret_file_id: str
    private_file_ids: tuple[str, ...]


def plan_for(document: wxs.WxsDocument) -> FixupPlan:
    return FixupPlan(
        service_name=wxs.SERVICE_NAME,
        service_component=wxs.SERVICE_COMPONENT_ID,
        root_directory=wxs.ROOT_DIRECTORY_ID,
        secret_file_id=wxs.SECRET_FILE_ID,
        private_file_ids=wxs.private_file_ids(document),
    )


def _literal(value: str | int) -> str:
    if isinstance(value, int):
        return str(value)
    if "'" in value:
        raise ValueError(f"{value!r}: libmsi SQL has no escape for a single quote")
    return f"'{value}'"


def _insert(table: str, row: Mapping[str, str | int | None]) -> str:
    """``None`` leaves a nullable column out (libmsi's parser has no NULL literal)."""
    present = {name: value for name, value in row.items() if value is not None}
    columns = ", ".join(f"`{name}`" for name in present)
    values = ", ".join(_literal(value) for value in present.values())
    return f"INSERT INTO `{table}` ({columns}) VALUES ({values})"


def _sequence(action: str, condition: str | None) -> str:
    return _insert("InstallExecuteSequence", {"Action": action, "Condition": condition, "Sequence": SEQUENCE[action]})


def statements(plan: FixupPlan) -> list[str]:
    """The SQL, in order (pure)."""
    restart_actions = "[~]".join([str(SC_ACTION_RESTART)] * RESTARTS)
    delays = "[~]".join([str(RESTART_DELAY_MS)] * RESTARTS)
    sc_actions = "/".join([f"restart/{RESTART_DELAY_MS}"] * RESTARTS)
    sc = '"[System64Folder]sc.exe"'
    result = [
        "UPDATE `Property` SET `Value` = "
        + _literal(";".join(("WIX_UPGRADE_DETECTED", *wxs.PUBLIC_PROPERTIES)))
        + " WHERE `Property` = 'SecureCustomProperties'",
        _insert("Property", {"Property": "MsiHiddenProperties", "Value": ";".join(HIDDEN_PROPERTIES)}),
        # The enroll secret from FLEET_SECRET, never on a command line.
        _insert(
            "CustomAction",
            {
                "Action": SET_SECRET_ACTION,
                "Type": TYPE_SET_PROPERTY,
                "Source": WRITE_SECRET_ACTION,
                "Target": f"[{plan.root_directory}]{wxs.SECRET_FILE}|[{wxs.FLEET_SECRET}]",
            },
        ),
        _insert(
            "CustomAction",
            {
                "Action": WRITE_SECRET_ACTION,
                "Type": TYPE_DEFERRED_JSCRIPT,
                "Source": None,
                "Target": WRITE_SECRET_SCRIPT,
            },
        ),
        _sequence(SET_SECRET_ACTION, _SECRET_CONDITION),
        _sequence(WRITE_SECRET_ACTION, _SECRET_CONDITION),
        # Restart on failure: the MSI 5 tables, applied by MsiConfigureServices …
        "CREATE TABLE `MsiServiceConfigFailureActions` (`MsiServiceConfigFailureActions` CHAR(72) NOT NULL, "
        "`Name` CHAR(255) NOT NULL, `Event` SHORT NOT NULL, `ResetPeriod` LONG, `RebootMessage` CHAR(255), "
        "`Command` CHAR(255), `Actions` CHAR(255), `DelayActions` CHAR(255), `Component_` CHAR(72) NOT NULL "
        "PRIMARY KEY `MsiServiceConfigFailureActions`)",
        _insert(
            "MsiServiceConfigFailureActions",
            {
                "MsiServiceConfigFailureActions": "OrbitRestartOnFailure",
                "Name": plan.service_name,
                "Event": EVENT_INSTALL,
                "ResetPeriod": RESET_PERIOD_S,
                "Actions": restart_actions,
                "DelayActions": delays,
                "Component_": plan.service_component,
            },
        ),
        "CREATE TABLE `MsiServiceConfig` (`MsiServiceConfig` CHAR(72) NOT NULL, `Name` CHAR(255) NOT NULL, "
        "`Event` SHORT NOT NULL, `ConfigType` LONG NOT NULL, `Argument` CHAR(255), `Component_` CHAR(72) NOT NULL "
        "PRIMARY KEY `MsiServiceConfig`)",
        _insert(
            "MsiServiceConfig",
            {
                "MsiServiceConfig": "OrbitFailureActionsOnNonCrash",
                "Name": plan.service_name,
                "Event": EVENT_INSTALL,
                "ConfigType": SERVICE_CONFIG_FAILURE_ACTIONS_FLAG,
                "Argument": "1",
                "Component_": plan.service_component,
            },
        ),
        _sequence("MsiConfigureServices", "VersionNT >= 600"),
        # … and the same through sc.exe, which Microsoft recommends because MsiConfigureServices is unreliable.
        _insert(
            "CustomAction",
            {
                "Action": RECOVERY_ACTION,
                "Type": TYPE_DEFERRED_EXE_IGNORE_EXIT,
                "Source": "System64Folder",
                "Target": f'{sc} failure "{plan.service_name}" reset= {RESET_PERIOD_S} actions= {sc_actions}',
            },
        ),
        _insert(
            "CustomAction",
            {
                "Action": FAILURE_FLAG_ACTION,
                "Type": TYPE_DEFERRED_EXE_IGNORE_EXIT,
                "Source": "System64Folder",
                "Target": f'{sc} failureflag "{plan.service_name}" 1',
            },
        ),
        _sequence(RECOVERY_ACTION, _INSTALLING),
        _sequence(FAILURE_FLAG_ACTION, _INSTALLING),
        # ACLs (MSI 5): applied by CreateFolders and InstallFiles.
        "CREATE TABLE `MsiLockPermissionsEx` (`MsiLockPermissionsEx` CHAR(72) NOT NULL, `LockObject` CHAR(72) NOT "
        "NULL, `Table` CHAR(32) NOT NULL, `SDDLText` CHAR(0) NOT NULL, `Condition` CHAR(255) "
        "PRIMARY KEY `MsiLockPermissionsEx`)",
        _insert(
            "MsiLockPermissionsEx",
            {
                "MsiLockPermissionsEx": "LockOrbitRoot",
                "LockObject": plan.root_directory,
                "Table": "CreateFolder",
                "SDDLText": ROOT_SDDL,
                "Condition": None,
            },
        ),
    ]
    private = sorted(set(plan.private_file_ids) | {plan.secret_file_id})
    for file_id in private:
        result.append(
            _insert(
                "MsiLockPermissionsEx",
                {
                    "MsiLockPermissionsEx": f"Lock{file_id}",
                    "LockObject": file_id,
                    "Table": "File",
                    "SDDLText": PRIVATE_SDDL,
                    "Condition": None,
                },
            )
        )
    return result


def apply_sql(msi: Path, queries: Sequence[str], *, timeout: float = 300) -> None:
    """Run the queries with one ``msibuild`` (it stops at the first failing one)."""
    msibuild = shutil.which("msibuild")
    if msibuild is None:
        raise MsiToolError("msibuild not found: install the Debian package msitools")
    argv = [msibuild, str(msi)]
    for query in queries:
        argv += ["-q", query]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False, env=_tool_env())
    if result.returncode != 0 or "error" in result.stderr.lower() or "libmsi_" in result.stderr:
        raise MsiToolError(f"msibuild failed (exit {result.returncode}): {result.stderr.strip()[-2000:]}")


def _tool_env() -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("LC_", "LANG"))}
    env.update(TZ="UTC", LC_ALL="C.UTF-8")
    return env


# --- \x05SummaryInformation ------------------------------------------------------------------------------------

FMTID_SUMMARY = uuid.UUID("F29F85E0-4FF9-1068-AB91-08002B27B3D9")
VT_I2 = 2
VT_I4 = 3
VT_LPSTR = 30
VT_FILETIME = 64
PID_REVISION = 9  # the PackageCode
PID_CREATED = 12
PID_SAVED = 13
PID_APPLICATION = 18
_FILETIME_EPOCH_OFFSET = 11_644_473_600  # seconds from 1601-01-01 to 1970-01-01


@dataclass(frozen=True)
class SummaryValue:
    kind: int  # VT_*
    value: int | bytes


@dataclass(frozen=True)
class SummaryStream:
    header: bytes  # byte order, version, OS version and class id, as written (24 bytes)
    properties: dict[int, SummaryValue]


def filetime(epoch: int) -> int:
    return (epoch + _FILETIME_EPOCH_OFFSET) * 10_000_000


def parse_summary(data: bytes) -> SummaryStream:
    """A one-section property set (MS-OLEPS) with the value types MSI uses."""
    if len(data) < 48 or data[:2] != b"\xfe\xff":
        raise MsiToolError("the summary information stream is not a property set")
    sections = struct.unpack_from("<I", data, 24)[0]
    fmtid = uuid.UUID(bytes_le=data[28:44])
    if sections != 1 or fmtid != FMTID_SUMMARY:
        raise MsiToolError("the summary information stream is not one SummaryInformation section")
    offset = struct.unpack_from("<I", data, 44)[0]
    _size, count = struct.unpack_from("<II", data, offset)
    values: dict[int, SummaryValue] = {}
    for index in range(count):
        pid, value_offset = struct.unpack_from("<II", data, offset + 8 + 8 * index)
        at = offset + value_offset
        kind = struct.unpack_from("<I", data, at)[0] & 0xFFFF
        if kind == VT_I2:
            values[pid] = SummaryValue(kind, struct.unpack_from("<h", data, at + 4)[0])
        elif kind == VT_I4:
            values[pid] = SummaryValue(kind, struct.unpack_from("<i", data, at + 4)[0])
        elif kind == VT_FILETIME:
            values[pid] = SummaryValue(kind, struct.unpack_from("<Q", data, at + 4)[0])
        elif kind == VT_LPSTR:
            length = struct.unpack_from("<I", data, at + 4)[0]
            values[pid] = SummaryValue(kind, data[at + 8 : at + 8 + length].split(b"\x00", 1)[0])
        else:
            raise MsiToolError(f"summary property {pid} has an unexpected type {kind}")
    return SummaryStream(header=data[:24], properties=values)


def serialize_summary(summary: SummaryStream, size: int | None = None) -> bytes:
    """The property set; ``size`` pads the section with zeros to exactly that many bytes (olefile can only replace
    a stream by one of the same length). Properties are written in PID order."""
    encoded: list[tuple[int, bytes]] = []
    for pid in sorted(summary.properties):
        item = summary.properties[pid]
        if item.kind == VT_I2 and isinstance(item.value, int):
            body = struct.pack("<Ihxx", item.kind, item.value)
        elif item.kind == VT_I4 and isinstance(item.value, int):
            body = struct.pack("<Ii", item.kind, item.value)
        elif item.kind == VT_FILETIME and isinstance(item.value, int):
            body = struct.pack("<IQ", item.kind, item.value)
        elif item.kind == VT_LPSTR and isinstance(item.value, bytes):
            text = item.value + b"\x00"
            body = struct.pack("<II", item.kind, len(text)) + text
        else:
            raise ValueError(f"summary property {pid}: cannot encode {item}")
        encoded.append((pid, body + b"\x00" * (-len(body) % 4)))
    table_size = 8 + 8 * len(encoded)
    index = b""
    values = b""
    for pid, body in encoded:
        index += struct.pack("<II", pid, table_size + len(values))
        values += body
    section_offset = 48
    section = index + values
    section_size = 8 + len(section)
    if size is not None:
        if section_offset + section_size > size:
            raise MsiToolError(f"the new summary information ({section_offset + section_size} bytes) exceeds {size}")
        section_size = size - section_offset
    header = summary.header + struct.pack("<I", 1) + FMTID_SUMMARY.bytes_le + struct.pack("<I", section_offset)
    body = struct.pack("<II", section_size, len(encoded)) + section
    return header + body + b"\x00" * (section_size - len(body))


def fixed_summary(summary: SummaryStream, package_code: uuid.UUID, epoch: int) -> SummaryStream:
    properties = dict(summary.properties)
    properties[PID_REVISION] = SummaryValue(VT_LPSTR, f"{{{wxs.guid(package_code)}}}".encode("ascii"))
    properties[PID_CREATED] = SummaryValue(VT_FILETIME, filetime(epoch))
    properties[PID_SAVED] = SummaryValue(VT_FILETIME, filetime(epoch))
    properties[PID_APPLICATION] = SummaryValue(VT_LPSTR, CREATING_APPLICATION.encode("ascii"))
    return SummaryStream(header=summary.header, properties=properties)


def rewrite_summary(msi: Path, package_code: uuid.UUID, epoch: int) -> None:
    """Fix the PackageCode, the timestamps and the creating application in place."""
    with olefile.OleFileIO(str(msi), write_mode=True) as ole:
        original: bytes = ole.openstream(SUMMARY_STREAM).read()
        new = serialize_summary(fixed_summary(parse_summary(original), package_code, epoch), size=len(original))
        ole.write_stream(SUMMARY_STREAM, new)
