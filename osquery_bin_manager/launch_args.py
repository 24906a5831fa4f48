"""The osqueryd command line and environment orbit launches with (docs/reference/orbit-behaviour.md §6), as a pure
function.

Order matters (gflags: a later flag overrides an earlier one): data paths, Fleet connection flags, certificates,
``--force``, debug flags, ``--flagfile`` (user flags override everything above), then the protected flags users
may not override (``--host-identifier``, ``--database_path``, ``--extensions_autoload``), then whatever followed
``--`` on orbit's command line. The enroll secret reaches osqueryd only through the ``ENROLL_SECRET`` variable of
an explicitly built environment — never argv, never a file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path, PurePath
from urllib.parse import urlsplit

ENROLL_SECRET_ENV = "ENROLL_SECRET"  # noqa: S105 - the variable name, not a secret
CARVER_BLOCK_SIZE = 2_000_000
WINDOWS_EXTENSION_PIPE = r"\\.\pipe\orbit-osquery-extension"


class LaunchError(ValueError):
    pass


@dataclass(frozen=True)
class FleetConnection:
    url: str
    certificate: Path | None = None  # --fleet-certificate; else <root>/certs.pem when present
    client_cert: Path | None = None  # <root>/fleet_client.crt and .key, both present
    client_key: Path | None = None
    insecure_proxy_port: int | None = None  # --insecure: osqueryd talks to orbit's local TLS proxy


@dataclass(frozen=True)
class LaunchSpec:
    root_dir: PurePath
    platform: str = "linux"  # linux | macos | windows
    fleet: FleetConnection | None = None
    certs_bundle: PurePath | None = None  # <root>/certs.pem when it exists and parses
    proxy_certificate: PurePath | None = None  # <root>/proxy/fleet.crt in insecure mode
    debug: bool = False
    flagfile: PurePath | None = None  # <root>/osquery.flags when it exists
    host_identifier: str = "uuid"  # uuid | instance
    database_path: PurePath | None = None  # default <root>/osquery.db
    extensions_autoload: PurePath | None = None  # only when the file exists and is non-empty
    augeas_lenses: PurePath | None = None
    passthrough: tuple[str, ...] = field(default_factory=tuple)  # orbit's arguments after `--`


def _host_and_prefix(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise LaunchError(f"invalid Fleet URL {url!r}: expected https://host[:port][/prefix]")
    host = parts.netloc.rsplit("@", 1)[-1]
    return host, parts.path.rstrip("/")


def fleet_flags(connection: FleetConnection) -> list[str]:
    host, prefix = _host_and_prefix(connection.url)
    if connection.insecure_proxy_port is not None:
        host = f"localhost:{connection.insecure_proxy_port}"
    return [
        "--host_identifier=uuid",
        f"--tls_hostname={host}",
        f"--enroll_tls_endpoint={prefix}/api/v1/osquery/enroll",
        "--config_plugin=tls",
        f"--config_tls_endpoint={prefix}/api/v1/osquery/config",
        "--config_refresh=60",
        "--disable_distributed=false",
        "--distributed_plugin=tls",
        "--distributed_tls_max_attempts=10",
        f"--distributed_tls_read_endpoint={prefix}/api/v1/osquery/distributed/read",
        f"--distributed_tls_write_endpoint={prefix}/api/v1/osquery/distributed/write",
        "--logger_plugin=tls,filesystem",
        f"--logger_tls_endpoint={prefix}/api/v1/osquery/log",
        "--disable_carver=false",
        "--carver_disable_function=false",
        f"--carver_start_endpoint={prefix}/api/v1/osquery/carve/begin",
        f"--carver_continue_endpoint={prefix}/api/v1/osquery/carve/block",
        f"--carver_block_size={CARVER_BLOCK_SIZE}",
    ]


def build_args(spec: LaunchSpec) -> list[str]:
    """osqueryd's arguments (without the binary) in Fleet's order."""
    if spec.host_identifier not in ("uuid", "instance"):
        raise LaunchError(f"--host-identifier must be uuid or instance, not {spec.host_identifier!r}")
    root = spec.root_dir
    socket = WINDOWS_EXTENSION_PIPE if spec.platform == "windows" else str(root / "orbit-osquery.em")
    args = [
        f"--pidfile={root / 'osquery.pid'}",
        f"--extensions_socket={socket}",
        f"--logger_path={root / 'osquery_log'}",
    ]
    if spec.fleet is not None:
        args += ["--enroll_secret_env", ENROLL_SECRET_ENV, *fleet_flags(spec.fleet)]
        if spec.fleet.insecure_proxy_port is not None and spec.proxy_certificate is not None:
            args += ["--tls_server_certs", str(spec.proxy_certificate)]
        elif spec.fleet.certificate is not None:
            args += ["--tls_server_certs", str(spec.fleet.certificate)]
        elif spec.certs_bundle is not None:
            args += ["--tls_server_certs", str(spec.certs_bundle)]
        if spec.fleet.client_cert is not None and spec.fleet.client_key is not None:
            args += ["--tls_client_cert", str(spec.fleet.client_cert), "--tls_client_key", str(spec.fleet.client_key)]
    if spec.augeas_lenses is not None and spec.platform != "windows":
        args += ["--augeas_lenses", str(spec.augeas_lenses)]
    args.append("--force")
    if spec.debug:
        args += ["--verbose", "--tls_dump"]
    if spec.flagfile is not None:
        args += ["--flagfile", str(spec.flagfile)]
    args += ["--host-identifier", spec.host_identifier]
    args += ["--database_path", str(spec.database_path or root / "osquery.db")]
    if spec.extensions_autoload is not None:
        args += ["--extensions_autoload", str(spec.extensions_autoload)]
    args += list(spec.passthrough)
    return args


def child_environment(enroll_secret: str | None, platform: str, system_drive: str | None = None) -> dict[str, str]:
    """osqueryd's whole environment: built explicitly, so nothing of orbit's environment leaks into it."""
    env: dict[str, str] = {}
    if enroll_secret:
        env[ENROLL_SECRET_ENV] = enroll_secret
    if platform == "windows" and system_drive:
        env["SystemDrive"] = system_drive
    return env
