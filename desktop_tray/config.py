"""fleet-desktop's configuration: the environment contract orbit fills in (docs/reference/orbit-behaviour.md §10.2).

``load_config`` turns the ``FLEET_DESKTOP_*`` variables into one frozen ``DesktopConfig`` or raises ``ConfigError``
with a message that names the variable. Empty values count as unset (orbit always passes the certificate, key and
browser-host variables, empty when there is nothing to say).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

Platform = Literal["linux", "macos", "windows"]

ENV_FLEET_URL = "FLEET_DESKTOP_FLEET_URL"
ENV_IDENTIFIER_PATH = "FLEET_DESKTOP_DEVICE_IDENTIFIER_PATH"
ENV_DEVICE_URL = "FLEET_DESKTOP_DEVICE_URL"  # legacy: <fleet>/device/<token at launch>
ENV_ROOT_CA = "FLEET_DESKTOP_FLEET_ROOT_CA"
ENV_INSECURE = "FLEET_DESKTOP_INSECURE"
ENV_CLIENT_CERT = "FLEET_DESKTOP_FLEET_TLS_CLIENT_CERTIFICATE"
ENV_CLIENT_KEY = "FLEET_DESKTOP_FLEET_TLS_CLIENT_KEY"
ENV_BROWSER_HOST = "FLEET_DESKTOP_ALTERNATIVE_BROWSER_HOST"
ENV_PERMANENT_ERROR = "FLEET_DESKTOP_PERMANENT_ERROR"
# ours, optional
ENV_ICON_THEME = "FLEET_DESKTOP_ICON_THEME"  # "dark" (default: a light glyph for dark panels) or "light"
ENV_HIDE_WHEN_HEALTHY = "FLEET_DESKTOP_HIDE_WHEN_HEALTHY"  # "1": no icon while connected with nothing failing
ENV_STATUS_FILE = "FLEET_DESKTOP_STATUS_FILE"  # where the running app mirrors its state (default: the log dir)
ENV_TRAY_READY_TIMEOUT = "FLEET_DESKTOP_TRAY_READY_TIMEOUT"  # seconds before notifications take over

_FALSE_WORDS = frozenset({"", "0", "false", "no", "off"})
_PLATFORMS: dict[str, Platform] = {"win32": "windows", "darwin": "macos"}


class ConfigError(ValueError):
    """The environment does not describe a usable configuration (exit status 2)."""


def current_platform() -> Platform:
    return _PLATFORMS.get(sys.platform, "linux")


@dataclass(frozen=True)
class DesktopConfig:
    fleet_url: str  # without a trailing slash; "" only in permanent-error mode
    identifier_path: Path | None  # the token file orbit keeps up to date
    legacy_token: str | None = field(default=None, repr=False)  # from FLEET_DESKTOP_DEVICE_URL, old launchers only
    root_ca: Path | None = None
    insecure: bool = False
    client_cert_pem: str | None = field(default=None, repr=False)
    client_key_pem: str | None = field(default=None, repr=False)
    alternative_browser_host: str | None = None
    permanent_error: str | None = None
    platform: Platform = "linux"
    icon_theme: Literal["dark", "light"] = "dark"
    hide_when_healthy: bool = False
    status_file: Path | None = None
    tray_ready_timeout: float = 30.0


def _get(environ: Mapping[str, str], key: str) -> str:
    return environ.get(key, "").strip()


def _flag(environ: Mapping[str, str], key: str) -> bool:
    return _get(environ, key).lower() not in _FALSE_WORDS


def normalize_fleet_url(value: str, variable: str = ENV_FLEET_URL) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("https", "http") or not parts.netloc:
        raise ConfigError(f"{variable} must be an http(s) URL such as https://fleet.example.com, got {value!r}")
    return value.rstrip("/")


def normalize_browser_host(value: str) -> str | None:
    """``host`` or ``host:port``; a pasted URL is reduced to its host part."""
    value = value.strip()
    if "://" in value:
        value = urlsplit(value).netloc
    value = value.strip("/")
    if not value:
        return None
    if "/" in value or " " in value:
        raise ConfigError(f"{ENV_BROWSER_HOST} must be a host name (optionally with :port), got {value!r}")
    return value


def _legacy_device_url(value: str) -> tuple[str, str]:
    """(fleet URL, token) from ``<fleet>/device/<token>``."""
    base, marker, token = value.rstrip("/").rpartition("/device/")
    if not marker or not token or "/" in token:
        raise ConfigError(f"{ENV_DEVICE_URL} must look like https://fleet.example.com/device/<token>")
    return normalize_fleet_url(base, ENV_DEVICE_URL), token


def _timeout(environ: Mapping[str, str]) -> float:
    raw = _get(environ, ENV_TRAY_READY_TIMEOUT)
    if not raw:
        return 30.0
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{ENV_TRAY_READY_TIMEOUT} must be a number of seconds, got {raw!r}") from None
    if value <= 0:
        raise ConfigError(f"{ENV_TRAY_READY_TIMEOUT} must be positive, got {raw!r}")
    return value


def load_config(environ: Mapping[str, str], platform: Platform | None = None) -> DesktopConfig:
    platform = platform or current_platform()
    permanent_error = _get(environ, ENV_PERMANENT_ERROR) or None
    theme_raw = _get(environ, ENV_ICON_THEME).lower() or "dark"
    if theme_raw not in ("dark", "light"):
        raise ConfigError(f"{ENV_ICON_THEME} must be 'dark' or 'light', got {theme_raw!r}")
    theme: Literal["dark", "light"] = "light" if theme_raw == "light" else "dark"
    status_raw = _get(environ, ENV_STATUS_FILE)
    base = DesktopConfig(
        fleet_url="",
        identifier_path=None,
        permanent_error=permanent_error,
        platform=platform,
        icon_theme=theme,
        hide_when_healthy=_flag(environ, ENV_HIDE_WHEN_HEALTHY),
        status_file=Path(status_raw) if status_raw else None,
        tray_ready_timeout=_timeout(environ),
    )

    fleet_url_raw = _get(environ, ENV_FLEET_URL)
    identifier_raw = _get(environ, ENV_IDENTIFIER_PATH)
    device_url_raw = _get(environ, ENV_DEVICE_URL)
    if permanent_error is not None and not (fleet_url_raw and identifier_raw):
        # orbit could not create its identity: the fixed error is all there is to show
        return base

    legacy_token: str | None = None
    fleet_url = normalize_fleet_url(fleet_url_raw) if fleet_url_raw else ""
    identifier_path = Path(identifier_raw) if identifier_raw else None
    if identifier_path is None and device_url_raw:
        legacy_base, legacy_token = _legacy_device_url(device_url_raw)  # very old launchers only
        fleet_url = fleet_url or legacy_base
    missing = []
    if not fleet_url:
        missing.append(f"{ENV_FLEET_URL} (the Fleet server URL, e.g. https://fleet.example.com)")
    if identifier_path is None and legacy_token is None:
        missing.append(f"{ENV_IDENTIFIER_PATH} (the path of the device token file orbit writes)")
    if missing:
        raise ConfigError(
            "missing " + " and ".join(missing) + "; fleet-desktop is normally started by orbit, which sets them"
        )

    root_ca_raw = _get(environ, ENV_ROOT_CA)
    root_ca = Path(root_ca_raw) if root_ca_raw else None
    if root_ca is not None and not root_ca.is_file():
        raise ConfigError(f"{ENV_ROOT_CA} names {root_ca}, which is not a readable file")

    cert = environ.get(ENV_CLIENT_CERT, "").strip() or None
    key = environ.get(ENV_CLIENT_KEY, "").strip() or None
    if (cert is None) != (key is None):
        raise ConfigError(f"{ENV_CLIENT_CERT} and {ENV_CLIENT_KEY} must be given together (PEM contents)")
    for name, pem in ((ENV_CLIENT_CERT, cert), (ENV_CLIENT_KEY, key)):
        if pem is not None and "-----BEGIN" not in pem:
            raise ConfigError(f"{name} must hold PEM contents (not a path)")

    return replace(
        base,
        fleet_url=fleet_url,
        identifier_path=identifier_path,
        legacy_token=legacy_token,
        root_ca=root_ca,
        insecure=_flag(environ, ENV_INSECURE),
        client_cert_pem=cert,
        client_key_pem=key,
        alternative_browser_host=normalize_browser_host(environ.get(ENV_BROWSER_HOST, "")),
    )
