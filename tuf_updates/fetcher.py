"""python-tuf's network seam on httpx: per-read timeouts, a total deadline per file, spooling into our staging dir.

A read that stalls longer than the client's read timeout, or a file that is not complete before its deadline (a
server dripping a byte a second), raises ``SlowRetrievalError``; an HTTP status >= 400 raises ``DownloadHTTPError``.
The fetcher also remembers the last URL it fetched and the server's ``Date`` header, for error attribution and the
clock-skew check of the repository client.
"""

from __future__ import annotations

import contextlib
import email.utils
import logging
import tempfile
import time
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

import httpx
from tuf.api import exceptions
from tuf.ngclient import FetcherInterface

logger = logging.getLogger(__name__)

UNKNOWN_LENGTH = 16 * 1024 * 1024  # the budget basis of a plain fetch() that knows no maximum length
ERROR_BODY_LIMIT = 64 * 1024  # an error body up to this size is read to its end, keeping the connection


@dataclass(frozen=True)
class DeadlinePolicy:
    """Total time allowed for one file: ``base`` seconds plus ``max_length`` at ``min_rate`` bytes per second."""

    base: float = 30.0
    min_rate: float = 50 * 1024.0

    def deadline(self, max_length: int) -> float:
        return self.base + max(max_length, 0) / self.min_rate


def parse_http_date(value: str | None) -> datetime | None:
    """The ``Date`` header as an aware UTC datetime, or ``None`` when absent or malformed."""
    if not value:
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return parsed.astimezone(UTC) if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


@dataclass(frozen=True)
class ServerDate:
    """A server's ``Date`` header and the local wall-clock time at which it was received."""

    server: datetime
    received_local: datetime


class HttpxFetcher(FetcherInterface):
    """A ``FetcherInterface`` on a shared ``httpx.Client``.

    ``read_timeout`` caps each gap between bytes; ``policy`` caps the whole file. ``monotonic`` and ``wall_clock``
    are injectable for tests. Downloads are spooled into ``spool_dir`` (an unnamed temporary file where the OS
    supports it, so an interrupted download leaves nothing behind).
    """

    def __init__(
        self,
        client: httpx.Client,
        *,
        read_timeout: float = 30.0,
        policy: DeadlinePolicy | None = None,
        spool_dir: Path | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime] | None = None,
    ) -> None:
        self._client = client
        self._read_timeout = read_timeout
        self._policy = policy or DeadlinePolicy()
        self.spool_dir = spool_dir
        self._monotonic = monotonic
        self._wall_clock = wall_clock or (lambda: datetime.now(UTC))
        self.last_url: str | None = None
        self.last_server_date: ServerDate | None = None
        self.requests = 0
        self.bytes_received = 0

    def _fetch(self, url: str) -> Iterator[bytes]:
        return self._open(url, self._policy.deadline(UNKNOWN_LENGTH))

    def open_target(self, url: str, max_length: int) -> Generator[bytes, None, None]:
        """The raw chunks of a target, with the deadline sized to its signed length (for one-pass verification)."""
        return self._open(url, self._policy.deadline(max_length))

    def _open(self, url: str, budget: float) -> Generator[bytes, None, None]:
        """Send the request eagerly, so connection errors and HTTP statuses surface before the first chunk."""
        deadline = self._monotonic() + budget
        self.last_url = url
        self.requests += 1
        base = self._client.timeout
        timeout = httpx.Timeout(
            connect=base.connect, read=min(self._read_timeout, budget), write=base.write, pool=base.pool
        )
        request = self._client.build_request("GET", url, headers={"Accept-Encoding": "identity"}, timeout=timeout)
        try:
            response = self._client.send(request, stream=True)
        except httpx.TimeoutException as exc:
            raise exceptions.SlowRetrievalError(f"timed out requesting {url}: {exc}") from exc
        except httpx.HTTPError as exc:
            raise exceptions.DownloadError(f"failed to request {url}: {type(exc).__name__}: {exc}") from exc
        self._note_date(response)
        if response.status_code >= 400:
            self._drain_error_body(response)
            raise exceptions.DownloadHTTPError(f"HTTP {response.status_code} for {url}", response.status_code)
        return self._chunks(response, url, deadline)

    @staticmethod
    def _drain_error_body(response: httpx.Response) -> None:
        """Read a small error body to its end so the connection goes back to the pool: every check ends with a 404
        for the next root, and an unread body would cost the next request a new TLS handshake. A body larger than
        ``ERROR_BODY_LIMIT`` (or one that fails) is not worth it: the connection is dropped instead."""
        try:
            declared = int(response.headers.get("content-length", "-1"))
        except ValueError:
            declared = -1
        try:
            if 0 <= declared <= ERROR_BODY_LIMIT:
                for _chunk in response.iter_raw():
                    pass
        except httpx.HTTPError:
            pass  # the status is the answer; the connection is closed below
        finally:
            response.close()

    def _note_date(self, response: httpx.Response) -> None:
        server = parse_http_date(response.headers.get("date"))
        if server is not None:
            self.last_server_date = ServerDate(server, self._wall_clock())

    def _chunks(self, response: httpx.Response, url: str, deadline: float) -> Generator[bytes, None, None]:
        try:
            # raw bytes exactly as signed (we asked for identity); each item is one network read, so the
            # deadline is checked after every read however small
            for chunk in response.iter_raw():
                self.bytes_received += len(chunk)
                if self._monotonic() > deadline:
                    raise exceptions.SlowRetrievalError(f"download of {url} exceeded its deadline")
                yield chunk
        except httpx.TimeoutException as exc:
            raise exceptions.SlowRetrievalError(f"read timed out for {url}: {exc}") from exc
        except httpx.HTTPError as exc:
            raise exceptions.DownloadError(f"failed reading {url}: {type(exc).__name__}: {exc}") from exc
        finally:
            response.close()

    @contextmanager
    def download_file(self, url: str, max_length: int) -> Iterator[IO[bytes]]:
        """Like the base class, with a deadline sized to ``max_length`` and the spool file in ``spool_dir``."""
        received = 0
        with tempfile.TemporaryFile(dir=self.spool_dir) as spool:
            try:
                with contextlib.closing(self._open(url, self._policy.deadline(max_length))) as chunks:
                    for chunk in chunks:
                        received += len(chunk)
                        if received > max_length:
                            raise exceptions.DownloadLengthMismatchError(
                                f"Downloaded {received} bytes exceeding the maximum allowed length of {max_length}"
                            )
                        spool.write(chunk)
            except exceptions.DownloadError:
                raise
            except OSError:
                raise  # local disk trouble (e.g. ENOSPC) is not a download error
            except Exception as exc:
                raise exceptions.DownloadError(f"Failed to download {url}") from exc
            logger.debug("downloaded url=%s bytes=%d max=%d", url, received, max_length)
            spool.seek(0)
            yield spool
