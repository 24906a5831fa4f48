"""``tuf_updates.parallel_hashes``: the digests of every algorithm, the bytes in order to the sink, and no thread
left behind on any path."""

from __future__ import annotations

import hashlib
import os
import threading

import pytest

from tuf_updates.parallel_hashes import ParallelHashes


def _chunks() -> list[bytes]:
    sizes = [0, 1, 16384, 100_000, 7, 1 << 20, 3 * (1 << 20) + 5, 16384]
    return [os.urandom(size) for size in sizes]


def _hash_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name.startswith("hash-")]


@pytest.mark.parametrize("batch_bytes", [1, 4096, 1 << 20])
def test_every_digest_and_the_sink_see_all_bytes_in_order(batch_bytes: int) -> None:
    chunks = _chunks()
    written: list[bytes] = []
    with ParallelHashes(["sha512", "sha256", "sha512"], sink=written.append, batch_bytes=batch_bytes) as hashes:
        for chunk in chunks:
            hashes.update(chunk)
        digests = hashes.hexdigests()
    data = b"".join(chunks)
    assert digests == {"sha512": hashlib.sha512(data).hexdigest(), "sha256": hashlib.sha256(data).hexdigest()}
    assert b"".join(written) == data
    assert not _hash_threads()


def test_no_bytes_at_all() -> None:
    with ParallelHashes(["sha256"]) as hashes:
        assert hashes.hexdigests() == {"sha256": hashlib.sha256(b"").hexdigest()}


def test_a_failed_transfer_ends_the_threads_and_writes_nothing_more() -> None:
    written: list[bytes] = []
    with pytest.raises(ConnectionError), ParallelHashes(["sha512", "sha256"], sink=written.append) as hashes:
        hashes.update(b"partial")
        raise ConnectionError("the server went away")
    assert written == []
    assert not _hash_threads()


def test_a_failing_sink_still_ends_the_threads() -> None:
    def full_disk(_data: bytes) -> None:
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"), ParallelHashes(["sha256"], sink=full_disk, batch_bytes=1) as hashes:
        hashes.update(b"x")
    assert not _hash_threads()


@pytest.mark.parametrize("algorithms", [[], ["no-such-hash"]])
def test_bad_algorithms_are_refused(algorithms: list[str]) -> None:
    with pytest.raises(ValueError):
        ParallelHashes(algorithms)
    assert not _hash_threads()


def test_a_sink_error_stops_the_transfer_at_a_later_batch() -> None:
    """The sink writes on its own thread; its failure reaches the receiver at the next batches, not only at the end."""
    failed = threading.Event()

    def full_disk(_data: bytes) -> None:
        failed.set()
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"), ParallelHashes(["sha256"], sink=full_disk, batch_bytes=1) as hashes:
        hashes.update(b"x")
        assert failed.wait(30)
        for _ in range(1000):  # far more batches than the queues hold: the error ends this loop, never a full queue
            hashes.update(b"y")
    assert not _hash_threads()


def test_a_failed_transfer_does_not_hide_its_error_behind_the_sinks() -> None:
    def full_disk(_data: bytes) -> None:
        raise OSError(28, "No space left on device")

    with pytest.raises(ConnectionError), ParallelHashes(["sha256"], sink=full_disk, batch_bytes=1) as hashes:
        hashes.update(b"x")
        raise ConnectionError("the server went away")
    assert not _hash_threads()
