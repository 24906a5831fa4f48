"""fleet-desktop's environment contract, TLS set-up and token file (docs/reference/orbit-behaviour.md §5, §10.2,
§11.7)."""

from __future__ import annotations

import datetime
import os
import ssl
import stat
import tempfile
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from desktop_tray.browser import my_device_url, replace_host, self_service_url, transparency_url
from desktop_tray.config import ConfigError, load_config
from desktop_tray.tls_setup import TlsSetupError, build_ssl_context, private_pem_file
from desktop_tray.token_file import StaticToken, TokenFile, TokenUnavailableError

URL = "https://fleet.example.test"


def env(tmp_path: Path, **extra: str) -> dict[str, str]:
    base = {"FLEET_DESKTOP_FLEET_URL": URL + "/", "FLEET_DESKTOP_DEVICE_IDENTIFIER_PATH": str(tmp_path / "identifier")}
    base.update(extra)
    return base


def client_pair() -> tuple[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "device")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return cert_pem, key_pem


# --- environment ----------------------------------------------------------------------------------------------


def test_orbit_environment(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    config = load_config(
        env(
            tmp_path,
            FLEET_DESKTOP_FLEET_ROOT_CA=str(ca),
            FLEET_DESKTOP_INSECURE="1",
            FLEET_DESKTOP_ALTERNATIVE_BROWSER_HOST="browser.example.test:8443",
            FLEET_DESKTOP_FLEET_TLS_CLIENT_CERTIFICATE="",
            FLEET_DESKTOP_FLEET_TLS_CLIENT_KEY="",
            FLEET_DESKTOP_DEVICE_URL=f"{URL}/device/legacy-token",
            FLEET_DESKTOP_TUF_UPDATE_ROOT="/opt/orbit",
        ),
        platform="linux",
    )
    assert config.fleet_url == URL
    assert config.identifier_path == tmp_path / "identifier"
    assert config.legacy_token is None  # the identifier path wins over the legacy URL
    assert config.root_ca == ca
    assert config.insecure is True
    assert config.client_cert_pem is None and config.client_key_pem is None
    assert config.alternative_browser_host == "browser.example.test:8443"
    assert config.permanent_error is None
    assert "legacy-token" not in repr(config)


@pytest.mark.parametrize(
    ("environ", "needle"),
    [
        ({}, "FLEET_DESKTOP_FLEET_URL"),
        ({"FLEET_DESKTOP_FLEET_URL": URL}, "FLEET_DESKTOP_DEVICE_IDENTIFIER_PATH"),
        ({"FLEET_DESKTOP_DEVICE_IDENTIFIER_PATH": "/x"}, "FLEET_DESKTOP_FLEET_URL"),
        ({"FLEET_DESKTOP_FLEET_URL": "fleet.example.test", "FLEET_DESKTOP_DEVICE_IDENTIFIER_PATH": "/x"}, "http(s)"),
        ({"FLEET_DESKTOP_FLEET_URL": "  ", "FLEET_DESKTOP_DEVICE_IDENTIFIER_PATH": "/x"}, "FLEET_DESKTOP_FLEET_URL"),
    ],
)
def test_missing_or_bad_settings_are_named(environ: dict[str, str], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        load_config(environ)


def test_ca_file_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="FLEET_DESKTOP_FLEET_ROOT_CA"):
        load_config(env(tmp_path, FLEET_DESKTOP_FLEET_ROOT_CA=str(tmp_path / "nope.pem")))


def test_client_certificate_needs_both_halves_as_pem(tmp_path: Path) -> None:
    cert, key = client_pair()
    with pytest.raises(ConfigError, match="together"):
        load_config(env(tmp_path, FLEET_DESKTOP_FLEET_TLS_CLIENT_CERTIFICATE=cert))
    with pytest.raises(ConfigError, match="PEM contents"):
        load_config(
            env(
                tmp_path,
                FLEET_DESKTOP_FLEET_TLS_CLIENT_CERTIFICATE="/opt/orbit/fleet_client.crt",
                FLEET_DESKTOP_FLEET_TLS_CLIENT_KEY=key,
            )
        )
    config = load_config(
        env(tmp_path, FLEET_DESKTOP_FLEET_TLS_CLIENT_CERTIFICATE=cert, FLEET_DESKTOP_FLEET_TLS_CLIENT_KEY=key)
    )
    assert config.client_key_pem and "PRIVATE KEY" in config.client_key_pem
    assert "PRIVATE KEY" not in repr(config)


@pytest.mark.parametrize(("value", "expected"), [("", False), ("0", False), ("1", True), ("true", True)])
def test_insecure_flag(tmp_path: Path, value: str, expected: bool) -> None:
    assert load_config(env(tmp_path, FLEET_DESKTOP_INSECURE=value)).insecure is expected


def test_legacy_device_url_only_for_old_launchers() -> None:
    config = load_config({"FLEET_DESKTOP_DEVICE_URL": f"{URL}/device/abc-123"})
    assert config.fleet_url == URL
    assert config.identifier_path is None
    assert config.legacy_token == "abc-123"
    with pytest.raises(ConfigError, match="FLEET_DESKTOP_DEVICE_URL"):
        load_config({"FLEET_DESKTOP_DEVICE_URL": f"{URL}/somewhere"})


def test_permanent_error_needs_nothing_else() -> None:
    config = load_config({"FLEET_DESKTOP_PERMANENT_ERROR": "No TPM identity"})
    assert config.permanent_error == "No TPM identity"
    assert config.fleet_url == ""


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("", None), ("host.test", "host.test"), ("https://host.test:8443/", "host.test:8443"), (" h:1 ", "h:1")],
)
def test_browser_host_forms(tmp_path: Path, raw: str, expected: str | None) -> None:
    assert load_config(env(tmp_path, FLEET_DESKTOP_ALTERNATIVE_BROWSER_HOST=raw)).alternative_browser_host == expected


def test_optional_knobs(tmp_path: Path) -> None:
    config = load_config(
        env(
            tmp_path,
            FLEET_DESKTOP_ICON_THEME="light",
            FLEET_DESKTOP_HIDE_WHEN_HEALTHY="1",
            FLEET_DESKTOP_STATUS_FILE=str(tmp_path / "s.json"),
            FLEET_DESKTOP_TRAY_READY_TIMEOUT="2.5",
        )
    )
    assert (config.icon_theme, config.hide_when_healthy, config.tray_ready_timeout) == ("light", True, 2.5)
    assert config.status_file == tmp_path / "s.json"
    for key, bad in (("FLEET_DESKTOP_ICON_THEME", "purple"), ("FLEET_DESKTOP_TRAY_READY_TIMEOUT", "-1")):
        with pytest.raises(ConfigError, match=key):
            load_config(env(tmp_path, **{key: bad}))


# --- TLS ------------------------------------------------------------------------------------------------------


def test_private_pem_file_is_0600_and_removed(tmp_path: Path) -> None:
    with private_pem_file("secret", directory=tmp_path) as path:
        assert path.read_text() == "secret"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert not path.exists() and not path.parent.exists()
    assert list(tmp_path.iterdir()) == []


def test_client_certificate_is_loaded_and_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cert, key = client_pair()
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    config = load_config(
        env(tmp_path, FLEET_DESKTOP_FLEET_TLS_CLIENT_CERTIFICATE=cert, FLEET_DESKTOP_FLEET_TLS_CLIENT_KEY=key)
    )
    ctx = build_ssl_context(config)
    assert ctx.minimum_version >= ssl.TLSVersion.TLSv1_2
    assert ctx.verify_mode is ssl.CERT_REQUIRED and ctx.check_hostname
    assert list(scratch.iterdir()) == []  # the key never outlives the set-up


def test_bad_client_key_is_a_clear_error(tmp_path: Path) -> None:
    cert, _ = client_pair()
    _, other_key = client_pair()
    config = load_config(
        env(tmp_path, FLEET_DESKTOP_FLEET_TLS_CLIENT_CERTIFICATE=cert, FLEET_DESKTOP_FLEET_TLS_CLIENT_KEY=other_key)
    )
    with pytest.raises(TlsSetupError, match="client certificate"):
        build_ssl_context(config)


def test_insecure_skips_verification_and_bad_ca_is_reported(tmp_path: Path) -> None:
    ctx = build_ssl_context(load_config(env(tmp_path, FLEET_DESKTOP_INSECURE="1")))
    assert ctx.verify_mode is ssl.CERT_NONE and not ctx.check_hostname
    ca = tmp_path / "ca.pem"
    ca.write_text("not a certificate")
    with pytest.raises(TlsSetupError, match="CA file"):
        build_ssl_context(load_config(env(tmp_path, FLEET_DESKTOP_FLEET_ROOT_CA=str(ca))))


# --- token file -----------------------------------------------------------------------------------------------


def test_token_file_change_detection(tmp_path: Path) -> None:
    path = tmp_path / "identifier"
    tokens = TokenFile(path)
    assert not tokens.changed()  # never read: the first check reads it anyway
    with pytest.raises(TokenUnavailableError):
        tokens.read()
    path.write_text("first-token")
    assert tokens.changed()  # it appeared since the failed read
    assert tokens.read() == "first-token" and tokens.cached == "first-token"
    assert not tokens.changed()
    # orbit replaces the file atomically; even with the same mtime the inode differs
    stamp = path.stat().st_mtime_ns
    replacement = tmp_path / "identifier.new"
    replacement.write_text("second-token")
    os.utime(replacement, ns=(stamp, stamp))
    os.replace(replacement, path)
    assert tokens.changed()
    assert tokens.read() == "second-token"
    path.unlink()
    assert tokens.changed()
    with pytest.raises(TokenUnavailableError):
        tokens.read()
    assert tokens.cached == "second-token"  # the last good token is kept for the browser links


def test_static_token() -> None:
    tokens = StaticToken("t")
    assert tokens.read() == "t" and tokens.cached == "t" and not tokens.changed()


# --- browser URLs ---------------------------------------------------------------------------------------------


def test_page_urls_and_host_replacement() -> None:
    assert my_device_url(URL, "tok") == f"{URL}/device/tok"
    assert self_service_url(URL, "tok") == f"{URL}/device/tok/self-service"
    assert transparency_url(URL, "tok") == f"{URL}/api/latest/fleet/device/tok/transparency"
    assert my_device_url("https://fleet.test:8412/prefix", "tok", "b.test") == "https://b.test/prefix/device/tok"
    assert replace_host("https://a.test:1/x", "https://b.test:2") == "https://b.test:2/x"
    assert replace_host("https://a.test/x", None) == "https://a.test/x"
