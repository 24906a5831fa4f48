"""The one staged package every format builder consumes (docs/reference/packaging.md §3.2): what to install, where,
with which
modes, and the agent's service configuration. Builders add only their own service definitions and scripts.

``files`` are relative to the agent's root directory (``/opt/orbit`` on Linux and macOS, ``ORBITROOT`` =
``C:\\Program Files\\Orbit`` on Windows), e.g. ``bin/orbit/linux/stable/orbit``, ``osquery.flags``,
``updates-metadata.json``. ``symlinks`` likewise (Unix only: ``bin/orbit/orbit`` → ``linux/stable/orbit``).
``orbit_env`` is the agent's configuration as ``ORBIT_*`` variables (the Linux environment file, the launchd
``EnvironmentVariables``, the Windows service arguments/environment); the enroll secret is *not* in it — each OS
keeps it where Fleet does (``secret`` below: ``/etc/default/orbit`` on Linux, ``secret.txt`` on macOS/Windows).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

PLATFORMS = ("linux", "macos", "windows")
ARCHES = ("amd64", "arm64")
UNIX_ROOT = PurePosixPath("/opt/orbit")


@dataclass(frozen=True)
class StagedFile:
    path: PurePosixPath  # relative to the agent root, forward slashes on every OS
    source: Path  # the bytes to ship (never modified by a builder)
    mode: int  # 0o755 executables, 0o644 public files, 0o600 secrets and Fleet's 0600 files


@dataclass(frozen=True)
class StagedSymlink:
    path: PurePosixPath  # relative to the agent root
    target: str  # relative target, as the installer creates it


@dataclass(frozen=True)
class StagedPackage:
    platform: str  # linux | macos | windows
    arch: str  # amd64 | arm64 (macOS packages are universal; arch is informational there)
    name: str  # fleet-osquery
    version: str  # package version (orbit's target version unless --version)
    identifier: str  # macOS package identifier, default com.fleetdm.orbit
    files: tuple[StagedFile, ...]
    symlinks: tuple[StagedSymlink, ...]
    orbit_env: Mapping[str, str]  # ORBIT_* → value, without the secret
    secret: str | None  # the enroll secret (None with --use-system-configuration / no Fleet URL)
    fleet_url: str | None
    fleet_desktop: bool
    service: bool  # install and start the service
    source_date_epoch: int  # every timestamp in the output (SOURCE_DATE_EPOCH, else a fixed default)
    agent_root: PurePosixPath = UNIX_ROOT  # Unix install root; Windows uses ORBITROOT
    extra: Mapping[str, str] = field(default_factory=dict)  # format-specific knobs (e.g. end_user_email)

    def file(self, relative: str) -> StagedFile | None:
        wanted = PurePosixPath(relative)
        return next((item for item in self.files if item.path == wanted), None)

    @property
    def orbit_executable(self) -> PurePosixPath:
        """The path the service runs: the ``bin/orbit/orbit`` link (Unix) or ``bin\\orbit\\orbit.exe`` (Windows)."""
        return PurePosixPath("bin/orbit/orbit.exe" if self.platform == "windows" else "bin/orbit/orbit")


@dataclass(frozen=True)
class BuildResult:
    path: Path
    size: int
    sha256: str
    product_code: str | None = None  # msi: what ``msiexec /x`` removes it by (braced, upper case)
