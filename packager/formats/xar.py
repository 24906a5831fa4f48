"""xar writer for the macOS product archive (docs/reference/packaging.md §5.3).

File = a 28-byte big-endian header (magic ``xar!``, header size 28, version 1, compressed and uncompressed TOC
lengths, checksum algorithm 1 = SHA-1), the zlib-compressed TOC XML, then the heap. Heap offset 0 holds the SHA-1
of the compressed TOC (declared by ``<checksum style="sha1">``), followed by each member's bytes stored
uncompressed (``application/octet-stream``, like ``xar --compression none``), each with its SHA-1 as both the
archived and the extracted checksum.

Signed (``XarSigner``), laid out as Apple's productsign does: the TOC also holds ``<signature style="RSA">`` and
``<x-signature style="CMS">`` right after the checksum — each with its heap offset and size and the certificate chain
as ``<KeyInfo xmlns="http://www.w3.org/2000/09/xmldsig#"><X509Data><X509Certificate>`` base64 DER, signer first.
The heap holds, after the TOC's SHA-1 (offset 0, 20 bytes): the RSASSA-PKCS1-v1_5 signature of that SHA-1
(DigestInfo SHA-1, as ``openssl dgst -sha1 -sign`` over the compressed TOC; offset 20, the modulus size), then the
detached CMS SignedData whose content is those 20 checksum bytes (``packager.signing.cms_signature``); members
follow. Both signatures are deterministic, so a signed archive is as reproducible as an unsigned one.

Deterministic: members sorted by path (directories implied by the paths, children nested in the TOC), heap in TOC
order, one fixed creation time and mtime, fixed owner (uid 0 / gid 80, as the payload), zlib level 9. The caller
gives each member's size and SHA-1 up front (the TOC precedes the heap) and the streams to copy; nothing else is
read or written.
"""

from __future__ import annotations

import base64
import hashlib
import struct
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final, Protocol
from xml.sax.saxutils import escape

MAGIC: Final = b"xar!"
HEADER_SIZE: Final = 28
VERSION: Final = 1
CHECKSUM_SHA1: Final = 1
SHA1_SIZE: Final = 20
OWNER_UID: Final = 0
OWNER_GID: Final = 80
OWNER_USER: Final = "root"
OWNER_GROUP: Final = "admin"
_COPY_CHUNK: Final = 1 << 20


class Reader(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class Writer(Protocol):
    def write(self, data: bytes, /) -> object: ...


@dataclass(frozen=True)
class XarMember:
    """A regular file in the archive; ``path`` uses ``/`` (``base.pkg/Payload``)."""

    path: str
    size: int
    sha1: bytes
    mode: int = 0o644


@dataclass
class _Dir:
    children: dict[str, _Dir | XarMember] = field(default_factory=dict)


@dataclass(frozen=True)
class XarSigner:
    """What signs the TOC checksum (its 20 SHA-1 bytes): ``sign`` returns exactly ``size`` bytes (RSA PKCS#1 v1.5,
    DigestInfo SHA-1 over the checksum), ``sign_cms`` at most ``cms_size`` bytes (a detached CMS SignedData over
    the checksum, zero-padded to the slot; ``cms_size`` 0 = no ``<x-signature>``); ``certificates`` are DER, the
    signer's first."""

    size: int
    certificates: tuple[bytes, ...]
    sign: Callable[[bytes], bytes]
    cms_size: int = 0
    sign_cms: Callable[[bytes], bytes] | None = None

    def __post_init__(self) -> None:
        if self.size <= 0 or not self.certificates:
            raise ValueError("xar: a signature needs a size and at least one certificate")
        if (self.cms_size > 0) != (self.sign_cms is not None) or self.cms_size < 0:
            raise ValueError("xar: a CMS signature needs both a size and a signing function")

    @property
    def heap_size(self) -> int:
        return self.size + self.cms_size


XMLDSIG_NS: Final = "http://www.w3.org/2000/09/xmldsig#"


@dataclass(frozen=True)
class XarLayout:
    """What to write: ``head`` (header + compressed TOC + the TOC's SHA-1 [+ the signatures], i.e. the first heap
    bytes), then the members' data in ``heap_order``."""

    head: bytes
    heap_order: tuple[XarMember, ...]
    toc_xml: bytes


def _timestamp(epoch: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch))


def _tree(members: Sequence[XarMember]) -> _Dir:
    root = _Dir()
    for member in members:
        parts = member.path.split("/")
        if any(part in ("", ".", "..") for part in parts):
            raise ValueError(f"xar: invalid member path {member.path!r}")
        if len(member.sha1) != SHA1_SIZE or member.size < 0:
            raise ValueError(f"xar: {member.path}: need a size and a 20-byte SHA-1")
        directory = root
        for part in parts[:-1]:
            existing = directory.children.setdefault(part, _Dir())
            if not isinstance(existing, _Dir):
                raise ValueError(f"xar: {member.path}: {part} is a file")
            directory = existing
        if parts[-1] in directory.children:
            raise ValueError(f"xar: duplicate member {member.path}")
        directory.children[parts[-1]] = member
    return root


def _key_info(signer: XarSigner) -> str:
    certificates = "".join(
        f"<X509Certificate>{base64.b64encode(der).decode('ascii')}</X509Certificate>" for der in signer.certificates
    )
    return f'<KeyInfo xmlns="{XMLDSIG_NS}"><X509Data>{certificates}</X509Data></KeyInfo>'


def _signature_elements(signer: XarSigner) -> list[str]:
    key_info = _key_info(signer)
    elements = [
        f'  <signature style="RSA"><offset>{SHA1_SIZE}</offset><size>{signer.size}</size>{key_info}</signature>'
    ]
    if signer.cms_size:
        elements.append(
            f'  <x-signature style="CMS"><offset>{SHA1_SIZE + signer.size}</offset><size>{signer.cms_size}</size>'
            f"{key_info}</x-signature>"
        )
    return elements


def build_layout(members: Sequence[XarMember], *, mtime: int, signer: XarSigner | None = None) -> XarLayout:
    stamp = _timestamp(mtime)
    owner = f"<group>{OWNER_GROUP}</group><gid>{OWNER_GID}</gid><user>{OWNER_USER}</user><uid>{OWNER_UID}</uid>"
    lines = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        "<xar>",
        " <toc>",
        f"  <creation-time>{stamp}</creation-time>",
        f'  <checksum style="sha1"><offset>0</offset><size>{SHA1_SIZE}</size></checksum>',
    ]
    if signer is not None:
        lines += _signature_elements(signer)
    heap_order: list[XarMember] = []
    offset = SHA1_SIZE + (signer.heap_size if signer is not None else 0)
    next_id = 1

    def emit(directory: _Dir, depth: int) -> None:
        nonlocal offset, next_id
        indent = " " * (depth + 2)
        for name in sorted(directory.children):
            child = directory.children[name]
            lines.append(f'{indent}<file id="{next_id}">')
            next_id += 1
            if isinstance(child, XarMember):
                digest = child.sha1.hex()
                lines.append(
                    f"{indent} <data><length>{child.size}</length><offset>{offset}</offset><size>{child.size}</size>"
                    '<encoding style="application/octet-stream"/>'
                    f'<archived-checksum style="sha1">{digest}</archived-checksum>'
                    f'<extracted-checksum style="sha1">{digest}</extracted-checksum></data>'
                )
                heap_order.append(child)
                offset += child.size
                kind, mode = "file", child.mode
            else:
                kind, mode = "directory", 0o755
            lines.append(f"{indent} <mtime>{stamp}Z</mtime>{owner}<mode>{mode:04o}</mode>")
            lines.append(f"{indent} <type>{kind}</type><name>{escape(name)}</name>")
            if isinstance(child, _Dir):
                emit(child, depth + 1)
            lines.append(f"{indent}</file>")

    emit(_tree(members), 0)
    lines += [" </toc>", "</xar>", ""]
    toc = "\n".join(lines).encode("utf-8")
    compressed = zlib.compress(toc, 9)
    header = struct.pack(">4sHHQQI", MAGIC, HEADER_SIZE, VERSION, len(compressed), len(toc), CHECKSUM_SHA1)
    toc_digest = hashlib.sha1(compressed, usedforsecurity=False).digest()
    signature = b""
    if signer is not None:
        signature = signer.sign(toc_digest)
        if len(signature) != signer.size:
            raise ValueError(f"xar: the signature is {len(signature)} bytes, the TOC reserved {signer.size}")
        if signer.sign_cms is not None:
            cms = signer.sign_cms(toc_digest)
            if len(cms) > signer.cms_size:
                raise ValueError(f"xar: the CMS signature is {len(cms)} bytes, the TOC reserved {signer.cms_size}")
            signature += cms + bytes(signer.cms_size - len(cms))  # a slot, zero-padded as productsign's
    return XarLayout(head=header + compressed + toc_digest + signature, heap_order=tuple(heap_order), toc_xml=toc)


def write_archive(
    out: Writer, members: Sequence[tuple[XarMember, Reader]], *, mtime: int, signer: XarSigner | None = None
) -> int:
    """Writes the whole archive, signed by ``signer`` if given; each stream must yield exactly ``member.size``
    bytes with the declared SHA-1 (checked while copying). Returns the number of bytes written."""
    layout = build_layout([member for member, _ in members], mtime=mtime, signer=signer)
    streams = {member.path: stream for member, stream in members}
    out.write(layout.head)
    written = len(layout.head)
    for member in layout.heap_order:
        stream = streams[member.path]
        digest = hashlib.sha1(usedforsecurity=False)
        remaining = member.size
        while remaining:
            chunk = stream.read(min(_COPY_CHUNK, remaining))
            if not chunk:
                raise ValueError(f"xar: {member.path} ended {remaining} bytes early")
            digest.update(chunk)
            out.write(chunk)
            remaining -= len(chunk)
        if digest.digest() != member.sha1:
            raise ValueError(f"xar: {member.path} does not match the SHA-1 declared in the TOC")
        written += member.size
    return written
