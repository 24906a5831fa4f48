"""cpio "odc" (POSIX.1 portable, magic ``070707``) writer for the macOS Payload and Scripts archives.

Format (docs/reference/packaging.md §5.5): per entry a 76-byte ASCII header of fixed-width octal fields — magic, dev(6),
ino(6), mode(6), uid(6), gid(6), nlink(6), rdev(6), mtime(11), namesize(6, including the NUL), filesize(11) —
then the NUL-terminated name, then the data with no padding. Directories carry no data, symlinks carry their
target. The archive ends with ``TRAILER!!!`` and, like GNU ``cpio -o``, is padded with NULs to a 512-byte block.

Choices that make the output reproducible and match ``find . | cpio -o -H odc -R 0:80``: one owner for every
entry, one fixed mtime, sequential inode numbers from 1, nlink 2 for directories and 1 otherwise, dev/rdev 0.
The writer only writes to the stream it is given and reads only the streams it is handed.
"""

from __future__ import annotations

import stat
from typing import Final, Protocol

MAGIC: Final = b"070707"
HEADER_SIZE: Final = 76
TRAILER_NAME: Final = "TRAILER!!!"
BLOCK_SIZE: Final = 512
MAX_FILE_SIZE: Final = 8**11 - 1  # filesize is 11 octal digits: 8 GiB - 1
MAX_MTIME: Final = 8**11 - 1
MAX_SMALL_FIELD: Final = 8**6 - 1  # ino, uid, gid, nlink, namesize: 6 octal digits (262143)
MAX_ENTRIES: Final = MAX_SMALL_FIELD  # inode numbers are unique and sequential from 1
_COPY_CHUNK: Final = 1 << 20


class Reader(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class Writer(Protocol):
    def write(self, data: bytes, /) -> object: ...


class CpioLimitError(ValueError):
    """An entry does not fit the odc format (size, name, owner, time or entry count)."""


def _octal(value: int, width: int, field: str) -> bytes:
    if value < 0 or value >= 8**width:
        raise CpioLimitError(f"cpio odc: {field} {value} does not fit in {width} octal digits (max {8**width - 1})")
    return b"%0*o" % (width, value)


def odc_header(
    name: bytes,
    *,
    ino: int,
    mode: int,
    uid: int,
    gid: int,
    nlink: int,
    mtime: int,
    filesize: int,
    dev: int = 0,
    rdev: int = 0,
) -> bytes:
    """The 76-byte header followed by the NUL-terminated name."""
    if b"\0" in name or not name:
        raise CpioLimitError(f"cpio odc: invalid entry name {name!r}")
    namesize = len(name) + 1
    header = b"".join(
        (
            MAGIC,
            _octal(dev, 6, "dev"),
            _octal(ino, 6, "inode"),
            _octal(mode, 6, "mode"),
            _octal(uid, 6, "uid"),
            _octal(gid, 6, "gid"),
            _octal(nlink, 6, "nlink"),
            _octal(rdev, 6, "rdev"),
            _octal(mtime, 11, "mtime"),
            _octal(namesize, 6, "name size"),
            _octal(filesize, 11, "file size"),
        )
    )
    assert len(header) == HEADER_SIZE
    return header + name + b"\0"


class OdcWriter:
    """Writes entries in the order they are added; ``close()`` writes the trailer and the block padding."""

    def __init__(self, out: Writer, *, uid: int = 0, gid: int = 0, mtime: int = 0) -> None:
        if not 0 <= mtime <= MAX_MTIME:
            raise CpioLimitError(f"cpio odc: mtime {mtime} is outside 0..{MAX_MTIME}")
        self._out = out
        self._uid = uid
        self._gid = gid
        self._mtime = mtime
        self._next_ino = 1
        self._written = 0
        self._closed = False

    @property
    def bytes_written(self) -> int:
        return self._written

    def _emit(self, data: bytes) -> None:
        self._out.write(data)
        self._written += len(data)

    def _header(self, name: str, mode: int, nlink: int, filesize: int) -> None:
        if self._closed:
            raise ValueError("cpio odc: archive already closed")
        if self._next_ino > MAX_ENTRIES:
            raise CpioLimitError(f"cpio odc: more than {MAX_ENTRIES} entries (inode numbers have 6 octal digits)")
        encoded = name.encode("utf-8")
        self._emit(
            odc_header(
                encoded,
                ino=self._next_ino,
                mode=mode,
                uid=self._uid,
                gid=self._gid,
                nlink=nlink,
                mtime=self._mtime,
                filesize=filesize,
            )
        )
        self._next_ino += 1

    def add_directory(self, name: str, permissions: int) -> None:
        self._header(name, stat.S_IFDIR | stat.S_IMODE(permissions), 2, 0)

    def add_symlink(self, name: str, target: str, permissions: int = 0o777) -> None:
        data = target.encode("utf-8")
        if not data or b"\0" in data:
            raise CpioLimitError(f"cpio odc: invalid symlink target {target!r} for {name}")
        self._header(name, stat.S_IFLNK | stat.S_IMODE(permissions), 1, len(data))
        self._emit(data)

    def add_bytes(self, name: str, permissions: int, data: bytes) -> None:
        self._header(name, stat.S_IFREG | stat.S_IMODE(permissions), 1, len(data))
        self._emit(data)

    def add_stream(self, name: str, permissions: int, size: int, source: Reader) -> None:
        """Copies exactly ``size`` bytes from ``source``; a shorter or longer source is an error."""
        if size > MAX_FILE_SIZE:
            raise CpioLimitError(f"cpio odc: {name} is {size} bytes; odc stores at most {MAX_FILE_SIZE} (8 GiB - 1)")
        self._header(name, stat.S_IFREG | stat.S_IMODE(permissions), 1, size)
        remaining = size
        while remaining:
            chunk = source.read(min(_COPY_CHUNK, remaining))
            if not chunk:
                raise ValueError(f"cpio odc: {name} ended {remaining} bytes early (did it change while packaging?)")
            self._emit(chunk)
            remaining -= len(chunk)
        if source.read(1):
            raise ValueError(f"cpio odc: {name} is longer than {size} bytes (did it change while packaging?)")

    def close(self) -> None:
        """Trailer (as GNU cpio writes it: nlink 1, everything else 0) and NUL padding to 512 bytes."""
        if self._closed:
            return
        self._emit(
            odc_header(TRAILER_NAME.encode(), ino=0, mode=0, uid=0, gid=0, nlink=1, mtime=0, filesize=0),
        )
        self._closed = True
        padding = -self._written % BLOCK_SIZE
        if padding:
            self._emit(b"\0" * padding)
