"""``packager.formats.msi``: the MSI built by wixl + msibuild + olefile from a staged tree, checked by independent
readers — pymsi (its own CFB/MSI/CAB reader: tables, summary, extraction), 7-Zip (compound file + cabinet) — and
installed, upgraded and removed by Wine 8's msiexec (Wine's own msi.dll) in a private prefix."""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pytest
from pymsi.package import Package

from packager.formats import msi, wxs
from packager.package.staged import StagedPackage
from tests.support.signing_identities import make_ca, make_code_signing, signing_options, verify
from tests.support.staged_package import EPOCH, SECRET, make_staged

ORBIT_CHANNEL_BINARY = PurePosixPath("bin/orbit/windows/stable/orbit.exe")
SERVICE_KEY = r"HKLM\SYSTEM\CurrentControlSet\Services\Fleet osquery"
# A real Windows service program for the Wine install test: Wine's own Windows Update stub service (it registers
# with the SCM and runs until stopped). The fake binaries of make_staged cannot start, and StartServices would
# roll the install back.
WINE_SERVICE_PROGRAMS = (
    "/usr/lib/x86_64-linux-gnu/wine/x86_64-windows/wuauserv.exe",
    "/usr/lib/wine/x86_64-windows/wuauserv.exe",
    "/usr/lib64/wine/x86_64-windows/wuauserv.exe",
)


@dataclass(frozen=True)
class Built:
    staged: StagedPackage
    path: Path
    result_sha256: str


def _run(*argv: str | Path, cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(arg) for arg in argv], capture_output=True, text=True, cwd=cwd, check=True, timeout=timeout
    )


def _expected_tree(staged: StagedPackage) -> dict[str, bytes]:
    """What the package installs under ORBITROOT: the staged files plus the service binary (a copy of the orbit
    channel's binary) and, without a secret, an empty ``secret.txt``."""
    tree = {item.path.as_posix(): item.source.read_bytes() for item in staged.files}
    channel = staged.file(ORBIT_CHANNEL_BINARY.as_posix())
    assert channel is not None
    tree.setdefault("bin/orbit/orbit.exe", channel.source.read_bytes())
    tree.setdefault("secret.txt", b"")
    return tree


def _tree(root: Path) -> dict[str, bytes]:
    return {path.relative_to(root).as_posix(): path.read_bytes() for path in root.rglob("*") if path.is_file()}


def _rows(path: Path, table: str) -> list[dict[str, object]]:
    with Package(path) as package:
        found = package.get(table)
        assert found is not None, f"no {table} table"
        return [dict(row) for row in found]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    base = tmp_path_factory.mktemp("msi")
    staged = make_staged(base / "stage", "windows", version="1.2.3", payload_bytes=100_000)
    result = msi.build(staged, base / "fleet-osquery.msi")
    assert result.path == base / "fleet-osquery.msi"
    assert result.size == result.path.stat().st_size
    assert result.sha256 == hashlib.sha256(result.path.read_bytes()).hexdigest()
    assert result.path.stat().st_mode & 0o777 == 0o600  # it carries secret.txt
    return Built(staged, result.path, result.sha256)


# --- independent readers -----------------------------------------------------------------------------------------


def test_pymsi_reads_a_valid_x64_package_with_fixed_summary(built: Built) -> None:
    tested = _run(sys.executable, "-m", "pymsi", "test", built.path)
    assert f"Valid .msi file: {built.path}" in tested.stdout
    with Package(built.path) as package:
        summary = package.summary
        assert summary.arch() == "x64" and summary.languages() == [1033]
        assert summary.creating_application() == "orbitctl"
        assert summary.creation_time() == datetime.datetime.fromtimestamp(EPOCH, datetime.UTC)
        properties = {row["Property"]: row["Value"] for row in package["Property"]}
        assert summary.uuid() != properties["ProductCode"]  # PackageCode and ProductCode are distinct, both derived
    info = _run(sys.executable, "-m", "pymsi", "suminfo", built.path).stdout
    assert "Creating Application: orbitctl" in info and "Architecture: x64" in info


def test_service_table_installs_fleet_osquery_as_localsystem_with_automatic_start(built: Built) -> None:
    (service,) = _rows(built.path, "ServiceInstall")
    assert service["Name"] == service["DisplayName"] == "Fleet osquery"
    assert service["ServiceType"] == 0x10  # SERVICE_WIN32_OWN_PROCESS
    assert service["StartType"] == 2  # SERVICE_AUTO_START
    assert service["StartName"] == "LocalSystem" and service["Password"] is None
    assert service["Component_"] == "C_ORBITBIN"
    arguments = str(service["Arguments"])
    assert arguments.startswith('--root-dir "[ORBITROOT]." --log-file "[System64Folder]config\\systemprofile')
    assert '--fleet-url "[FLEET_URL]" --enroll-secret-path "[ORBITROOT]secret.txt"' in arguments
    assert '--orbit-channel "stable" --osqueryd-channel "stable"' in arguments
    assert SECRET not in arguments
    (control,) = _rows(built.path, "ServiceControl")
    # 1 start on install + 2 stop on install + 32 stop on uninstall + 128 delete on uninstall
    assert control["Name"] == "Fleet osquery" and control["Event"] == 163 and control["Wait"] == 1
    (component,) = [row for row in _rows(built.path, "Component") if row["Component"] == "C_ORBITBIN"]
    (key_file,) = [row for row in _rows(built.path, "File") if row["File"] == component["KeyPath"]]
    assert key_file["FileName"] == "orbit.exe"
    assert int(str(component["Attributes"])) & 256  # msidbComponentAttributes64bit


def test_property_table_has_the_configuration_and_our_upgrade_code(built: Built) -> None:
    properties = {row["Property"]: row["Value"] for row in _rows(built.path, "Property")}
    assert properties["FLEET_URL"] == "https://fleet.example.com"
    assert properties["FLEET_SECRET"] == "dummy"
    assert properties["FLEET_DESKTOP"] == "false" and properties["ENABLE_SCRIPTS"] == "false"
    assert properties["UpgradeCode"] == "{28C32739-BECB-447E-B802-809ECEBF5B0E}"
    assert properties["ProductVersion"] == "1.2.3" and properties["ProductName"] == "Fleet osquery"
    assert properties["ALLUSERS"] == "1"
    assert properties["MsiHiddenProperties"] == "FLEET_SECRET;CA_WriteSecret"
    assert set(str(properties["SecureCustomProperties"]).split(";")) >= set(wxs.PUBLIC_PROPERTIES)
    assert SECRET not in {str(value) for value in properties.values()}
    (upgrade,) = _rows(built.path, "Upgrade")
    assert upgrade["UpgradeCode"] == properties["UpgradeCode"] and upgrade["VersionMin"] == "0.0.0"
    assert upgrade["VersionMax"] is None and upgrade["ActionProperty"] == "WIX_UPGRADE_DETECTED"


def test_files_extracted_by_pymsi_equal_the_staged_tree(built: Built, tmp_path: Path) -> None:
    _run(sys.executable, "-m", "pymsi", "extract", built.path, "-o", tmp_path / "x")
    assert _tree(tmp_path / "x" / "ProgramFiles64Folder" / "Orbit") == _expected_tree(built.staged)
    assert (tmp_path / "x" / "ProgramFiles64Folder" / "Orbit" / "secret.txt").read_text() == SECRET


def test_7zip_tests_and_lists_the_compound_file_and_its_cabinet(built: Built) -> None:
    tested = _run("7z", "t", built.path)
    assert "Everything is Ok" in tested.stdout
    listing = _run("7z", "l", "-slt", built.path).stdout
    assert "Type = Compound" in listing and "Type = Cab" in listing and "Method = MSZip" in listing
    file_ids = {str(row["File"]) for row in _rows(built.path, "File")}
    names = set(re.findall(r"^Path = (\S+)$", listing, re.MULTILINE)) - {str(built.path)}
    assert names == file_ids | {wxs.CABINET}  # the embedded cabinet, and in it one member per File row
    modified = set(re.findall(r"^Modified = (.+)$", listing, re.MULTILINE))
    assert modified == {datetime.datetime.fromtimestamp(EPOCH, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S")}


def test_fixup_tables_read_back(built: Built) -> None:
    (failure,) = _rows(built.path, "MsiServiceConfigFailureActions")
    assert failure | {"MsiServiceConfigFailureActions": ""} == {
        "MsiServiceConfigFailureActions": "",
        "Name": "Fleet osquery",
        "Event": 1,
        "ResetPeriod": 86400,
        "RebootMessage": None,
        "Command": None,
        "Actions": "1[~]1[~]1",
        "DelayActions": "1000[~]1000[~]1000",
        "Component_": "C_ORBITBIN",
    }
    (flag,) = _rows(built.path, "MsiServiceConfig")
    assert (flag["Name"], flag["ConfigType"], flag["Argument"]) == ("Fleet osquery", 4, "1")
    locks = {str(row["LockObject"]): row for row in _rows(built.path, "MsiLockPermissionsEx")}
    assert locks["F_SECRET"]["Table"] == "File"
    assert locks["F_SECRET"]["SDDLText"] == "O:SYG:SYD:PAI(A;;FA;;;SY)(A;;FA;;;BA)"  # no Users
    assert locks["ORBITROOT"]["Table"] == "CreateFolder" and "(A;OICI;0x1200a9;;;BU)" in str(
        locks["ORBITROOT"]["SDDLText"]
    )
    files = {str(row["File"]): str(row["FileName"]) for row in _rows(built.path, "File")}
    private = {files[name] for name in locks if name in files}
    assert private == {"secret.txt", "osquery.flags", "tuf-metadata.json", "updates-metadata.json"}
    actions = {str(row["Action"]): row for row in _rows(built.path, "CustomAction")}
    assert actions["CA_SetWriteSecret"]["Type"] == 51 and actions["CA_WriteSecret"]["Type"] == 37 + 1024 + 2048
    assert 'sc.exe" failureflag "Fleet osquery" 1' in str(actions["CA_ServiceFailureFlag"]["Target"])
    sequence = {str(row["Action"]): int(str(row["Sequence"])) for row in _rows(built.path, "InstallExecuteSequence")}
    assert sequence["InstallFiles"] == 4000 and sequence["CA_WriteSecret"] == 4100
    assert sequence["InstallServices"] < sequence["MsiConfigureServices"] < sequence["StartServices"]


def test_two_builds_are_byte_identical(built: Built, tmp_path: Path) -> None:
    again = msi.build(built.staged, tmp_path / "again.msi")
    assert again.sha256 == built.result_sha256
    assert again.path.read_bytes() == built.path.read_bytes()
    # a fresh staging of the same input (other temp paths, other source mtimes) gives the same bytes too
    fresh = make_staged(tmp_path / "stage", "windows", version="1.2.3", payload_bytes=100_000)
    for item in fresh.files:
        os.utime(item.source, (EPOCH + 12345, EPOCH + 12345))
    assert msi.build(fresh, tmp_path / "fresh.msi").sha256 == built.result_sha256


def test_over_2_gib_is_refused_clearly_without_reading_or_writing(tmp_path: Path) -> None:
    staged = make_staged(tmp_path / "stage", "windows")
    huge = tmp_path / "huge.exe"
    with huge.open("wb") as sparse:
        sparse.truncate(2**31)  # 2 GiB: one byte over what an MSI can carry
    files = tuple(
        dataclasses.replace(item, source=huge) if item.path.name == "osqueryd.exe" else item for item in staged.files
    )
    out = tmp_path / "fleet-osquery.msi"
    out.write_bytes(b"previous build")
    with pytest.raises(msi.MsiInputError, match=r"osqueryd\.exe is 2147483648 bytes: an MSI cannot carry a file over"):
        msi.build(dataclasses.replace(staged, files=files), out)
    assert out.read_bytes() == b"previous build"  # left alone

    half = tmp_path / "half.bin"
    with half.open("wb") as sparse:
        sparse.truncate(2**30 + 1)
    files = tuple(
        dataclasses.replace(item, source=half) if "stable" in item.path.parts else item for item in staged.files
    )
    with pytest.raises(msi.MsiInputError, match=r"the payload is \d+ bytes: an MSI .* cannot carry more than 2 GiB"):
        msi.build(dataclasses.replace(staged, files=files), out)


def test_missing_tools_are_reported_and_the_old_package_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    staged = make_staged(tmp_path / "stage", "windows")
    out = tmp_path / "fleet-osquery.msi"
    out.write_bytes(b"previous build")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(msi.MsiToolError, match="wixl not found: install the Debian packages wixl and msitools"):
        msi.build(staged, out)
    assert out.read_bytes() == b"previous build"


# --- Wine: install, upgrade with install-time properties, uninstall ----------------------------------------------


@dataclass(frozen=True)
class Wine:
    prefix: Path
    env: Mapping[str, str]

    def run(self, *argv: str | Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(arg) for arg in argv], capture_output=True, text=True, env=dict(self.env), timeout=timeout, check=False
        )
        subprocess.run(["wineserver", "-w"], env=dict(self.env), timeout=timeout, check=False)
        return result

    @property
    def orbit_root(self) -> Path:
        return self.prefix / "drive_c" / "Program Files" / "Orbit"

    def registry(self, key: str) -> dict[str, str] | None:
        """The values of ``key`` through ``wine reg query`` (None when the key does not exist)."""
        result = self.run("wine", "reg", "query", key)
        if result.returncode != 0:
            return None
        values = {}
        for line in result.stdout.splitlines():
            match = re.match(r"^\s{4}(\S.*?)\s{4}(REG_\w+)\s{4}(.*)$", line.rstrip("\r"))
            if match:
                values[match.group(1)] = match.group(3)
        return values

    def subkeys(self, key: str) -> set[str]:
        result = self.run("wine", "reg", "query", key)
        return {line.strip().rsplit("\\", 1)[-1] for line in result.stdout.splitlines() if line.startswith("HKEY_")}


@pytest.fixture(scope="module")
def wine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Wine]:
    if shutil.which("wine") is None or shutil.which("wineserver") is None:
        pytest.fail("wine is not installed: run build_scripts/bootstrap.sh (apt: wine wine64)")
    prefix = tmp_path_factory.mktemp("wine") / "prefix"
    env = {key: value for key, value in os.environ.items() if key not in ("DISPLAY", "WAYLAND_DISPLAY")}
    # headless and quiet; no Mono/Gecko download prompts
    env.update(WINEPREFIX=str(prefix), WINEDEBUG="-all", WINEDLLOVERRIDES="mscoree,mshtml=", WINEARCH="win64")
    session = Wine(prefix, env)
    booted = session.run("wineboot", "-i", timeout=300)
    assert (prefix / "system.reg").is_file(), booted.stderr[-2000:]
    try:
        yield session
    finally:
        subprocess.run(["wineserver", "-k"], env=env, timeout=60, check=False)


def _service_program() -> Path:
    for candidate in WINE_SERVICE_PROGRAMS:
        if Path(candidate).is_file():
            return Path(candidate)
    pytest.fail(f"Wine's wuauserv.exe (a real service program) was not found in {WINE_SERVICE_PROGRAMS}")


def _with_real_service(staged: StagedPackage, base: Path) -> StagedPackage:
    program = base / "orbit-service.exe"
    shutil.copyfile(_service_program(), program)
    files = tuple(
        dataclasses.replace(item, source=program) if item.path == ORBIT_CHANNEL_BINARY else item
        for item in staged.files
    )
    return dataclasses.replace(staged, files=files)


def _product_code(path: Path) -> str:
    (row,) = [row for row in _rows(path, "Property") if row["Property"] == "ProductCode"]
    return str(row["Value"])


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_wine_installs_upgrades_and_removes_the_package(wine: Wine, tmp_path: Path) -> None:
    first = _with_real_service(make_staged(tmp_path / "v1", "windows", version="1.2.3"), tmp_path / "v1")
    # the first version is Authenticode-signed: a signed MSI installs like an unsigned one
    ca = make_ca()
    (tmp_path / "ca.pem").write_bytes(ca.cert_pem)
    first_msi = msi.build(first, tmp_path / "v1.msi", signing=signing_options(ca, make_code_signing(ca))).path
    assert verify(first_msi, tmp_path / "ca.pem").returncode == 0
    # the next version has other content and no packaged secret: the secret comes from FLEET_SECRET at install time
    second = make_staged(tmp_path / "v2", "windows", version="1.2.4", payload_bytes=8192, secret=None)
    second = _with_real_service(second, tmp_path / "v2")
    second_msi = msi.build(second, tmp_path / "v2.msi").path
    uninstall_key = r"HKLM\Software\Microsoft\Windows\CurrentVersion\Uninstall"

    installed = wine.run("wine", "msiexec", "/i", first_msi, "/qn", "/l*v", tmp_path / "install.log")
    assert installed.returncode == 0, _failure(installed, tmp_path / "install.log")
    assert _tree(wine.orbit_root) == _expected_tree(first)
    assert (wine.orbit_root / "secret.txt").read_text() == SECRET
    service = wine.registry(SERVICE_KEY)
    assert service is not None
    assert service["Type"] == "0x10" and service["Start"] == "0x2" and service["ObjectName"] == "LocalSystem"
    image = service["ImagePath"]
    assert image.startswith('C:\\Program Files\\Orbit\\bin\\orbit\\orbit.exe --root-dir "C:\\Program Files\\Orbit\\."')
    assert '--fleet-url "https://fleet.example.com"' in image
    assert '--enroll-secret-path "C:\\Program Files\\Orbit\\secret.txt"' in image and SECRET not in image
    assert "RUNNING" in wine.run("wine", "sc", "query", "Fleet osquery").stdout  # StartServices started it
    assert wine.registry(r"HKLM\SOFTWARE\FleetDM\Orbit") == {"Path": "C:\\Program Files\\Orbit\\"}
    assert _product_code(first_msi) in wine.subkeys(uninstall_key)

    upgraded = wine.run(
        "wine",
        "msiexec",
        "/i",
        second_msi,
        "/qn",
        "FLEET_SECRET=secret-given-at-install-time",
        "FLEET_URL=https://other.example.com",
        "/l*v",
        tmp_path / "upgrade.log",
    )
    assert upgraded.returncode == 0, _failure(upgraded, tmp_path / "upgrade.log")
    products = wine.subkeys(uninstall_key)
    assert _product_code(second_msi) in products and _product_code(first_msi) not in products
    expected = _expected_tree(second) | {"secret.txt": b"secret-given-at-install-time"}
    assert _tree(wine.orbit_root) == expected
    service = wine.registry(SERVICE_KEY)
    assert service is not None and '--fleet-url "https://other.example.com"' in service["ImagePath"]
    assert "secret-given-at-install-time" not in service["ImagePath"]
    assert "RUNNING" in wine.run("wine", "sc", "query", "Fleet osquery").stdout

    removed = wine.run("wine", "msiexec", "/x", second_msi, "/qn", "/l*v", tmp_path / "remove.log")
    assert removed.returncode == 0, _failure(removed, tmp_path / "remove.log")
    left = sorted(str(path.relative_to(wine.orbit_root)) for path in wine.orbit_root.rglob("*"))
    assert not wine.orbit_root.exists(), f"left after removal: {left}\n{_log_tail(tmp_path / 'remove.log')}"
    assert wine.registry(SERVICE_KEY) is None
    assert "Path" not in (wine.registry(r"HKLM\SOFTWARE\FleetDM\Orbit") or {})
    assert _product_code(second_msi) not in wine.subkeys(uninstall_key)


MDM_SECRET = "secret-pushed-by-the-mdm"


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_an_mdm_installs_one_generic_package_with_properties_and_removes_it_by_product_code(
    wine: Wine, tmp_path: Path
) -> None:
    """What Intune / GPO / any MDM does (README "Deploying with an MDM"): one package built without a Fleet URL or
    secret (``orbitctl package --type msi``), installed silently with its configuration as public properties, and
    removed later by its ProductCode alone — the MDM no longer has the .msi then."""
    staged = make_staged(tmp_path / "generic", "windows", version="2.0.0", secret=None)
    env = {key: value for key, value in staged.orbit_env.items() if key != "ORBIT_FLEET_URL"}
    staged = _with_real_service(dataclasses.replace(staged, fleet_url=None, orbit_env=env), tmp_path / "generic")
    result = msi.build(staged, tmp_path / "fleetd-base.msi")
    generic = result.path
    properties = {row["Property"]: row["Value"] for row in _rows(generic, "Property")}
    assert "FLEET_URL" not in properties and properties["FLEET_SECRET"] == "dummy"
    product_code = _product_code(generic)
    assert result.product_code == product_code  # what orbitctl package prints for the MDM's removal command

    installed = wine.run(
        *("wine", "msiexec", "/i", generic, "/qn"),
        *("FLEET_URL=https://mdm.example.com", f"FLEET_SECRET={MDM_SECRET}", "ENABLE_SCRIPTS=true"),
        *("FLEET_DESKTOP=true", "END_USER_EMAIL=user@example.com", "/l*v", tmp_path / "install.log"),
    )
    assert installed.returncode == 0, _failure(installed, tmp_path / "install.log")
    assert (wine.orbit_root / "secret.txt").read_text() == MDM_SECRET
    service = wine.registry(SERVICE_KEY)
    assert service is not None
    image = service["ImagePath"]
    for argument in (
        '--fleet-url "https://mdm.example.com"',
        '--enroll-secret-path "C:\\Program Files\\Orbit\\secret.txt"',
        "--fleet-desktop=true",
        "--enable-scripts=true",
        '--end-user-email "user@example.com"',
    ):
        assert argument in image, image
    assert MDM_SECRET not in image  # the secret reaches orbit as a file only
    assert "RUNNING" in wine.run("wine", "sc", "query", "Fleet osquery").stdout
    assert product_code in wine.subkeys(r"HKLM\Software\Microsoft\Windows\CurrentVersion\Uninstall")

    removed = wine.run("wine", "msiexec", "/x", product_code, "/qn", "/l*v", tmp_path / "remove.log")
    assert removed.returncode == 0, _failure(removed, tmp_path / "remove.log")
    assert not wine.orbit_root.exists(), _log_tail(tmp_path / "remove.log")
    assert wine.registry(SERVICE_KEY) is None
    assert product_code not in wine.subkeys(r"HKLM\Software\Microsoft\Windows\CurrentVersion\Uninstall")


def _failure(result: subprocess.CompletedProcess[str], log: Path) -> str:
    """What msiexec said: its exit code and output (Wine's own errors go there) and the tail of its log."""
    output = f"stdout: {result.stdout[-2000:]}\nstderr: {result.stderr[-2000:]}"
    return f"exit {result.returncode}\n{output}\n{_log_tail(log)}"


def _log_tail(log: Path) -> str:
    if not log.is_file():
        return "(no log)"
    data = log.read_bytes()
    text = data.decode("utf-16") if data.startswith(b"\xff\xfe") else data.decode("utf-8", "replace")
    return text[-4000:]
