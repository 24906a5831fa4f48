"""From validated options to the ``StagedPackage`` all builders consume: fetch, lay out, configure."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Mapping
from pathlib import Path, PurePosixPath, PureWindowsPath

from packager.package.fetch import FetchedTarget, TargetFetcher, platforms_for
from packager.package.package_options import PackageOptions
from packager.package.staged import StagedFile, StagedPackage, StagedSymlink
from packager.package.target_cache import TargetCache
from tuf_updates.http_client import TlsOptions
from tuf_updates.targets import TargetName, TargetSpec

DEFAULT_EPOCH = 315_532_800  # 1980-01-01: the earliest time zip/MSI timestamps can hold
WINDOWS_ROOT = PureWindowsPath(r"C:\Program Files\Orbit")


def source_date_epoch(env: Mapping[str, str]) -> int:
    value = env.get("SOURCE_DATE_EPOCH", "").strip()
    if not value:
        return DEFAULT_EPOCH
    if not value.isdigit():
        raise ValueError("SOURCE_DATE_EPOCH must be a number of seconds")
    return int(value)


def _agent_path(platform: str, relative: str) -> str:
    if platform == "windows":
        return str(WINDOWS_ROOT / PureWindowsPath(relative))
    return f"/opt/orbit/{relative}"


def orbit_environment(options: PackageOptions, platform: str) -> dict[str, str]:
    """The agent's configuration as ``ORBIT_*`` (docs/reference/orbit-behaviour.md §9.3): the secret is never among
    them."""
    env: dict[str, str] = {
        "ORBIT_UPDATE_URL": options.update_url,
        "ORBIT_ORBIT_CHANNEL": options.orbit_channel,
        "ORBIT_OSQUERYD_CHANNEL": options.osqueryd_channel,
        "ORBIT_UPDATE_INTERVAL": options.update_interval,
    }
    if options.fleet_url:
        env["ORBIT_FLEET_URL"] = options.fleet_url
    if options.fleet_desktop:
        env["ORBIT_FLEET_DESKTOP"] = "true"
        env["ORBIT_DESKTOP_CHANNEL"] = options.desktop_channel
    if options.fleet_desktop_alternative_browser_host:
        env["ORBIT_FLEET_DESKTOP_ALTERNATIVE_BROWSER_HOST"] = options.fleet_desktop_alternative_browser_host
    if options.insecure:
        env["ORBIT_INSECURE"] = "true"
    if options.disable_updates:
        env["ORBIT_DISABLE_UPDATES"] = "true"
    if options.fleet_certificate:
        env["ORBIT_FLEET_CERTIFICATE"] = _agent_path(platform, "fleet.pem")
    if options.update_tls_certificate:
        env["ORBIT_UPDATE_TLS_CERTIFICATE"] = _agent_path(platform, "update.pem")
    if options.debug:
        env["ORBIT_DEBUG"] = "true"
    if options.enable_scripts:
        env["ORBIT_ENABLE_SCRIPTS"] = "true"
    if options.host_identifier != "uuid":
        env["ORBIT_HOST_IDENTIFIER"] = options.host_identifier
    if options.osquery_db:
        env["ORBIT_OSQUERY_DB"] = options.osquery_db
    if options.end_user_email:
        env["ORBIT_END_USER_EMAIL"] = options.end_user_email
    if options.disable_keystore:
        env["ORBIT_DISABLE_KEYSTORE"] = "true"
    if options.use_system_configuration:
        env["ORBIT_USE_SYSTEM_CONFIGURATION"] = "true"
    if platform in ("macos", "windows") and options.enroll_secret:
        env["ORBIT_ENROLL_SECRET_PATH"] = _agent_path(platform, "secret.txt")
    return env


def _mode(path: Path) -> int:
    return 0o755 if os.access(path, os.X_OK) and path.is_file() else 0o644


def stage_package(
    options: PackageOptions,
    work: Path,
    env: Mapping[str, str],
    *,
    progress: Callable[[str, int], None] | None = None,
) -> StagedPackage:
    """Fetch the targets into ``work/root`` and describe the package (nothing format-specific)."""
    platform = options.platform
    root = work / "root"
    root.mkdir(parents=True, exist_ok=True)
    tls = TlsOptions(
        root_ca=options.update_tls_certificate,
        client_cert=options.update_client_certificate,
        client_key=options.update_client_key,
        insecure=options.insecure,
    )
    assert options.update_roots is not None
    cache = TargetCache(options.cache_dir) if options.cache_dir is not None else None
    fetcher = TargetFetcher(options.update_url, options.update_roots, tls, work / "tuf", progress=progress, cache=cache)
    fetcher.refresh()
    platforms = platforms_for(platform, options.arch)
    wanted = [
        TargetSpec(TargetName.ORBIT, platforms[TargetName.ORBIT], options.orbit_channel),
        TargetSpec(TargetName.OSQUERYD, platforms[TargetName.OSQUERYD], options.osqueryd_channel),
    ]
    if options.fleet_desktop:
        wanted.append(TargetSpec(TargetName.DESKTOP, platforms[TargetName.DESKTOP], options.desktop_channel))
    fetched: list[FetchedTarget] = [fetcher.fetch(spec, root) for spec in wanted]
    orbit = fetched[0]
    files: list[StagedFile] = []

    def add(relative: str, source: Path, mode: int) -> None:
        files.append(StagedFile(PurePosixPath(relative), source, mode))

    for item in fetched:
        channel_dir = root.joinpath("bin", *item.spec.install_parts)
        for path in sorted(channel_dir.rglob("*")):
            if path.is_file() and not path.is_symlink():
                relative = path.relative_to(root).as_posix()
                add(relative, path, 0o755 if path.name == item.spec.file_name or _mode(path) == 0o755 else 0o644)
    store = work / "updates-metadata.json"
    store.write_bytes(fetcher.metadata_store())
    add("updates-metadata.json", store, 0o600)
    add("tuf-metadata.json", store, 0o600)
    flags = work / "osquery.flags"
    if options.osquery_flagfile is not None:
        shutil.copyfile(options.osquery_flagfile, flags)
    else:
        flags.write_bytes(b"")
    add("osquery.flags", flags, 0o600)
    for source, name, mode in (
        (options.fleet_certificate, "fleet.pem", 0o644),
        (options.update_tls_certificate, "update.pem", 0o644),
        (options.fleet_client_certificate, "fleet_client.crt", 0o644),
        (options.fleet_client_key, "fleet_client.key", 0o600),
        (options.update_client_certificate, "update_client.crt", 0o644),
        (options.update_client_key, "update_client.key", 0o600),
    ):
        if source is not None:
            add(name, source, mode)
    if platform in ("macos", "windows") and options.enroll_secret:
        secret_file = work / "secret.txt"
        secret_file.write_text(options.enroll_secret, encoding="utf-8")
        secret_file.chmod(0o600)
        add("secret.txt", secret_file, 0o600)
    symlinks: tuple[StagedSymlink, ...] = ()
    if platform != "windows":
        orbit_spec = orbit.spec
        symlinks = (
            StagedSymlink(PurePosixPath("bin/orbit/orbit"), f"{orbit_spec.platform}/{orbit_spec.channel}/orbit"),
        )
    else:  # Windows has no link: the service runs bin\orbit\orbit.exe, a copy of the channel's binary
        add("bin/orbit/orbit.exe", orbit.path, 0o755)
    version = options.version or orbit.info.version or time.strftime("%Y.%m.%d")
    return StagedPackage(
        platform=platform,
        arch=options.arch,
        name="fleet-osquery",
        version=version,
        identifier=options.identifier,
        files=tuple(sorted(files, key=lambda item: item.path.as_posix())),
        symlinks=symlinks,
        orbit_env=orbit_environment(options, platform),
        secret=options.enroll_secret,
        fleet_url=options.fleet_url,
        fleet_desktop=options.fleet_desktop,
        service=options.service,
        source_date_epoch=source_date_epoch(env),
        extra={"end_user_email": options.end_user_email or ""},
    )
