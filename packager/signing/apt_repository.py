"""A signed apt repository of .deb files (``orbitctl repo apt``; the field test points apt at it):

    DIR/pool/main/f/fleet-osquery/fleet-osquery_1.2.3_amd64.deb
    DIR/dists/stable/main/binary-amd64/Packages, Packages.gz
    DIR/dists/stable/Release, InRelease (clear-signed Release), Release.gpg (detached, armored)
    DIR/archive-keyring.asc (the public key, for ``signed-by=``)

apt trusts the repository through ``InRelease`` (or ``Release`` + ``Release.gpg``) verified with the key named
in ``signed-by``; ``Release`` pins every index by SHA-256 and size, and ``Packages`` pins every .deb the same way.
The whole tree is built in a temporary directory beside DIR and renamed into place; the output is a function of
the .deb files, the key and SOURCE_DATE_EPOCH (ADR 0016).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import shutil
import tarfile
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from packager.signing.apt_indexes import (
    AptIndexError,
    DebEntry,
    IndexFile,
    architectures_of,
    packages_indexes,
    parse_control,
    pool_path,
    release_text,
)
from packager.signing.signing_key import SigningKey, signing_home

KEYRING_NAME = "archive-keyring.asc"
_AR_MAGIC = b"!<arch>\n"
MAX_CONTROL_BYTES = 1 << 20

__all__ = ["KEYRING_NAME", "AptIndexError", "AptRepository", "build_signed_apt_repository"]


@dataclass(frozen=True)
class AptRepository:
    root: Path
    suite: str
    component: str
    packages: tuple[str, ...]  # name=version of each .deb

    @property
    def keyring(self) -> Path:
        return self.root / KEYRING_NAME

    def sources_line(self, keyring: Path | None = None, url: str | None = None) -> str:
        """One-line-style sources entry: ``deb [signed-by=…] file:/…/DIR stable main`` (``url``: the same tree
        served over http). ``keyring`` defaults to the public key inside the repository."""
        where = url or f"file:{self.root.resolve()}"
        return f"deb [signed-by={keyring or self.keyring.resolve()}] {where} {self.suite} {self.component}"


def build_signed_apt_repository(
    directory: Path,
    debs: Sequence[Path],
    key: SigningKey,
    *,
    date_epoch: int,
    suite: str = "stable",
    component: str = "main",
) -> AptRepository:
    """Write the repository to ``directory`` (new, empty, or an earlier one made by this function, replaced
    whole). ``AptIndexError``/``OSError`` on unusable input, ``SigningKeyError`` on key trouble."""
    if not debs:
        raise AptIndexError("no .deb given")
    for name, value in (("suite", suite), ("component", component)):
        if not value or not all(c.isalnum() or c in "-_." for c in value):
            raise AptIndexError(f"unusable {name} {value!r}")
    _check_target(directory)
    entries = [_entry(deb, component) for deb in debs]
    architectures = architectures_of(entries)
    indexes = packages_indexes(entries, component, architectures)
    files = [*indexes, *(IndexFile(f"{item.path}.gz", _gzip(item.content)) for item in indexes)]
    release = release_text(
        suite=suite, component=component, architectures=architectures, date_epoch=date_epoch, files=files
    ).encode()
    when = key.signature_time(date_epoch)
    with signing_home(key) as home:
        inrelease = home.sign(
            release, fingerprint=key.fingerprint, passphrase=key.passphrase, when=when, mode="clearsign"
        )
        detached = home.sign(release, fingerprint=key.fingerprint, passphrase=key.passphrase, when=when, mode="detach")

    directory.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        for deb, entry in zip(debs, entries, strict=True):
            target = work / entry.filename
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(deb, target)
        dists = work / "dists" / suite
        for item in files:
            _write(dists / item.path, item.content)
        _write(dists / "Release", release)
        _write(dists / "InRelease", inrelease)
        _write(dists / "Release.gpg", detached)
        _write(work / KEYRING_NAME, key.public_key)
        for path in (work, *work.rglob("*")):
            os.chmod(path, 0o755 if path.is_dir() else 0o644)  # a repository is public; mkdtemp made it 0700
        _replace(work, directory)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return AptRepository(directory, suite, component, tuple(f"{e.package}={e.version}" for e in entries))


def _check_target(directory: Path) -> None:
    if directory.exists() and not directory.is_dir():
        raise AptIndexError(f"{directory} exists and is not a directory")
    if directory.is_dir() and any(directory.iterdir()) and not (directory / KEYRING_NAME).is_file():
        raise AptIndexError(f"{directory} is not empty and not an apt repository made by orbitctl")


def _replace(work: Path, directory: Path) -> None:
    """``work`` becomes ``directory``; an earlier repository there is moved aside first and then removed."""
    old = None
    if directory.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{directory.name}.old.", dir=directory.parent))
        os.rename(directory, old / "repository")
    os.rename(work, directory)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _write(path: Path, content: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as handle:
        handle.write(content)
        handle.flush()
        os.fsync(handle.fileno())


def _gzip(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=9, mtime=0)


def _entry(deb: Path, component: str) -> DebEntry:
    control = _control_text(deb)
    fields = parse_control(control, str(deb))
    md5, sha256 = hashlib.md5(usedforsecurity=False), hashlib.sha256()
    with deb.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            md5.update(block)
            sha256.update(block)
    package, version, architecture = fields["Package"], fields["Version"], fields["Architecture"]
    filename = f"{package}_{version.split(':')[-1]}_{architecture}.deb"
    return DebEntry(
        control=control.strip("\n"),
        package=package,
        version=version,
        architecture=architecture,
        filename=pool_path(component, package, filename),
        size=deb.stat().st_size,
        sha256=sha256.hexdigest(),
        md5=md5.hexdigest(),
    )


def _control_text(deb: Path) -> str:
    """The ``control`` file inside the .deb's ``control.tar.{gz,xz,bz2}`` (an ar archive, read by hand)."""
    try:
        with deb.open("rb") as handle:
            if handle.read(8) != _AR_MAGIC:
                raise AptIndexError(f"{deb} is not a .deb (no ar archive)")
            while header := handle.read(60):
                if len(header) < 60:
                    break
                name = header[:16].decode("ascii", "replace").strip().rstrip("/")
                size = int(header[48:58].decode("ascii").strip() or 0)
                if name.startswith("control.tar"):
                    if name.endswith(".zst"):
                        raise AptIndexError(f"{deb}: control.tar.zst is not supported (Python reads gz, xz, bz2)")
                    if size > MAX_CONTROL_BYTES:
                        raise AptIndexError(f"{deb}: control archive larger than {MAX_CONTROL_BYTES} bytes")
                    return _control_member(handle.read(size), deb)
                handle.seek(size + (size & 1), os.SEEK_CUR)
    except (OSError, ValueError, tarfile.TarError) as exc:
        if isinstance(exc, AptIndexError):
            raise
        raise AptIndexError(f"cannot read {deb}: {exc}") from exc
    raise AptIndexError(f"{deb} has no control archive")


def _control_member(archive: bytes, deb: Path) -> str:
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:*") as tar:
        for member in tar.getmembers():
            if member.name in ("./control", "control") and member.isfile() and member.size <= MAX_CONTROL_BYTES:
                extracted = tar.extractfile(member)
                assert extracted is not None
                return extracted.read().decode("utf-8")
    raise AptIndexError(f"{deb}: no control file in its control archive")
