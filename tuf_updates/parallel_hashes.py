"""Hash a download with several algorithms at once, each in its own thread, while the caller goes on receiving.

A target signed with sha512 and sha256 is checked against both; hashed one after the other on the receiving thread
they cost about as much CPU time as the TLS transfer itself. Here the receiver gathers the chunks it gets (16 KiB
TLS records) into 1 MiB batches, writes each batch to the file with one call and hands the same ``bytes`` object to
one thread per algorithm; ``hashlib`` releases the GIL while it hashes, so the algorithms and the transfer run on
different cores. Joining a batch is one copy of the data, and it is what makes this fast: handing the hash threads
the 64 chunks of a batch one by one costs each a GIL hand-off per chunk, and measured slower (issue 19; ADR 0020).
The hash threads run at the lowest priority where the OS allows it per thread (Linux), so on a busy machine they
use the time the transfer leaves idle rather than slow it down. Queues are bounded: a receiver faster than the
slowest hash waits instead of holding the whole file in memory.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import queue
import sys
import threading
from collections.abc import Callable, Iterable
from types import TracebackType

BATCH_BYTES = 1024 * 1024
MAX_QUEUED_BATCHES = 8  # per algorithm: at most ≈ 8 MiB of a download waits for a hash thread


class ParallelHashes:
    """``update(chunk)`` as the bytes arrive, then ``hexdigests()``; a context manager, so the threads always end.

    ``sink`` receives every byte in order, batched (e.g. a file's ``write``): the batch is joined once for both.
    """

    def __init__(
        self,
        algorithms: Iterable[str],
        *,
        sink: Callable[[bytes], object] | None = None,
        batch_bytes: int = BATCH_BYTES,
    ) -> None:
        names = list(dict.fromkeys(algorithms))
        if not names:
            raise ValueError("at least one hash algorithm is needed")
        self._hashers = {name: hashlib.new(name) for name in names}  # ValueError for an unknown algorithm
        self._sink = sink
        self._batch_bytes = batch_bytes
        self._batch: list[bytes] = []
        self._batched = 0
        self._queues: list[queue.Queue[bytes | None]] = []
        self._threads: list[threading.Thread] = []
        self._finished = False
        for name, hasher in self._hashers.items():
            feed: queue.Queue[bytes | None] = queue.Queue(maxsize=MAX_QUEUED_BATCHES)
            thread = threading.Thread(target=_hash_batches, args=(hasher, feed), name=f"hash-{name}", daemon=True)
            self._queues.append(feed)
            self._threads.append(thread)
            thread.start()

    def update(self, chunk: bytes) -> None:
        self._batch.append(chunk)
        self._batched += len(chunk)
        if self._batched >= self._batch_bytes:
            self._send_batch()

    def _send_batch(self) -> None:
        if not self._batch:
            return
        data = self._batch[0] if len(self._batch) == 1 else b"".join(self._batch)
        self._batch, self._batched = [], 0
        for feed in self._queues:
            feed.put(data)
        if self._sink is not None:
            self._sink(data)

    def flush(self) -> None:
        """Hand what is gathered to the sink and the hashes now (before the caller syncs its file)."""
        self._send_batch()

    def _finish(self) -> None:
        if self._finished:
            return
        self._finished = True
        try:
            self._send_batch()
        finally:
            for feed in self._queues:
                feed.put(None)
            for thread in self._threads:
                thread.join()

    def hexdigests(self) -> dict[str, str]:
        """Every algorithm's digest of all the bytes given to ``update``; no more updates after this."""
        self._finish()
        return {name: hasher.hexdigest() for name, hasher in self._hashers.items()}

    def __enter__(self) -> ParallelHashes:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is not None:
            self._batch, self._batched = [], 0  # a failed transfer: nothing more reaches the sink
        self._finish()


def _lowest_priority() -> None:
    """This thread at nice 19 (Linux: a thread is a task with its own nice value); elsewhere unchanged."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)


def _hash_batches(hasher: hashlib._Hash, feed: queue.Queue[bytes | None]) -> None:
    _lowest_priority()
    while (batch := feed.get()) is not None:
        hasher.update(batch)
