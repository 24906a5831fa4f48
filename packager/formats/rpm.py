"""``fleet-osquery-<version>-1.<arch>.rpm``, built in-process with rpm-rs (ADR 0006): the same payload and the
same shell functions as the .deb (``linux_service``), RPM's scriptlet arguments, a fixed build host and
``source_date_epoch`` for every timestamp, so two builds of the same input are byte-identical.

Scriptlets (rpm passes the number of instances left): ``%preun`` with ``0`` (erase) stops and disables the
agent, never on an upgrade; ``%postun`` with ``0`` removes everything we or the agent created; ``%posttrans``
reloads, enables and (re)starts — it runs after the *old* package's ``%preun``/``%postun`` on an upgrade.
"""

from __future__ import annotations

import hashlib
import re
import tempfile
from pathlib import Path
from typing import Protocol

import rpm_rs  # type: ignore[import-untyped]

from packager.formats import linux_service
from packager.formats.linux_service import LinuxPackageError, PayloadEntry
from packager.formats.output_file import PackageOutputError, place_finished
from packager.package.staged import BuildResult, StagedPackage
from packager.signing.signing_key import SigningKey

ARCHITECTURES = {"amd64": "x86_64", "arm64": "aarch64"}
RELEASE = "1"
# RPM records the build host; a fixed, obviously-not-a-host name keeps builds reproducible (RFC 2606 .invalid).
BUILD_HOST = "orbitctl.invalid"
GROUP = "System Environment/Daemons"
# rpmlint findings that describe Fleet's layout or our decisions, not mistakes (regexes over rpmlint's output
# lines, for its `Filters` setting). Each one is justified in docs/adr/0006-linux-packages.md.
RPMLINT_FILTERS = (
    r"dir-or-file-in-opt /opt/orbit",
    r"dir-or-file-in-usr-local /usr/local/bin/orbit$",
    # /usr/local/bin/orbit -> /opt/orbit/...: absolute across top-level directories (Debian policy 10.5, Fleet).
    r"symlink-should-be-relative /usr/local/bin/orbit ",
    # The generated environment file is replaced on upgrade on purpose (no %config, see the ADR).
    r"non-conffile-in-etc /etc/default/orbit$",
    # 0600: the enroll secret, the TUF metadata and osquery.flags (Fleet's modes); osquery.flags may be empty.
    r"non-readable /(etc/default/orbit|opt/orbit/\S+) 600$",
    r"zero-length /opt/orbit/osquery\.flags$",
    # The unit belongs in /usr/lib/systemd/system even in an arch-specific package.
    r"only-non-binary-in-usr-lib$",
    # Fleet ships the TUF metadata under both names (docs/reference/packaging.md §3.6).
    r"files-duplicate /opt/orbit/updates-metadata\.json /opt/orbit/tuf-metadata\.json$",
    # orbit rotates its own log; /var/log/osquery stays empty (osquery logs under /opt/orbit).
    r"log-files-without-logrotate ",
    # SPDX identifier; rpmlint 2.4's default list predates Fedora's switch to SPDX.
    r"invalid-license Apache-2\.0$",
    # Signing is a separate, later step with the distributor's key (rpm --addsign / rpm-rs Signer).
    r"no-signature$",
    r"no-documentation$",
    # PyInstaller's bootloader (orbit, osqueryd-sim) is not PIE; the TUF updater replaces these binaries anyway.
    r"position-independent-executable-suggested /opt/orbit/bin/",
)
# rpm's own version syntax: no '-' (it separates version and release).
_RPM_VERSION = re.compile(r"[A-Za-z0-9._+~^]+")


class _BuiltPackage(Protocol):  # the part of rpm_rs.Package we use (rpm-rs ships no type information)
    def write_file(self, path: str) -> None: ...


class _Signable(_BuiltPackage, Protocol):
    def sign(self, signer: object, timestamp: int | None = None) -> None: ...


class _Builder(Protocol):
    def build(self) -> _Signable: ...


def package_filename(staged: StagedPackage) -> str:
    """``fleet-osquery-1.2.3-1.x86_64.rpm`` (rpm's conventional name)."""
    return f"{staged.name}-{staged.version}-{RELEASE}.{_architecture(staged)}.rpm"


def build(staged: StagedPackage, outfile: Path, signing_key: SigningKey | None = None) -> BuildResult:
    """Write the .rpm to ``outfile`` through a temp file in the same directory, renamed at the end (an existing
    file is replaced whole or left alone). 0600 when it carries the enroll secret. With ``signing_key``, the
    header carries its OpenPGP signature (ADR 0016), made at ``signing_key.signature_time(source_date_epoch)``."""
    architecture = _architecture(staged)
    if not _RPM_VERSION.fullmatch(staged.version) or not staged.version[0].isdigit():
        raise LinuxPackageError(
            f"{staged.version!r} is not an RPM version: start with a digit, then letters, digits and . _ + ~ ^"
        )
    entries = linux_service.linux_payload(staged)
    package = _builder(staged, architecture, entries).build()
    if signing_key is not None:
        _sign(package, signing_key, signing_key.signature_time(staged.source_date_epoch))
    mode = 0o600 if staged.secret is not None else 0o644
    try:
        with tempfile.TemporaryDirectory(prefix=f".{outfile.name}.", dir=outfile.parent) as work:
            partial = Path(work) / "package.rpm"
            package.write_file(str(partial))
            with partial.open("rb") as handle:
                sha256 = hashlib.file_digest(handle, "sha256").hexdigest()
            size = partial.stat().st_size
            place_finished(partial, outfile, mode)
    except PackageOutputError:
        raise
    except OSError as exc:
        raise PackageOutputError(f"cannot write {outfile}: {exc.strerror or exc}") from exc
    return BuildResult(path=outfile, size=size, sha256=sha256)


def _architecture(staged: StagedPackage) -> str:
    try:
        return ARCHITECTURES[staged.arch]
    except KeyError:
        raise LinuxPackageError(f"no RPM architecture for {staged.arch!r}") from None


def _sign(package: _Signable, key: SigningKey, timestamp: int) -> None:
    """rpm-rs adds the header-only signature: tag 268 (RSAHEADER) for RSA keys, 267 (DSAHEADER) for EdDSA/ECDSA
    (rpm's names for "OpenPGP signature over the header"); the header's SHA-256 digest covers the payload digest,
    so the signature covers the payload too."""
    try:
        signer = rpm_rs.Signer.from_file(str(key.key_file))
        if key.passphrase is not None:
            signer = signer.with_key_passphrase(key.passphrase)
        signer = signer.with_signing_key(key.fingerprint)
        package.sign(signer, timestamp=timestamp)
    except (RuntimeError, ValueError) as exc:
        raise LinuxPackageError(f"rpm-rs cannot sign with the key {key.fingerprint}: {exc}") from exc


def _read_source(entry: PayloadEntry) -> bytes:
    """The staged bytes, handed to rpm-rs as contents: rpm-rs keeps a source file's own mtime when it is older
    than ``source_date``, so files passed by path would make the output depend on the staging's timestamps."""
    assert entry.source is not None
    try:
        return entry.source.read_bytes()
    except OSError as exc:
        reason = exc.strerror or exc
        raise PackageOutputError(f"cannot read {entry.source} (staged for {entry.path}): {reason}") from exc


def _builder(staged: StagedPackage, architecture: str, entries: tuple[PayloadEntry, ...]) -> _Builder:
    config = rpm_rs.BuildConfig(
        format=rpm_rs.RpmFormat.V4,
        compression=rpm_rs.CompressionType.Gzip,
        source_date=staged.source_date_epoch,
    )
    builder = rpm_rs.PackageBuilder(
        staged.name, staged.version, linux_service.LICENSE, architecture, linux_service.SUMMARY
    )
    builder.using_config(config)
    builder.release(RELEASE)
    builder.description(linux_service.DESCRIPTION)
    builder.url(linux_service.HOMEPAGE)
    builder.vendor(staged.extra.get("vendor", linux_service.VENDOR))
    builder.packager(staged.extra.get("maintainer", linux_service.MAINTAINER))
    builder.group(GROUP)
    builder.build_host(BUILD_HOST)
    builder.add_changelog_entry(
        f"{staged.extra.get('maintainer', linux_service.MAINTAINER)} - {staged.version}-{RELEASE}",
        "- Package built by orbitctl package.",
        staged.source_date_epoch,
    )
    owner = {"user": "root", "group": "root"}
    for entry in entries:
        path = str(entry.path)
        if entry.is_dir:
            builder.with_dir_entry(rpm_rs.FileOptions.dir(path, permissions=entry.mode, **owner))
        elif entry.link_target is not None:
            builder.with_symlink(rpm_rs.FileOptions.symlink(path, entry.link_target, **owner))
        else:
            content = entry.content if entry.content is not None else _read_source(entry)
            builder.with_file_contents(content, rpm_rs.FileOptions.new(path, permissions=entry.mode, **owner))
    builder.pre_uninstall_script(linux_service.rpm_preun())
    builder.post_uninstall_script(linux_service.rpm_postun(staged.agent_root))
    builder.post_trans_script(linux_service.rpm_posttrans(start_service=staged.service))
    built: _Builder = builder
    return built
