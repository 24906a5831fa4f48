"""fleet-stub under hostile clients (issue 15, ADR 0014): each attack on the connection and HTTP layer gets a bounded,
clear answer from a real `fleet-stub serve` process, and a low open-files limit never locks an enrolled agent out.

Time limits are set to 1.5 s here (FLEET_STUB_*_TIMEOUT) so that the tests are quick; deadlines are generous.
"""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from tests.support.agents import host_details
from tests.support.stub_process import StubProcess, clean_env

SECRET = "limits-secret-1"
MIB = 1024 * 1024
SHORT = "1.5"
ANSWER_DEADLINE = 30.0

Info = dict[str, object]


@pytest.fixture(scope="module")
def stub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Info]:
    env = clean_env(
        FLEET_STUB_HEADER_TIMEOUT=SHORT,
        FLEET_STUB_BODY_TIMEOUT=SHORT,
        FLEET_STUB_TLS_HANDSHAKE_TIMEOUT=SHORT,
        FLEET_STUB_IDLE_TIMEOUT=SHORT,
    )
    process = StubProcess(tmp_path_factory.mktemp("limits") / "data", f"--enroll-secret={SECRET}", env=env)
    try:
        yield process.wait_ready()
    finally:
        assert process.stop() == 0
        _out, err = process.output()
        assert "Traceback" not in err


def port_of(info: Info) -> int:
    return int(str(info["url"]).rsplit(":", 1)[1])


def tls_context(info: Info) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(info["ca_cert"]))


async def open_tls(info: Info) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(
        "127.0.0.1", port_of(info), ssl=tls_context(info), server_hostname="localhost", limit=1 << 20
    )


class Answer:
    """Reads everything the server sends until it closes (a reset after its answer is a close too)."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self.begun = asyncio.Event()
        self.task = asyncio.create_task(self._read(reader))

    async def _read(self, reader: asyncio.StreamReader) -> bytes:
        data = b""
        try:
            while chunk := await reader.read(65536):
                data += chunk
                self.begun.set()
        except (OSError, EOFError):
            pass
        self.begun.set()
        return data

    def done(self) -> bool:
        return self.task.done()

    async def result(self) -> bytes:
        return await asyncio.wait_for(self.task, ANSWER_DEADLINE)


async def until_closed(reader: asyncio.StreamReader) -> bytes:
    return await Answer(reader).result()


async def send_until_answered(writer: asyncio.StreamWriter, answer: Answer, chunks: Iterator[bytes]) -> int:
    """Keep sending until the server's answer begins; returns the bytes handed to the connection by then."""
    sent = 0
    for chunk in chunks:
        if answer.begun.is_set() or writer.transport.is_closing():
            break
        writer.write(chunk)
        try:
            await writer.drain()
        except OSError:
            break
        sent += len(chunk)
        await asyncio.sleep(0)  # let the loop look at the socket: an answer may have come
    return sent


async def dribble(writer: asyncio.StreamWriter, answer: Answer, byte: bytes = b"X") -> None:
    """One byte every 0.2 s until the server answers (slowloris)."""
    while not answer.done():
        writer.write(byte)
        try:
            await writer.drain()
        except OSError:
            return
        await asyncio.wait([answer.task], timeout=0.2)


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), 120))


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0


def body_of(answer: bytes) -> bytes:
    return answer.partition(b"\r\n\r\n")[2]


def repeat(chunk: bytes, total: int) -> Iterator[bytes]:
    for _ in range(total // len(chunk)):
        yield chunk


# --- headers ------------------------------------------------------------------------------------------------------


def test_huge_header_is_431_after_64_kib_not_after_150_mib(stub: Info) -> None:
    async def scenario() -> None:
        reader, writer = await open_tls(stub)
        writer.write(b"POST /api/osquery/config HTTP/1.1\r\nHost: stub\r\nX-Huge: ")
        answer = Answer(reader)
        sent = await send_until_answered(writer, answer, repeat(b"a" * 65536, 150 * MIB))
        got = await answer.result()
        writer.close()
        assert status_of(got) == 431, got[:200]
        assert b"the request's headers exceed 65536 bytes" in body_of(got)
        assert sent < 16 * MIB  # answered while the header was still arriving (150 MiB took 16 s before)

    run(scenario)
    assert httpx.head(str(stub["url"]) + "/api/fleet/orbit/ping", verify=tls_context(stub)).status_code == 200


@pytest.mark.parametrize(
    ("request_head", "status", "reason"),
    [
        (b"GET /tuf/x HTTP/1.1\r\nHost: s\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(101)), 431, b"than 100"),
        (b"GET /tuf/x HTTP/1.1\r\nHost: s\r\nX-Long: " + b"a" * 8200 + b"\r\n", 431, b"a header line exceeds 8192"),
        (b"GET /" + b"a" * 8200 + b" HTTP/1.1\r\nHost: s\r\n", 414, b"the request line exceeds 8192"),
        (b"GET /tuf/x HTTP/1.1\r\nHost s\r\n", 400, b"Invalid HTTP request"),
    ],
    ids=["too-many-headers", "header-line", "request-line", "malformed"],
)
def test_header_limits_answer_before_the_application(
    stub: Info, request_head: bytes, status: int, reason: bytes
) -> None:
    async def scenario() -> None:
        reader, writer = await open_tls(stub)
        writer.write(request_head + b"\r\n")
        got = await asyncio.wait_for(until_closed(reader), ANSWER_DEADLINE)
        writer.close()
        assert status_of(got) == status, got[:200]
        assert reason in body_of(got)
        assert b"connection: close" in got

    run(scenario)


def test_an_answer_before_the_body_is_in_says_connection_close(stub: Info) -> None:
    """A bad device token is a 401 before the body is read. The connection closes after it, so the answer must say
    so: a keep-alive client that was not told sent its next request into the close (seen in the fuzz tests as
    "Server disconnected without sending a response")."""

    async def scenario() -> None:
        reader, writer = await open_tls(stub)
        body = b'{"error_source": "x"}'
        writer.write(
            b"POST /api/latest/fleet/device/no-such-token/refetch HTTP/1.1\r\nHost: stub\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
        )
        await writer.drain()
        answer = Answer(reader)
        await asyncio.wait_for(answer.begun.wait(), ANSWER_DEADLINE)  # the head alone was enough to answer
        writer.write(body)  # what the client still sends: read and discarded, then the connection ends cleanly
        writer.write(b"GET /api/fleet/orbit/ping HTTP/1.1\r\nHost: stub\r\n\r\n")
        got = await answer.result()
        writer.close()
        assert status_of(got) == 401, got[:200]
        head = got.partition(b"\r\n\r\n")[0].lower()
        assert b"\r\nconnection: close" in head, head
        assert got.count(b"HTTP/1.1 ") == 1  # the request sent after it was not answered: the client was told

    run(scenario)


# --- time ---------------------------------------------------------------------------------------------------------


def test_slowloris_headers_get_408(stub: Info) -> None:
    async def scenario() -> None:
        reader, writer = await open_tls(stub)
        writer.write(b"GET /api/fleet/orbit/ping HTTP/1.1\r\nHost: stub\r\n")
        started = time.monotonic()
        answer = Answer(reader)
        await asyncio.wait_for(dribble(writer, answer), ANSWER_DEADLINE)
        got = await answer.result()
        writer.close()
        assert status_of(got) == 408, got[:200]
        assert b"request headers not complete within 1.5 s" in body_of(got)
        assert 1.0 < time.monotonic() - started < ANSWER_DEADLINE

    run(scenario)


def test_slow_body_gets_408(stub: Info) -> None:
    async def scenario() -> None:
        reader, writer = await open_tls(stub)
        writer.write(b"POST /api/osquery/enroll HTTP/1.1\r\nHost: stub\r\nContent-Length: 1000\r\n\r\n{")
        started = time.monotonic()
        answer = Answer(reader)
        await asyncio.wait_for(dribble(writer, answer, b" "), ANSWER_DEADLINE)
        got = await answer.result()
        writer.close()
        assert status_of(got) == 408, got[:200]
        assert b"request body not complete within 1.5 s" in body_of(got)
        assert 1.0 < time.monotonic() - started < ANSWER_DEADLINE

    run(scenario)


def test_tls_connection_that_never_sends_a_request_is_closed(stub: Info) -> None:
    async def scenario() -> None:
        reader, writer = await open_tls(stub)
        started = time.monotonic()
        got = await asyncio.wait_for(until_closed(reader), ANSWER_DEADLINE)
        writer.close()
        assert got == b""
        assert 1.0 < time.monotonic() - started < ANSWER_DEADLINE

    run(scenario)


@pytest.mark.parametrize("hello", [b"", b"\x16\x03\x01\x02\x00\x01"], ids=["silent", "half-a-hello"])
def test_tls_handshake_that_never_finishes_is_closed(stub: Info, hello: bytes) -> None:
    async def scenario() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port_of(stub))
        writer.write(hello)
        started = time.monotonic()
        got = await asyncio.wait_for(until_closed(reader), ANSWER_DEADLINE)
        writer.close()
        assert got == b""
        assert 1.0 < time.monotonic() - started < ANSWER_DEADLINE

    run(scenario)


def test_idle_keep_alive_connection_is_closed_after_the_idle_timeout(stub: Info) -> None:
    async def scenario() -> None:
        reader, writer = await open_tls(stub)
        writer.write(b"HEAD /api/fleet/orbit/ping HTTP/1.1\r\nHost: stub\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), ANSWER_DEADLINE)
        assert status_of(head) == 200 and b"connection: close" not in head
        started = time.monotonic()
        rest = await asyncio.wait_for(until_closed(reader), ANSWER_DEADLINE)
        writer.close()
        assert rest == b""
        assert 1.0 < time.monotonic() - started < ANSWER_DEADLINE

    run(scenario)


# --- bodies -------------------------------------------------------------------------------------------------------


def carve_block_head(length: int, encoding: bytes = b"") -> bytes:
    return (
        b"POST /api/v1/osquery/carve/block HTTP/1.1\r\nHost: stub\r\nContent-Type: application/json\r\n"
        + encoding
        + b"Content-Length: %d\r\n\r\n" % length
    )


def test_oversized_carve_block_is_413_before_any_of_it_is_read(stub: Info) -> None:
    async def scenario() -> None:
        reader, writer = await open_tls(stub)
        writer.write(carve_block_head(200 * MIB))
        got = await asyncio.wait_for(until_closed(reader), ANSWER_DEADLINE)
        writer.close()
        assert status_of(got) == 413, got[:200]
        assert json.loads(body_of(got))["error"].startswith("Request exceeds the max size limit of")

    run(scenario)


def test_unauthenticated_carve_block_is_refused_when_its_data_begins(stub: Info) -> None:
    """80 MB of block data for a session that does not exist: 404 as soon as the data begins, not after 80 MB."""

    async def scenario() -> None:
        head = b'{"block_id": 0, "session_id": "no-such-session", "request_id": "q", "data": "'
        data_size = 80 * MIB
        reader, writer = await open_tls(stub)
        writer.write(carve_block_head(len(head) + data_size + 2) + head)
        answer = Answer(reader)
        sent = await send_until_answered(writer, answer, repeat(b"QUJD" * 16384, data_size))
        got = await answer.result()
        writer.close()
        assert status_of(got) == 404, got[:200]
        assert json.loads(body_of(got))["error"] == "validate carve block: unknown session_id"
        assert sent < 16 * MIB  # of 80

    run(scenario)


def test_carve_block_data_before_its_session_is_held_to_1_mib(stub: Info) -> None:
    async def scenario() -> None:
        data_size = 8 * MIB
        tail = b'", "session_id": "s", "block_id": 0, "request_id": "q"}'
        reader, writer = await open_tls(stub)
        writer.write(carve_block_head(10 + data_size + len(tail)) + b'{"data": "')
        answer = Answer(reader)
        await send_until_answered(writer, answer, repeat(b"QUJD" * 16384, data_size))
        got = await answer.result()
        writer.close()
        assert status_of(got) == 413, got[:200]
        assert "must come after session_id" in json.loads(body_of(got))["error"]

    run(scenario)


def test_a_real_carve_still_goes_through_in_pieces(stub: Info) -> None:
    content = bytes(range(256)) * 4096  # 1 MiB in two blocks
    with httpx.Client(base_url=str(stub["url"]), verify=tls_context(stub), timeout=30) as client:
        hardware_uuid = str(uuid.uuid4())
        key = client.post(
            "/api/osquery/enroll",
            json={
                "enroll_secret": SECRET,
                "host_identifier": hardware_uuid,
                "host_details": host_details(hardware_uuid),
            },
        ).json()["node_key"]
        begin = {
            "block_count": 2,
            "block_size": 600_000,
            "carve_size": len(content),
            "carve_id": str(uuid.uuid4()),
            "request_id": "fleet_distributed_query_1",
            "node_key": key,
        }
        session = client.post("/api/v1/osquery/carve/begin", json=begin).json()["session_id"]

    async def post_block(block_id: int, block: bytes) -> bytes:
        body = json.dumps(
            {"block_id": block_id, "session_id": session, "request_id": begin["request_id"], "data": ""}
        ).encode()
        body = body[:-2] + base64.b64encode(block) + body[-2:]  # data last, as osquery sends it
        reader, writer = await open_tls(stub)
        writer.write(carve_block_head(len(body)) + body[:100])
        for start in range(100, len(body), 50_000):  # the body arrives in pieces
            writer.write(body[start : start + 50_000])
            await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), ANSWER_DEADLINE)
        writer.close()
        return head

    async def scenario() -> None:
        assert status_of(await post_block(0, content[:600_000])) == 200
        assert status_of(await post_block(1, content[600_000:])) == 200

    run(scenario)
    carved = Path(str(stub["ca_cert"])).parent.parent / "carves" / f"{session}.bin"
    assert carved.read_bytes() == content


# --- a low open-files limit -----------------------------------------------------------------------------------------


class Attacker:
    """Holds hostile connections open: idle TLS, half-sent headers, and handshakes that never finish."""

    def __init__(self, info: Info) -> None:
        self._info = info
        self.writers: list[asyncio.StreamWriter] = []

    async def open(self, count: int) -> None:
        await asyncio.gather(*(self._one(n) for n in range(count)))

    async def _one(self, n: int) -> None:
        try:
            if n % 3 == 0:  # a TCP connection that never starts TLS
                _reader, writer = await asyncio.open_connection("127.0.0.1", port_of(self._info))
            else:
                _reader, writer = await open_tls(self._info)
                if n % 3 == 1:  # slowloris: headers begun, never finished
                    writer.write(b"GET /api/fleet/orbit/ping HTTP/1.1\r\nHost: stub\r\n")
        except (OSError, asyncio.IncompleteReadError):
            return  # shed before its handshake finished: what the stub is meant to do under pressure
        self.writers.append(writer)

    def close(self) -> None:
        for writer in self.writers:
            writer.transport.abort()


def test_low_open_files_limit_still_lets_an_enrolled_agent_in(tmp_path: Path) -> None:
    """Under a 256-descriptor limit, 600 hostile connections never decide who gets in: the stub keeps its own cap
    (176 connections) below the limit, sheds unproven idle connections first, and the agent's requests succeed —
    on its proven keep-alive connection and on new connections alike."""
    process = StubProcess(tmp_path / "data", f"--enroll-secret={SECRET}", env=clean_env(), open_files=256)
    try:
        info = process.wait_ready()
        stub_process = psutil.Process(process.proc.pid)
        if stub_process.rlimit(psutil.RLIMIT_NOFILE)[0] != 256:
            pytest.skip("this machine lets the stub raise its own open-files limit")
        context = tls_context(info)
        hardware_uuid = str(uuid.uuid4())
        with httpx.Client(base_url=str(info["url"]), verify=context, timeout=30) as agent:
            key = agent.post(
                "/api/osquery/enroll",
                json={
                    "enroll_secret": SECRET,
                    "host_identifier": hardware_uuid,
                    "host_details": host_details(hardware_uuid),
                },
            ).json()["node_key"]
            assert agent.post("/api/osquery/config", json={"node_key": key}).status_code == 200  # proven now

            async def attack_then_check() -> None:
                attacker = Attacker(info)
                try:
                    for _round in range(2):
                        await attacker.open(300)
                        assert stub_process.num_fds() < 256
                        # the agent's proven keep-alive connection, then fresh connections
                        answers = [await asyncio.to_thread(agent.post, "/api/osquery/config", json={"node_key": key})]
                        for _ in range(3):
                            with httpx.Client(base_url=str(info["url"]), verify=context, timeout=30) as fresh:
                                answers.append(
                                    await asyncio.to_thread(
                                        fresh.post, "/api/osquery/distributed/read", json={"node_key": key}
                                    )
                                )
                        assert [a.status_code for a in answers] == [200] * 4
                finally:
                    attacker.close()

            run(attack_then_check)
            admin = {"Authorization": f"Bearer {info['admin_token']}"}
            metrics = agent.get("/metrics", headers=admin).text
    finally:
        assert process.stop() == 0
    _out, err = process.output()
    assert "Too many open files" not in err and "Traceback" not in err
    assert "cap=176 open_files_limit=256" in err
    shed = [line for line in metrics.splitlines() if line.startswith("fleet_stub_connections_shed_unproven_total")]
    assert shed and int(shed[0].split()[-1]) > 0
    assert "fleet_stub_connections_shed_proven_total" not in metrics
