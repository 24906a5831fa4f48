"""``packager.formats.parallel_gzip``: one valid gzip member whatever the sizes, the same bytes whatever the thread
count, and nothing half-done on failure."""

from __future__ import annotations

import gzip
import io
import os
import subprocess
import zlib

import pytest

from packager.formats.parallel_gzip import DICTIONARY_BYTES, ParallelGzipWriter

BLOCK = 64 * 1024


def compress(pieces: list[bytes], *, workers: int = 2, level: int = 6, block: int = BLOCK) -> bytes:
    sink = io.BytesIO()
    with ParallelGzipWriter(sink, level=level, block_bytes=block, workers=workers) as writer:
        for piece in pieces:
            writer.write(piece)
        assert writer.tell() == sum(map(len, pieces))
    return sink.getvalue()


def text_like(size: int) -> bytes:
    words = [b"orbit", b"osqueryd", b"fleet", b"\x00\x01", b"tuf", b"  "]
    out = bytearray()
    seed = 7
    while len(out) < size:
        seed = (seed * 1103515245 + 12345) % 2**31
        out += words[seed % len(words)]
    return bytes(out[:size])


@pytest.mark.parametrize("size", [0, 1, BLOCK - 1, BLOCK, BLOCK + 1, 5 * BLOCK + 17])
def test_any_size_reads_back_with_every_reader(size: int, tmp_path: object) -> None:
    data = text_like(size // 2) + os.urandom(size - size // 2)
    packed = compress([data[i : i + 7000] for i in range(0, len(data), 7000)] or [b""])
    assert gzip.decompress(packed) == data
    assert zlib.decompress(packed, wbits=31) == data
    result = subprocess.run(["gzip", "-dc"], input=packed, capture_output=True, check=True, timeout=30)
    assert result.stdout == data


def test_matches_reach_across_blocks() -> None:
    """Each block is primed with the end of the one before: a 16 KiB run that ends block 1 and is repeated at the
    start of block 2 costs nearly nothing the second time."""
    chunk = os.urandom(16 * 1024)
    data = os.urandom(BLOCK - 16 * 1024) + chunk + chunk + os.urandom(100)
    assert len(compress([data])) < len(data) - 12 * 1024


@pytest.mark.parametrize("level", [1, 6, 9])
def test_the_output_does_not_depend_on_threads_or_write_sizes(level: int) -> None:
    data = text_like(7 * BLOCK + 3)
    one = compress([data], workers=1, level=level)
    assert compress([data[i : i + 999] for i in range(0, len(data), 999)], workers=4, level=level) == one
    assert gzip.decompress(one) == data


def test_a_failure_inside_the_block_leaves_no_trailer_and_no_threads() -> None:
    sink = io.BytesIO()
    with pytest.raises(RuntimeError), ParallelGzipWriter(sink, block_bytes=BLOCK) as writer:
        writer.write(os.urandom(3 * BLOCK))
        raise RuntimeError("the tar writer failed")
    with pytest.raises((EOFError, OSError, zlib.error)):
        gzip.decompress(sink.getvalue())
    with pytest.raises(ValueError):
        writer.write(b"more")


@pytest.mark.parametrize(("level", "block"), [(10, BLOCK), (-1, BLOCK), (6, DICTIONARY_BYTES - 1)])
def test_bad_settings_are_refused(level: int, block: int) -> None:
    with pytest.raises(ValueError):
        ParallelGzipWriter(io.BytesIO(), level=level, block_bytes=block)
