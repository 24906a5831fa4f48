"""The macOS package's on-disk formats, each read back by something other than its writer: cpio odc by a parser
written here from the format description and by GNU cpio; the BOM by pyapplebom (the Rust ``apple-bom`` parser) and
by hand; xar by a parser written here and by libarchive."""

from __future__ import annotations

import hashlib
import io
import os
import stat
import struct
import subprocess
import zlib
from pathlib import Path
from xml.etree import ElementTree

import libarchive
import pyapplebom
import pytest

from packager.formats import bom, cpio_odc, xar

EPOCH = 1_700_000_000


# --- cpio odc ---------------------------------------------------------------------------------------------------


def _parse_odc(data: bytes) -> list[dict[str, object]]:
    """A reader written from the format description: 76-byte octal header, name, data, up to TRAILER!!!."""
    entries: list[dict[str, object]] = []
    offset = 0
    while True:
        header = data[offset : offset + 76].decode("ascii")
        assert header[:6] == "070707", f"bad magic at {offset}: {header[:6]!r}"
        widths = (6, 6, 6, 6, 6, 6, 6, 11, 6, 11)
        names = ("dev", "ino", "mode", "uid", "gid", "nlink", "rdev", "mtime", "namesize", "filesize")
        fields: dict[str, object] = {}
        position = 6
        for name, width in zip(names, widths, strict=True):
            fields[name] = int(header[position : position + width], 8)
            position += width
        namesize = int(str(fields["namesize"]))
        filesize = int(str(fields["filesize"]))
        name_bytes = data[offset + 76 : offset + 76 + namesize]
        assert name_bytes.endswith(b"\0")
        fields["name"] = name_bytes[:-1].decode()
        fields["data"] = data[offset + 76 + namesize : offset + 76 + namesize + filesize]
        offset += 76 + namesize + filesize
        entries.append(fields)
        if fields["name"] == "TRAILER!!!":
            fields["end"] = offset
            return entries


def _sample_cpio() -> bytes:
    out = io.BytesIO()
    writer = cpio_odc.OdcWriter(out, uid=0, gid=80, mtime=EPOCH)
    writer.add_directory(".", 0o755)
    writer.add_directory("./opt", 0o755)
    writer.add_bytes("./opt/secret.txt", 0o600, b"s3cret")
    content = b"#!/bin/sh\necho hi\n" * 100
    writer.add_stream("./opt/tool", 0o755, len(content), io.BytesIO(content))
    writer.add_symlink("./opt/current", "tool")
    writer.close()
    return out.getvalue()


def test_cpio_odc_headers_read_back_by_our_parser() -> None:
    data = _sample_cpio()
    entries = _parse_odc(data)
    assert [entry["name"] for entry in entries] == [
        ".",
        "./opt",
        "./opt/secret.txt",
        "./opt/tool",
        "./opt/current",
        "TRAILER!!!",
    ]
    by_name = {str(entry["name"]): entry for entry in entries}
    assert by_name["."]["mode"] == stat.S_IFDIR | 0o755
    assert by_name["./opt/secret.txt"]["mode"] == stat.S_IFREG | 0o600
    assert by_name["./opt/secret.txt"]["data"] == b"s3cret"
    assert by_name["./opt/tool"]["mode"] == stat.S_IFREG | 0o755
    assert by_name["./opt/current"]["mode"] == stat.S_IFLNK | 0o777
    assert by_name["./opt/current"]["data"] == b"tool"  # a symlink carries its target as data
    for entry in entries[:-1]:
        assert (entry["uid"], entry["gid"], entry["mtime"]) == (0, 80, EPOCH)
        assert entry["nlink"] == (2 if stat.S_ISDIR(int(str(entry["mode"]))) else 1)
    assert [entry["ino"] for entry in entries[:-1]] == [1, 2, 3, 4, 5]  # unique, sequential
    trailer = entries[-1]
    assert (trailer["mode"], trailer["ino"], trailer["filesize"], trailer["nlink"]) == (0, 0, 0, 1)
    end = int(str(trailer["end"]))
    assert len(data) % 512 == 0 and data[end:] == b"\0" * (len(data) - end)  # GNU cpio's block padding


def test_cpio_odc_read_by_gnu_cpio(tmp_path: Path) -> None:
    data = _sample_cpio()
    listing = subprocess.run(["cpio", "-itv"], input=data, capture_output=True, check=True).stdout.decode()
    lines = listing.splitlines()
    assert len(lines) == 5, listing
    assert lines[0].startswith("drwxr-xr-x") and lines[0].endswith(" .")
    assert lines[2].startswith("-rw-------") and lines[2].endswith("./opt/secret.txt")
    assert " 80 " in lines[2] and ("root" in lines[2] or " 0 " in lines[2])
    assert lines[4].startswith("lrwxrwxrwx") and lines[4].endswith("./opt/current -> tool")
    target = tmp_path / "x"
    target.mkdir()
    subprocess.run(["cpio", "-idm", "--quiet", "--no-absolute-filenames"], input=data, cwd=target, check=True)
    assert (target / "opt/secret.txt").read_bytes() == b"s3cret"
    assert stat.S_IMODE((target / "opt/secret.txt").stat().st_mode) == 0o600
    assert os.readlink(target / "opt/current") == "tool"
    assert (target / "opt/tool").read_bytes().count(b"echo hi") == 100
    assert int((target / "opt/tool").stat().st_mtime) == EPOCH


def test_cpio_odc_rejects_what_does_not_fit() -> None:
    writer = cpio_odc.OdcWriter(io.BytesIO())
    with pytest.raises(cpio_odc.CpioLimitError, match="8 GiB - 1"):
        writer.add_stream("./huge", 0o644, cpio_odc.MAX_FILE_SIZE + 1, io.BytesIO(b""))
    header = cpio_odc.odc_header(
        b"./max", ino=1, mode=0o100644, uid=0, gid=80, nlink=1, mtime=0, filesize=cpio_odc.MAX_FILE_SIZE
    )
    assert header[65:76] == b"77777777777"  # the largest size odc can state: 8 GiB - 1
    with pytest.raises(cpio_odc.CpioLimitError, match="inode"):
        cpio_odc.odc_header(b"./x", ino=8**6, mode=0, uid=0, gid=0, nlink=1, mtime=0, filesize=0)
    with pytest.raises(cpio_odc.CpioLimitError, match="mtime"):
        cpio_odc.OdcWriter(io.BytesIO(), mtime=8**11)
    with pytest.raises(ValueError, match="early"):
        writer.add_stream("./short", 0o644, 10, io.BytesIO(b"12345"))
    with pytest.raises(ValueError, match="longer"):
        cpio_odc.OdcWriter(io.BytesIO()).add_stream("./long", 0o644, 2, io.BytesIO(b"12345"))


# --- BOM ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 5, 255, 256, 4096, 65_539, 1_000_003])
def test_posix_cksum_matches_coreutils_cksum(size: int) -> None:
    data = hashlib.shake_256(str(size).encode()).digest(size) if size else b""
    expected = subprocess.run(["cksum"], input=data, capture_output=True, check=True).stdout.split()
    assert bom.posix_cksum(data) == int(expected[0])
    chunked = bom.PosixCksum()
    for start in range(0, size, 4093):
        chunked.update(data[start : start + 4093])
    assert chunked.value() == int(expected[0])


def test_posix_cksum_known_vectors() -> None:
    assert bom.posix_cksum(b"hello") == 3287646509
    assert bom.posix_cksum(b"") == 4294967295
    assert bom.posix_cksum(b"\0") == 4215202376


def _directory(path: str) -> bom.BomEntry:
    return bom.BomEntry(path, stat.S_IFDIR | 0o755, 0, 80, EPOCH)


def _file(path: str, content: bytes, mode: int = 0o644) -> bom.BomEntry:
    return bom.BomEntry(path, stat.S_IFREG | mode, 0, 80, EPOCH, len(content), bom.posix_cksum(content))


def _sample_entries() -> list[bom.BomEntry]:
    return [
        _directory("."),
        _directory("./opt"),
        _directory("./opt/orbit"),
        _file("./opt/orbit/secret.txt", b"s3cret", 0o600),
        bom.BomEntry(
            "./opt/orbit/current",
            stat.S_IFLNK | 0o777,
            0,
            80,
            EPOCH,
            len(b"bin/orbit"),
            bom.posix_cksum(b"bin/orbit"),
            "bin/orbit",
        ),
        _directory("./Library"),
        _file("./Library/a.plist", b"<plist/>"),
    ]


def _u32(data: bytes, offset: int) -> int:
    return int(struct.unpack_from(">I", data, offset)[0])


def _blocks(data: bytes) -> list[tuple[int, int]]:
    index_offset = _u32(data, 16)
    count = _u32(data, index_offset)
    return [struct.unpack_from(">II", data, index_offset + 4 + 8 * i) for i in range(count)]


def test_bom_header_block_table_and_variables() -> None:
    data = bom.build_bom(_sample_entries())
    assert data[:8] == b"BOMStore"
    version, blocks, index_offset, index_length, vars_offset, vars_length = struct.unpack_from(">6I", data, 8)
    assert (version, vars_offset) == (1, 512)
    assert data[32:512] == bytes(480)
    assert index_offset + index_length == len(data)  # the index is last, as bomutils writes it
    table = _blocks(data)
    assert len(table) == blocks + 1 and table[0] == (0, 0)
    assert index_length == 4 + 8 * len(table) + 4 + 16  # index + empty free list with two zeroed slots
    assert data[index_offset + 4 + 8 * len(table) :] == bytes(20)
    position = vars_offset + vars_length  # blocks are laid out back to back after the variables
    for address, length in table[1:]:
        assert address == position
        position += length
    assert position == index_offset
    names = []
    offset = vars_offset + 4
    for _ in range(_u32(data, vars_offset)):
        name_length = data[offset + 4]
        names.append(data[offset + 5 : offset + 5 + name_length].decode())
        offset += 5 + name_length
    assert names == ["BomInfo", "Paths", "HLIndex", "VIndex", "Size64"]  # mkbom's order


def test_bom_parsed_by_pyapplebom() -> None:
    entries = _sample_entries()
    parsed = pyapplebom.parse_bom(bom.build_bom(entries))
    assert parsed["parse_errors"] is None
    assert parsed["header"]["magic"] == "BOMStore"
    assert [variable["name"] for variable in parsed["variables"]] == ["BomInfo", "Paths", "HLIndex", "VIndex", "Size64"]
    assert parsed["bom_info"]["number_of_paths"] == len(entries) + 1
    paths = parsed["paths"]
    # breadth-first from '.', children in bytewise order ('L' < 'o')
    assert [path["path"] for path in paths] == [
        ".",
        "./Library",
        "./opt",
        "./Library/a.plist",
        "./opt/orbit",
        "./opt/orbit/current",
        "./opt/orbit/secret.txt",
    ]
    by_path = {path["path"]: path for path in paths}
    for entry in entries:
        record = by_path[entry.path]
        assert record["file_mode"] == entry.mode
        assert (record["user_id"], record["group_id"], record["mtime"]) == (0, 80, EPOCH)
        assert record["size"] == entry.size
        if not stat.S_ISDIR(entry.mode):
            assert record["crc32"] == entry.checksum
    assert by_path["./opt/orbit/current"]["path_type"] == "link"
    assert by_path["./opt/orbit/current"]["link_name"] == "bin/orbit"
    assert by_path["./opt/orbit/secret.txt"]["symbolic_mode"] == "-rw-------"
    assert parsed["hl_index"] == [] and parsed["size64"] == [] and parsed["vindex"] == []


def test_bom_single_entry_layout_byte_for_byte() -> None:
    """The smallest BOM, spelled out from bomutils' mkbom layout: BomInfo, PathInfo2, PathInfo1, File, leaf,
    Paths tree, HLIndex leaf + tree, VIndex leaf + inner tree + VIndex, Size64 leaf + tree."""
    data = bom.build_bom([bom.BomEntry(".", stat.S_IFDIR | 0o755, 0, 80, 0)])
    empty_leaf = struct.pack(">HHII", 1, 0, 0, 0)
    blocks = [
        struct.pack(">III", 1, 2, 1) + bytes(16),  # 1 BomInfo
        struct.pack(">BBHHIIIIBII", 2, 1, 3, 0o40755, 0, 80, 0, 0, 1, 0, 0),  # 2 PathInfo2
        struct.pack(">II", 1, 2),  # 3 PathInfo1
        struct.pack(">I", 0) + b".\0",  # 4 File
        struct.pack(">HHIIII", 1, 1, 0, 0, 3, 4),  # 5 leaf
        b"tree" + struct.pack(">IIIIB", 1, 5, 4096, 1, 0),  # 6 Paths
        empty_leaf,  # 7
        b"tree" + struct.pack(">IIIIB", 1, 7, 4096, 0, 0),  # 8 HLIndex
        empty_leaf,  # 9
        b"tree" + struct.pack(">IIIIB", 1, 9, 128, 0, 0),  # 10 VIndex inner tree
        struct.pack(">IIIB", 1, 10, 0, 0),  # 11 VIndex
        empty_leaf,  # 12
        b"tree" + struct.pack(">IIIIB", 1, 12, 4096, 0, 0),  # 13 Size64
    ]
    variables = struct.pack(">I", 5) + b"".join(
        struct.pack(">IB", block, len(name)) + name
        for name, block in ((b"BomInfo", 1), (b"Paths", 6), (b"HLIndex", 8), (b"VIndex", 11), (b"Size64", 13))
    )
    address = 512 + len(variables)
    index = struct.pack(">I", len(blocks) + 1) + struct.pack(">II", 0, 0)
    for block in blocks:
        index += struct.pack(">II", address, len(block))
        address += len(block)
    index += bytes(20)
    header = b"BOMStore" + struct.pack(">6I", 1, len(blocks), address, len(index), 512, len(variables))
    assert data == header.ljust(512, b"\0") + variables + b"".join(blocks) + index


def test_bom_matches_mkbom_output_for_a_three_leaf_tree() -> None:
    """703 entries (3 leaves + a branch), files, executables and symlinks, mtime 0 as bomutils 0.2 records it.
    The digest is of the output of bomutils' mkbom (compiled from its source as a local, unvendored oracle) fed
    the same list in lsbom form — the writer must stay byte-identical to it."""
    entries = [bom.BomEntry(".", stat.S_IFDIR | 0o755, 0, 80, 0)]
    for d in range(6):
        directory = f"./dir{d}"
        entries.append(bom.BomEntry(directory, stat.S_IFDIR | 0o755, 0, 80, 0))
        for i in range(116):
            path = f"{directory}/item{i:03}"
            if i % 29 == 0:
                target = f"../dir{(d + 1) % 6}/item{i:03}"
                checksum = bom.posix_cksum(target.encode())
                entries.append(bom.BomEntry(path, stat.S_IFLNK | 0o777, 0, 80, 0, len(target), checksum, target))
            else:
                content = f"{d}:{i}\n".encode() * i
                mode = stat.S_IFREG | (0o755 if i % 7 == 0 else 0o644)
                entries.append(bom.BomEntry(path, mode, 0, 80, 0, len(content), bom.posix_cksum(content)))
    data = bom.build_bom(entries)
    assert len(data) == 59650
    assert hashlib.sha256(data).hexdigest() == "7efdb03f6f103c4caf0876ca55496d5e7a20209b5c62916ced7404ec1c5a7e93"


def _leaves(data: bytes) -> tuple[dict[str, int], list[tuple[int, bytes]]]:
    """Follow the Paths tree by hand: returns the branch/leaf structure facts and the leaves in chain order."""
    table = _blocks(data)

    def block(block_id: int) -> bytes:
        address, length = table[block_id]
        return data[address : address + length]

    variables_offset = 512 + 4
    paths_tree = 0
    for _ in range(5):
        block_id = _u32(data, variables_offset)
        name_length = data[variables_offset + 4]
        if data[variables_offset + 5 : variables_offset + 5 + name_length] == b"Paths":
            paths_tree = block_id
        variables_offset += 5 + name_length
    tree = block(paths_tree)
    assert tree[:4] == b"tree"
    _, child, block_size, path_count = struct.unpack_from(">IIII", tree, 4)
    node = block(child)
    is_leaf, count = struct.unpack_from(">HH", node)
    facts = {"path_count": path_count, "block_size": block_size, "root_is_leaf": is_leaf, "root_count": count}
    if is_leaf:
        return facts, [(child, node)]
    leaves = []
    for i in range(count):
        leaf_id, last_file = struct.unpack_from(">II", node, 12 + 8 * i)
        leaf = block(leaf_id)
        leaf_count = struct.unpack_from(">H", leaf, 2)[0]
        assert _u32(leaf, 12 + 8 * (leaf_count - 1) + 4) == last_file  # branch key = File of the leaf's last entry
        leaves.append((leaf_id, leaf))
    return facts, leaves


@pytest.mark.parametrize(("files", "expected_leaves"), [(255, 1), (256, 2), (702, 3)])
def test_bom_multi_leaf(files: int, expected_leaves: int) -> None:
    """bomutils' layout: at most 256 entries per leaf, leaves chained, one branch node when there are several."""
    entries = [_directory(".")] + [_file(f"./f{i:04}", str(i).encode()) for i in range(files)]
    data = bom.build_bom(entries)
    facts, leaves = _leaves(data)
    assert facts["path_count"] == len(entries) and facts["block_size"] == 4096
    assert len(leaves) == expected_leaves
    assert facts["root_is_leaf"] == (1 if expected_leaves == 1 else 0)
    counts = [struct.unpack_from(">H", leaf, 2)[0] for _, leaf in leaves]
    assert sum(counts) == len(entries) and all(count <= 256 for count in counts)
    assert counts[:-1] == [256] * (expected_leaves - 1)
    for position, (leaf_id, leaf) in enumerate(leaves):
        forward, backward = struct.unpack_from(">II", leaf, 4)
        assert backward == (leaves[position - 1][0] if position else 0)
        assert forward == (leaves[position + 1][0] if position + 1 < len(leaves) else 0)
        assert leaf_id > 0
    parsed = pyapplebom.parse_bom(data)
    assert parsed["parse_errors"] is None
    assert len(parsed["paths"]) == len(entries)
    assert parsed["paths"][-1]["path"] == f"./f{files - 1:04}"
    assert parsed["paths"][-1]["crc32"] == bom.posix_cksum(str(files - 1).encode())


def test_bom_rejects_bad_trees_and_sizes() -> None:
    with pytest.raises(bom.BomLimitError, match="parent"):
        bom.build_bom([_directory("."), _file("./missing/x", b"")])
    with pytest.raises(bom.BomLimitError, match="root"):
        bom.build_bom([_directory("./a")])
    with pytest.raises(bom.BomLimitError, match="duplicate"):
        bom.build_bom([_directory("."), _file("./a", b""), _file("./a", b"")])
    huge = bom.BomEntry("./big", stat.S_IFREG | 0o644, 0, 80, 0, 2**32, 0)
    with pytest.raises(bom.BomLimitError, match="32-bit"):
        bom.build_bom([_directory("."), huge])
    with pytest.raises(bom.BomLimitError, match="mtime"):
        bom.build_bom([bom.BomEntry(".", stat.S_IFDIR | 0o755, 0, 80, 2**32)])


def test_pyapplebom_catches_a_broken_bom() -> None:
    """The verifier can fail: a bad magic is refused, a broken Paths tree is reported in parse_errors."""
    data = bytearray(bom.build_bom(_sample_entries()))
    with pytest.raises(pyapplebom.BomParseError):
        pyapplebom.parse_bom(b"BOMStorX" + bytes(data[8:]))
    facts_tree = 0
    offset = 516
    for _ in range(5):
        name_length = data[offset + 4]
        if data[offset + 5 : offset + 5 + name_length] == b"Paths":
            facts_tree = _u32(bytes(data), offset)
        offset += 5 + name_length
    address, _ = _blocks(bytes(data))[facts_tree]
    struct.pack_into(">I", data, address + 8, 9999)  # the Paths tree's child → a block that does not exist
    parsed = pyapplebom.parse_bom(bytes(data))
    assert parsed["parse_errors"] is not None and parsed["paths"] is None


# --- xar ----------------------------------------------------------------------------------------------------------


def _xar_sample(mtime: int = EPOCH) -> tuple[bytes, dict[str, bytes]]:
    contents = {
        "Distribution": b"<installer-gui-script/>",
        "base.pkg/Payload": b"payload" * 1000,
        "base.pkg/Bom": b"BOMStore",
        "base.pkg/PackageInfo": b"<pkg-info/>",
    }
    members = [
        (xar.XarMember(path, len(data), hashlib.sha1(data).digest()), io.BytesIO(data))
        for path, data in contents.items()
    ]
    out = io.BytesIO()
    written = xar.write_archive(out, members, mtime=mtime)
    assert written == len(out.getvalue())
    return out.getvalue(), contents


def test_xar_header_toc_and_heap_read_back() -> None:
    data, contents = _xar_sample()
    magic, header_size, version, toc_compressed, toc_length, algorithm = struct.unpack_from(">4sHHQQI", data)
    assert (magic, header_size, version, algorithm) == (b"xar!", 28, 1, 1)  # 1 = SHA-1
    compressed = data[28 : 28 + toc_compressed]
    assert compressed[0] == 0x78  # a zlib stream (RFC 1950)
    toc_xml = zlib.decompress(compressed)
    assert len(toc_xml) == toc_length
    heap = 28 + toc_compressed
    assert data[heap : heap + 20] == hashlib.sha1(compressed).digest()
    toc = ElementTree.fromstring(toc_xml).find("toc")
    assert toc is not None
    assert toc.findtext("creation-time") == "2023-11-14T22:13:20"
    checksum = toc.find("checksum")
    assert checksum is not None and checksum.get("style") == "sha1"
    assert (checksum.findtext("offset"), checksum.findtext("size")) == ("0", "20")
    found: dict[str, bytes] = {}
    ids: list[str] = []

    def walk(element: ElementTree.Element, prefix: str) -> None:
        for item in element.findall("file"):
            ids.append(item.get("id", ""))
            name = prefix + (item.findtext("name") or "")
            assert (item.findtext("uid"), item.findtext("gid")) == ("0", "80")
            if item.findtext("type") == "directory":
                assert item.findtext("mode") == "0755"
                walk(item, name + "/")
                continue
            data_element = item.find("data")
            assert data_element is not None
            offset = int(data_element.findtext("offset") or "")
            length = int(data_element.findtext("length") or "")
            assert int(data_element.findtext("size") or "") == length  # stored uncompressed
            body = data[heap + offset : heap + offset + length]
            digest = hashlib.sha1(body).hexdigest()
            assert data_element.findtext("archived-checksum") == digest
            assert data_element.findtext("extracted-checksum") == digest
            encoding = data_element.find("encoding")
            assert encoding is not None and encoding.get("style") == "application/octet-stream"
            found[name] = body

    walk(toc, "")
    assert found == contents
    assert sorted(ids, key=int) == [str(i) for i in range(1, len(ids) + 1)]  # unique, 1-based
    assert [item.findtext("name") for item in toc.findall("file")] == ["Distribution", "base.pkg"]  # sorted


def test_xar_read_by_libarchive() -> None:
    data, contents = _xar_sample()
    seen: dict[str, bytes] = {}
    with libarchive.memory_reader(data) as archive:
        for entry in archive:
            if entry.isfile:
                # libarchive 3.6.2's xar reader hands out zero bytes past <size> for stored members (bsdtar's own
                # xar output reads the same way through libarchive-c); the entry's size is what counts.
                seen[entry.pathname] = b"".join(entry.get_blocks())[: entry.size]
                assert entry.mtime == EPOCH
    assert seen == contents


def test_xar_is_deterministic_and_checks_member_digests() -> None:
    first, _ = _xar_sample()
    second, _ = _xar_sample()
    assert first == second
    later, _ = _xar_sample(EPOCH + 1)
    assert later != first
    lying = xar.XarMember("a", 3, hashlib.sha1(b"abc").digest())
    with pytest.raises(ValueError, match="SHA-1"):
        xar.write_archive(io.BytesIO(), [(lying, io.BytesIO(b"abd"))], mtime=0)
    with pytest.raises(ValueError, match="invalid member path"):
        xar.build_layout([xar.XarMember("../a", 0, hashlib.sha1(b"").digest())], mtime=0)
