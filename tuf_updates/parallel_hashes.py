"""Hash a download with several algorithms at once, each in its own thread, while the caller goes on receiving.

A target signed with sha512 and sha256 is checked against both; hashed one after the other on the receiving thread
they cost about as much CPU time as the TLS transfer itself. Here the receiver gathers the chunks it gets (16 KiB
TLS records) into 1 MiB batches, writes each batch to the file with one call and hands the same ``bytes`` object to
one thread per algorithm; ``hashlib`` releases the GIL while it hashes, so the algorithms and the transfer run on
different cores. Joining a batch is one copy of the data, and it is what makes this fast: handing the hash threads
the 64 chunks of a batch one by one costs each a GIL hand-off per chunk, and measured slower (issue 19; ADR 0020).
The hash threads run at the lowest priority where the OS allows it per thread (Linux), so on a busy machine they
use the time the transfer leaves idle rather than slow it down. The sink (the file's ``write``) has a thread of its
own too, at normal priority: the receiving thread is the transfer's critical path, and copying each batch into the
page cache there cost it ≈ 10 % (issue 19). A sink error (a full disk) stops the download at its next batch and is
raised to the caller. Queues are bounded: a receiver faster than the slowest consumer waits instead of holding the
whole file in memory.
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


class _Consumer:
    """One thread doing ``work`` on every batch in order. After a failure it drains its queue unread (the receiver
    never blocks on a dead consumer) and keeps the error for the receiver."""

    def __init__(self, name: str, work: Callable[[bytes], object], *, lowest_priority: bool) -> None:
        self.feed: queue.Queue[bytes | None] = queue.Queue(maxsize=MAX_QUEUED_BATCHES)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(work, lowest_priority), name=f"hash-{name}", daemon=True)
        self.thread.start()

    def _run(self, work: Callable[[bytes], object], lowest_priority: bool) -> None:
        if lowest_priority:
            _lowest_priority()
        while (batch := self.feed.get()) is not None:
            if self.error is None:
                try:
                    work(batch)
                except BaseException as exc:  # handed to the receiving thread, raised there
                    self.error = exc

    def stop(self) -> None:
        self.feed.put(None)
        self.thread.join()


class ParallelHashes:
    """``update(chunk)`` as the bytes arrive, then ``hexdigests()``; a context manager, so the threads always end.

    ``sink`` receives every byte in order, batched (e.g. a file's ``write``), on its own thread: the batch is joined
    once for all. Its error (e.g. ``OSError`` for a full disk) is raised by a later ``update`` or by ``hexdigests``.
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
        self._batch_bytes = batch_bytes
        self._batch: list[bytes] = []
        self._batched = 0
        self._finished = False
        self._consumers = [
            _Consumer(name, hasher.update, lowest_priority=True) for name, hasher in self._hashers.items()
        ]
        self._sink = None if sink is None else _Consumer("sink", sink, lowest_priority=False)
        if self._sink is not None:
            self._consumers.append(self._sink)

    def update(self, chunk: bytes) -> None:
        self._batch.append(chunk)
        self._batched += len(chunk)
        if self._batched >= self._batch_bytes:
            self._send_batch()

    def _send_batch(self) -> None:
        self._raise_sink_error()
        if not self._batch:
            return
        data = self._batch[0] if len(self._batch) == 1 else b"".join(self._batch)
        self._batch, self._batched = [], 0
        for consumer in self._consumers:
            consumer.feed.put(data)

    def _raise_sink_error(self) -> None:
        if self._sink is not None and self._sink.error is not None:
            raise self._sink.error

    def flush(self) -> None:
        """Hand what is gathered to the sink and the hashes (see ``hexdigests`` for when the sink has it all)."""
        self._send_batch()

    def _finish(self, *, failed: bool) -> None:
        if self._finished:
            return
        self._finished = True
        try:
            if not failed:
                self._send_batch()
        finally:
            for consumer in self._consumers:
                consumer.stop()
        if not failed:
            self._raise_sink_error()

    def hexdigests(self) -> dict[str, str]:
        """Every algorithm's digest of all the bytes given to ``update``, once the sink has written them all (its
        error raised here); no more updates after this."""
        self._finish(failed=False)
        return {name: hasher.hexdigest() for name, hasher in self._hashers.items()}

    def __enter__(self) -> ParallelHashes:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is not None:
            self._batch, self._batched = [], 0  # a failed transfer: nothing more reaches the sink
        self._finish(failed=exc_type is not None)


def _lowest_priority() -> None:
    """This thread at nice 19 (Linux: a thread is a task with its own nice value); elsewhere unchanged."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
