"""orbit's options: every flag of Fleet's orbit with its ``ORBIT_*`` variable (docs/reference/orbit-behaviour.md §8).

Precedence: command line over environment over defaults; server overrides (``server-overrides.json``) are applied
later by the agent. Parsing is pure (argv, env and platform are inputs); bad or conflicting values raise
``OptionsError`` and the CLI exits 2 with the message.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePath, PurePosixPath, PureWindowsPath
from typing import NoReturn
from urllib.parse import urlsplit

from tuf_updates.durations import DurationError, parse_duration

DEFAULT_UPDATE_URL = "https://updates.fleetdm.com"
DEFAULT_UPDATE_INTERVAL = 15 * 60.0
MIN_UPDATE_INTERVAL = 60.0


class OptionsError(ValueError):
    pass


@dataclass(frozen=True)
class Options:
    command: str  # run | version | doctor | flare
    root_dir: PurePath
    fleet_url: str | None
    enroll_secret: str | None
    enroll_secret_path: PurePath | None
    insecure: bool
    fleet_certificate: PurePath | None
    fleet_desktop_alternative_browser_host: str | None
    update_url: str
    update_tls_certificate: PurePath | None
    update_roots: str | None
    orbit_channel: str
    osqueryd_channel: str
    desktop_channel: str
    update_interval: float
    disable_updates: bool
    dev_mode: bool
    debug: bool
    log_file: PurePath | None
    fleet_desktop: bool
    enable_scripts: bool
    host_identifier: str
    end_user_email: str | None
    disable_keystore: bool
    osquery_db: PurePath
    disable_setup_experience: bool
    json: bool
    osquery_args: tuple[str, ...]
    output: PurePath | None = None  # flare: where the bundle goes
    use_system_configuration: bool = False  # macOS: URL and secret from the MDM's configuration profile

    def __repr__(self) -> str:  # never print the secret
        return f"Options(command={self.command!r}, root_dir={str(self.root_dir)!r}, fleet_url={self.fleet_url!r})"


@dataclass(frozen=True)
class _Flag:
    name: str
    env: str
    kind: str = "str"  # str | bool | path
    default: str | bool | None = None
    hidden: bool = False


FLAGS: tuple[_Flag, ...] = (
    _Flag("root-dir", "ORBIT_ROOT_DIR", "path"),
    _Flag("fleet-url", "ORBIT_FLEET_URL"),
    _Flag("enroll-secret", "ORBIT_ENROLL_SECRET"),
    _Flag("enroll-secret-path", "ORBIT_ENROLL_SECRET_PATH", "path"),
    _Flag("insecure", "ORBIT_INSECURE", "bool", False),
    _Flag("fleet-certificate", "ORBIT_FLEET_CERTIFICATE", "path"),
    _Flag("fleet-desktop-alternative-browser-host", "ORBIT_FLEET_DESKTOP_ALTERNATIVE_BROWSER_HOST"),
    _Flag("update-url", "ORBIT_UPDATE_URL", "str", DEFAULT_UPDATE_URL),
    _Flag("update-tls-certificate", "ORBIT_UPDATE_TLS_CERTIFICATE", "path"),
    _Flag("update-roots", "ORBIT_UPDATE_ROOTS"),
    _Flag("orbit-channel", "ORBIT_ORBIT_CHANNEL", "str", "stable"),
    _Flag("osqueryd-channel", "ORBIT_OSQUERYD_CHANNEL", "str", "stable"),
    _Flag("desktop-channel", "ORBIT_DESKTOP_CHANNEL", "str", "stable"),
    _Flag("update-interval", "ORBIT_UPDATE_INTERVAL", "str", "15m"),
    _Flag("disable-updates", "ORBIT_DISABLE_UPDATES", "bool", False),
    _Flag("dev-mode", "ORBIT_DEV_MODE", "bool", False),
    _Flag("debug", "ORBIT_DEBUG", "bool", False),
    _Flag("log-file", "ORBIT_LOG_FILE", "path"),
    _Flag("fleet-desktop", "ORBIT_FLEET_DESKTOP", "bool", False),
    _Flag("enable-scripts", "ORBIT_ENABLE_SCRIPTS", "bool", False),
    _Flag("host-identifier", "ORBIT_HOST_IDENTIFIER", "str", "uuid"),
    _Flag("end-user-email", "ORBIT_END_USER_EMAIL", hidden=True),
    _Flag("disable-keystore", "ORBIT_DISABLE_KEYSTORE", "bool", False),
    _Flag("osquery-db", "ORBIT_OSQUERY_DB", "path"),
    _Flag("disable-setup-experience", "ORBIT_DISABLE_SETUP_EXPERIENCE", "bool", False),
    _Flag("use-system-configuration", "ORBIT_USE_SYSTEM_CONFIGURATION", "bool", False, hidden=True),
)
_TRUE = {"1", "t", "true", "yes", "on"}
_FALSE = {"0", "f", "false", "no", "off", ""}


def default_root(platform: str, env: Mapping[str, str]) -> PurePath:
    if platform == "windows":
        return PureWindowsPath(env.get("ProgramFiles", r"C:\Program Files")) / "Orbit"
    return PurePosixPath("/opt/orbit")


def _path_type(platform: str) -> type[PurePath]:
    return PureWindowsPath if platform == "windows" else PurePosixPath


def _bool(value: str, source: str) -> bool:
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise OptionsError(f"{source}: {value!r} is not a boolean (use true or false)")


class _Parser(argparse.ArgumentParser):
    """argparse that reports a mistake as one ``OptionsError`` line instead of a screenful of usage."""

    def error(self, message: str) -> NoReturn:
        raise OptionsError(f"invalid command line: {message} (see orbit --help)")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="orbit", description="Fleet's agent: runs and updates osqueryd.")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    parser.add_argument("--json", action="store_true", help="doctor: machine-readable output")
    parser.add_argument("--output", help="flare: the bundle's path (default: ./orbit-flare-<host>-<time>.tar.gz)")
    for flag in FLAGS:
        help_text = argparse.SUPPRESS if flag.hidden else f"(env {flag.env})"
        if flag.kind == "bool":
            parser.add_argument(f"--{flag.name}", nargs="?", const="true", default=None, metavar="BOOL", help=help_text)
        else:
            parser.add_argument(f"--{flag.name}", default=None, help=help_text)
    parser.add_argument("command", nargs="?", choices=("run", "version", "doctor", "flare"), default="run")
    return parser


def normalize_fleet_url(value: str) -> str:
    """``https://host[:port][/path]``. A bare host is taken as https when it is clearly a host name (a dot, an IP
    address, ``localhost``, or a port): ``notaurl`` is refused rather than dialled. Credentials in the URL are
    refused (they would end up in logs)."""
    url = value.strip()
    expected = "expected https://host[:port], e.g. https://fleet.example.com"
    if not url or any(ch.isspace() for ch in url):
        raise OptionsError(f"--fleet-url {value!r} is not a URL ({expected})")
    explicit = "://" in url
    if not explicit:
        url = f"https://{url}"
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        raise OptionsError(f"--fleet-url {value!r} has an invalid port ({expected})") from None
    host = parts.hostname or ""
    if parts.scheme not in ("https", "http") or not host:
        raise OptionsError(f"--fleet-url {value!r} is not a URL ({expected})")
    if parts.username is not None or parts.password is not None:
        raise OptionsError("--fleet-url must not carry a user name or password")
    if not explicit and port is None and "." not in host and ":" not in host and host != "localhost":
        raise OptionsError(f"--fleet-url {value!r} is not a URL ({expected})")
    return url.rstrip("/")


def parse_options(argv: Sequence[str], env: Mapping[str, str], *, platform: str = "linux") -> Options:
    own: list[str] = list(argv)
    osquery_args: tuple[str, ...] = ()
    if "--" in own:
        cut = own.index("--")
        own, osquery_args = own[:cut], tuple(own[cut + 1 :])
    args = _parser().parse_args(own)  # --help prints and exits 0; a mistake raises OptionsError
    values: dict[str, str | bool | None] = {}
    for flag in FLAGS:
        raw = getattr(args, flag.name.replace("-", "_"))
        source = f"--{flag.name}"
        if raw is None and env.get(flag.env) not in (None, ""):
            raw, source = env[flag.env], flag.env
        if flag.kind == "bool":
            values[flag.name] = _bool(raw, source) if raw is not None else bool(flag.default)
        else:
            values[flag.name] = raw if raw is not None else flag.default
    path = _path_type(platform)

    def text(name: str) -> str | None:
        value = values[name]
        return value if isinstance(value, str) and value != "" else None

    def enabled(name: str) -> bool:
        return values[name] is True

    def opt_path(name: str) -> PurePath | None:
        value = text(name)
        return path(value) if value else None

    if text("enroll-secret") and text("enroll-secret-path"):
        raise OptionsError("--enroll-secret and --enroll-secret-path are mutually exclusive")
    if enabled("insecure") and text("fleet-certificate"):
        raise OptionsError("--insecure and --fleet-certificate are mutually exclusive")
    host_identifier = text("host-identifier") or "uuid"
    if host_identifier not in ("uuid", "instance"):
        raise OptionsError(f"--host-identifier must be uuid or instance, not {host_identifier!r}")
    try:
        interval = parse_duration(text("update-interval") or "15m")
    except DurationError as exc:
        raise OptionsError(f"--update-interval: {exc}") from None
    if interval < MIN_UPDATE_INTERVAL:
        raise OptionsError(f"--update-interval must be at least {MIN_UPDATE_INTERVAL:g}s")
    for channel in ("orbit-channel", "osqueryd-channel", "desktop-channel"):
        value = text(channel) or "stable"
        if "/" in value or value in (".", ".."):
            raise OptionsError(f"--{channel}: invalid channel {value!r}")
    root = opt_path("root-dir") or default_root(platform, env)
    if not root.is_absolute():
        raise OptionsError(f"--root-dir must be an absolute path, not {root}")
    osquery_db = opt_path("osquery-db") or root / "osquery.db"
    if not osquery_db.is_absolute():
        raise OptionsError("--osquery-db must be an absolute path")
    fleet_url = text("fleet-url")
    command = "version" if args.version else str(args.command)
    return Options(
        command=command,
        root_dir=root,
        fleet_url=normalize_fleet_url(fleet_url) if fleet_url else None,
        enroll_secret=text("enroll-secret"),
        enroll_secret_path=opt_path("enroll-secret-path"),
        insecure=enabled("insecure"),
        fleet_certificate=opt_path("fleet-certificate"),
        fleet_desktop_alternative_browser_host=text("fleet-desktop-alternative-browser-host"),
        update_url=(text("update-url") or DEFAULT_UPDATE_URL).rstrip("/"),
        update_tls_certificate=opt_path("update-tls-certificate"),
        update_roots=text("update-roots"),
        orbit_channel=text("orbit-channel") or "stable",
        osqueryd_channel=text("osqueryd-channel") or "stable",
        desktop_channel=text("desktop-channel") or "stable",
        update_interval=interval,
        disable_updates=enabled("disable-updates"),
        dev_mode=enabled("dev-mode"),
        debug=enabled("debug"),
        log_file=opt_path("log-file"),
        fleet_desktop=enabled("fleet-desktop"),
        enable_scripts=enabled("enable-scripts"),
        host_identifier=host_identifier,
        end_user_email=text("end-user-email"),
        disable_keystore=enabled("disable-keystore"),
        osquery_db=osquery_db,
        disable_setup_experience=enabled("disable-setup-experience"),
        json=bool(args.json),
        osquery_args=osquery_args,
        output=path(args.output) if args.output else None,
        use_system_configuration=enabled("use-system-configuration"),
    )
