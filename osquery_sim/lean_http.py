"""A lean HTTP/1.1 client over asyncio TLS streams, for ``load`` mode only.

Why: one load process simulates thousands of hosts, and with httpx every request cost ≈ 0.9 ms of the generator's
single core (benchmarks/sim_generator.py), which capped a generator near 2 000 hosts at Fleet's intervals. This
client does only what the simulated hosts need — keep-alive connections (up to ``max_connections`` per client,
kept for ``keepalive`` seconds, like osquery's ``--tls_session_timeout``), ``Content-Length`` and chunked
responses, ``gzip`` response bodies, one deadline per request — and nothing else (no redirects, no proxies, no
cookies). The single-host daemon keeps httpx (``tls_transport.TlsTransport``), which follows redirects as osquery
does.

Every failure — refused or reset connection, TLS error, timeout, a malformed or truncated response — is a
``LeanHttpError``, and the connection it happened on is dropped, never reused.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import ssl
import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass

MAX_HEAD_BYTES = 64 * 1024
MAX_BODY_BYTES = 64 * 1024 * 1024
_NO_BODY_STATUSES = frozenset({204, 304})


class LeanHttpError(OSError):
    pass


@dataclass(frozen=True)
class LeanResponse:
    status: int
    headers: Mapping[str, str]  # names lower-cased
    body: bytes

    @property
    def is_success(self) -> bool:
        return 200 <= self.status < 300


def split_host_port(hostname: str, default_port: int = 443) -> tuple[str, int]:
    """``host``, ``host:port``, ``[v6]`` or ``[v6]:port`` → (host, port)."""
    if hostname.startswith("["):
        end = hostname.find("]")
        if end < 0:
            raise ValueError(f"invalid host: {hostname!r}")
        host, rest = hostname[1:end], hostname[end + 1 :]
        if rest and not rest.startswith(":"):
            raise ValueError(f"invalid host: {hostname!r}")
        port_text = rest[1:]
    elif hostname.count(":") == 1:
        host, port_text = hostname.split(":")
    else:
        host, port_text = hostname, ""
    if not host:
        raise ValueError(f"invalid host: {hostname!r}")
    if not port_text:
        return host, default_port
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"invalid port in {hostname!r}")
    return host, int(port_text)


def _check_token(value: str, what: str) -> None:
    if any(ch in value for ch in "\r\n\0"):
        raise ValueError(f"{what} must not contain CR, LF or NUL: {value!r}")


class _Connection:
    __slots__ = ("last_used", "reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.last_used = time.monotonic()

    def reusable(self, now: float, keepalive: float) -> bool:
        # A server that closed an idle connection has fed EOF into the reader by now.
        return not self.writer.is_closing() and not self.reader.at_eof() and now - self.last_used < keepalive

    def close(self) -> None:
        self.writer.close()


class LeanHttpClient:
    def __init__(
        self,
        host: str,
        port: int,
        ssl_context: ssl.SSLContext,
        *,
        server_hostname: str | None = None,
        timeout: float = 16.0,
        keepalive: float = 3600.0,
        max_connections: int = 2,
        headers: Mapping[str, str] | None = None,
        local_address: str | None = None,
    ) -> None:
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self._host = host
        self._port = port
        self._ssl = ssl_context
        self._server_hostname = server_hostname or host
        # connect from this address: one source address has only the ephemeral port range (≈ 28 000 ports on
        # Linux) towards one server port, fewer than 10 000 hosts' connections (load --processes gives each
        # process its own loopback address)
        self._local = (local_address, 0) if local_address else None
        self._timeout = timeout
        self._keepalive = keepalive
        host_header = f"[{host}]" if ":" in host else host
        if port != 443:
            host_header += f":{port}"
        fixed = {"Host": host_header, **(headers or {})}
        for name, value in fixed.items():
            _check_token(name, "header name")
            _check_token(value, "header value")
        self._fixed_head = "".join(f"{name}: {value}\r\n" for name, value in fixed.items())
        self._slots = asyncio.Semaphore(max_connections)
        self._idle: list[_Connection] = []
        self._closed = False

    async def request(
        self, method: str, path: str, body: bytes = b"", headers: Mapping[str, str] | None = None
    ) -> LeanResponse:
        if self._closed:
            raise LeanHttpError("client is closed")
        _check_token(method, "method")
        _check_token(path, "path")
        if not path.startswith("/") or " " in path:
            raise ValueError(f"path must start with '/' and contain no spaces: {path!r}")
        head = [f"{method} {path} HTTP/1.1\r\n", self._fixed_head]
        for name, value in (headers or {}).items():
            _check_token(name, "header name")
            _check_token(value, "header value")
            head.append(f"{name}: {value}\r\n")
        if body or method in ("POST", "PUT", "PATCH"):
            head.append(f"Content-Length: {len(body)}\r\n")
        head.append("\r\n")
        data = "".join(head).encode("latin-1") + body
        async with self._slots:
            connection = self._take_idle()
            try:
                async with asyncio.timeout(self._timeout):
                    if connection is None:
                        connection = await self._connect()
                    response, reusable = await self._exchange(connection, data, method == "HEAD")
            except (OSError, EOFError, ssl.SSLError, TimeoutError, ValueError, asyncio.IncompleteReadError) as exc:
                if connection is not None:
                    connection.close()
                if isinstance(exc, LeanHttpError):
                    raise
                reason = "timed out" if isinstance(exc, TimeoutError) else f"{type(exc).__name__}: {exc}"
                raise LeanHttpError(f"{method} {path}: {reason}") from exc
            except BaseException:
                if connection is not None:
                    connection.close()
                raise
            if reusable and not self._closed:
                connection.last_used = time.monotonic()
                self._idle.append(connection)
            else:
                connection.close()
            return response

    def _take_idle(self) -> _Connection | None:
        now = time.monotonic()
        while self._idle:
            connection = self._idle.pop()
            if connection.reusable(now, self._keepalive):
                return connection
            connection.close()
        return None

    async def _connect(self) -> _Connection:
        reader, writer = await asyncio.open_connection(
            self._host,
            self._port,
            ssl=self._ssl,
            server_hostname=self._server_hostname,
            limit=MAX_HEAD_BYTES,
            local_addr=self._local,
        )
        return _Connection(reader, writer)

    async def _exchange(self, connection: _Connection, data: bytes, head_only: bool) -> tuple[LeanResponse, bool]:
        connection.writer.write(data)
        await connection.writer.drain()
        reader = connection.reader
        while True:
            try:
                raw_head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.LimitOverrunError as exc:
                raise LeanHttpError("response head larger than 64 KiB") from exc
            status, version, headers = _parse_head(raw_head)
            if status >= 200:
                break
            if status == 101:
                raise LeanHttpError("unexpected protocol switch")
        keep = version == "HTTP/1.1" and "close" not in headers.get("connection", "").lower()
        if head_only or status in _NO_BODY_STATUSES:
            body = b""
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            body = await _read_chunked(reader)
        elif "content-length" in headers:
            length = headers["content-length"].strip()
            if not length.isdigit():
                raise LeanHttpError(f"invalid Content-Length: {length!r}")
            if int(length) > MAX_BODY_BYTES:
                raise LeanHttpError(f"response body of {length} bytes is over the limit")
            body = await reader.readexactly(int(length))
        else:
            body = await _read_to_eof(reader)
            keep = False
        encoding = headers.get("content-encoding", "").strip().lower()
        if encoding == "gzip" and body:
            try:
                body = gzip.decompress(body)
            except (OSError, EOFError, zlib.error) as exc:
                raise LeanHttpError(f"invalid gzip response body: {exc}") from exc
        elif encoding not in ("", "identity"):
            raise LeanHttpError(f"unsupported Content-Encoding: {encoding}")
        return LeanResponse(status, headers, body), keep

    async def aclose(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()
        with contextlib.suppress(OSError, ssl.SSLError, TimeoutError):
            async with asyncio.timeout(2.0):  # a server that never answers close_notify does not hold us up
                await asyncio.gather(*(connection.writer.wait_closed() for connection in idle))


def _parse_head(raw: bytes) -> tuple[int, str, dict[str, str]]:
    try:
        text = raw.decode("latin-1")
    except UnicodeDecodeError as exc:  # pragma: no cover - latin-1 decodes every byte
        raise LeanHttpError("undecodable response head") from exc
    lines = text.split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or parts[0] not in ("HTTP/1.1", "HTTP/1.0") or not parts[1].isdigit() or len(parts[1]) != 3:
        raise LeanHttpError(f"malformed status line: {lines[0][:80]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise LeanHttpError(f"malformed header line: {line[:80]!r}")
        key = name.lower()
        value = value.strip()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return int(parts[1]), parts[0], headers


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    pieces: list[bytes] = []
    total = 0
    while True:
        size_line = (await reader.readuntil(b"\r\n"))[:-2].split(b";", 1)[0].strip()
        try:
            size = int(size_line, 16)
        except ValueError as exc:
            raise LeanHttpError(f"malformed chunk size: {size_line[:20]!r}") from exc
        if size < 0:
            raise LeanHttpError("negative chunk size")
        if size == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":  # trailers
                pass
            return b"".join(pieces)
        total += size
        if total > MAX_BODY_BYTES:
            raise LeanHttpError("chunked response body over the limit")
        pieces.append(await reader.readexactly(size))
        if await reader.readexactly(2) != b"\r\n":
            raise LeanHttpError("chunk not followed by CRLF")


async def _read_to_eof(reader: asyncio.StreamReader) -> bytes:
    pieces: list[bytes] = []
    total = 0
    while chunk := await reader.read(65536):
        total += len(chunk)
        if total > MAX_BODY_BYTES:
            raise LeanHttpError("response body over the limit")
        pieces.append(chunk)
    return b"".join(pieces)
