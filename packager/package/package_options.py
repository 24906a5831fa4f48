"""``orbitctl package`` flags (fleetctl package's, docs/reference/packaging.md §3.1) and their validation, as pure
code."""

from __future__ import annotations

import argparse
import datetime
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from packager.signing import signing_options
from packager.signing.openpgp_options import add_openpgp_arguments
from packager.signing.signing_options import SigningOptions
from packager.signing.x509_identity import SigningIdentityError
from safe_fs.secret_read import SecretFileError, read_secret_file
from tuf_updates.durations import DurationError, parse_duration

TYPES = ("deb", "rpm", "pkg", "msi")
EXTENSIONS = {"deb": ".deb", "rpm": ".rpm", "pkg": ".pkg", "msi": ".msi"}
PLATFORM_OF = {"deb": "linux", "rpm": "linux", "pkg": "macos", "msi": "windows"}
# orbit's own floor for --update-interval (orbit/options.py): a package with less would install a service that
# exits with a usage error at every start (found by the field test, issue 16)
MIN_UPDATE_INTERVAL_S = 60.0
SECRET_ENV = "ORBITCTL_ENROLL_SECRET"  # noqa: S105 - the variable's name
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_VERSION = re.compile(r"^[0-9][0-9A-Za-z.+~-]{0,63}$")


class PackageOptionsError(ValueError):
    pass


@dataclass(frozen=True)
class PackageOptions:
    type: str
    fleet_url: str | None
    enroll_secret: str | None
    fleet_certificate: Path | None
    fleet_client_certificate: Path | None
    fleet_client_key: Path | None
    fleet_desktop: bool
    fleet_desktop_alternative_browser_host: str | None
    update_url: str
    update_roots: str | None
    update_tls_certificate: Path | None
    update_client_certificate: Path | None
    update_client_key: Path | None
    orbit_channel: str
    osqueryd_channel: str
    desktop_channel: str
    update_interval: str
    disable_updates: bool
    insecure: bool
    identifier: str
    version: str | None
    arch: str
    outfile: Path | None
    osquery_flagfile: Path | None
    debug: bool
    enable_scripts: bool
    host_identifier: str
    end_user_email: str | None
    disable_keystore: bool
    osquery_db: str | None
    use_system_configuration: bool
    service: bool
    signing: SigningOptions | None = None  # X.509 signing of msi/pkg (packager/signing/signing_options.py)
    cache_dir: Path | None = None  # verified binaries kept between builds (packager/package/target_cache.py)

    def __repr__(self) -> str:  # never print the secret
        return f"PackageOptions(type={self.type!r}, fleet_url={self.fleet_url!r}, outfile={str(self.outfile)!r})"

    @property
    def platform(self) -> str:
        return PLATFORM_OF[self.type]


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("package", help="build a .deb, .rpm, .pkg or .msi installer of the agent")
    add = parser.add_argument
    add("--type", required=True, choices=TYPES, help="installer format")
    add("--fleet-url", help="Fleet server URL (with --enroll-secret)")
    add("--enroll-secret", help=f"enroll secret (or the {SECRET_ENV} variable, which keeps it out of argv)")
    add("--enroll-secret-file", type=Path, help="a file holding the enroll secret (keeps it out of argv)")
    add("--fleet-certificate", type=Path, help="CA bundle for the Fleet server (shipped as fleet.pem)")
    add("--fleet-tls-client-certificate", type=Path, help="mTLS client certificate for Fleet")
    add("--fleet-tls-client-key", type=Path, help="mTLS client key for Fleet")
    add("--fleet-desktop", action="store_true", help="also install Fleet Desktop")
    add("--fleet-desktop-alternative-browser-host", help="host:port used in the tray's browser URLs")
    add("--update-url", default="https://updates.fleetdm.com", help="TUF repository URL")
    add("--update-roots", help="trusted root.json (a path or the JSON itself; `orbitctl updates roots`)")
    add("--update-tls-certificate", type=Path, help="CA bundle for the update server (shipped as update.pem)")
    add("--update-tls-client-certificate", type=Path, help="mTLS client certificate for the update server")
    add("--update-tls-client-key", type=Path, help="mTLS client key for the update server")
    add("--orbit-channel", default="stable")
    add("--osqueryd-channel", default="stable")
    add("--desktop-channel", default="stable")
    add("--update-interval", default="15m", help="Go duration (default 15m)")
    add("--disable-updates", action="store_true")
    add("--insecure", action="store_true", help="no TLS verification by the agent (excludes certificates)")
    add("--identifier", default="com.fleetdm.orbit", help="macOS package identifier")
    add("--version", dest="package_version", help="package version (default: the orbit target's version)")
    add("--arch", choices=("amd64", "arm64"), help="deb, rpm and msi only (default amd64)")
    add("--outfile", type=Path, help="output file (default fleet-osquery_<ver>_<arch>.deb etc.)")
    add("--osquery-flagfile", type=Path, help="shipped as osquery.flags")
    add("--debug", action="store_true", help="the agent logs at debug level")
    add("--enable-scripts", action="store_true")
    add("--host-identifier", default="uuid", choices=("uuid", "instance"))
    add("--end-user-email", help="deb, rpm and msi only")
    add("--disable-keystore", action="store_true")
    add("--osquery-db", help="absolute path of osqueryd's database")
    add("--use-system-configuration", action="store_true", help="pkg only: URL and secret from a profile")
    add("--service", default="true", choices=("true", "false"), help="install and start the service")
    add(
        "--cache-dir",
        type=Path,
        help=f"keep verified binaries here between builds (or {CACHE_ENV}); every use is verified again",
    )
    signing_options.add_arguments(parser)
    add_openpgp_arguments(parser, "the .rpm (validated by packager.signing.openpgp_options; .deb: orbitctl repo apt)")


def _file(path: Path | None, flag: str) -> Path | None:
    if path is None:
        return None
    if not path.is_file():
        raise PackageOptionsError(f"{flag}: {path} is not a readable file")
    return path


def default_outfile(kind: str, version: str, arch: str) -> Path:
    if kind == "deb":
        return Path(f"fleet-osquery_{version}_{arch}.deb")
    if kind == "rpm":
        return Path(f"fleet-osquery-{version}.{'x86_64' if arch == 'amd64' else 'aarch64'}.rpm")
    return Path(f"fleet-osquery{EXTENSIONS[kind]}")


MAX_SECRET_BYTES = 4096
CACHE_ENV = "ORBITCTL_CACHE_DIR"


def _secret(args: argparse.Namespace, env: Mapping[str, str]) -> str | None:
    """--enroll-secret, else --enroll-secret-file, else the environment."""
    path: Path | None = getattr(args, "enroll_secret_file", None)
    if path is None:
        return args.enroll_secret or env.get(SECRET_ENV) or None
    if args.enroll_secret:
        raise PackageOptionsError("--enroll-secret and --enroll-secret-file are mutually exclusive")
    try:
        secret = read_secret_file(path, MAX_SECRET_BYTES)
    except SecretFileError as exc:
        raise PackageOptionsError(f"--enroll-secret-file {exc.path} {exc.reason}") from None
    if secret is None:
        raise PackageOptionsError(f"--enroll-secret-file {path}: missing or empty")
    return secret


def _cache_dir(flag: Path | None, env: Mapping[str, str]) -> Path | None:
    """``--cache-dir``, else ``ORBITCTL_CACHE_DIR``; none by default. A path that exists must be a directory."""
    chosen = flag or (Path(env[CACHE_ENV]) if env.get(CACHE_ENV) else None)
    if chosen is not None and chosen.exists() and not chosen.is_dir():
        raise PackageOptionsError(f"--cache-dir {chosen} is not a directory")
    return chosen


def validate(
    args: argparse.Namespace, env: Mapping[str, str], *, now: datetime.datetime | None = None
) -> PackageOptions:
    """fleetctl's rules, with clear messages; ``now`` (default: the clock) checks the signing certificate."""
    kind: str = args.type
    secret = _secret(args, env)
    if bool(args.fleet_url) != bool(secret) and not args.use_system_configuration:
        raise PackageOptionsError("--fleet-url and --enroll-secret must be given together")
    if args.insecure and (args.fleet_certificate or args.update_tls_certificate):
        raise PackageOptionsError("--insecure excludes --fleet-certificate and --update-tls-certificate")
    pairs: Sequence[tuple[Path | None, Path | None, str]] = (
        (args.fleet_tls_client_certificate, args.fleet_tls_client_key, "--fleet-tls-client-certificate/-key"),
        (args.update_tls_client_certificate, args.update_tls_client_key, "--update-tls-client-certificate/-key"),
    )
    for cert, key, flags in pairs:
        if (cert is None) != (key is None):
            raise PackageOptionsError(f"{flags} must be given together")
    if args.arch is not None and kind == "pkg":
        raise PackageOptionsError("--arch applies to deb, rpm and msi only (pkg is universal)")
    arch = args.arch or "amd64"
    if kind == "msi" and arch == "arm64":
        raise PackageOptionsError("--arch arm64 is not supported for msi (wixl builds x64 only)")
    if args.end_user_email is not None:
        if kind == "pkg":
            raise PackageOptionsError("--end-user-email applies to deb, rpm and msi only")
        if not _EMAIL.match(args.end_user_email):
            raise PackageOptionsError(f"--end-user-email {args.end_user_email!r} is not an email address")
    if args.use_system_configuration and kind != "pkg":
        raise PackageOptionsError("--use-system-configuration applies to pkg only")
    if args.osquery_db is not None and not (
        args.osquery_db.startswith("/") or re.match(r"^[A-Za-z]:\\", args.osquery_db)
    ):
        raise PackageOptionsError("--osquery-db must be an absolute path")
    try:
        interval = parse_duration(args.update_interval)
    except DurationError as exc:
        raise PackageOptionsError(f"--update-interval: {exc}") from None
    if interval < MIN_UPDATE_INTERVAL_S:
        raise PackageOptionsError(
            f"--update-interval {args.update_interval}: orbit refuses less than {MIN_UPDATE_INTERVAL_S:g}s "
            "(the installed service would never start)"
        )
    if args.package_version is not None and not _VERSION.match(args.package_version):
        raise PackageOptionsError(f"--version {args.package_version!r} is not a package version")
    for flag in ("orbit_channel", "osqueryd_channel", "desktop_channel"):
        value = getattr(args, flag)
        if not re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", value):
            raise PackageOptionsError(f"--{flag.replace('_', '-')}: invalid channel {value!r}")
    if args.outfile is not None and args.outfile.suffix != EXTENSIONS[kind]:
        raise PackageOptionsError(f"--outfile must end with {EXTENSIONS[kind]} for --type {kind}")
    if not args.update_roots:
        raise PackageOptionsError(
            "--update-roots is required: binaries are fetched through TUF and the package trusts that same root"
        )
    try:  # X.509 signing of msi and pkg
        signing = signing_options.from_args(args, env, kind, now or datetime.datetime.now(datetime.UTC))
    except SigningIdentityError as exc:
        raise PackageOptionsError(str(exc)) from None
    return PackageOptions(
        type=kind,
        fleet_url=args.fleet_url.rstrip("/") if args.fleet_url else None,
        enroll_secret=secret,
        fleet_certificate=_file(args.fleet_certificate, "--fleet-certificate"),
        fleet_client_certificate=_file(args.fleet_tls_client_certificate, "--fleet-tls-client-certificate"),
        fleet_client_key=_file(args.fleet_tls_client_key, "--fleet-tls-client-key"),
        fleet_desktop=args.fleet_desktop,
        fleet_desktop_alternative_browser_host=args.fleet_desktop_alternative_browser_host,
        update_url=args.update_url.rstrip("/"),
        update_roots=args.update_roots,
        update_tls_certificate=_file(args.update_tls_certificate, "--update-tls-certificate"),
        update_client_certificate=_file(args.update_tls_client_certificate, "--update-tls-client-certificate"),
        update_client_key=_file(args.update_tls_client_key, "--update-tls-client-key"),
        orbit_channel=args.orbit_channel,
        osqueryd_channel=args.osqueryd_channel,
        desktop_channel=args.desktop_channel,
        update_interval=args.update_interval,
        disable_updates=args.disable_updates,
        insecure=args.insecure,
        identifier=args.identifier,
        version=args.package_version,
        arch=arch,
        outfile=args.outfile,
        osquery_flagfile=_file(args.osquery_flagfile, "--osquery-flagfile"),
        debug=args.debug,
        enable_scripts=args.enable_scripts,
        host_identifier=args.host_identifier,
        end_user_email=args.end_user_email,
        disable_keystore=args.disable_keystore,
        osquery_db=args.osquery_db,
        use_system_configuration=args.use_system_configuration,
        service=args.service == "true",
        signing=signing,
        cache_dir=_cache_dir(getattr(args, "cache_dir", None), env),
    )
