"""A ``StagedPackage`` made of small stand-in binaries, for format builder tests (no TUF needed)."""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath

from packager.package.staged import StagedFile, StagedPackage, StagedSymlink

EPOCH = 1_700_000_000
SECRET = "package-test-secret-0123"

_EXECUTABLES = {
    "linux": ("bin/orbit/linux/stable/orbit", "bin/osqueryd/linux/stable/osqueryd"),
    "macos": ("bin/orbit/macos/stable/orbit", "bin/osqueryd/macos-app/stable/osquery.app/Contents/MacOS/osqueryd"),
    "windows": ("bin/orbit/windows/stable/orbit.exe", "bin/osqueryd/windows/stable/osqueryd.exe"),
}


def make_staged(
    base: Path,
    platform: str = "linux",
    arch: str = "amd64",
    *,
    version: str = "1.2.3",
    payload_bytes: int = 4096,
    fleet_desktop: bool = False,
    secret: str | None = SECRET,
) -> StagedPackage:
    """Files under ``base/src`` with deterministic content; returns the package description."""
    src = base / "src"
    src.mkdir(parents=True, exist_ok=True)
    files: list[StagedFile] = []

    def add(relative: str, content: bytes, mode: int) -> None:
        path = src / relative.replace("/", "__")
        path.write_bytes(content)
        files.append(StagedFile(PurePosixPath(relative), path, mode))

    orbit, osqueryd = _EXECUTABLES[platform]
    add(orbit, b"#!/bin/sh\necho orbit\n" + b"o" * payload_bytes, 0o755)
    add(osqueryd, b"#!/bin/sh\necho osqueryd\n" + b"q" * payload_bytes, 0o755)
    if fleet_desktop and platform == "linux":
        add("bin/desktop/linux/stable/fleet-desktop/fleet-desktop", b"#!/bin/sh\necho desktop\n", 0o755)
    metadata = json.dumps({"root.json": {"signed": {"_type": "root"}, "signatures": []}}).encode()
    add("updates-metadata.json", metadata, 0o600)
    add("tuf-metadata.json", metadata, 0o600)
    add("osquery.flags", b"", 0o600)
    add("fleet.pem", b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n", 0o644)
    if secret is not None and platform in ("macos", "windows"):
        add("secret.txt", secret.encode(), 0o600)
    symlinks = (
        () if platform == "windows" else (StagedSymlink(PurePosixPath("bin/orbit/orbit"), f"{platform}/stable/orbit"),)
    )
    env = {
        "ORBIT_FLEET_URL": "https://fleet.example.com",
        "ORBIT_UPDATE_URL": "https://updates.example.com",
        "ORBIT_ORBIT_CHANNEL": "stable",
        "ORBIT_OSQUERYD_CHANNEL": "stable",
        "ORBIT_DESKTOP_CHANNEL": "stable",
        "ORBIT_UPDATE_INTERVAL": "15m0s",
        "ORBIT_FLEET_CERTIFICATE": "/opt/orbit/fleet.pem" if platform != "windows" else "",
    }
    if fleet_desktop:
        env["ORBIT_FLEET_DESKTOP"] = "true"
    if platform in ("macos", "windows"):
        env["ORBIT_ENROLL_SECRET_PATH"] = "/opt/orbit/secret.txt" if platform == "macos" else ""
    return StagedPackage(
        platform=platform,
        arch=arch,
        name="fleet-osquery",
        version=version,
        identifier="com.fleetdm.orbit",
        files=tuple(files),
        symlinks=symlinks,
        orbit_env={k: v for k, v in env.items() if v},
        secret=secret,
        fleet_url="https://fleet.example.com",
        fleet_desktop=fleet_desktop,
        service=True,
        source_date_epoch=EPOCH,
    )
