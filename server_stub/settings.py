"""The server's settings: command-line flags over ``FLEET_STUB_*`` environment variables over defaults."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from server_stub.connection_limits import ConnectionLimits, SettingsValueError, limits_from

DEFAULT_LISTEN = "127.0.0.1:8412"
HOST_IDENTIFIER_MODES = ("provided", "instance", "uuid", "hostname")
MAX_WORKERS = 64
WORKER_BALANCES = ("reuseport", "shared")  # worker_listeners.Balance


class SettingsError(ValueError):
    pass


@dataclass(frozen=True)
class EnrollSecretSpec:
    secret: str
    team: str | None


@dataclass(frozen=True)
class ServeSettings:
    data_dir: Path
    listen_host: str = "127.0.0.1"
    listen_port: int = 8412
    enroll_secrets: tuple[EnrollSecretSpec, ...] = ()
    tuf_repo: Path | None = None
    admin_token: str | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    config_file: Path | None = None
    live_query_timeout: float = 25.0
    detail_update_interval: float = 3600.0
    policy_update_interval: float = 3600.0
    osquery_host_identifier: str = "provided"
    transparency_url: str = "https://fleetdm.com/transparency"
    org_name: str = ""
    # update_outcomes: orbit reports install outcomes only to a server that says it wants them (docs/adr/0017)
    capabilities: tuple[str, ...] = field(default=("orbit_endpoints", "token_rotation", "update_outcomes"))
    rollout_tick: float = 5.0  # seconds between rollout evaluations (FLEET_STUB_ROLLOUT_TICK)
    limits: ConnectionLimits = field(default_factory=ConnectionLimits)
    workers: int = 1  # worker processes (ADR 0019); 1: the single-process server
    worker_balance: str = "reuseport"

    @property
    def listen_url_host(self) -> str:
        return f"[{self.listen_host}]" if ":" in self.listen_host else self.listen_host


def parse_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[V6]:PORT`` or ``:PORT``."""
    text = value.strip()
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or not text[end + 1 :].startswith(":"):
            raise SettingsError(f"invalid --listen {value!r}: expected [IPV6]:PORT")
        host, port_text = text[1:end], text[end + 2 :]
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            raise SettingsError(f"invalid --listen {value!r}: expected HOST:PORT")
        if ":" in host:
            raise SettingsError(f"invalid --listen {value!r}: put IPv6 addresses in brackets")
    host = host or "127.0.0.1"
    try:
        port = int(port_text)
    except ValueError:
        raise SettingsError(f"invalid --listen {value!r}: port must be a number") from None
    if not 0 <= port <= 65535:
        raise SettingsError(f"invalid --listen {value!r}: port out of range")
    if host != "localhost":
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise SettingsError(f"invalid --listen {value!r}: host must be an IP address or localhost") from None
    return host, port


def parse_enroll_secret(value: str) -> EnrollSecretSpec:
    """``SECRET`` or ``SECRET:TEAM`` (team by name, created when missing)."""
    secret, sep, team = value.partition(":")
    if not secret.strip():
        raise SettingsError("--enroll-secret must not be empty")
    return EnrollSecretSpec(secret.strip(), team.strip() or None if sep else None)


def env_list(env: Mapping[str, str], name: str) -> list[str]:
    """A list from the environment: comma- or newline-separated."""
    raw = env.get(name, "")
    return [item.strip() for item in raw.replace("\n", ",").split(",") if item.strip()]


MAX_SECRET_FILE_BYTES = 64 * 1024


def _read_small(path: str, flag: str) -> str:
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_SECRET_FILE_BYTES + 1)
    except OSError as exc:
        raise SettingsError(f"{flag} {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_SECRET_FILE_BYTES:
        raise SettingsError(f"{flag} {path}: larger than {MAX_SECRET_FILE_BYTES} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise SettingsError(f"{flag} {path}: not UTF-8 text") from None


def secret_lines(paths: Sequence[str]) -> list[str]:
    """``--enroll-secret-file``: one ``SECRET[:TEAM]`` per line; blank lines and ``#`` comments are skipped."""
    lines = []
    for path in paths:
        for line in _read_small(path, "--enroll-secret-file").splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                lines.append(line.strip())
    return lines


def admin_token_from(flag_value: str | None, path: str | None) -> str | None:
    """``--admin-token``, or the content of ``--admin-token-file`` (not both)."""
    if path is None:
        return flag_value
    if flag_value:
        raise SettingsError("--admin-token and --admin-token-file are mutually exclusive")
    token = _read_small(path, "--admin-token-file").strip()
    if not token:
        raise SettingsError(f"--admin-token-file {path}: empty")
    return token


def _path(value: str | None) -> Path | None:
    return Path(value).expanduser().absolute() if value else None


def _float(value: str | None, default: float, name: str) -> float:
    if value is None or value == "":
        return default
    try:
        parsed = float(value)
    except ValueError:
        raise SettingsError(f"{name} must be a number of seconds, not {value!r}") from None
    if parsed <= 0:
        raise SettingsError(f"{name} must be positive")
    return parsed


def parse_workers(text: str, name: str) -> int:
    value = text.strip().lower()
    if value == "auto":
        return max(1, min(MAX_WORKERS, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1))
    try:
        workers = int(value)
    except ValueError:
        raise SettingsError(f"{name} must be a whole number or auto, not {text!r}") from None
    if not 1 <= workers <= MAX_WORKERS:
        raise SettingsError(f"{name} must be between 1 and {MAX_WORKERS}")
    return workers


def build_settings(
    *,
    data_dir: str | None,
    listen: str | None,
    enroll_secrets: Sequence[str] | None,
    tuf_repo: str | None,
    admin_token: str | None,
    tls_cert: str | None,
    tls_key: str | None,
    config_file: str | None,
    live_query_timeout: str | None = None,
    max_connections: str | None = None,
    workers: str | None = None,
    env: Mapping[str, str],
) -> ServeSettings:
    """Merge flags (given) over ``FLEET_STUB_*`` variables; raises SettingsError with a clear message."""

    def pick(flag: str | None, var: str) -> str | None:
        return flag if flag not in (None, "") else (env.get(var) or None)

    data = pick(data_dir, "FLEET_STUB_DATA_DIR")
    if not data:
        raise SettingsError("--data-dir is required (or set FLEET_STUB_DATA_DIR)")
    host, port = parse_listen(pick(listen, "FLEET_STUB_LISTEN") or DEFAULT_LISTEN)
    secret_values = list(enroll_secrets) if enroll_secrets else env_list(env, "FLEET_STUB_ENROLL_SECRET")
    cert = _path(pick(tls_cert, "FLEET_STUB_TLS_CERT"))
    key = _path(pick(tls_key, "FLEET_STUB_TLS_KEY"))
    if (cert is None) != (key is None):
        raise SettingsError("--tls-cert and --tls-key must be given together")
    data_path = Path(data).expanduser().absolute()
    if data_path.exists() and not data_path.is_dir():
        raise SettingsError(f"--data-dir {data}: exists and is not a directory")
    repo = _path(pick(tuf_repo, "FLEET_STUB_TUF_REPO"))
    if repo is not None and not repo.is_dir():
        raise SettingsError(f"--tuf-repo {repo}: no such directory (give REPO/repository of `orbitctl updates init`)")
    for flag, path in (("--tls-cert", cert), ("--tls-key", key)):
        if path is not None and not path.is_file():
            raise SettingsError(f"TLS file not found: {flag} {path}")
    identifier = env.get("FLEET_STUB_OSQUERY_HOST_IDENTIFIER", "provided")
    if identifier not in HOST_IDENTIFIER_MODES:
        raise SettingsError(f"FLEET_STUB_OSQUERY_HOST_IDENTIFIER must be one of {', '.join(HOST_IDENTIFIER_MODES)}")
    token = pick(admin_token, "FLEET_STUB_ADMIN_TOKEN")
    if token is not None and len(token) < 8:
        raise SettingsError("--admin-token must be at least 8 characters")
    try:
        limits = limits_from(env, max_connections=max_connections)
    except SettingsValueError as exc:
        raise SettingsError(str(exc)) from None
    worker_text = pick(workers, "FLEET_STUB_WORKERS")
    worker_count = parse_workers(worker_text, "--workers" if workers else "FLEET_STUB_WORKERS") if worker_text else 1
    if worker_count > 1 and not hasattr(os, "fork"):
        raise SettingsError("--workers above 1 needs fork(), which this platform does not have")
    balance = (env.get("FLEET_STUB_WORKER_BALANCE") or WORKER_BALANCES[0]).strip().lower()
    if balance not in WORKER_BALANCES:
        raise SettingsError(f"FLEET_STUB_WORKER_BALANCE must be one of {', '.join(WORKER_BALANCES)}, not {balance!r}")
    return ServeSettings(
        data_dir=data_path,
        listen_host=host,
        listen_port=port,
        enroll_secrets=tuple(parse_enroll_secret(v) for v in secret_values),
        tuf_repo=repo,
        admin_token=token,
        tls_cert=cert,
        tls_key=key,
        config_file=_path(pick(config_file, "FLEET_STUB_CONFIG")),
        live_query_timeout=_float(
            pick(live_query_timeout, "FLEET_STUB_LIVE_QUERY_TIMEOUT"), 25.0, "live query timeout"
        ),
        detail_update_interval=_float(env.get("FLEET_STUB_DETAIL_UPDATE_INTERVAL"), 3600.0, "detail interval"),
        policy_update_interval=_float(env.get("FLEET_STUB_POLICY_UPDATE_INTERVAL"), 3600.0, "policy interval"),
        osquery_host_identifier=identifier,
        transparency_url=env.get("FLEET_STUB_TRANSPARENCY_URL", "https://fleetdm.com/transparency"),
        org_name=env.get("FLEET_STUB_ORG_NAME", ""),
        rollout_tick=_float(env.get("FLEET_STUB_ROLLOUT_TICK"), 5.0, "FLEET_STUB_ROLLOUT_TICK"),
        limits=limits,
        workers=worker_count,
        worker_balance=balance,
    )
