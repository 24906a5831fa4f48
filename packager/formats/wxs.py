"""The WiX source (.wxs) of the Windows installer, as wixl 0.101 understands it (docs/reference/packaging.md §3.5,
§6.1).

Pure: a ``StagedPackage`` plus each payload file's digest in, XML text out — no file is read here (``msi.py`` copies
and hashes the payload, runs wixl, then ``msi_fixups.py`` adds what wixl cannot author). See ADR 0007.

What the document says:

- ``Product`` "Fleet osquery", per-machine, our own fixed ``UPGRADE_CODE``; ProductCode and PackageCode are UUIDv5
  of the version and a digest of everything that goes into the package (files, modes, configuration), so a rebuild
  of the same input is byte-identical and any change is a new product that replaces the installed one.
- ``Upgrade`` with one ``UpgradeVersion`` from 0.0.0 (wixl's ``MajorUpgrade`` is partial): every other version of
  our product — older or newer, as Fleet's ``AllowDowngrades`` — is removed by ``RemoveExistingProducts`` right
  after ``InstallValidate``.
- ``ProgramFiles64Folder\\Orbit`` (``ORBITROOT``) with one component per file; component GUIDs are UUIDv5 of the
  file's path, so they stay the same across versions (the MSI component rules).
- The service ``Fleet osquery`` on ``bin\\orbit\\orbit.exe``: LocalSystem, automatic start, Fleet's arguments with
  the Fleet URL, Fleet Desktop, scripts and end-user e-mail bound to MSI properties and the enroll secret passed by
  path (``--enroll-secret-path "[ORBITROOT]secret.txt"``), never by value.
- Explicit ``Sequence`` numbers for every action we rely on: wixl's ``After``/``Before`` are mis-sequenced.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from xml.etree import ElementTree

from packager.package.staged import StagedPackage

WIX_NAMESPACE = "http://schemas.microsoft.com/wix/2006/wi"

PRODUCT_NAME = "Fleet osquery"
MANUFACTURER = "orbit-suite"
SERVICE_NAME = "Fleet osquery"
SERVICE_DESCRIPTION = "Orbit: runs and updates osqueryd and Fleet Desktop, and enrolls this host in Fleet."
# Ours, fixed forever: every version of our MSI shares it so a newer one replaces an older one. Deliberately not
# Fleet's (B681CB20-…): our package must not silently remove Fleet's, nor Fleet's ours.
UPGRADE_CODE = uuid.UUID("28C32739-BECB-447E-B802-809ECEBF5B0E")
# The namespace of every derived GUID (ProductCode, PackageCode, component GUIDs).
GUID_NAMESPACE = uuid.UUID("74DA3045-7C01-47D3-9272-003FBB1286A8")
# Bump when the authoring changes meaning (tables, actions, arguments): the derived codes change with it, so an MSI
# built by a newer orbitctl from the same input is a new package rather than a conflicting copy.
AUTHORING_REVISION = 1

ROOT_DIRECTORY_ID = "ORBITROOT"
WINDOWS_ROOT = PureWindowsPath(r"C:\Program Files\Orbit")
ROOT_COMPONENT_ID = "C_ORBITROOT"
SERVICE_COMPONENT_ID = "C_ORBITBIN"
SERVICE_FILE_ID = "F_ORBITBIN"
SERVICE_INSTALL_ID = "OrbitService"
SECRET_FILE = PurePosixPath("secret.txt")
SECRET_FILE_ID = "F_SECRET"  # noqa: S105 - a File table key, not a secret
SERVICE_EXECUTABLE = PurePosixPath("bin/orbit/orbit.exe")
REGISTRY_KEY = r"SOFTWARE\FleetDM\Orbit"
# Fleet's MSI property placeholder for "no secret given at install time" (docs/reference/orbit-behaviour.md §9.3).
SECRET_PLACEHOLDER = "dummy"  # noqa: S105 - the documented "unset" value
LOG_FILE = r"[System64Folder]config\systemprofile\AppData\Local\FleetDM\Orbit\Logs\orbit-osquery.log"
CABINET = "orbit.cab"
FEATURE_ID = "Orbit"

# Properties an administrator may set on the msiexec command line (all public, so also SecureCustomProperties).
FLEET_URL = "FLEET_URL"
FLEET_SECRET = "FLEET_SECRET"  # noqa: S105 - a property name
FLEET_DESKTOP = "FLEET_DESKTOP"
ENABLE_SCRIPTS = "ENABLE_SCRIPTS"
END_USER_EMAIL = "END_USER_EMAIL"
PUBLIC_PROPERTIES = (FLEET_URL, FLEET_SECRET, FLEET_DESKTOP, ENABLE_SCRIPTS, END_USER_EMAIL)

# Standard actions whose position we depend on (all within wixl's defaults, written out explicitly).
STANDARD_SEQUENCE = (
    ("RemoveExistingProducts", 1401, None),  # right after InstallValidate: the old product goes first, whole
    ("StopServices", 1900, "VersionNT"),
    ("DeleteServices", 2000, "VersionNT"),
    ("RemoveFiles", 3500, None),
    ("CreateFolders", 3700, None),
    ("InstallFiles", 4000, None),
    ("WriteRegistryValues", 5000, None),
    ("InstallServices", 5800, "VersionNT"),
    ("StartServices", 5900, "VersionNT"),
)

# ORBIT_* variable → orbit flag, in Fleet's argument order (docs/reference/packaging.md §3.5). Values that are
# properties or
# fixed paths are handled in ``service_arguments``; anything else in ``orbit_env`` is an error (never dropped).
_VALUE_FLAGS = (
    ("ORBIT_UPDATE_URL", "update-url"),
    ("ORBIT_UPDATE_TLS_CERTIFICATE", "update-tls-certificate"),
    ("ORBIT_DESKTOP_CHANNEL", "desktop-channel"),
    ("ORBIT_ORBIT_CHANNEL", "orbit-channel"),
    ("ORBIT_OSQUERYD_CHANNEL", "osqueryd-channel"),
    ("ORBIT_UPDATE_INTERVAL", "update-interval"),
    ("ORBIT_HOST_IDENTIFIER", "host-identifier"),
    ("ORBIT_OSQUERY_DB", "osquery-db"),
    ("ORBIT_FLEET_DESKTOP_ALTERNATIVE_BROWSER_HOST", "fleet-desktop-alternative-browser-host"),
)
_SWITCH_FLAGS = (
    ("ORBIT_INSECURE", "insecure"),
    ("ORBIT_DEBUG", "debug"),
    ("ORBIT_DISABLE_UPDATES", "disable-updates"),
    ("ORBIT_DISABLE_KEYSTORE", "disable-keystore"),
)
# Carried by a property or a fixed argument rather than copied from orbit_env.
_BOUND_VARIABLES = frozenset(
    {
        "ORBIT_FLEET_URL",
        "ORBIT_FLEET_CERTIFICATE",
        "ORBIT_ENROLL_SECRET_PATH",
        "ORBIT_FLEET_DESKTOP",
        "ORBIT_ENABLE_SCRIPTS",
        "ORBIT_END_USER_EMAIL",
    }
)
_TRUE = frozenset({"1", "t", "true", "yes", "on"})
_MSI_VERSION = re.compile(r"(\d+)\.(\d+)(?:\.(\d+))?(?:[.+~-].*)?")


class MsiInputError(ValueError):
    """The staged package cannot become an MSI (the message says why); nothing was written."""


@dataclass(frozen=True)
class PayloadFile:
    """A file the MSI installs under ``ORBITROOT``: the bytes at ``source``, or ``data`` when ``source`` is None
    (``secret.txt`` generated from ``StagedPackage.secret``, empty without one — so a secret given at install time
    lands in a file that already has its private ACL)."""

    path: PurePosixPath
    source: Path | None
    mode: int
    data: bytes = b""


@dataclass(frozen=True)
class ResolvedFile:
    """A payload file ready for wixl: the bytes at ``source`` and their SHA-256."""

    path: PurePosixPath
    source: Path
    sha256: str
    mode: int

    @property
    def private(self) -> bool:
        """0600-style files (no group/other read): SYSTEM and Administrators only on Windows."""
        return self.mode & 0o044 == 0


@dataclass(frozen=True)
class MsiFile:
    path: PurePosixPath
    file_id: str
    component_id: str
    component_guid: uuid.UUID
    directory_id: str
    private: bool


@dataclass(frozen=True)
class WxsDocument:
    xml: str
    product_code: uuid.UUID
    package_code: uuid.UUID
    product_version: str
    content_digest: str
    files: tuple[MsiFile, ...]
    service_arguments: str


def payload(staged: StagedPackage) -> tuple[PayloadFile, ...]:
    """The staged files, plus what the MSI needs and the staging may lack: ``bin/orbit/orbit.exe`` (a copy of the
    orbit channel's binary, like Fleet's ``C_ORBITBIN``) and ``secret.txt`` (from ``staged.secret``, or empty)."""
    if staged.platform != "windows":
        raise MsiInputError(f"an MSI installs a Windows agent, not a {staged.platform} one")
    files = [PayloadFile(item.path, item.source, item.mode) for item in staged.files]
    paths = {item.path for item in files}
    if SERVICE_EXECUTABLE not in paths:
        channel = staged.orbit_env.get("ORBIT_ORBIT_CHANNEL", "stable")
        channel_binary = staged.file(f"bin/orbit/windows/{channel}/orbit.exe")
        if channel_binary is None:
            raise MsiInputError(
                f"the service needs {SERVICE_EXECUTABLE} or bin/orbit/windows/{channel}/orbit.exe; neither is staged"
            )
        files.append(PayloadFile(SERVICE_EXECUTABLE, channel_binary.source, 0o755))
    if SECRET_FILE not in paths:
        secret = (staged.secret or "").encode("utf-8")
        files.append(PayloadFile(SECRET_FILE, None, 0o600, secret))
    return tuple(sorted(files, key=lambda item: item.path.as_posix()))


def msi_product_version(version: str) -> str:
    """``major.minor.build`` as Windows Installer compares it (major, minor ≤ 255; build ≤ 65535)."""
    match = _MSI_VERSION.fullmatch(version)
    if match is None:
        raise MsiInputError(f"version {version!r} is not major.minor[.build] (an MSI ProductVersion); pass --version")
    major, minor, build = (int(part or 0) for part in match.groups())
    if major > 255 or minor > 255 or build > 65535:
        raise MsiInputError(
            f"version {version!r} does not fit an MSI ProductVersion (major and minor at most 255, build at most "
            "65535); pass --version"
        )
    return f"{major}.{minor}.{build}"


def content_digest(staged: StagedPackage, files: Sequence[ResolvedFile]) -> str:
    """SHA-256 of everything that makes this package what it is; the derived codes hang off it."""
    canonical = {
        "authoring": AUTHORING_REVISION,
        "name": staged.name,
        "version": staged.version,
        "arch": staged.arch,
        "files": [[item.path.as_posix(), item.sha256, item.mode] for item in sorted(files, key=_path_key)],
        "env": sorted(staged.orbit_env.items()),
        "fleet_url": staged.fleet_url,
        "fleet_desktop": staged.fleet_desktop,
        "service": staged.service,
        "extra": sorted(staged.extra.items()),
    }
    return hashlib.sha256(json.dumps(canonical, sort_keys=True).encode()).hexdigest()


def product_code(version: str, digest: str) -> uuid.UUID:
    return uuid.uuid5(GUID_NAMESPACE, f"ProductCode\0{version}\0{digest}")


def package_code(version: str, digest: str) -> uuid.UUID:
    return uuid.uuid5(GUID_NAMESPACE, f"PackageCode\0{version}\0{digest}")


def component_guid(path: PurePosixPath | str) -> uuid.UUID:
    """Stable per install location, independent of version and content (MSI component rules)."""
    return uuid.uuid5(GUID_NAMESPACE, f"component\0{PurePosixPath(path).as_posix()}")


def guid(value: uuid.UUID) -> str:
    """The registry form Windows Installer expects: upper case (with braces added by wixl where needed)."""
    return str(value).upper()


def _path_key(item: ResolvedFile) -> str:
    return item.path.as_posix()


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def directory_id(directory: PurePosixPath) -> str:
    """``ORBITROOT`` for the root; other ids contain lower case, so they are private properties (an msiexec command
    line cannot move one subdirectory elsewhere)."""
    if directory == PurePosixPath("."):
        return ROOT_DIRECTORY_ID
    return f"Dir_{_short_hash(directory.as_posix())}"


def msi_files(files: Sequence[ResolvedFile]) -> tuple[MsiFile, ...]:
    result = []
    for item in sorted(files, key=_path_key):
        if item.path == SERVICE_EXECUTABLE:
            file_id, component_id = SERVICE_FILE_ID, SERVICE_COMPONENT_ID
        elif item.path == SECRET_FILE:
            file_id, component_id = SECRET_FILE_ID, "C_SECRET"
        else:
            digest = _short_hash(item.path.as_posix())
            file_id, component_id = f"F_{digest}", f"C_{digest}"
        result.append(
            MsiFile(
                path=item.path,
                file_id=file_id,
                component_id=component_id,
                component_guid=component_guid(item.path),
                directory_id=directory_id(item.path.parent),
                private=item.private,
            )
        )
    return tuple(result)


def _check_path(path: PurePosixPath) -> None:
    if path.is_absolute() or not path.parts or any(part in ("", ".", "..") for part in path.parts):
        raise MsiInputError(f"payload path {path} must be relative to the agent root, without . or ..")
    for part in path.parts:
        if re.search(r'[<>:"|?*\\\x00-\x1f]', part) or part.endswith((" ", ".")):
            raise MsiInputError(f"payload path {path}: {part!r} is not a valid Windows file name")


def _check_text(name: str, value: str) -> None:
    """Values end up in XML attributes read by wixl's preprocessor and in quoted service arguments."""
    if '"' in value or "\n" in value or "\r" in value or "\x00" in value:
        raise MsiInputError(f"{name} {value!r} cannot be quoted in a service argument")
    if "$(" in value:
        raise MsiInputError(f"{name} {value!r} contains '$(', which wixl would read as a variable")


def _formatted_literal(value: str) -> str:
    """A literal inside an MSI Formatted string: brackets and braces escaped (``[\\[]`` …)."""
    return "".join(f"[\\{char}]" if char in "[]{}" else char for char in value)


def _quoted(value: str) -> str:
    """A Windows command-line argument in double quotes: backslashes before the closing quote are doubled."""
    trailing = len(value) - len(value.rstrip("\\"))
    return f'"{value}{chr(92) * trailing}"'


def _argument_value(name: str, value: str) -> str:
    """A literal value for the service arguments; paths under the agent root become ``[ORBITROOT]…``."""
    _check_text(name, value)
    windows_path = PureWindowsPath(value)
    if windows_path.is_relative_to(WINDOWS_ROOT) and windows_path != WINDOWS_ROOT:
        relative = "\\".join(windows_path.relative_to(WINDOWS_ROOT).parts)
        return f'"[{ROOT_DIRECTORY_ID}]{_formatted_literal(relative)}"'
    return _quoted(_formatted_literal(value))


def _enabled(value: str | None) -> bool:
    return value is not None and value.strip().lower() in _TRUE


def fleet_url(staged: StagedPackage) -> str | None:
    return staged.fleet_url or staged.orbit_env.get("ORBIT_FLEET_URL") or None


def end_user_email(staged: StagedPackage) -> str | None:
    return staged.extra.get("end_user_email") or staged.orbit_env.get("ORBIT_END_USER_EMAIL") or None


def service_arguments(staged: StagedPackage) -> str:
    """Fleet's MSI service arguments (docs/reference/packaging.md §3.5, docs/reference/orbit-behaviour.md §9.3): the
    URL, Desktop,
    scripts and e-mail come from properties; the secret by path only."""
    env = staged.orbit_env
    known = _BOUND_VARIABLES | {name for name, _ in _VALUE_FLAGS} | {name for name, _ in _SWITCH_FLAGS}
    unknown = sorted(set(env) - known)
    if unknown:
        raise MsiInputError(f"no Windows service argument for {', '.join(unknown)}")
    arguments = [
        f'--root-dir "[{ROOT_DIRECTORY_ID}]."',
        f'--log-file "{LOG_FILE}"',
        f'--fleet-url "[{FLEET_URL}]"',
    ]
    if env.get("ORBIT_FLEET_CERTIFICATE"):
        arguments.append(f'--fleet-certificate "[{ROOT_DIRECTORY_ID}]fleet.pem"')
    arguments.append(f'--enroll-secret-path "[{ROOT_DIRECTORY_ID}]{SECRET_FILE}"')
    for name, flag in _SWITCH_FLAGS:
        if _enabled(env.get(name)):
            arguments.append(f"--{flag}")
    for name, flag in _VALUE_FLAGS:
        value = env.get(name)
        if value:
            arguments.append(f"--{flag} {_argument_value(name, value)}")
    arguments.append(f"--fleet-desktop=[{FLEET_DESKTOP}]")
    arguments.append(f"--enable-scripts=[{ENABLE_SCRIPTS}]")
    arguments.append(f'--end-user-email "[{END_USER_EMAIL}]"')
    return " ".join(arguments)


def properties(staged: StagedPackage) -> tuple[tuple[str, str], ...]:
    """The Property rows we author. An unset URL or e-mail has no row: the property is then empty, and so is the
    argument (orbit treats an empty value as unset); the secret defaults to Fleet's placeholder ``dummy``."""
    rows: list[tuple[str, str]] = []
    url = fleet_url(staged)
    if url:
        _check_text("the Fleet URL", url)
        rows.append((FLEET_URL, url))
    rows.append((FLEET_SECRET, SECRET_PLACEHOLDER))
    desktop = staged.fleet_desktop or _enabled(staged.orbit_env.get("ORBIT_FLEET_DESKTOP"))
    rows.append((FLEET_DESKTOP, "true" if desktop else "false"))
    rows.append((ENABLE_SCRIPTS, "true" if _enabled(staged.orbit_env.get("ORBIT_ENABLE_SCRIPTS")) else "false"))
    email = end_user_email(staged)
    if email:
        _check_text("the end-user e-mail", email)
        rows.append((END_USER_EMAIL, email))
    rows.append(("ARPNOREPAIR", "1"))
    rows.append(("ARPNOMODIFY", "1"))
    return tuple(rows)


def _element(parent: ElementTree.Element, tag: str, **attributes: str) -> ElementTree.Element:
    return ElementTree.SubElement(parent, tag, attributes)


def _directories(files: Iterable[MsiFile]) -> list[PurePosixPath]:
    wanted: set[PurePosixPath] = set()
    for item in files:
        parent = item.path.parent
        while parent != PurePosixPath("."):
            wanted.add(parent)
            parent = parent.parent
    return sorted(wanted, key=lambda path: path.as_posix())


def render(staged: StagedPackage, files: Sequence[ResolvedFile]) -> WxsDocument:
    """The .wxs for ``files`` (from ``payload`` with their sources resolved and hashed)."""
    if staged.platform != "windows":
        raise MsiInputError(f"an MSI installs a Windows agent, not a {staged.platform} one")
    version = msi_product_version(staged.version)
    paths = [item.path for item in files]
    if len(set(paths)) != len(paths):
        raise MsiInputError("the payload lists a path twice")
    for path in paths:
        _check_path(path)
    if SERVICE_EXECUTABLE not in paths or SECRET_FILE not in paths:
        raise MsiInputError(f"the payload must contain {SERVICE_EXECUTABLE} and {SECRET_FILE} (see payload())")
    digest = content_digest(staged, files)
    codes = product_code(staged.version, digest), package_code(staged.version, digest)
    arguments = service_arguments(staged)
    entries = msi_files(files)
    sources = {item.path: item.source for item in files}

    wix = ElementTree.Element("Wix", {"xmlns": WIX_NAMESPACE})
    product = _element(
        wix,
        "Product",
        Id=guid(codes[0]),
        Name=PRODUCT_NAME,
        Language="1033",
        Version=version,
        Manufacturer=MANUFACTURER,
        UpgradeCode=guid(UPGRADE_CODE),
    )
    _element(
        product,
        "Package",
        InstallerVersion="500",
        Compressed="yes",
        InstallScope="perMachine",
        Description=f"{PRODUCT_NAME} {staged.version}",
        Comments=f"{PRODUCT_NAME} {staged.version} ({staged.arch}); content sha256 {digest}",
        Manufacturer=MANUFACTURER,
    )
    _element(product, "Media", Id="1", Cabinet=CABINET, EmbedCab="yes")
    for name, value in properties(staged):
        _element(product, "Property", Id=name, Value=value)
    upgrade = _element(product, "Upgrade", Id=guid(UPGRADE_CODE))
    _element(upgrade, "UpgradeVersion", Minimum="0.0.0", IncludeMinimum="yes", Property="WIX_UPGRADE_DETECTED")

    target = _element(product, "Directory", Id="TARGETDIR", Name="SourceDir")
    _element(target, "Directory", Id="System64Folder")  # the working directory of the sc.exe actions (fix-ups)
    program_files = _element(target, "Directory", Id="ProgramFiles64Folder")
    directory_elements = {
        PurePosixPath("."): _element(program_files, "Directory", Id=ROOT_DIRECTORY_ID, Name="Orbit"),
    }
    for directory in _directories(entries):
        directory_elements[directory] = _element(
            directory_elements[directory.parent], "Directory", Id=directory_id(directory), Name=directory.name
        )
    root_component = _element(
        directory_elements[PurePosixPath(".")],
        "Component",
        Id=ROOT_COMPONENT_ID,
        Guid=guid(component_guid(".")),
        Win64="yes",
    )
    _element(root_component, "CreateFolder")
    _element(
        root_component,
        "RegistryValue",
        Root="HKLM",
        Key=REGISTRY_KEY,
        Name="Path",
        Type="string",
        Value=f"[{ROOT_DIRECTORY_ID}]",
        KeyPath="yes",
    )
    for entry in entries:
        component = _element(
            directory_elements[entry.path.parent],
            "Component",
            Id=entry.component_id,
            Guid=guid(entry.component_guid),
            Win64="yes",
        )
        _element(
            component,
            "File",
            Id=entry.file_id,
            Name=entry.path.name,
            Source=str(sources[entry.path]),
            KeyPath="yes",
        )
        if entry.path == SERVICE_EXECUTABLE:
            _service_elements(component, arguments, start=staged.service)

    feature = _element(product, "Feature", Id=FEATURE_ID, Title=PRODUCT_NAME, Level="1", Display="hidden")
    _element(feature, "ComponentRef", Id=ROOT_COMPONENT_ID)
    for entry in entries:
        _element(feature, "ComponentRef", Id=entry.component_id)

    sequence = _element(product, "InstallExecuteSequence")
    for action, number, condition in STANDARD_SEQUENCE:
        step = _element(sequence, action, Sequence=str(number))
        if condition:
            step.text = condition

    ElementTree.indent(wix, space="  ")
    xml = '<?xml version="1.0" encoding="utf-8"?>\n' + ElementTree.tostring(wix, encoding="unicode") + "\n"
    return WxsDocument(
        xml=xml,
        product_code=codes[0],
        package_code=codes[1],
        product_version=version,
        content_digest=digest,
        files=entries,
        service_arguments=arguments,
    )


def _service_elements(component: ElementTree.Element, arguments: str, *, start: bool) -> None:
    _element(
        component,
        "ServiceInstall",
        Id=SERVICE_INSTALL_ID,
        Name=SERVICE_NAME,
        DisplayName=SERVICE_NAME,
        Description=SERVICE_DESCRIPTION,
        Type="ownProcess",
        Start="auto",
        ErrorControl="normal",
        Account="LocalSystem",
        Vital="yes",
        Arguments=arguments,
    )
    control = {"Id": "OrbitServiceControl", "Name": SERVICE_NAME}
    if start:
        control["Start"] = "install"
    control.update(Stop="both", Remove="uninstall", Wait="yes")
    _element(component, "ServiceControl", **control)


def private_file_ids(document: WxsDocument) -> tuple[str, ...]:
    return tuple(item.file_id for item in document.files if item.private)
