"""``fleet-osquery_<version>_<arch>.deb``, written in pure Python (ADR 0006): an ``ar`` archive of
``debian-binary``, ``control.tar.gz`` and ``data.tar.gz``, laid out as ``dpkg-deb --build --root-owner-group``
would lay it out, byte-for-byte reproducible from the staged input and ``source_date_epoch``.

No external tool is needed, so ``orbitctl package --type deb`` works on any host (also macOS, or a CI image
without dpkg-dev); ``dpkg-deb``, ``dpkg`` and ``lintian`` check the result in the tests.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import math
import os
import re
import tarfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO, cast

from packager.formats import linux_service
from packager.formats.linux_service import LinuxPackageError, PayloadEntry
from packager.formats.output_file import PackageOutputError, package_output
from packager.formats.parallel_gzip import ParallelGzipWriter, default_workers
from packager.package.staged import BuildResult, StagedPackage

ARCHITECTURES = {"amd64": "amd64", "arm64": "arm64"}
SECTION = "admin"
PRIORITY = "optional"
# gzip, not xz: every dpkg reads it, Python's zlib is fast, and Fleet's packages use it too (ADR 0006).
GZIP_LEVEL = 6
_COPY_BUFFER = 1 << 20
_DOC_DIR = PurePosixPath("/usr/share/doc")
_LINTIAN_OVERRIDES = PurePosixPath("/usr/share/lintian/overrides")
_DEBIAN_VERSION = re.compile(r"[0-9][A-Za-z0-9.+~]*(-[A-Za-z0-9.+~]+)?")

# Tags that describe Fleet's layout, not mistakes; shipped in the package so `lintian` on a host agrees.
# Each one is justified in docs/adr/0006-linux-packages.md.
LINTIAN_OVERRIDES = (
    # Fleet's agent root is /opt/orbit: the TUF updater owns it and every Fleet doc, script and MDM profile names it.
    "dir-or-file-in-opt",
    # /usr/local/bin/orbit -> /opt/orbit/bin/orbit/orbit, so `sudo orbit …` works as Fleet documents it.
    "file-in-usr-local",
    "dir-in-usr-local",
    "file-in-unusual-dir",
    # /etc/default/orbit is generated per package (URL, secret, channels); an upgrade must replace it, and a
    # conffile prompt would break unattended (MDM) upgrades.
    "file-in-etc-not-marked-as-conffile",
    # 0600: the environment file holds the enroll secret; the TUF metadata and osquery.flags are 0600 as in Fleet.
    "non-standard-file-perm",
    # The agent's binaries (PyInstaller, osqueryd) are upstream builds that the TUF updater replaces at run time, so
    # package-level dependencies could not describe them; they need only glibc and zlib (Priority: required), and
    # PyInstaller's bootloader is not PIE. Observed with a real PyInstaller binary; unused with stand-in scripts.
    "undeclared-elf-prerequisites",
    "hardening-no-pie",
    # Scripts call systemctl themselves (guarded by /run/systemd/system) so the .deb and the .rpm share them and
    # the package does not depend on debhelper's helpers.
    "maintainer-script-calls-systemctl",
    # /opt, /usr/local and /usr/local/bin belong to the system but no package lists them: listing them would make
    # dpkg delete them on removal when empty, so the preinst makes sure they exist instead (linux_service.SYSTEM_DIRS)
    "missing-intermediate-directory",
)


@dataclass(frozen=True)
class _FileDigest:
    path: PurePosixPath
    size: int
    md5: str


def package_filename(staged: StagedPackage) -> str:
    """``fleet-osquery_1.2.3_amd64.deb`` (dpkg's conventional name)."""
    return f"{staged.name}_{staged.version}_{_architecture(staged)}.deb"


def build(staged: StagedPackage, outfile: Path) -> BuildResult:
    """Write the .deb to ``outfile`` (via a temp file in the same directory, renamed at the end: an existing file
    is replaced whole or left alone). The file is 0600 when it carries the enroll secret."""
    architecture = _architecture(staged)
    _check_version(staged.version)
    entries = _with_parents(linux_service.linux_payload(staged) + _docs(staged))
    with ThreadPoolExecutor(max_workers=default_workers(), thread_name_prefix="md5") as pool:
        digests = list(pool.map(_digest, [entry for entry in entries if entry.is_file]))  # md5 releases the GIL
    control = _control_tar(staged, architecture, entries, digests)
    epoch = staged.source_date_epoch
    with package_output(outfile, output_mode(staged)) as out:
        out.write(b"!<arch>\n")
        _ar_member(out, "debian-binary", b"2.0\n", epoch)
        _ar_member(out, "control.tar.gz", control, epoch)
        _ar_streamed_member(out, "data.tar.gz", epoch, lambda sink: _data_tar(sink, entries, epoch))
    return BuildResult(path=outfile, size=outfile.stat().st_size, sha256=_sha256(outfile))


def output_mode(staged: StagedPackage) -> int:
    """0600 when the package carries the enroll secret (in /etc/default/orbit), else 0644."""
    return 0o600 if staged.secret is not None else 0o644


def _architecture(staged: StagedPackage) -> str:
    try:
        return ARCHITECTURES[staged.arch]
    except KeyError:
        raise LinuxPackageError(f"no Debian architecture for {staged.arch!r}") from None


def _check_version(version: str) -> None:
    if not _DEBIAN_VERSION.fullmatch(version):
        raise LinuxPackageError(
            f"{version!r} is not a Debian version: start with a digit, then letters, digits and . + ~ "
            "(at most one '-' before a revision)"
        )


def control_text(staged: StagedPackage, architecture: str, installed_size_kib: int) -> str:
    description = "\n".join(f" {line}" if line else " ." for line in linux_service.DESCRIPTION.splitlines())
    fields = [
        ("Package", staged.name),
        ("Version", staged.version),
        ("Architecture", architecture),
        ("Maintainer", staged.extra.get("maintainer", linux_service.MAINTAINER)),
        ("Installed-Size", str(installed_size_kib)),
        ("Section", SECTION),
        ("Priority", PRIORITY),
        ("Homepage", linux_service.HOMEPAGE),
        ("Description", f"{linux_service.SUMMARY}\n{description}"),
    ]
    for name, value in fields:
        multiline_ok = name == "Description"
        if not value or value != value.strip() or "\n\n" in value or ("\n" in value and not multiline_ok):
            raise LinuxPackageError(f"control field {name} has an unusable value {value!r}")
    return "".join(f"{name}: {value}\n" for name, value in fields)


def installed_size_kib(entries: tuple[PayloadEntry, ...], digests: list[_FileDigest]) -> int:
    """dpkg-gencontrol's rule: each file (and symlink: its target's length) rounded up to KiB, every directory
    (the root ``./`` included) 1 KiB."""
    sizes = {digest.path: digest.size for digest in digests}
    total = 1  # ./
    for entry in entries:
        if entry.is_dir:
            total += 1
        elif entry.link_target is not None:
            total += math.ceil(len(entry.link_target.encode()) / 1024)
        else:
            total += math.ceil(sizes[entry.path] / 1024)
    return total


def _docs(staged: StagedPackage) -> tuple[PayloadEntry, ...]:
    """copyright (licences of what we ship), a one-entry changelog, and the lintian overrides."""
    doc = _DOC_DIR / staged.name
    native = "-" not in staged.version
    changelog_name = "changelog.gz" if native else "changelog.Debian.gz"
    return (
        PayloadEntry(doc / "copyright", 0o644, content=_copyright(staged).encode()),
        PayloadEntry(doc / changelog_name, 0o644, content=_gzip(_changelog(staged).encode())),
        PayloadEntry(
            _LINTIAN_OVERRIDES / staged.name,
            0o644,
            content="".join(f"{staged.name}: {tag}\n" for tag in LINTIAN_OVERRIDES).encode(),
        ),
    )


def _copyright(staged: StagedPackage) -> str:
    year = time.gmtime(staged.source_date_epoch).tm_year
    return f"""\
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: {staged.name}
Source: {linux_service.HOMEPAGE}

Files: *
Copyright: {year} {staged.extra.get("vendor", linux_service.VENDOR)}
License: Apache-2.0

Files: {str(staged.agent_root).lstrip("/")}/bin/osqueryd/*
Copyright: 2014-{year} The osquery authors
License: Apache-2.0 or GPL-2.0

License: Apache-2.0
 On Debian systems, the complete text of the Apache License 2.0 can be found in
 /usr/share/common-licenses/Apache-2.0.

License: GPL-2.0
 On Debian systems, the complete text of the GNU General Public License version 2
 can be found in /usr/share/common-licenses/GPL-2.
"""


def _changelog(staged: StagedPackage) -> str:
    date = time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime(staged.source_date_epoch))
    maintainer = staged.extra.get("maintainer", linux_service.MAINTAINER)
    return f"""\
{staged.name} ({staged.version}) stable; urgency=medium

  * Package built by orbitctl package.

 -- {maintainer}  {date}
"""


def _gzip(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=9, mtime=0)


def _with_parents(entries: tuple[PayloadEntry, ...]) -> tuple[PayloadEntry, ...]:
    """Every ancestor directory gets its own entry (0755), as in a tree dpkg-deb packs — except the system's own
    unowned directories (``linux_service.SYSTEM_DIRS``), which the preinst makes sure exist."""
    by_path = {entry.path: entry for entry in entries}
    for entry in entries:
        for parent in entry.path.parents:
            if parent != PurePosixPath("/") and parent not in linux_service.SYSTEM_DIRS:
                by_path.setdefault(parent, PayloadEntry(parent, 0o755))
    return tuple(sorted(by_path.values(), key=lambda entry: entry.path.parts))


def _digest(entry: PayloadEntry) -> _FileDigest:
    md5 = hashlib.md5(usedforsecurity=False)
    if entry.content is not None:
        md5.update(entry.content)
        return _FileDigest(entry.path, len(entry.content), md5.hexdigest())
    assert entry.source is not None
    size = 0
    with _open_source(entry.source, entry.path) as handle:
        while chunk := handle.read(_COPY_BUFFER):
            md5.update(chunk)
            size += len(chunk)
    return _FileDigest(entry.path, size, md5.hexdigest())


def _open_source(source: Path, path: PurePosixPath) -> BinaryIO:
    try:
        return source.open("rb")
    except OSError as exc:
        raise PackageOutputError(f"cannot read {source} (staged for {path}): {exc.strerror or exc}") from exc


def _control_tar(
    staged: StagedPackage, architecture: str, entries: tuple[PayloadEntry, ...], digests: list[_FileDigest]
) -> bytes:
    control = control_text(staged, architecture, installed_size_kib(entries, digests))
    md5sums = "".join(f"{digest.md5}  {str(digest.path).lstrip('/')}\n" for digest in digests)
    members = {
        "control": (control.encode(), 0o644),
        "md5sums": (md5sums.encode(), 0o644),
        "preinst": (linux_service.deb_preinst().encode(), 0o755),
        "postinst": (linux_service.deb_postinst(start_service=staged.service).encode(), 0o755),
        "postrm": (linux_service.deb_postrm(staged.agent_root).encode(), 0o755),
        "prerm": (linux_service.deb_prerm().encode(), 0o755),
    }
    buffer = io.BytesIO()
    with (
        gzip.GzipFile(filename="", mode="wb", fileobj=buffer, mtime=0, compresslevel=GZIP_LEVEL) as compressed,
        tarfile.open(fileobj=compressed, mode="w", format=tarfile.GNU_FORMAT) as tar,
    ):
        tar.addfile(_tar_info("./", tarfile.DIRTYPE, 0o755, staged.source_date_epoch))
        for name in sorted(members):
            data, mode = members[name]
            info = _tar_info(f"./{name}", tarfile.REGTYPE, mode, staged.source_date_epoch)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _tar_info(name: str, kind: bytes, mode: int, epoch: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.mtime = epoch
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def _data_tar(sink: BinaryIO, entries: tuple[PayloadEntry, ...], epoch: int) -> None:
    """The payload, gzip-compressed on every core (``parallel_gzip``: one ordinary gzip member, reproducible)."""
    with (
        ParallelGzipWriter(sink, level=GZIP_LEVEL) as compressed,
        tarfile.TarFile(
            fileobj=cast(BinaryIO, compressed), mode="w", format=tarfile.GNU_FORMAT, copybufsize=_COPY_BUFFER
        ) as tar,
    ):
        tar.addfile(_tar_info("./", tarfile.DIRTYPE, 0o755, epoch))
        for entry in entries:
            name = "." + str(entry.path)
            if entry.is_dir:
                tar.addfile(_tar_info(name, tarfile.DIRTYPE, entry.mode, epoch))
            elif entry.link_target is not None:
                info = _tar_info(name, tarfile.SYMTYPE, 0o777, epoch)
                info.linkname = entry.link_target
                tar.addfile(info)
            elif entry.content is not None:
                info = _tar_info(name, tarfile.REGTYPE, entry.mode, epoch)
                info.size = len(entry.content)
                tar.addfile(info, io.BytesIO(entry.content))
            else:
                assert entry.source is not None
                info = _tar_info(name, tarfile.REGTYPE, entry.mode, epoch)
                with _open_source(entry.source, entry.path) as handle:
                    info.size = os.fstat(handle.fileno()).st_size
                    tar.addfile(info, handle)


def _ar_header(name: str, size: int, epoch: int) -> bytes:
    header = f"{name:<16}{epoch:<12}{0:<6}{0:<6}{0o100644:<8o}{size:<10}`\n".encode("ascii")
    assert len(header) == 60, header
    return header


def _ar_member(out: BinaryIO, name: str, data: bytes, epoch: int) -> None:
    out.write(_ar_header(name, len(data), epoch))
    out.write(data)
    if len(data) % 2:
        out.write(b"\n")


def _ar_streamed_member(out: BinaryIO, name: str, epoch: int, write: Callable[[BinaryIO], None]) -> None:
    """A member whose size is known only afterwards: a placeholder header, the data, then the real header."""
    header_at = out.tell()
    out.write(_ar_header(name, 0, epoch))
    write(out)
    size = out.tell() - header_at - 60
    if size % 2:
        out.write(b"\n")
    end = out.tell()
    out.seek(header_at)
    out.write(_ar_header(name, size, epoch))
    out.seek(end)


def _sha256(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()
