"""The text of an apt repository's indexes (pure): a .deb's control paragraph, its ``Packages`` stanza, and the
``Release`` file that lists every index with its size and SHA-256 (Debian's repository format,
https://wiki.debian.org/DebianRepository/Format). The signatures over ``Release`` are ``apt_repository``'s."""

from __future__ import annotations

import email.utils
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

_FIELD = re.compile(r"^([!-9;-~]+):[ \t]*(.*)$")  # a field name is printable ASCII without ':' (deb822)
_NAME = re.compile(r"^[a-z0-9][a-z0-9.+-]+$")  # Debian's package names
_ARCHITECTURE = re.compile(r"^[a-z0-9-]+$")


class AptIndexError(ValueError):
    pass


@dataclass(frozen=True)
class DebEntry:
    """One .deb as the Packages index lists it."""

    control: str  # the control paragraph, fields in the package's order, ending without a blank line
    package: str
    version: str
    architecture: str
    filename: str  # relative to the repository root: pool/main/f/fleet-osquery/…deb
    size: int
    sha256: str
    md5: str

    def stanza(self) -> str:
        return (
            f"{self.control}\nFilename: {self.filename}\nSize: {self.size}\nMD5sum: {self.md5}\nSHA256: {self.sha256}\n"
        )


@dataclass(frozen=True)
class IndexFile:
    path: str  # relative to dists/<suite>/: main/binary-amd64/Packages
    content: bytes


def parse_control(text: str, source: str) -> dict[str, str]:
    """The fields of a single control paragraph (continuation lines kept in the value)."""
    fields: dict[str, str] = {}
    last: str | None = None
    lines = text.strip("\n").split("\n")
    for line in lines:
        if line.startswith((" ", "\t")) and last is not None:
            fields[last] += "\n" + line
            continue
        match = _FIELD.match(line)
        if match is None:
            raise AptIndexError(f"{source}: the control file has an unusable line {line[:60]!r}")
        last = match.group(1)
        if last in fields:
            raise AptIndexError(f"{source}: the control file repeats the field {last}")
        fields[last] = match.group(2)
    for required in ("Package", "Version", "Architecture"):
        if not fields.get(required):
            raise AptIndexError(f"{source}: the control file has no {required} field")
    if not _NAME.match(fields["Package"]) or not _ARCHITECTURE.match(fields["Architecture"]):
        raise AptIndexError(f"{source}: unusable Package or Architecture in the control file")
    for name in ("Filename", "Size", "MD5sum", "SHA1", "SHA256"):
        if name in fields:
            raise AptIndexError(f"{source}: a .deb's control file cannot hold the index field {name}")
    return fields


def pool_path(component: str, package: str, filename: str) -> str:
    """Debian's pool layout: pool/main/f/fleet-osquery/<file> (lib* packages under four letters)."""
    prefix = package[:4] if package.startswith("lib") else package[0]
    return f"pool/{component}/{prefix}/{package}/{filename}"


def packages_indexes(entries: Sequence[DebEntry], component: str, architectures: Sequence[str]) -> list[IndexFile]:
    """``<component>/binary-<arch>/Packages`` per architecture, stanzas sorted by name and version text."""
    seen: set[tuple[str, str, str]] = set()
    for entry in entries:
        identity = (entry.package, entry.version, entry.architecture)
        if identity in seen:
            raise AptIndexError(f"two .deb files are {entry.package} {entry.version} {entry.architecture}")
        seen.add(identity)
    indexes = []
    for architecture in architectures:
        chosen = sorted(
            (entry for entry in entries if entry.architecture in (architecture, "all")),
            key=lambda entry: (entry.package, entry.version, entry.filename),
        )
        text = "\n".join(entry.stanza() for entry in chosen)
        indexes.append(IndexFile(f"{component}/binary-{architecture}/Packages", text.encode()))
    return indexes


def architectures_of(entries: Sequence[DebEntry]) -> list[str]:
    """The architectures the repository serves (``all`` packages appear in each; alone, they mean amd64)."""
    found = sorted({entry.architecture for entry in entries} - {"all"})
    return found or ["amd64"]


def release_text(
    *, suite: str, component: str, architectures: Sequence[str], date_epoch: int, files: Sequence[IndexFile]
) -> str:
    """The Release file: what the repository is, when it was made (``Date``, from SOURCE_DATE_EPOCH) and the
    SHA-256 of every index; apt refuses any index whose bytes differ from this list."""
    date = email.utils.formatdate(date_epoch, usegmt=True).replace("GMT", "UTC")
    lines = [
        "Origin: orbitctl",
        "Label: orbitctl",
        f"Suite: {suite}",
        f"Codename: {suite}",
        f"Date: {date}",
        f"Architectures: {' '.join(architectures)}",
        f"Components: {component}",
        "Description: fleet-osquery packages (orbitctl repo apt)",
        "SHA256:",
    ]
    for item in sorted(files, key=lambda item: item.path):
        lines.append(f" {hashlib.sha256(item.content).hexdigest()} {len(item.content):>16} {item.path}")
    return "\n".join(lines) + "\n"
