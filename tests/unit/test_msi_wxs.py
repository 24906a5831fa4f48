"""The .wxs generator (``packager.formats.wxs``) and the pure parts of the MSI fix-ups: the XML is parsed and read
back the way wixl reads it; the service arguments are split like Windows splits them and parsed by orbit's own
option parser."""

from __future__ import annotations

import hashlib
import re
import struct
import uuid
from dataclasses import replace
from pathlib import Path, PurePosixPath, PureWindowsPath
from xml.etree import ElementTree

import pytest

from orbit.options import parse_options
from packager.formats import msi, msi_fixups, wxs
from packager.package.staged import StagedPackage
from tests.support.staged_package import SECRET, make_staged

NS = {"w": wxs.WIX_NAMESPACE}
ROOT = r"C:\Program Files\Orbit" + "\\"


def _resolved(staged: StagedPackage, content: dict[str, bytes] | None = None) -> list[wxs.ResolvedFile]:
    """Digests without reading anything: of the file's path, or of ``content`` when given."""
    files = []
    for index, item in enumerate(wxs.payload(staged)):
        data = (content or {}).get(item.path.as_posix(), item.path.as_posix().encode())
        files.append(
            wxs.ResolvedFile(item.path, Path(f"payload/{index:04d}"), hashlib.sha256(data).hexdigest(), item.mode)
        )
    return files


def _document(staged: StagedPackage, content: dict[str, bytes] | None = None) -> wxs.WxsDocument:
    return wxs.render(staged, _resolved(staged, content))


def _staged(tmp_path: Path, **kwargs: object) -> StagedPackage:
    return make_staged(tmp_path, "windows", **kwargs)  # type: ignore[arg-type]


def _root(document: wxs.WxsDocument) -> ElementTree.Element:
    return ElementTree.fromstring(document.xml)


def _one(root: ElementTree.Element, path: str) -> ElementTree.Element:
    found = root.findall(path, NS)
    assert len(found) == 1, path
    return found[0]


def _properties(root: ElementTree.Element) -> dict[str, str]:
    return {item.get("Id", ""): item.get("Value", "") for item in root.iter(f"{{{wxs.WIX_NAMESPACE}}}Property")}


def _windows_argv(command_line: str) -> list[str]:
    """CommandLineToArgvW's rules: backslashes are literal unless they precede a quote."""
    argv: list[str] = []
    current: list[str] = []
    in_quotes = has_token = False
    index = 0
    while index < len(command_line):
        char = command_line[index]
        if char == "\\":
            run = len(command_line[index:]) - len(command_line[index:].lstrip("\\"))
            if index + run < len(command_line) and command_line[index + run] == '"':
                current.append("\\" * (run // 2))
                if run % 2:
                    current.append('"')
                    index += run + 1
                else:
                    index += run
                has_token = True
                continue
            current.append("\\" * run)
            index += run
            has_token = True
            continue
        if char == '"':
            in_quotes = not in_quotes
            has_token = True
        elif char == " " and not in_quotes:
            if has_token:
                argv.append("".join(current))
            current, has_token = [], False
        else:
            current.append(char)
            has_token = True
        index += 1
    if has_token:
        argv.append("".join(current))
    return argv


def _formatted(text: str, properties: dict[str, str]) -> str:
    """Windows Installer's [PROPERTY] and [\\x] substitution (enough for the service arguments)."""

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        if name.startswith("\\"):
            return name[1:]
        return properties.get(name, "")

    return re.sub(r"\[(\\.|[A-Za-z0-9_.]+)\]", substitute, text)


INSTALL_TIME = {"ORBITROOT": ROOT, "System64Folder": "C:\\Windows\\System32\\"}


# --- the service -------------------------------------------------------------------------------------------------


def test_the_service_runs_orbit_exe_as_localsystem_with_automatic_start(tmp_path: Path) -> None:
    root = _root(_document(_staged(tmp_path)))
    install = _one(root, ".//w:ServiceInstall")
    assert install.attrib | {"Arguments": ""} == {
        "Id": "OrbitService",
        "Name": "Fleet osquery",
        "DisplayName": "Fleet osquery",
        "Description": wxs.SERVICE_DESCRIPTION,
        "Type": "ownProcess",
        "Start": "auto",
        "ErrorControl": "normal",
        "Account": "LocalSystem",
        "Vital": "yes",
        "Arguments": "",
    }
    control = _one(root, ".//w:ServiceControl")
    assert control.attrib == {
        "Id": "OrbitServiceControl",
        "Name": "Fleet osquery",
        "Start": "install",
        "Stop": "both",
        "Remove": "uninstall",
        "Wait": "yes",
    }
    # both live in the component whose key file is ORBITROOT\bin\orbit\orbit.exe
    component = _one(root, ".//w:Component[w:ServiceInstall]")
    assert component.get("Id") == wxs.SERVICE_COMPONENT_ID
    key_file = _one(component, "w:File")
    assert key_file.get("Name") == "orbit.exe" and key_file.get("KeyPath") == "yes"
    chain = _directory_chain(root, component)
    assert chain == ["TARGETDIR", "ProgramFiles64Folder", "ORBITROOT", "bin", "orbit"]


def _directory_chain(root: ElementTree.Element, target: ElementTree.Element) -> list[str]:
    parents = {child: parent for parent in root.iter() for child in parent}
    chain = []
    node = parents[target]
    while node.tag == f"{{{wxs.WIX_NAMESPACE}}}Directory":
        chain.append(node.get("Name") if node.get("Id", "").startswith("Dir_") else node.get("Id", ""))
        node = parents[node]
    return [str(item) for item in reversed(chain)]


def test_without_service_start_the_service_is_installed_but_not_started(tmp_path: Path) -> None:
    staged = replace(_staged(tmp_path), service=False)
    control = _one(_root(_document(staged)), ".//w:ServiceControl")
    assert "Start" not in control.attrib and control.get("Stop") == "both" and control.get("Remove") == "uninstall"


def test_arguments_are_fleets_and_orbit_parses_them_with_the_secret_only_by_path(tmp_path: Path) -> None:
    staged = _staged(tmp_path)
    document = _document(staged)
    arguments = _one(_root(document), ".//w:ServiceInstall").get("Arguments", "")
    assert arguments == document.service_arguments
    assert arguments.startswith(
        '--root-dir "[ORBITROOT]." --log-file "[System64Folder]config\\systemprofile\\AppData\\Local\\FleetDM\\Orbit'
        '\\Logs\\orbit-osquery.log" --fleet-url "[FLEET_URL]" --enroll-secret-path "[ORBITROOT]secret.txt"'
    )
    assert "--fleet-desktop=[FLEET_DESKTOP]" in arguments and "--enable-scripts=[ENABLE_SCRIPTS]" in arguments
    assert '--end-user-email "[END_USER_EMAIL]"' in arguments
    # the secret is nowhere in the authoring: not in the arguments, not in a property
    assert SECRET not in document.xml and "--enroll-secret " not in arguments and "ENROLL_SECRET" not in arguments

    properties = _properties(_root(document)) | INSTALL_TIME
    argv = _windows_argv(_formatted(arguments, properties))
    options = parse_options(argv, {}, platform="windows")
    assert options.root_dir == PureWindowsPath(r"C:\Program Files\Orbit")
    assert options.fleet_url == "https://fleet.example.com"
    assert options.enroll_secret is None
    assert options.enroll_secret_path == PureWindowsPath(r"C:\Program Files\Orbit\secret.txt")
    assert options.update_url == "https://updates.example.com"
    assert (options.orbit_channel, options.osqueryd_channel, options.desktop_channel) == ("stable",) * 3
    assert options.update_interval == 15 * 60
    assert options.fleet_desktop is False and options.enable_scripts is False and options.end_user_email is None
    assert options.log_file == PureWindowsPath(
        r"C:\Windows\System32\config\systemprofile\AppData\Local\FleetDM\Orbit\Logs\orbit-osquery.log"
    )


def test_install_time_properties_change_what_orbit_gets(tmp_path: Path) -> None:
    document = _document(_staged(tmp_path))
    arguments = _one(_root(document), ".//w:ServiceInstall").get("Arguments", "")
    at_install = _properties(_root(document)) | INSTALL_TIME
    at_install |= {"FLEET_URL": "https://other.example.com", "FLEET_DESKTOP": "true", "ENABLE_SCRIPTS": "1"}
    at_install["END_USER_EMAIL"] = "user@example.com"
    options = parse_options(_windows_argv(_formatted(arguments, at_install)), {}, platform="windows")
    assert options.fleet_url == "https://other.example.com"
    assert options.fleet_desktop is True and options.enable_scripts is True
    assert options.end_user_email == "user@example.com"


def test_optional_settings_become_flags_and_agent_paths_become_orbitroot(tmp_path: Path) -> None:
    staged = _staged(tmp_path)
    env = dict(staged.orbit_env) | {
        "ORBIT_FLEET_CERTIFICATE": r"C:\Program Files\Orbit\fleet.pem",
        "ORBIT_UPDATE_TLS_CERTIFICATE": r"C:\Program Files\Orbit\update.pem",
        "ORBIT_INSECURE": "false",
        "ORBIT_DEBUG": "true",
        "ORBIT_DISABLE_UPDATES": "true",
        "ORBIT_HOST_IDENTIFIER": "instance",
        "ORBIT_OSQUERY_DB": r"D:\osquery[1]\db" + "\\",
    }
    arguments = wxs.service_arguments(replace(staged, orbit_env=env))
    assert '--fleet-certificate "[ORBITROOT]fleet.pem"' in arguments
    assert '--update-tls-certificate "[ORBITROOT]update.pem"' in arguments
    assert "--debug" in arguments and "--disable-updates" in arguments and "--insecure" not in arguments
    assert '--osquery-db "D:\\osquery[\\[]1[\\]]\\db\\\\"' in arguments  # brackets escaped, final backslash doubled
    options = parse_options(_windows_argv(_formatted(arguments, INSTALL_TIME)), {}, platform="windows")
    assert options.fleet_certificate == PureWindowsPath(r"C:\Program Files\Orbit\fleet.pem")
    assert options.update_tls_certificate == PureWindowsPath(r"C:\Program Files\Orbit\update.pem")
    assert options.debug and options.disable_updates and not options.insecure
    assert options.host_identifier == "instance"
    assert options.osquery_db == PureWindowsPath("D:\\osquery[1]\\db\\")


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("ORBIT_DESKTOP_CHANNEL", 'sta"ble', "cannot be quoted"),
        ("ORBIT_UPDATE_URL", "https://$(env.HOME)/", "wixl would read as a variable"),
        ("ORBIT_USE_SYSTEM_CONFIGURATION", "true", "no Windows service argument for ORBIT_USE_SYSTEM_CONFIGURATION"),
    ],
)
def test_values_that_cannot_be_carried_are_refused(tmp_path: Path, variable: str, value: str, message: str) -> None:
    staged = _staged(tmp_path)
    staged = replace(staged, orbit_env=dict(staged.orbit_env) | {variable: value})
    with pytest.raises(wxs.MsiInputError, match=re.escape(message)):
        _document(staged)


# --- properties, upgrade, sequences ------------------------------------------------------------------------------


def test_properties_default_to_the_package_and_the_secret_to_the_placeholder(tmp_path: Path) -> None:
    properties = _properties(_root(_document(_staged(tmp_path))))
    assert properties["FLEET_URL"] == "https://fleet.example.com"
    assert properties["FLEET_SECRET"] == "dummy"
    assert properties["FLEET_DESKTOP"] == "false" and properties["ENABLE_SCRIPTS"] == "false"
    assert "END_USER_EMAIL" not in properties  # unset: empty at install time unless given

    staged = _staged(tmp_path / "2", fleet_desktop=True)
    staged = replace(staged, extra={"end_user_email": "user@example.com"})
    properties = _properties(_root(_document(staged)))
    assert properties["FLEET_DESKTOP"] == "true" and properties["END_USER_EMAIL"] == "user@example.com"


def test_upgrade_code_is_fixed_and_every_other_version_is_replaced(tmp_path: Path) -> None:
    root = _root(_document(_staged(tmp_path)))
    product = _one(root, "w:Product")
    assert product.get("UpgradeCode") == "28C32739-BECB-447E-B802-809ECEBF5B0E" == wxs.guid(wxs.UPGRADE_CODE)
    package = _one(product, "w:Package")
    assert package.get("InstallScope") == "perMachine" and package.get("InstallerVersion") == "500"
    upgrade = _one(product, "w:Upgrade")
    assert upgrade.get("Id") == product.get("UpgradeCode")
    version = _one(upgrade, "w:UpgradeVersion")
    assert version.attrib == {"Minimum": "0.0.0", "IncludeMinimum": "yes", "Property": "WIX_UPGRADE_DETECTED"}
    assert _one(product, "w:InstallExecuteSequence/w:RemoveExistingProducts").get("Sequence") == "1401"


def test_every_sequenced_action_has_an_explicit_unique_number_in_the_right_place(tmp_path: Path) -> None:
    root = _root(_document(_staged(tmp_path)))
    authored = {step.tag.split("}")[1]: step for step in _one(root, ".//w:InstallExecuteSequence")}
    assert all(step.get("Sequence", "").isdigit() for step in authored.values())
    assert not [node for node in root.iter() if "After" in node.attrib or "Before" in node.attrib]
    numbers = {name: int(step.get("Sequence", "0")) for name, step in authored.items()}
    numbers |= msi_fixups.SEQUENCE
    assert len(set(numbers.values())) == len(numbers)
    install_validate, install_initialize, install_finalize = 1400, 1500, 6600  # wixl's standard numbers
    assert install_validate < numbers["RemoveExistingProducts"] < install_initialize
    assert numbers["StopServices"] < numbers["DeleteServices"] < numbers["RemoveFiles"] < numbers["InstallFiles"]
    # the secret is written after secret.txt is installed (with its ACL), before the service exists
    assert numbers["InstallFiles"] < numbers["CA_SetWriteSecret"] < numbers["CA_WriteSecret"]
    assert numbers["CA_WriteSecret"] < numbers["InstallServices"]
    # failure actions between installing and starting the service; deferred actions inside the script
    for action in ("MsiConfigureServices", "CA_ServiceRecovery", "CA_ServiceFailureFlag"):
        assert numbers["InstallServices"] < numbers[action] < numbers["StartServices"] < install_finalize
    assert all(install_initialize < number < install_finalize for number in msi_fixups.SEQUENCE.values())


# --- GUIDs and codes ---------------------------------------------------------------------------------------------


def _component_guids(document: wxs.WxsDocument) -> dict[str, str]:
    root = _root(document)
    return {
        _one(component, "w:File").get("Name", "") + "@" + component.get("Id", ""): component.get("Guid", "")
        for component in root.iter(f"{{{wxs.WIX_NAMESPACE}}}Component")
        if component.find("w:File", NS) is not None
    }


def test_the_same_input_renders_the_same_document(tmp_path: Path) -> None:
    staged = _staged(tmp_path)
    assert _document(staged).xml == _document(staged).xml


def test_component_guids_depend_on_the_path_only(tmp_path: Path) -> None:
    first = _document(_staged(tmp_path / "a", version="1.2.3"))
    later = _document(_staged(tmp_path / "b", version="1.3.0", payload_bytes=9999))
    assert _component_guids(first) == _component_guids(later)
    guids = list(_component_guids(first).values())
    assert len(set(guids)) == len(guids)
    for item in first.files:
        assert item.component_guid == uuid.uuid5(wxs.GUID_NAMESPACE, f"component\0{item.path.as_posix()}")


def test_product_and_package_codes_change_with_version_content_and_configuration(tmp_path: Path) -> None:
    staged = _staged(tmp_path)
    base = _document(staged)
    newer = _document(replace(staged, version="1.2.4"))
    other_content = _document(staged, {"osquery.flags": b"--verbose\n"})
    other_url = _document(replace(staged, fleet_url="https://other.example.com"))
    codes = [(doc.product_code, doc.package_code) for doc in (base, newer, other_content, other_url)]
    assert len({code for pair in codes for code in pair}) == 8
    product = _one(_root(base), "w:Product")
    assert product.get("Id") == wxs.guid(base.product_code)
    assert base.product_code == uuid.uuid5(wxs.GUID_NAMESPACE, f"ProductCode\0{staged.version}\0{base.content_digest}")
    assert all(_one(_root(doc), "w:Product").get("UpgradeCode") == product.get("UpgradeCode") for doc in (newer,))


def test_msi_product_versions(tmp_path: Path) -> None:
    assert wxs.msi_product_version("1.38.1") == "1.38.1"
    assert wxs.msi_product_version("4.5") == "4.5.0"
    assert wxs.msi_product_version("1.2.3-rc.1") == "1.2.3"
    for bad in ("2026.11.27", "1.256.0", "1.2.65536", "v1.2.3", "dev"):
        with pytest.raises(wxs.MsiInputError, match="ProductVersion"):
            wxs.msi_product_version(bad)
    with pytest.raises(wxs.MsiInputError, match="ProductVersion"):
        _document(_staged(tmp_path, version="2026.11.27"))


# --- payload -----------------------------------------------------------------------------------------------------


def test_payload_adds_the_service_binary_and_a_secret_placeholder(tmp_path: Path) -> None:
    staged = _staged(tmp_path, secret=None)
    files = {item.path.as_posix(): item for item in wxs.payload(staged)}
    channel = staged.file("bin/orbit/windows/stable/orbit.exe")
    assert channel is not None
    assert files["bin/orbit/orbit.exe"].source == channel.source and files["bin/orbit/orbit.exe"].mode == 0o755
    assert files["secret.txt"].source is None and files["secret.txt"].mode == 0o600
    assert files["secret.txt"].data == b""
    assert set(files) == {item.path.as_posix() for item in staged.files} | {"bin/orbit/orbit.exe", "secret.txt"}

    with_secret = _staged(tmp_path / "2")
    secret = next(item for item in wxs.payload(with_secret) if item.path == PurePosixPath("secret.txt"))
    assert secret.source is not None and secret.source.read_text() == SECRET
    # a secret that staging did not write as secret.txt is still shipped there, never dropped
    unstaged = replace(with_secret, files=tuple(item for item in with_secret.files if item.path.name != "secret.txt"))
    secret = next(item for item in wxs.payload(unstaged) if item.path == PurePosixPath("secret.txt"))
    assert secret.source is None and secret.data == SECRET.encode() and secret.mode == 0o600


def test_payload_refuses_a_package_without_orbit_and_other_platforms(tmp_path: Path) -> None:
    staged = _staged(tmp_path)
    no_orbit = replace(staged, files=tuple(item for item in staged.files if "orbit.exe" not in item.path.name))
    with pytest.raises(wxs.MsiInputError, match="neither is staged"):
        wxs.payload(no_orbit)
    with pytest.raises(wxs.MsiInputError, match="not a linux one"):
        wxs.payload(make_staged(tmp_path / "linux", "linux"))


def test_arm64_is_refused_before_any_tool_runs(tmp_path: Path) -> None:
    staged = make_staged(tmp_path, "windows", "arm64")
    with pytest.raises(msi.MsiInputError, match=re.escape("arm64 is not supported: wixl 0.101 builds x86 and x64")):
        msi.build(staged, tmp_path / "out.msi")
    assert not (tmp_path / "out.msi").exists()


def test_private_files_are_the_0600_ones(tmp_path: Path) -> None:
    document = _document(_staged(tmp_path))
    private = {item.path.as_posix() for item in document.files if item.private}
    assert private == {"secret.txt", "osquery.flags", "tuf-metadata.json", "updates-metadata.json"}


# --- fix-ups (pure) ----------------------------------------------------------------------------------------------


def test_fixup_sql_restarts_on_failure_and_locks_the_secret(tmp_path: Path) -> None:
    document = _document(_staged(tmp_path))
    sql = msi_fixups.statements(msi_fixups.plan_for(document))
    joined = "\n".join(sql)
    assert (
        "VALUES ('OrbitRestartOnFailure', 'Fleet osquery', 1, 86400, '1[~]1[~]1', '1000[~]1000[~]1000', "
        "'C_ORBITBIN')" in joined
    )
    assert "VALUES ('OrbitFailureActionsOnNonCrash', 'Fleet osquery', 1, 4, '1', 'C_ORBITBIN')" in joined
    assert 'failure "Fleet osquery" reset= 86400 actions= restart/1000/restart/1000/restart/1000' in joined
    assert "VALUES ('LockF_SECRET', 'F_SECRET', 'File', 'O:SYG:SYD:PAI(A;;FA;;;SY)(A;;FA;;;BA)')" in joined
    assert "VALUES ('LockOrbitRoot', 'ORBITROOT', 'CreateFolder'," in joined
    assert "'MsiHiddenProperties', 'FLEET_SECRET;CA_WriteSecret'" in joined
    assert SECRET not in joined
    locked = set(re.findall(r"VALUES \('Lock(F_\w+)'", joined))
    assert locked == {item.file_id for item in document.files if item.private}
    assert "'" not in msi_fixups.WRITE_SECRET_SCRIPT and "[" not in msi_fixups.WRITE_SECRET_SCRIPT


def test_summary_information_round_trips_and_is_fixed(tmp_path: Path) -> None:
    original = msi_fixups.SummaryStream(
        header=b"\xfe\xff\x00\x00" + struct.pack("<I", 0x20005) + b"\x00" * 16,
        properties={
            1: msi_fixups.SummaryValue(msi_fixups.VT_I2, 1252),
            7: msi_fixups.SummaryValue(msi_fixups.VT_LPSTR, b"x64;1033"),
            9: msi_fixups.SummaryValue(msi_fixups.VT_LPSTR, b"{00000000-0000-0000-0000-000000000000}"),
            12: msi_fixups.SummaryValue(msi_fixups.VT_FILETIME, 123),
            13: msi_fixups.SummaryValue(msi_fixups.VT_FILETIME, 456),
            14: msi_fixups.SummaryValue(msi_fixups.VT_I4, 500),
            18: msi_fixups.SummaryValue(msi_fixups.VT_LPSTR, b"msitools 0.101"),
        },
    )
    data = msi_fixups.serialize_summary(original)
    assert msi_fixups.parse_summary(data) == original
    code = uuid.UUID("317227D5-CB5B-5A27-8320-44AD4EB81917")
    fixed = msi_fixups.fixed_summary(original, code, 1_700_000_000)
    padded = msi_fixups.serialize_summary(fixed, size=len(data))
    assert len(padded) == len(data)
    values = msi_fixups.parse_summary(padded).properties
    assert values[9].value == b"{317227D5-CB5B-5A27-8320-44AD4EB81917}"
    assert values[12].value == values[13].value == (1_700_000_000 + 11_644_473_600) * 10**7
    assert values[18].value == b"orbitctl" and values[7].value == b"x64;1033" and values[1].value == 1252
    with pytest.raises(msi_fixups.MsiToolError, match="exceeds"):
        msi_fixups.serialize_summary(fixed, size=len(data) - 40)
