"""BOM ("BOMStore") writer: the bill of materials of a macOS component package (``base.pkg/Bom``).

Layout (docs/reference/packaging.md §5.4; all integers big-endian), chosen to be byte-identical to bomutils 0.2
``mkbom -u 0 -g 80`` when given the same entries (bomutils records mtime 0; pass 0 to reproduce it exactly):

- a 512-byte header: ``BOMStore``, version 1, number of blocks, index offset/length, vars offset (512)/length;
- the variables ``BomInfo``, ``Paths``, ``HLIndex``, ``VIndex``, ``Size64`` (block id, name length, name);
- the blocks, in mkbom's creation order; then the block index (entry 0 is the null block) and an empty free list
  with two zeroed slots.

The Paths tree lists every entry breadth-first from ``.``, children sorted bytewise, ids 1.. in that order; each
entry is a PathInfo1 (id → PathInfo2), a PathInfo2 (type, mode, uid, gid, mtime, size, POSIX ``cksum`` CRC, link
target) and a File block (parent id, basename). Leaves hold at most 256 entries, are chained forward/backward, and
more than one leaf adds a branch node whose entries point at each leaf and at the File block of its last entry.

Limits this writer enforces (the fields are 32-bit): sizes below 4 GiB (bomutils truncates; Apple moves larger
files to the Size64 tree, which this writer leaves empty), mtime and ids in u32, and a branch of at most 65535
leaves. Pure: entries in, bytes out.
"""

from __future__ import annotations

import stat
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

MAGIC: Final = b"BOMStore"
HEADER_SIZE: Final = 512
LEAF_CAPACITY: Final = 256  # bomutils' chunk size (Apple's 4096-byte blocks would hold 510)
TREE_BLOCK_SIZE: Final = 4096
VINDEX_TREE_BLOCK_SIZE: Final = 128
MAX_U16: Final = 0xFFFF
MAX_U32: Final = 0xFFFF_FFFF
MAX_FILE_SIZE: Final = MAX_U32  # PathInfo2.size is a u32

TYPE_FILE: Final = 1
TYPE_DIRECTORY: Final = 2
TYPE_SYMLINK: Final = 3

_BIT_REVERSED = bytes(int(f"{value:08b}"[::-1], 2) for value in range(256))


class BomLimitError(ValueError):
    """An entry does not fit the BOM format, or the tree is malformed."""


class PosixCksum:
    """POSIX ``cksum`` (CRC-32, polynomial 0x04C11DB7, MSB first, initial 0, length appended, inverted) — the
    checksum bomutils stores. Computed with zlib's C CRC over bit-reversed bytes: the reflected CRC of the
    bit-reversed input is the bit-reversed non-reflected CRC, so 60 MB take well under a second."""

    def __init__(self) -> None:
        self._state = MAX_U32  # zlib's running value for a raw register of 0
        self._length = 0

    def update(self, data: bytes) -> None:
        self._state = zlib.crc32(data.translate(_BIT_REVERSED), self._state)
        self._length += len(data)

    def value(self) -> int:
        length = self._length
        suffix = bytearray()
        while length:
            suffix.append(length & 0xFF)
            length >>= 8
        state = zlib.crc32(bytes(suffix).translate(_BIT_REVERSED), self._state)
        register = int(f"{state ^ MAX_U32:032b}"[::-1], 2)
        return register ^ MAX_U32


def posix_cksum(data: bytes) -> int:
    digest = PosixCksum()
    digest.update(data)
    return digest.value()


@dataclass(frozen=True)
class BomEntry:
    """One path: ``.`` or ``./a/b``; ``mode`` is the full st_mode (file type bits included)."""

    path: str
    mode: int
    uid: int
    gid: int
    mtime: int
    size: int = 0
    checksum: int = 0  # posix_cksum of the content (of the target string for symlinks); 0 for directories
    link_target: str | None = None

    @property
    def bom_type(self) -> int:
        if stat.S_ISDIR(self.mode):
            return TYPE_DIRECTORY
        if stat.S_ISREG(self.mode):
            return TYPE_FILE
        if stat.S_ISLNK(self.mode):
            return TYPE_SYMLINK
        raise BomLimitError(f"BOM: {self.path}: only files, directories and symlinks are supported")


def _check_u32(value: int, what: str, path: str) -> None:
    if not 0 <= value <= MAX_U32:
        raise BomLimitError(f"BOM: {path}: {what} {value} does not fit in 32 bits")


def _path_info2(entry: BomEntry) -> bytes:
    kind = entry.bom_type
    _check_u32(entry.uid, "uid", entry.path)
    _check_u32(entry.gid, "gid", entry.path)
    _check_u32(entry.mtime, "mtime", entry.path)
    _check_u32(entry.checksum, "checksum", entry.path)
    if entry.size > MAX_FILE_SIZE or entry.size < 0:
        raise BomLimitError(
            f"BOM: {entry.path} is {entry.size} bytes; BOM sizes are 32-bit (files of 4 GiB or more would need "
            "the Size64 index, which this writer does not emit)"
        )
    size = 0 if kind == TYPE_DIRECTORY else entry.size
    checksum = 0 if kind == TYPE_DIRECTORY else entry.checksum
    link = b""
    if kind == TYPE_SYMLINK:
        if not entry.link_target or "\0" in entry.link_target:
            raise BomLimitError(f"BOM: {entry.path}: a symlink needs a non-empty target")
        link = entry.link_target.encode("utf-8") + b"\0"
    record = struct.pack(
        ">BBHHIIIIBII",
        kind,
        1,
        3,  # bomutils' "architecture" field
        entry.mode & MAX_U16,
        entry.uid,
        entry.gid,
        entry.mtime,
        size,
        1,
        checksum,
        len(link),
    )
    return record + link


class _Node:
    __slots__ = ("children", "entry")

    def __init__(self, entry: BomEntry | None) -> None:
        self.entry = entry
        self.children: dict[bytes, _Node] = {}


def _tree(entries: Sequence[BomEntry]) -> _Node:
    """Entries → the virtual root whose single child is ``.``; every parent must be listed (as mkbom requires)."""
    by_path: dict[str, BomEntry] = {}
    for entry in entries:
        if entry.path in by_path:
            raise BomLimitError(f"BOM: duplicate path {entry.path}")
        by_path[entry.path] = entry
    if "." not in by_path:
        raise BomLimitError("BOM: the root entry '.' is missing")
    if not stat.S_ISDIR(by_path["."].mode):
        raise BomLimitError("BOM: the root entry '.' must be a directory")
    root = _Node(None)
    nodes: dict[str, _Node] = {}
    for path in sorted(by_path, key=lambda item: item.split("/")):
        parts = path.split("/")
        if parts[0] != "." or any(part in ("", ".", "..") for part in parts[1:]) or "\0" in path:
            raise BomLimitError(f"BOM: invalid path {path!r} (expected '.' or './a/b')")
        parent_path = "/".join(parts[:-1])
        parent = root if path == "." else nodes.get(parent_path)
        if parent is None:
            raise BomLimitError(f"BOM: the parent directory of {path} is not listed")
        if parent.entry is not None and not stat.S_ISDIR(parent.entry.mode):
            raise BomLimitError(f"BOM: {parent_path} is not a directory but has entries below it")
        node = _Node(by_path[path])
        parent.children[parts[-1].encode("utf-8")] = node
        nodes[path] = node
    return root


class _Blocks:
    """The block store: ids from 1 in creation order; blocks stay mutable until serialised."""

    def __init__(self) -> None:
        self.blocks: list[bytearray] = []

    def add(self, data: bytes) -> int:
        self.blocks.append(bytearray(data))
        return len(self.blocks)

    def get(self, block_id: int) -> bytearray:
        return self.blocks[block_id - 1]


def _tree_block(child: int, block_size: int, path_count: int) -> bytes:
    return b"tree" + struct.pack(">IIIIB", 1, child, block_size, path_count, 0)


def _node_block(is_leaf: bool, indices: Sequence[tuple[int, int]], forward: int = 0, backward: int = 0) -> bytes:
    head = struct.pack(">HHII", 1 if is_leaf else 0, len(indices), forward, backward)
    return head + b"".join(struct.pack(">II", first, second) for first, second in indices)


def build_bom(entries: Sequence[BomEntry]) -> bytes:
    """The complete BOM file for ``entries`` (any order; ``.`` and every parent directory must be present)."""
    root = _tree(entries)
    count = len(entries)
    leaf_count = -(-count // LEAF_CAPACITY)
    if leaf_count > MAX_U16:
        raise BomLimitError(f"BOM: {count} paths need {leaf_count} leaves; a branch node holds at most {MAX_U16}")
    blocks = _Blocks()
    variables: list[tuple[str, int]] = []

    # BomInfo: version, numberOfPaths (entries + 1), one zeroed info entry (bomutils writes zeros)
    variables.append(("BomInfo", blocks.add(struct.pack(">III", 1, count + 1, 1) + bytes(16))))

    # Paths: breadth-first from '.', children in bytewise order
    branch: list[tuple[int, int]] = []
    leaf: list[tuple[int, int]] = []
    leaf_backward = 0
    previous_leaf = 0  # block id of the last stored leaf, whose forward link the next stored leaf fills in
    last_file_block = 0
    queue: list[tuple[int, _Node]] = [(0, root)]
    next_id = 1
    position = 0
    while position < len(queue):
        parent_id, parent = queue[position]
        position += 1
        for name in sorted(parent.children):
            node = parent.children[name]
            assert node.entry is not None
            if len(leaf) == LEAF_CAPACITY:
                stored = blocks.add(_node_block(True, leaf, 0, leaf_backward))
                if previous_leaf:
                    struct.pack_into(">I", blocks.get(previous_leaf), 4, stored)
                branch.append((stored, last_file_block))
                previous_leaf = leaf_backward = stored
                leaf = []
            info2 = blocks.add(_path_info2(node.entry))
            info1 = blocks.add(struct.pack(">II", next_id, info2))
            last_file_block = blocks.add(struct.pack(">I", parent_id) + name + b"\0")
            leaf.append((info1, last_file_block))
            queue.append((next_id, node))
            next_id += 1
    last_leaf = blocks.add(_node_block(True, leaf, 0, leaf_backward))
    if branch:
        if previous_leaf:
            struct.pack_into(">I", blocks.get(previous_leaf), 4, last_leaf)
        branch.append((last_leaf, last_file_block))
        paths_child = blocks.add(_node_block(False, branch))
    else:
        paths_child = last_leaf
    variables.append(("Paths", blocks.add(_tree_block(paths_child, TREE_BLOCK_SIZE, count))))

    # HLIndex, VIndex and Size64: empty trees
    empty_leaf = _node_block(True, [])
    variables.append(("HLIndex", blocks.add(_tree_block(blocks.add(empty_leaf), TREE_BLOCK_SIZE, 0))))
    inner = blocks.add(_tree_block(blocks.add(empty_leaf), VINDEX_TREE_BLOCK_SIZE, 0))
    variables.append(("VIndex", blocks.add(struct.pack(">IIIB", 1, inner, 0, 0))))
    variables.append(("Size64", blocks.add(_tree_block(blocks.add(empty_leaf), TREE_BLOCK_SIZE, 0))))

    return _serialise(blocks, variables)


def _serialise(blocks: _Blocks, variables: Sequence[tuple[str, int]]) -> bytes:
    encoded_vars = struct.pack(">I", len(variables)) + b"".join(
        struct.pack(">IB", block_id, len(name)) + name.encode("ascii") for name, block_id in variables
    )
    data_offset = HEADER_SIZE + len(encoded_vars)
    index = [struct.pack(">I", len(blocks.blocks) + 1), struct.pack(">II", 0, 0)]
    address = data_offset
    for block in blocks.blocks:
        index.append(struct.pack(">II", address, len(block)))
        address += len(block)
    index.append(struct.pack(">I", 0) + bytes(16))  # free list: no entries, two zeroed slots
    index_bytes = b"".join(index)
    index_offset = address
    if index_offset + len(index_bytes) > MAX_U32:
        raise BomLimitError("BOM: the file would exceed 4 GiB (block addresses are 32-bit)")
    header = MAGIC + struct.pack(
        ">IIIIII", 1, len(blocks.blocks), index_offset, len(index_bytes), HEADER_SIZE, len(encoded_vars)
    )
    return b"".join((header.ljust(HEADER_SIZE, b"\0"), encoded_vars, *blocks.blocks, index_bytes))
