"""The httpx fetcher without a network: deadlines, timeouts, HTTP errors, length caps, Date header, spooling."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from tuf.api import exceptions

from tuf_updates.fetcher import DeadlinePolicy, HttpxFetcher, parse_http_date

URL = "https://updates.example/tuf/timestamp.json"


class FakeMonotonic:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Drip(httpx.SyncByteStream):
    """One byte per (simulated) second, for ever: the clock moves as the bytes arrive."""

    def __init__(self, clock: FakeMonotonic, total: int | None = None) -> None:
        self.clock, self.total, self.sent = clock, total, 0

    def __iter__(self) -> Iterator[bytes]:
        while self.total is None or self.sent < self.total:
            self.clock.now += 1.0
            self.sent += 1
            yield b"x"


class Body(httpx.SyncByteStream):
    """A streamed body, as a network transport yields it (``content=`` would be buffered by httpx up front)."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __iter__(self) -> Iterator[bytes]:
        yield self.data


class Stall(httpx.SyncByteStream):
    def __iter__(self) -> Iterator[bytes]:
        yield b"{"
        raise httpx.ReadTimeout("no bytes for 30 s")


def _fetcher(
    handler: Callable[[httpx.Request], httpx.Response], clock: FakeMonotonic | None = None, **kwargs: object
) -> HttpxFetcher:
    client = httpx.Client(transport=httpx.MockTransport(handler))
    return HttpxFetcher(client, monotonic=clock or FakeMonotonic(), **kwargs)  # type: ignore[arg-type]


def test_a_dripping_server_is_cut_off_at_the_deadline(tmp_path: Path) -> None:
    clock = FakeMonotonic()
    drip = Drip(clock)
    fetcher = _fetcher(lambda r: httpx.Response(200, stream=drip), clock, policy=DeadlinePolicy(base=5.0, min_rate=1e9))
    with pytest.raises(exceptions.SlowRetrievalError, match="exceeded its deadline"):
        fetcher.download_bytes(URL, 16384)
    assert drip.sent == 6  # 5 s budget: the sixth byte arrives too late
    assert fetcher.bytes_received == 6


def test_the_deadline_grows_with_the_allowed_length() -> None:
    policy = DeadlinePolicy(base=30.0, min_rate=1000.0)
    assert policy.deadline(0) == 30.0
    assert policy.deadline(100_000) == 130.0
    clock = FakeMonotonic()
    slow_link = DeadlinePolicy(base=5.0, min_rate=1.0)  # 5 s + 1 s per byte allowed
    fetcher = _fetcher(lambda r: httpx.Response(200, stream=Drip(clock, total=50)), clock, policy=slow_link)
    assert fetcher.download_bytes(URL, 50) == b"x" * 50


def test_a_stalled_read_is_slow_retrieval() -> None:
    fetcher = _fetcher(lambda r: httpx.Response(200, stream=Stall()))
    with pytest.raises(exceptions.SlowRetrievalError, match="read timed out"):
        fetcher.download_bytes(URL, 100)


def test_connect_timeout_and_refusal() -> None:
    def timeout(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectTimeout("connect timed out")

    def refused(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    with pytest.raises(exceptions.SlowRetrievalError):
        _fetcher(timeout).download_bytes(URL, 100)
    with pytest.raises(exceptions.DownloadError, match="ConnectError") as refused_error:
        _fetcher(refused).download_bytes(URL, 100)
    assert not isinstance(refused_error.value, exceptions.SlowRetrievalError)


@pytest.mark.parametrize("status", [403, 404, 500, 503])
def test_http_errors_carry_their_status(status: int) -> None:
    fetcher = _fetcher(lambda r: httpx.Response(status, stream=Body(b"nope")))
    with pytest.raises(exceptions.DownloadHTTPError) as caught:
        fetcher.download_bytes(URL, 100)
    assert caught.value.status_code == status


def test_endless_or_oversized_bodies_stop_at_the_cap() -> None:
    clock = FakeMonotonic()
    drip = Drip(clock)
    fetcher = _fetcher(lambda r: httpx.Response(200, stream=drip), clock, policy=DeadlinePolicy(1e9, 1e9))
    with pytest.raises(exceptions.DownloadLengthMismatchError, match="exceeding the maximum allowed length of 10"):
        fetcher.download_bytes(URL, 10)
    assert drip.sent == 11


def test_requests_ask_for_identity_and_record_the_server_date() -> None:
    seen: list[httpx.Request] = []
    server_time = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, stream=Body(b"{}"), headers={"Date": "Wed, 02 Jan 2030 03:04:05 GMT"})

    local = server_time + timedelta(hours=2)
    fetcher = _fetcher(handler, wall_clock=lambda: local)
    assert fetcher.download_bytes(URL, 100) == b"{}"
    assert seen[0].headers["accept-encoding"] == "identity"
    assert fetcher.last_url == URL and fetcher.requests == 1
    assert fetcher.last_server_date is not None
    assert fetcher.last_server_date.server == server_time
    assert fetcher.last_server_date.received_local == local


def test_http_dates() -> None:
    assert parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT") == datetime(1994, 11, 6, 8, 49, 37, tzinfo=UTC)
    assert parse_http_date(None) is None
    assert parse_http_date("yesterday") is None


def test_the_spool_lives_in_the_staging_dir_and_leaves_nothing(tmp_path: Path) -> None:
    observed: list[list[str]] = []

    class Watching(httpx.SyncByteStream):
        def __iter__(self) -> Iterator[bytes]:
            yield b"abc"
            observed.append(sorted(p.name for p in tmp_path.iterdir()))
            yield b"def"

    fetcher = _fetcher(lambda r: httpx.Response(200, stream=Watching()), spool_dir=tmp_path)
    with fetcher.download_file(URL, 100) as spooled:
        assert spooled.read() == b"abcdef"
    with pytest.raises(exceptions.DownloadLengthMismatchError):
        fetcher.download_bytes(URL, 4)
    assert list(tmp_path.iterdir()) == []  # unnamed temporary files (O_TMPFILE): nothing to clean up, ever
    assert observed == [[], []]
