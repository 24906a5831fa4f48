"""macOS flat package (``.pkg``) builder: a product archive (xar) holding ``Distribution`` and the component
``base.pkg/`` (``PackageInfo``, ``Bom``, ``Payload``, ``Scripts``), written on any OS (docs/reference/packaging.md
§3.4, §5).

The payload installs at ``/``: ``./opt/orbit/…`` (the staged files and links, and ``bin/uninstall``, the removal
script an MDM pushes: ``sudo /opt/orbit/bin/uninstall``) and, with the service,
``./Library/LaunchDaemons/com.fleetdm.orbit.plist``; every entry is owned by uid 0 / gid 80 (admin) like
``cpio -R 0:80`` and ``mkbom -u 0 -g 80``. The output is a pure function of the staged package: sorted entries,
every timestamp from ``source_date_epoch``, gzip header mtime 0, a fixed xar TOC — two builds are byte-identical.
With ``signing`` the xar carries the two signatures of its TOC checksum that productsign writes, RSA and CMS, by
the Developer ID Installer identity (``xar.XarSigner``; deterministic, so a signed build is reproducible too);
notarization happens afterwards with ``xcrun notarytool`` (README "Building installers").

Limits enforced before anything is written (``PkgLimitError``, a ``ValueError``): each file below 4 GiB (BOM sizes
are 32-bit; cpio odc itself would allow 8 GiB - 1), at most 262143 payload entries (odc inode numbers), and
``source_date_epoch`` within 0..2**32-1 (BOM mtimes are 32-bit). The result replaces ``outfile`` atomically.
"""

from __future__ import annotations

import datetime
import gzip
import hashlib
import io
import logging
import re
import stat
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Final

from packager.formats import bom, cpio_odc, macos_templates, xar
from packager.formats.output_file import place_finished
from packager.package.staged import BuildResult, StagedPackage
from packager.signing import cms_signature, rfc3161
from packager.signing.signing_options import SigningOptions

log = logging.getLogger(__name__)

OWNER_UID: Final = 0
OWNER_GID: Final = 80  # admin, as Fleet's `mkbom -u 0 -g 80` / `cpio -R 0:80`
DIRECTORY_MODE: Final = 0o755
SYMLINK_MODE: Final = 0o777  # what lstat reports on Linux, i.e. what `cpio -o` and bomutils record
PLIST_MODE: Final = 0o644
POSTINSTALL_MODE: Final = 0o755
UNINSTALL_MODE: Final = 0o755  # root-owned (uid 0) and not writable by others, like the agent's binaries
GZIP_LEVEL: Final = 6  # gzip's and Go's default; fixed so the output is reproducible
MAX_FILE_SIZE: Final = min(bom.MAX_FILE_SIZE, cpio_odc.MAX_FILE_SIZE)
MAX_ENTRIES: Final = cpio_odc.MAX_ENTRIES
MAX_EPOCH: Final = bom.MAX_U32
_IDENTIFIER = re.compile(r"[A-Za-z0-9][A-Za-z0-9.-]*")
_CHUNK: Final = 1 << 20


class PkgLimitError(ValueError):
    """The staged package cannot be expressed as a macOS flat package (format limits or invalid input)."""


@dataclass(frozen=True)
class PayloadItem:
    """One payload entry: ``path`` is ``.`` or ``./a/b``; ``mode`` the full st_mode."""

    path: str
    mode: int
    size: int = 0
    source: Path | None = None
    data: bytes | None = None
    target: str | None = None


def _sort_key(path: str) -> list[str]:
    return path.split("/")


def _checked_relative(path: PurePosixPath, what: str) -> tuple[str, ...]:
    parts = path.parts
    if path.is_absolute() or not parts or any(part in ("", ".", "..") or "\0" in part for part in parts):
        raise PkgLimitError(f"pkg: invalid {what} path {path!s} (must be relative to the agent root, no '..')")
    return parts


def _source_size(source: Path) -> int:
    try:
        info = source.stat()
    except OSError as exc:
        raise PkgLimitError(f"pkg: cannot read {source}: {exc.strerror}") from exc
    if not stat.S_ISREG(info.st_mode):
        raise PkgLimitError(f"pkg: {source} is not a regular file")
    return info.st_size


def plist_environment(staged: StagedPackage) -> dict[str, str]:
    environment = dict(staged.orbit_env)
    if staged.file("secret.txt") is not None:
        environment.setdefault("ORBIT_ENROLL_SECRET_PATH", f"{staged.agent_root}/secret.txt")
    return environment


def payload_items(staged: StagedPackage) -> list[PayloadItem]:
    """Every payload entry, parents first, siblings in bytewise order (the cpio order)."""
    root_parts = _checked_relative(PurePosixPath(*staged.agent_root.parts[1:]), "agent root")
    items: dict[str, PayloadItem] = {}
    directories: set[tuple[str, ...]] = {()}

    def add_parents(parts: tuple[str, ...]) -> None:
        for depth in range(1, len(parts)):
            directories.add(parts[:depth])

    def add(parts: tuple[str, ...], item: PayloadItem) -> None:
        if item.path in items:
            raise PkgLimitError(f"pkg: {item.path} is staged twice")
        add_parents(parts)
        items[item.path] = item

    for staged_file in staged.files:
        parts = root_parts + _checked_relative(staged_file.path, "file")
        size = _source_size(staged_file.source)
        if size > MAX_FILE_SIZE:
            raise PkgLimitError(
                f"pkg: {staged_file.path} is {size} bytes; a .pkg file must be below 4 GiB "
                f"(BOM sizes are 32-bit; cpio odc allows {cpio_odc.MAX_FILE_SIZE})"
            )
        permissions = stat.S_IMODE(staged_file.mode)
        add(parts, PayloadItem("./" + "/".join(parts), stat.S_IFREG | permissions, size, source=staged_file.source))
    for link in staged.symlinks:
        parts = root_parts + _checked_relative(link.path, "symlink")
        if not link.target or "\0" in link.target:
            raise PkgLimitError(f"pkg: symlink {link.path} has an invalid target {link.target!r}")
        target_size = len(link.target.encode("utf-8"))
        add(parts, PayloadItem("./" + "/".join(parts), stat.S_IFLNK | SYMLINK_MODE, target_size, target=link.target))
    uninstall = macos_templates.uninstall_script(staged.identifier, str(staged.agent_root))
    parts = root_parts + tuple(PurePosixPath(macos_templates.UNINSTALL_SCRIPT).parts)
    add(parts, PayloadItem("./" + "/".join(parts), stat.S_IFREG | UNINSTALL_MODE, len(uninstall), data=uninstall))
    if staged.service:
        plist = macos_templates.launchd_plist(
            f"{staged.agent_root}/{staged.orbit_executable}", plist_environment(staged)
        )
        parts = tuple(PurePosixPath(macos_templates.LAUNCHD_PLIST_PATH).parts[1:])
        add(parts, PayloadItem("./" + "/".join(parts), stat.S_IFREG | PLIST_MODE, len(plist), data=plist))
    for parts in directories:
        path = "./" + "/".join(parts) if parts else "."
        if path in items:
            raise PkgLimitError(f"pkg: {path} is both a directory and a file or link")
        items[path] = PayloadItem(path, stat.S_IFDIR | DIRECTORY_MODE)
    if len(items) > MAX_ENTRIES:
        raise PkgLimitError(f"pkg: {len(items)} payload entries; cpio odc holds at most {MAX_ENTRIES}")
    return [items[path] for path in sorted(items, key=_sort_key)]


class _HashingWriter:
    """Counts and hashes what passes through to ``raw``."""

    def __init__(self, raw: cpio_odc.Writer, algorithm: str) -> None:
        self._raw = raw
        self.digest = hashlib.new(algorithm, usedforsecurity=False)
        self.size = 0

    def write(self, data: bytes) -> int:
        self._raw.write(data)
        self.digest.update(data)
        self.size += len(data)
        return len(data)

    def flush(self) -> None:
        return None


class _ChecksummingReader:
    def __init__(self, raw: io.BufferedReader) -> None:
        self._raw = raw
        self.cksum = bom.PosixCksum()

    def read(self, size: int = -1, /) -> bytes:
        data = self._raw.read(size)
        self.cksum.update(data)
        return data


def _write_payload(items: Iterable[PayloadItem], out: _HashingWriter, mtime: int) -> list[bom.BomEntry]:
    """Streams the gzip'd cpio Payload into ``out``; returns the BOM entries with their POSIX checksums."""
    entries: list[bom.BomEntry] = []
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, compresslevel=GZIP_LEVEL, mtime=0) as compressed:
        archive = cpio_odc.OdcWriter(compressed, uid=OWNER_UID, gid=OWNER_GID, mtime=mtime)
        for item in items:
            checksum = 0
            if stat.S_ISDIR(item.mode):
                archive.add_directory(item.path, item.mode)
            elif stat.S_ISLNK(item.mode):
                assert item.target is not None
                archive.add_symlink(item.path, item.target, item.mode)
                checksum = bom.posix_cksum(item.target.encode("utf-8"))
            elif item.data is not None:
                archive.add_bytes(item.path, item.mode, item.data)
                checksum = bom.posix_cksum(item.data)
            else:
                assert item.source is not None
                with item.source.open("rb") as handle:
                    reader = _ChecksummingReader(handle)
                    archive.add_stream(item.path, item.mode, item.size, reader)
                checksum = reader.cksum.value()
            entries.append(
                bom.BomEntry(
                    path=item.path,
                    mode=item.mode,
                    uid=OWNER_UID,
                    gid=OWNER_GID,
                    mtime=mtime,
                    size=item.size,
                    checksum=checksum,
                    link_target=item.target,
                )
            )
        archive.close()
    return entries


def _scripts_archive(postinstall: bytes, mtime: int) -> bytes:
    buffer = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, compresslevel=GZIP_LEVEL, mtime=0) as compressed:
        archive = cpio_odc.OdcWriter(compressed, uid=OWNER_UID, gid=OWNER_GID, mtime=mtime)
        archive.add_directory(".", DIRECTORY_MODE)
        archive.add_bytes("./postinstall", POSTINSTALL_MODE, postinstall)
        archive.close()
    return buffer.getvalue()


def _member(path: str, data: bytes) -> tuple[xar.XarMember, io.BytesIO]:
    digest = hashlib.sha1(data, usedforsecurity=False).digest()
    return xar.XarMember(path, len(data), digest), io.BytesIO(data)


def _validate(staged: StagedPackage) -> None:
    if staged.platform != "macos":
        raise PkgLimitError(f"pkg: a .pkg is for macOS, not {staged.platform}")
    if not _IDENTIFIER.fullmatch(staged.identifier):
        raise PkgLimitError(
            f"pkg: invalid identifier {staged.identifier!r} (use reverse-DNS: letters, digits, '.', '-')"
        )
    if not staged.version or any(ord(char) < 0x20 for char in staged.version):
        raise PkgLimitError(f"pkg: invalid version {staged.version!r}")
    if not staged.agent_root.is_absolute():
        raise PkgLimitError(f"pkg: the agent root {staged.agent_root} must be absolute")
    if not 0 <= staged.source_date_epoch <= MAX_EPOCH:
        raise PkgLimitError(f"pkg: source_date_epoch {staged.source_date_epoch} is outside 0..{MAX_EPOCH}")
    secret_file = staged.file("secret.txt")
    if staged.secret is not None and secret_file is None:
        raise PkgLimitError("pkg: the enroll secret must be staged as secret.txt (macOS keeps it in /opt/orbit)")
    if secret_file is not None and stat.S_IMODE(secret_file.mode) & 0o077:
        raise PkgLimitError("pkg: secret.txt must not be readable by group or others (stage it 0600)")


TIMESTAMP_RESERVE: Final = 8192  # room for an RFC 3161 token (TSA chain included); productsign's slot is 9216


def xar_signer(signing: SigningOptions, source_date_epoch: int) -> xar.XarSigner:
    """Both signatures productsign writes, by the identity's RSA key over the TOC's SHA-1 (checksum style sha1):
    the RSA one (PKCS#1 v1.5, DigestInfo SHA-1 — the digest itself is signed) and the detached CMS one over the
    checksum bytes, whose signing time is ``source_date_epoch`` so a signed build stays reproducible. With
    ``--timestamp-url`` the CMS signature carries an RFC 3161 token (``rfc3161``) in a slot of its exact size plus
    ``TIMESTAMP_RESERVE`` bytes, zero-padded; the server's time then makes each build differ."""
    identity = signing.identity
    certificates = identity.chain_der()
    signing_time = datetime.datetime.fromtimestamp(source_date_epoch, datetime.UTC)
    cms_signer = cms_signature.CmsSigner(
        certificates=certificates,
        signature_size=identity.rsa_signature_size,
        sign=lambda attributes: identity.sign_data(attributes, "sha256"),
    )
    url = signing.timestamp_url

    def timestamp(signature: bytes) -> bytes:
        assert url is not None
        return rfc3161.fetch_token(url, signature)

    def sign_cms(checksum: bytes) -> bytes:
        return cms_signature.detached_signature(
            cms_signer, checksum, signing_time, timestamp if url is not None else None
        )

    size = cms_signature.size(cms_signer, signing_time) + (TIMESTAMP_RESERVE if url is not None else 0)
    return xar.XarSigner(
        size=identity.rsa_signature_size,
        certificates=certificates,
        sign=lambda digest: identity.sign_digest(digest, "sha1"),
        cms_size=size,
        sign_cms=sign_cms,
    )


def build(staged: StagedPackage, outfile: Path, *, signing: SigningOptions | None = None) -> BuildResult:
    _validate(staged)
    mtime = staged.source_date_epoch
    items = payload_items(staged)
    file_bytes = sum(item.size for item in items if stat.S_ISREG(item.mode))
    install_kbytes = -(-file_bytes // 1024)
    links = [(f"{staged.agent_root}/{link.path}", link.target) for link in staged.symlinks]
    postinstall = macos_templates.postinstall_script(links, start_service=staged.service)
    component = macos_templates.COMPONENT_DIRECTORY
    outfile = outfile.absolute()
    with tempfile.TemporaryDirectory(prefix=f".{outfile.name}.", dir=outfile.parent) as work:
        payload_path = Path(work) / "Payload"
        with payload_path.open("wb") as raw:
            payload_out = _HashingWriter(raw, "sha1")
            entries = _write_payload(items, payload_out, mtime)
        bom_bytes = bom.build_bom(entries)
        package_info = macos_templates.package_info_xml(
            staged.identifier,
            staged.version,
            number_of_files=len(items),
            install_kbytes=install_kbytes,
            postinstall=True,
        )
        distribution = macos_templates.distribution_xml(staged.identifier, staged.version, install_kbytes)
        scripts = _scripts_archive(postinstall, mtime)
        partial = Path(work) / outfile.name
        with payload_path.open("rb") as payload_stream, partial.open("wb") as raw_out:
            payload_member = xar.XarMember(f"{component}/Payload", payload_out.size, payload_out.digest.digest())
            out = _HashingWriter(raw_out, "sha256")
            xar.write_archive(
                out,
                [
                    _member("Distribution", distribution),
                    _member(f"{component}/PackageInfo", package_info),
                    _member(f"{component}/Bom", bom_bytes),
                    (payload_member, payload_stream),
                    _member(f"{component}/Scripts", scripts),
                ],
                mtime=mtime,
                signer=xar_signer(signing, mtime) if signing is not None else None,
            )
        place_finished(partial, outfile, 0o600 if staged.file("secret.txt") is not None else 0o644)
    log.info("built pkg path=%s size=%d entries=%d payload_bytes=%d", outfile, out.size, len(items), payload_out.size)
    return BuildResult(path=outfile, size=out.size, sha256=out.digest.hexdigest())
