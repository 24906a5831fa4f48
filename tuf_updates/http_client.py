"""The HTTPS client of the agent: custom CA, mTLS, proxies from the environment, explicit timeouts, connect retries.

Shared by the TUF fetcher, ``orbitctl package`` and the Fleet API client, so all see the same TLS and proxies.
"""

from __future__ import annotations

import ipaddress
import os
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import httpx

TransportT = TypeVar("TransportT", httpx.HTTPTransport, httpx.AsyncHTTPTransport)

DEFAULT_TIMEOUT = 30.0
DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_CONNECT_RETRIES = 2


@dataclass(frozen=True)
class TlsOptions:
    """How to verify the server and how to authenticate to it.

    ``root_ca`` is a PEM bundle trusted instead of the system store; ``client_cert``/``client_key`` enable mTLS;
    ``insecure`` turns certificate verification off (TUF signatures still protect the update path).
    """

    root_ca: Path | None = None
    client_cert: Path | None = None
    client_key: Path | None = None
    insecure: bool = False

    def __post_init__(self) -> None:
        if self.client_key is not None and self.client_cert is None:
            raise ValueError("a client key needs its client certificate")

    @classmethod
    def with_client_files(cls, root_ca: Path | None, cert: Path, key: Path, *, insecure: bool) -> TlsOptions:
        """mTLS with ``cert``/``key`` when both files exist (an agent's optional client certificate), else none."""
        has_client = cert.is_file() and key.is_file()
        return cls(root_ca, cert if has_client else None, key if has_client else None, insecure)


def ssl_context(tls: TlsOptions) -> ssl.SSLContext:
    """An SSLContext with TLS >= 1.2, the custom CA (else the system store, which honours SSL_CERT_FILE/DIR)
    and the client certificate; verification off only when ``insecure``."""
    context = ssl.create_default_context(cafile=str(tls.root_ca) if tls.root_ca is not None else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if tls.client_cert is not None:
        key = str(tls.client_key) if tls.client_key is not None else None
        context.load_cert_chain(str(tls.client_cert), key)
    if tls.insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _env(environ: Mapping[str, str], name: str) -> str | None:
    value = environ.get(name.lower()) or environ.get(name.upper())
    return value.strip() if value and value.strip() else None


def _no_proxy_pattern(host: str) -> str:
    if "://" in host:
        return host
    bare = host.strip("[]")
    try:
        address = ipaddress.ip_address(bare)
    except ValueError:
        # "example.com" covers the domain and its subdomains; ".example.com" only the subdomains
        return "all://localhost" if host.lower() == "localhost" else f"all://*{host}"
    return f"all://[{bare}]" if address.version == 6 else f"all://{bare}"


def environment_proxies(environ: Mapping[str, str]) -> dict[str, str | None]:
    """httpx mount patterns from ``HTTP(S)_PROXY``/``ALL_PROXY``/``NO_PROXY`` (``None`` = go direct).

    httpx ignores the environment once a custom transport is passed, so the agent reads it here itself.
    """
    mounts: dict[str, str | None] = {}
    for scheme in ("http", "https", "all"):
        proxy = _env(environ, f"{scheme}_proxy")
        if proxy is not None:
            mounts[f"{scheme}://"] = proxy if "://" in proxy else f"http://{proxy}"
    no_proxy = _env(environ, "no_proxy") or ""
    for host in (part.strip() for part in no_proxy.split(",")):
        if host == "*":
            return {}
        if host:
            mounts[_no_proxy_pattern(host)] = None
    return mounts


@dataclass(frozen=True)
class ClientSettings:
    """What the sync and the async client share: TLS, timeouts, identity, connect retries, proxies."""

    tls: TlsOptions
    user_agent: str
    timeout: float = DEFAULT_TIMEOUT
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    connect_retries: int = DEFAULT_CONNECT_RETRIES
    trust_env: bool = True
    environ: Mapping[str, str] | None = None
    base_url: str = ""

    def transports(
        self, context: ssl.SSLContext, transport: Callable[..., TransportT]
    ) -> tuple[TransportT, dict[str, TransportT | None]]:
        """The direct transport and httpx ``mounts``: one transport per proxy pattern from the environment,
        ``None`` for NO_PROXY hosts."""
        direct = transport(verify=context, retries=self.connect_retries)
        if not self.trust_env:
            return direct, {}
        proxies = environment_proxies(os.environ if self.environ is None else self.environ)
        mounts: dict[str, TransportT | None] = {
            pattern: None if proxy is None else transport(verify=context, retries=self.connect_retries, proxy=proxy)
            for pattern, proxy in proxies.items()
        }
        return direct, mounts

    @property
    def timeouts(self) -> httpx.Timeout:
        return httpx.Timeout(self.timeout, connect=self.connect_timeout)


def build_http_client(
    tls: TlsOptions,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    user_agent: str,
    connect_retries: int = DEFAULT_CONNECT_RETRIES,
    trust_env: bool = True,
    environ: Mapping[str, str] | None = None,
    base_url: str = "",
) -> httpx.Client:
    """One long-lived client: TLS from ``tls``, retries of failed connects, proxies from the environment.

    ``timeout`` bounds each read/write (not a whole download: the fetcher adds a total deadline). Redirects are
    followed (a CDN in front of the update server).
    """
    settings = ClientSettings(tls, user_agent, timeout, connect_timeout, connect_retries, trust_env, environ, base_url)
    context = ssl_context(tls)
    direct, mounts = settings.transports(context, httpx.HTTPTransport)
    return httpx.Client(
        base_url=base_url,
        verify=context,
        transport=direct,
        mounts=dict(mounts),
        timeout=settings.timeouts,
        headers={"User-Agent": user_agent},
        follow_redirects=True,
        max_redirects=5,
        trust_env=False,
    )


def build_async_http_client(
    tls: TlsOptions,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    user_agent: str,
    connect_retries: int = DEFAULT_CONNECT_RETRIES,
    trust_env: bool = True,
    environ: Mapping[str, str] | None = None,
    base_url: str = "",
) -> httpx.AsyncClient:
    """The asyncio twin of ``build_http_client`` (same ``ClientSettings``) for the Fleet API client: no redirects
    (an API answer must come from the API), a few kept-alive connections for up to 55 minutes."""
    settings = ClientSettings(tls, user_agent, timeout, connect_timeout, connect_retries, trust_env, environ, base_url)
    context = ssl_context(tls)
    direct, mounts = settings.transports(context, httpx.AsyncHTTPTransport)
    return httpx.AsyncClient(
        base_url=base_url,
        verify=context,
        transport=direct,
        mounts=dict(mounts),
        timeout=settings.timeouts,
        headers={"User-Agent": user_agent},
        follow_redirects=False,
        trust_env=False,
        limits=httpx.Limits(max_keepalive_connections=4, keepalive_expiry=55 * 60.0),
    )
