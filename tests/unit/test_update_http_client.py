"""The shared HTTP client: TLS options, proxies from the environment, timeouts, and the error translation."""

from __future__ import annotations

import errno
import ssl
from pathlib import Path

import httpx
import pytest
from tuf.api import exceptions as tuf_exceptions

from tuf_updates.errors import FailureKind, MetadataExpiredError, NetworkError, RepositoryError, translate
from tuf_updates.http_client import TlsOptions, build_http_client, environment_proxies, ssl_context
from tuf_updates.repository_client import role_of_url


def test_proxies_from_the_environment() -> None:
    environ = {
        "HTTPS_PROXY": "http://proxy.corp:3128",
        "http_proxy": "proxy.corp:3128",
        "NO_PROXY": "127.0.0.1, localhost,::1,.internal,updates.example",
    }
    assert environment_proxies(environ) == {
        "https://": "http://proxy.corp:3128",
        "http://": "http://proxy.corp:3128",
        "all://127.0.0.1": None,
        "all://localhost": None,
        "all://[::1]": None,
        "all://*.internal": None,
        "all://*updates.example": None,
    }
    assert environment_proxies({"ALL_PROXY": "socks5://p:1080", "NO_PROXY": "*"}) == {}
    assert environment_proxies({}) == {}


def test_client_settings() -> None:
    with build_http_client(
        TlsOptions(),
        user_agent="orbit/1.2.3 (linux amd64)",
        timeout=12.0,
        connect_timeout=3.0,
        environ={"HTTPS_PROXY": "http://proxy.corp:3128", "NO_PROXY": "127.0.0.1"},
    ) as client:
        assert client.headers["user-agent"] == "orbit/1.2.3 (linux amd64)"
        assert client.timeout == httpx.Timeout(12.0, connect=3.0)
        assert client.follow_redirects
        proxied = client._transport_for_url(httpx.URL("https://updates.example/tuf/timestamp.json"))
        direct = client._transport_for_url(httpx.URL("https://127.0.0.1:8412/tuf/timestamp.json"))
        assert proxied is not direct and direct is client._transport


def test_tls_options(tmp_path: Path) -> None:
    insecure = ssl_context(TlsOptions(insecure=True))
    assert insecure.verify_mode is ssl.CERT_NONE and not insecure.check_hostname
    strict = ssl_context(TlsOptions())
    assert strict.verify_mode is ssl.CERT_REQUIRED and strict.minimum_version is ssl.TLSVersion.TLSv1_2
    with pytest.raises(ValueError, match="client key needs its client certificate"):
        TlsOptions(client_key=tmp_path / "k.pem")
    with pytest.raises(FileNotFoundError):
        ssl_context(TlsOptions(root_ca=tmp_path / "missing.pem"))


def test_python_tuf_errors_become_ours() -> None:
    expired = translate(
        tuf_exceptions.ExpiredMetadataError("timestamp.json is expired"), role="timestamp", clock_skew=7200
    )
    assert isinstance(expired, MetadataExpiredError) and expired.kind is FailureKind.EXPIRED
    assert expired.clock_skew == 7200
    stale = translate(tuf_exceptions.BadVersionNumberError("New timestamp version 1 must be >= 10"), role="timestamp")
    assert stale.kind is FailureKind.STALE and isinstance(stale, RepositoryError)
    snapshot_rollback = translate(
        tuf_exceptions.BadVersionNumberError("New snapshot version must be >= 8, got version 1"), role="timestamp"
    )
    assert snapshot_rollback.kind is FailureKind.ROLLBACK
    unsigned = translate(tuf_exceptions.UnsignedMetadataError("root was signed by 0/1 keys"), role="root")
    assert unsigned.kind is FailureKind.UNTRUSTED and "(root)" in str(unsigned)
    assert translate(tuf_exceptions.LengthOrHashMismatchError("hash")).kind is FailureKind.TARGET_MISMATCH
    assert translate(tuf_exceptions.DownloadLengthMismatchError("long")).kind is FailureKind.OVERSIZED
    assert translate(tuf_exceptions.SlowRetrievalError("slow")).kind is FailureKind.SLOW_RETRIEVAL
    http = translate(tuf_exceptions.DownloadHTTPError("HTTP 500", 500))
    assert isinstance(http, NetworkError) and http.status_code == 500
    assert translate(tuf_exceptions.DownloadError("refused")).kind is FailureKind.NETWORK
    assert translate(OSError(errno.ENOSPC, "No space left")).kind is FailureKind.DISK_FULL
    assert translate(OSError(errno.EACCES, "Permission denied")).kind is FailureKind.STORAGE


def test_roles_of_urls() -> None:
    assert role_of_url("https://h/tuf/timestamp.json") == "timestamp"
    assert role_of_url("https://h/tuf/12.snapshot.json") == "snapshot"
    assert role_of_url("https://h/tuf/3.root.json") == "root"
    assert role_of_url("https://h/tuf/targets/osqueryd/linux/stable/abc.osqueryd") == "target"
    assert role_of_url(None) is None
