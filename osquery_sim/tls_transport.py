"""osquery's TLS transport: HTTPS POSTs of JSON to ``https://<tls_hostname><endpoint>``, judged by the body.

TLS follows osquery (docs/reference/fleet-api.md §1.1): the server is verified against ``--tls_server_certs`` with SNI
and
the host name of ``--tls_hostname``; optional client certificate; TLS 1.2 or newer; 16 s per request; up to 10
redirects; keep-alive. Bodies are gzip-compressed only when asked (the logger with ``--logger_tls_compress``) and
responses are only requested gzip-encoded with ``--tls_accept_gzip``. Network failures never raise: they are a
failed ``RemoteAnswer`` like any other.
"""

from __future__ import annotations

import abc
import gzip
import json
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from osquery_sim.lean_http import LeanHttpClient, LeanHttpError, split_host_port
from osquery_sim.remote_answer import RemoteAnswer, judge
from osquery_sim.version import SIM_VERSION

REQUEST_TIMEOUT_SECONDS = 16.0
MAX_REDIRECTS = 10
KEEPALIVE_SECONDS = 3600.0  # osquery reuses a connection up to --tls_session_timeout (3600 s), not httpx's 5 s


@dataclass(frozen=True)
class TlsSettings:
    hostname: str
    server_certs: str = ""
    client_cert: str = ""
    client_key: str = ""
    accept_gzip: bool = False
    user_agent: str = f"osquery/{SIM_VERSION}"
    send_node_key_header: bool = True


class TransportError(ValueError):
    pass


def build_ssl_context(settings: TlsSettings) -> ssl.SSLContext:
    if settings.server_certs and Path(settings.server_certs).is_file():
        context = ssl.create_default_context(cafile=settings.server_certs)
    elif settings.server_certs:
        raise TransportError(f"Cannot read TLS server certificate(s): {settings.server_certs}")
    else:
        context = ssl.create_default_context()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if settings.client_cert and settings.client_key:
        context.load_cert_chain(settings.client_cert, settings.client_key)
    return context


class OsqueryTransport(abc.ABC):
    """osquery's request rules — JSON body, optional gzip, ``NodeKey`` header, judged by the body — over a
    subclass's way of sending bytes (``_send``, which raises ``TransportFailure`` for network failures)."""

    def __init__(self, settings: TlsSettings, observe: Callable[[str, float, bool], None] | None) -> None:
        if not settings.hostname:
            raise TransportError("--tls_hostname is required for TLS plugins")
        if "://" in settings.hostname:
            raise TransportError("--tls_hostname must not include a scheme (it is always https)")
        self._settings = settings
        self._observe = observe
        self._headers = {
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": settings.user_agent,
            "Accept-Encoding": "gzip" if settings.accept_gzip else "identity",
        }

    async def post(
        self, endpoint: str, body: dict[str, object], *, node_key: str | None = None, compress: bool = False
    ) -> RemoteAnswer:
        if not endpoint.startswith("/"):
            return RemoteAnswer(ok=False, error=f"endpoint must start with '/': {endpoint!r}")
        payload = json.dumps(body, separators=(",", ":")).encode()
        headers: dict[str, str] = {}
        if compress:
            payload = gzip.compress(payload)
            headers["Content-Encoding"] = "gzip"
        if node_key and self._settings.send_node_key_header:
            headers["Authorization"] = f"NodeKey {node_key}"
        started = time.perf_counter()
        try:
            content = await self._send(endpoint, payload, headers)
        except TransportFailure as exc:
            if self._observe:
                self._observe(endpoint, time.perf_counter() - started, False)
            return RemoteAnswer(ok=False, error=f"Request error: {exc}")
        answer = judge(content)
        if self._observe:
            self._observe(endpoint, time.perf_counter() - started, answer.ok)
        return answer

    @abc.abstractmethod
    async def _send(self, endpoint: str, payload: bytes, headers: dict[str, str]) -> bytes: ...

    @abc.abstractmethod
    async def close(self) -> None: ...


class TransportFailure(Exception):
    pass


class TlsTransport(OsqueryTransport):
    """The daemon's transport: httpx, redirects followed as osquery does."""

    def __init__(
        self,
        settings: TlsSettings,
        *,
        limits: httpx.Limits | None = None,
        ssl_context: ssl.SSLContext | None = None,
        observe: Callable[[str, float, bool], None] | None = None,
    ) -> None:
        super().__init__(settings, observe)
        self._client = httpx.AsyncClient(
            base_url=f"https://{settings.hostname}",
            verify=ssl_context or build_ssl_context(settings),
            headers=self._headers,
            timeout=httpx.Timeout(REQUEST_TIMEOUT_SECONDS),
            follow_redirects=True,
            max_redirects=MAX_REDIRECTS,
            trust_env=False,
            limits=limits
            or httpx.Limits(max_connections=4, max_keepalive_connections=4, keepalive_expiry=KEEPALIVE_SECONDS),
        )

    async def _send(self, endpoint: str, payload: bytes, headers: dict[str, str]) -> bytes:
        try:
            response = await self._client.post(endpoint, content=payload, headers=headers)
        except httpx.HTTPError as exc:
            raise TransportFailure(f"{type(exc).__name__}: {exc}") from exc
        except (ssl.SSLError, OSError) as exc:
            # a TLS alert after the handshake (a server demanding a client certificate we lack) comes through httpx
            # as the raw ssl error: to osqueryd that is a failed request, retried by its rules, never a crash
            raise TransportFailure(f"TLS error: {exc}") from exc
        return response.content

    async def close(self) -> None:
        await self._client.aclose()


class LeanTlsTransport(OsqueryTransport):
    """Load mode's transport: ``lean_http`` keep-alive connections (no redirects), far cheaper per request."""

    def __init__(
        self,
        settings: TlsSettings,
        ssl_context: ssl.SSLContext,
        *,
        max_connections: int = 2,
        observe: Callable[[str, float, bool], None] | None = None,
        local_address: str | None = None,
    ) -> None:
        super().__init__(settings, observe)
        try:
            host, port = split_host_port(settings.hostname)
        except ValueError as exc:
            raise TransportError(f"--tls_hostname: {exc}") from None
        self._client = LeanHttpClient(
            host,
            port,
            ssl_context,
            timeout=REQUEST_TIMEOUT_SECONDS,
            keepalive=KEEPALIVE_SECONDS,
            max_connections=max_connections,
            headers=self._headers,
            local_address=local_address,
        )

    async def _send(self, endpoint: str, payload: bytes, headers: dict[str, str]) -> bytes:
        try:
            return (await self._client.request("POST", endpoint, payload, headers)).body
        except LeanHttpError as exc:
            raise TransportFailure(str(exc)) from exc
        except (ssl.SSLError, OSError) as exc:
            raise TransportFailure(f"TLS error: {exc}") from exc

    async def close(self) -> None:
        await self._client.aclose()
