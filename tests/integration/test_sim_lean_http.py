"""osquery_sim.lean_http against a real TLS server on loopback that answers with scripted bytes."""

from __future__ import annotations

import asyncio
import gzip
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from osquery_sim import lean_http
from osquery_sim.lean_http import LeanHttpClient, LeanHttpError, split_host_port
from server_stub.tls_material import TlsFiles, ensure_self_signed, server_ssl_context

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[bool]]


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return ensure_self_signed(tmp_path_factory.mktemp("tls"))


def client_context(tls: TlsFiles) -> ssl.SSLContext:
    assert tls.ca is not None
    return ssl.create_default_context(cafile=str(tls.ca))


async def read_request(reader: asyncio.StreamReader) -> tuple[str, dict[str, str], bytes]:
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in head[1:] if line)}
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return head[0], headers, body


class ScriptedServer:
    """Each connection gets a number; ``handler`` answers one request and says whether to keep the connection."""

    def __init__(self, tls: TlsFiles, handler: Handler) -> None:
        self.tls = tls
        self.handler = handler
        self.connections = 0
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> ScriptedServer:
        context = server_ssl_context(self.tls.cert, self.tls.key)
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=context)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        number = self.connections
        try:
            while True:
                try:
                    self.requests.append(await read_request(reader))
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                if not await self.handler(reader, writer, number):
                    return
        finally:
            writer.close()

    def client(self, **kwargs: object) -> LeanHttpClient:
        return LeanHttpClient("127.0.0.1", self.port, client_context(self.tls), **kwargs)  # type: ignore[arg-type]


async def _until_idle_connections_see_eof(client: LeanHttpClient, timeout: float = 30.0) -> None:
    """Until the server's close of the kept-alive connection(s) has reached the client (the FIN is read)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not all(connection.reader.at_eof() for connection in client._idle):
        assert asyncio.get_running_loop().time() < deadline, "the server's close never reached the client"
        await asyncio.sleep(0.01)


def answer(body: bytes, *, status: str = "200 OK", extra: str = "") -> bytes:
    return f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode() + body


async def ok_json(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, number: int) -> bool:
    writer.write(answer(b'{"ok": true}', extra="Content-Type: application/json\r\n"))
    await writer.drain()
    return True


def test_keep_alive_reuses_one_connection_and_sends_a_well_formed_request(tls: TlsFiles) -> None:
    async def scenario() -> None:
        async with ScriptedServer(tls, ok_json) as server:
            client = server.client(headers={"User-Agent": "osquery/5.14.1+sim"})
            for _ in range(3):
                response = await client.request("POST", "/api/v1/osquery/config", b'{"node_key":"k"}')
                assert response.status == 200 and response.body == b'{"ok": true}' and response.is_success
            await client.aclose()
            assert server.connections == 1
            line, headers, body = server.requests[0]
            assert line == "POST /api/v1/osquery/config HTTP/1.1"
            assert headers["host"] == f"127.0.0.1:{server.port}"
            assert headers["user-agent"] == "osquery/5.14.1+sim"
            assert headers["content-length"] == str(len(body)) and body == b'{"node_key":"k"}'

    asyncio.run(scenario())


def test_chunked_gzip_body_with_trailers(tls: TlsFiles) -> None:
    payload = gzip.compress(b'{"queries": {"q1": "SELECT 1"}}')

    async def chunked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, number: int) -> bool:
        half = len(payload) // 2
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Encoding: gzip\r\n\r\n")
        writer.write(f"{half:x};ext=1\r\n".encode() + payload[:half] + b"\r\n")
        writer.write(f"{len(payload) - half:X}\r\n".encode() + payload[half:] + b"\r\n")
        writer.write(b"0\r\nX-Trailer: yes\r\n\r\n")
        await writer.drain()
        return True

    async def scenario() -> None:
        async with ScriptedServer(tls, chunked) as server:
            client = server.client()
            first = await client.request("POST", "/r", b"{}")
            second = await client.request("POST", "/r", b"{}")
            await client.aclose()
            assert first.body == second.body == b'{"queries": {"q1": "SELECT 1"}}'
            assert server.connections == 1

    asyncio.run(scenario())


def test_connection_close_and_a_server_closed_idle_connection_are_not_reused(tls: TlsFiles) -> None:
    async def close_every_other(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, number: int) -> bool:
        if number == 1:
            writer.write(answer(b"{}", extra="Connection: close\r\n"))
            await writer.drain()
            return False
        writer.write(answer(b"{}"))
        await writer.drain()
        return number != 2  # the second connection is closed by the server after answering, without a header

    async def scenario() -> None:
        async with ScriptedServer(tls, close_every_other) as server:
            client = server.client()
            await client.request("POST", "/a", b"{}")  # connection 1, "Connection: close"
            await client.request("POST", "/a", b"{}")  # connection 2, then closed by the server while idle
            await _until_idle_connections_see_eof(client)
            response = await client.request("POST", "/a", b"{}")  # must detect the EOF and open connection 3
            await client.aclose()
            assert response.status == 200
            assert server.connections == 3

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{}", "IncompleteReadError"),
        (b"SPDY/9 200 OK\r\n\r\n", "malformed status line"),
        (b"HTTP/1.1 2000 OK\r\n\r\n", "malformed status line"),
        (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", "malformed header line"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\n", "invalid Content-Length"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "malformed chunk size"),
        (b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 4\r\n\r\nnope", "invalid gzip"),
        (b"HTTP/1.1 200 OK\r\nContent-Encoding: br\r\nContent-Length: 2\r\n\r\n{}", "unsupported Content-Encoding"),
    ],
)
def test_malformed_or_truncated_answers_are_errors_and_the_connection_is_dropped(
    tls: TlsFiles, raw: bytes, message: str
) -> None:
    async def broken_then_ok(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, number: int) -> bool:
        writer.write(raw if number == 1 else answer(b"{}"))
        await writer.drain()
        return number != 1

    async def scenario() -> None:
        async with ScriptedServer(tls, broken_then_ok) as server:
            client = server.client()
            with pytest.raises(LeanHttpError, match=message):
                await client.request("POST", "/x", b"{}")
            assert (await client.request("POST", "/x", b"{}")).status == 200
            await client.aclose()
            assert server.connections == 2

    asyncio.run(scenario())


def test_a_body_over_the_limit_is_refused(tls: TlsFiles, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lean_http, "MAX_BODY_BYTES", 10)

    async def big(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, number: int) -> bool:
        writer.write(answer(b"x" * 11))
        await writer.drain()
        return True

    async def scenario() -> None:
        async with ScriptedServer(tls, big) as server:
            client = server.client()
            with pytest.raises(LeanHttpError, match="over the limit"):
                await client.request("POST", "/x", b"{}")
            await client.aclose()

    asyncio.run(scenario())


def test_a_server_that_never_answers_times_out_quickly(tls: TlsFiles) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, number: int) -> bool:
        await asyncio.sleep(30)
        return False

    async def scenario() -> None:
        async with ScriptedServer(tls, silent) as server:
            client = server.client(timeout=0.3)
            started = asyncio.get_running_loop().time()
            with pytest.raises(LeanHttpError, match="timed out"):
                await client.request("POST", "/x", b"{}")
            assert asyncio.get_running_loop().time() - started < 10  # the 0.3 s timeout, not the 30 s of silence
            await client.aclose()

    asyncio.run(scenario())


def test_head_requests_and_no_body_statuses_read_no_body(tls: TlsFiles) -> None:
    async def head(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, number: int) -> bool:
        # A HEAD answer announces a length it does not send; 204 sends nothing.
        line = seen[0].requests[-1][0]
        if line.startswith("HEAD"):
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n")
        else:
            writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
        await writer.drain()
        return True

    async def scenario() -> None:
        async with ScriptedServer(tls, head) as srv:
            seen.append(srv)
            client = srv.client()
            assert (await client.request("HEAD", "/api/fleet/orbit/ping")).body == b""
            assert (await client.request("POST", "/x", b"{}")).status == 204
            assert (await client.request("HEAD", "/api/fleet/orbit/ping")).status == 200
            await client.aclose()
            assert srv.connections == 1
            assert "content-length" not in srv.requests[0][1]

    seen: list[ScriptedServer] = []
    asyncio.run(scenario())


def test_tls_is_verified(tls: TlsFiles, tmp_path: Path) -> None:
    other = ensure_self_signed(tmp_path / "other")

    async def scenario() -> None:
        async with ScriptedServer(tls, ok_json) as server:
            assert other.ca is not None
            client = LeanHttpClient("127.0.0.1", server.port, ssl.create_default_context(cafile=str(other.ca)))
            with pytest.raises(LeanHttpError, match="CERTIFICATE_VERIFY_FAILED"):
                await client.request("POST", "/x", b"{}")
            await client.aclose()

    asyncio.run(scenario())


def test_refused_connection_and_closed_client(tls: TlsFiles) -> None:
    async def scenario() -> None:
        async with ScriptedServer(tls, ok_json) as server:
            port = server.port
        client = LeanHttpClient("127.0.0.1", port, client_context(tls))
        with pytest.raises(LeanHttpError, match="ConnectionRefusedError"):
            await client.request("POST", "/x", b"{}")
        await client.aclose()
        with pytest.raises(LeanHttpError, match="closed"):
            await client.request("POST", "/x", b"{}")

    asyncio.run(scenario())


def test_header_and_path_injection_is_refused_before_sending(tls: TlsFiles) -> None:
    async def scenario() -> None:
        client = LeanHttpClient("127.0.0.1", 9, client_context(tls))
        with pytest.raises(ValueError, match="CR, LF"):
            await client.request("POST", "/x", b"{}", {"Authorization": "NodeKey a\r\nX-Evil: 1"})
        with pytest.raises(ValueError, match="CR, LF"):
            await client.request("GET", "/x\r\nHost: evil", b"")
        with pytest.raises(ValueError, match="must start with"):
            await client.request("GET", "x y", b"")
        await client.aclose()
        with pytest.raises(ValueError, match="CR, LF"):
            LeanHttpClient("127.0.0.1", 9, client_context(tls), headers={"User-Agent": "a\nb"})

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("fleet.example.com", ("fleet.example.com", 443)),
        ("127.0.0.1:8412", ("127.0.0.1", 8412)),
        ("[::1]:8412", ("::1", 8412)),
        ("[::1]", ("::1", 443)),
        ("::1", ("::1", 443)),  # a bare IPv6 address has no port
    ],
)
def test_split_host_port(text: str, expected: tuple[str, int]) -> None:
    assert split_host_port(text) == expected


@pytest.mark.parametrize("text", ["", ":80", "host:http", "host:0", "host:70000", "[::1", "[::1]x"])
def test_split_host_port_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="invalid"):
        split_host_port(text)
