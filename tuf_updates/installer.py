"""Installing verified targets into ``bin/<name>/<platform>/<channel>/``, atomically, beside the previous version.

Layout of one channel directory (decided in this module; see ``install`` for the steps)::

    .versions/<digest>/<payload>      one complete, checked version per directory, with target.json (hashes,
                                      length, version, install time) written before it is ever used
    <file>                            plain targets: a hard link to the current version's file; a regular file,
                                      exactly where Fleet's layout puts it and where orbit executes it
    <file>.previous                   a hard link to the version before
    <top>, <top>.previous             archive targets: symlinks to ``.versions/<digest>/<top>`` (``<top>`` is the
                                      archive's top directory, e.g. ``fleet-desktop`` or ``osquery.app``)

The switch is one ``rename`` of a new link over the old one, so a kill at any moment leaves either the old or the
new complete version at the executed path, never a half-written file. Versions other than current and previous
are removed after a switch. A file placed by a package (not in ``.versions``) is adopted as the previous version
before it is replaced. Windows cannot rename over a running executable, so there the old file is first moved aside
(``<file>.old``) and ``recover`` repairs the short gap if the process dies in between.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType

from safe_fs.atomic_write import fsync_dir, fsync_tree, write_json_atomic
from safe_fs.moves import file_digest, hidden_temp, move_file, remove, replace_pointer
from tuf_updates.archive import ArchiveLimits, safe_extract
from tuf_updates.directory_lock import DirectoryLock
from tuf_updates.errors import InstallError, storage_error
from tuf_updates.exec_check import DEFAULT_EXEC_CHECK_TIMEOUT, ExecCheck, run_help
from tuf_updates.install_record import TARGET_RECORD, InstalledVersion, read_record
from tuf_updates.integrity import ExpectedFile, problem_with
from tuf_updates.target_info import TargetInfo
from tuf_updates.targets import TargetName, TargetSpec, is_native

logger = logging.getLogger(__name__)

VERSIONS_DIR = ".versions"
PREVIOUS_SUFFIX = ".previous"
_DIGEST_NAME_LENGTH = 32


@dataclass(frozen=True)
class InstallResult:
    spec: TargetSpec
    current: InstalledVersion
    previous: InstalledVersion | None
    executable: Path


class TargetInstaller:
    """Install, inspect and roll back targets under ``<root_dir>/bin``; downloads are staged in ``<root>/staging``.

    ``system``/``machine`` name the running platform (default: this machine) so the exec check is skipped for
    foreign platforms; ``exec_check`` replaces the default ``<exe> --help`` runner.
    """

    def __init__(
        self,
        root_dir: Path,
        *,
        exec_check: ExecCheck | None = None,
        exec_check_timeout: float = DEFAULT_EXEC_CHECK_TIMEOUT,
        system: str | None = None,
        machine: str | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        archive_limits: ArchiveLimits | None = None,
        base_env: Mapping[str, str] | None = None,
    ) -> None:
        self.root_dir = root_dir
        self._exec_check = exec_check or run_help(exec_check_timeout)
        self._system = system
        self._machine = machine
        self._clock = clock
        self._limits = archive_limits or ArchiveLimits()
        self._base_env = base_env
        self._digest_cache: dict[tuple[int, int, int, int, str], str] = {}

    # -- paths ---------------------------------------------------------------------------------------------

    @property
    def staging_dir(self) -> Path:
        return self.root_dir / "staging"

    def channel_dir(self, spec: TargetSpec) -> Path:
        return self.root_dir.joinpath("bin", *spec.install_parts)

    def _pointer(self, spec: TargetSpec) -> Path:
        """The entry that is switched: the file itself, or the archive's top directory (a symlink)."""
        return self.channel_dir(spec) / spec.executable.split("/", 1)[0]

    def _previous_pointer(self, spec: TargetSpec) -> Path:
        pointer = self._pointer(spec)
        return pointer.with_name(pointer.name + PREVIOUS_SUFFIX)

    def executable_path(self, spec: TargetSpec) -> Path:
        """Where orbit executes the target (Fleet's path); it may not exist yet."""
        return self.channel_dir(spec) / spec.executable

    def is_installed(self, spec: TargetSpec) -> bool:
        return self.executable_path(spec).is_file()

    # -- inspection ----------------------------------------------------------------------------------------

    def _version_dir_of(self, spec: TargetSpec, pointer: Path) -> Path | None:
        versions = self.channel_dir(spec) / VERSIONS_DIR
        if spec.is_archive:
            if not pointer.is_symlink():
                return None
            parts = Path(os.readlink(pointer)).parts
            if len(parts) != 3 or parts[0] != VERSIONS_DIR or parts[1].startswith("."):
                return None
            return versions / parts[1]
        try:
            current = pointer.stat()
            candidates = [entry for entry in versions.iterdir() if not entry.name.startswith(".")]
        except OSError:
            return None
        for candidate in candidates:
            try:
                found = (candidate / spec.file_name).stat()
            except OSError:
                continue
            if (found.st_dev, found.st_ino) == (current.st_dev, current.st_ino):
                return candidate
        return None

    def installed(self, spec: TargetSpec) -> InstalledVersion | None:
        """The recorded version at the executed path, or ``None`` (nothing, or placed by a package)."""
        version_dir = self._version_dir_of(spec, self._pointer(spec))
        return read_record(version_dir) if version_dir is not None else None

    def previous(self, spec: TargetSpec) -> InstalledVersion | None:
        version_dir = self._version_dir_of(spec, self._previous_pointer(spec))
        return read_record(version_dir) if version_dir is not None else None

    def installed_hash(self, spec: TargetSpec, algorithm: str) -> str | None:
        """The ``algorithm`` digest of what is installed, to compare with the target's signed hash.

        Plain files are hashed from disk (cached per inode, size and mtime), so a file replaced behind our back is
        noticed; archives answer from the record of the version their link points at, or — placed by a package,
        which ships the archive beside what it extracted — from that archive, so a package's copy is recognised and
        not downloaded again.
        """
        if spec.is_archive:
            record = self.installed(spec)
            if record is not None:
                return record.hashes.get(algorithm)
            shipped = self.channel_dir(spec) / spec.file_name
            if not (self.channel_dir(spec) / spec.executable).is_file():
                return None
            return self._hash_of(shipped, algorithm)
        return self._hash_of(self._pointer(spec), algorithm)

    def _hash_of(self, path: Path, algorithm: str) -> str | None:
        try:
            info = path.stat()
        except OSError:
            return None
        key = (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, algorithm)
        if key not in self._digest_cache:
            try:
                self._digest_cache[key] = file_digest(path, algorithm)
            except OSError:
                return None
        return self._digest_cache[key]

    # -- installing ----------------------------------------------------------------------------------------

    def _lock(self, spec: TargetSpec) -> DirectoryLock:
        channel = self.channel_dir(spec)
        channel.mkdir(parents=True, exist_ok=True)
        return DirectoryLock(channel, label=f"install directory of {spec}")

    def _exec_env(self, spec: TargetSpec, executable: Path) -> dict[str, str]:
        env = dict(os.environ if self._base_env is None else self._base_env)
        if spec.name is TargetName.DESKTOP and spec.platform.value.startswith("linux"):
            env["LD_LIBRARY_PATH"] = str(executable.parent)
        return env

    def install(self, spec: TargetSpec, target: TargetInfo, downloaded: Path) -> InstallResult:
        """Install the verified download of ``target`` as the current version of ``spec``.

        Steps: build ``.versions/<digest>`` in a hidden directory (extract or move, exec check, record, fsync) and
        rename it into place; keep what is current as ``.previous`` (adopting a package-placed file); switch the
        pointer with one rename; drop versions other than current and previous. ``downloaded`` is consumed.
        """
        if target.path != spec.path:
            raise ValueError(f"target {target.path} is not {spec.path}")
        try:
            with self._lock(spec):
                self._recover_unlocked(spec)
                return self._install_unlocked(spec, target, downloaded)
        except OSError as exc:
            raise storage_error(exc, f"installing {spec}") from exc
        finally:
            remove(downloaded)

    def _install_unlocked(self, spec: TargetSpec, target: TargetInfo, downloaded: Path) -> InstallResult:
        versions = self.channel_dir(spec) / VERSIONS_DIR
        versions.mkdir(exist_ok=True)
        digest_id = target.preferred_hash()[1][:_DIGEST_NAME_LENGTH]
        version_dir = versions / digest_id
        record = self._intact_record(spec, version_dir)
        if record is None:
            # what the pointer runs may be this very directory, damaged (a truncated file is truncated under
            # both of its hard links): rebuilt, it is pointed at again — the damaged file never becomes .previous
            damaged_current = self._version_dir_of(spec, self._pointer(spec)) == version_dir
            record = self._build_version(spec, downloaded, version_dir, self._new_record(target, digest_id))
            if damaged_current:
                self._link(spec, version_dir, self._pointer(spec))
                logger.warning("reinstalled a damaged version target=%s version=%s", spec, record.version)
                return InstallResult(spec, record, self.previous(spec), self.executable_path(spec))
        current = self._adopt_current(spec)
        if current is not None and current.digest_id == digest_id:
            logger.info("target already installed target=%s version=%s", spec, record.version)
            return InstallResult(spec, current, self.previous(spec), self.executable_path(spec))
        if current is not None:
            self._link(spec, versions / current.digest_id, self._previous_pointer(spec))
        self._link(spec, version_dir, self._pointer(spec))
        self._tidy(spec)
        logger.info(
            "installed target=%s version=%s previous=%s",
            spec,
            record.version,
            current.version if current is not None else None,
        )
        return InstallResult(spec, record, current, self.executable_path(spec))

    # -- staged installs (orbit's own trial boot) ---------------------------------------------------------

    def stage(self, spec: TargetSpec, target: TargetInfo, downloaded: Path) -> Path:
        """Build and check ``.versions/<digest>`` for ``target`` without switching to it; returns its executable.

        orbit updates itself this way: the new version runs from here on trial and is ``promote``d only once it
        has proved healthy, so a version that cannot even start never becomes what the service manager runs.
        """
        if target.path != spec.path:
            raise ValueError(f"target {target.path} is not {spec.path}")
        try:
            with self._lock(spec):
                self._recover_unlocked(spec)
                versions = self.channel_dir(spec) / VERSIONS_DIR
                versions.mkdir(parents=True, exist_ok=True)
                digest_id = target.preferred_hash()[1][:_DIGEST_NAME_LENGTH]
                version_dir = versions / digest_id
                if self._intact_record(spec, version_dir) is None:
                    self._build_version(spec, downloaded, version_dir, self._new_record(target, digest_id))
                self._adopt_current(spec)
                logger.info("staged target=%s version=%s", spec, target.version)
                return version_dir / spec.executable
        except OSError as exc:
            raise storage_error(exc, f"staging {spec}") from exc
        finally:
            remove(downloaded)

    def staged_record(self, spec: TargetSpec, digest_id: str) -> InstalledVersion | None:
        return read_record(self.channel_dir(spec) / VERSIONS_DIR / digest_id)

    def promote(self, spec: TargetSpec, digest_id: str) -> InstallResult:
        """Make the staged version ``digest_id`` current (the current one becomes ``.previous``)."""
        try:
            with self._lock(spec):
                self._recover_unlocked(spec)
                version_dir = self.channel_dir(spec) / VERSIONS_DIR / digest_id
                record = read_record(version_dir)
                if record is None or not (version_dir / spec.executable).is_file():
                    raise InstallError(f"{spec}: no staged version {digest_id}")
                current = self._adopt_current(spec)
                if current is not None and current.digest_id == digest_id:
                    return InstallResult(spec, current, self.previous(spec), self.executable_path(spec))
                if current is not None:
                    self._link(spec, version_dir.parent / current.digest_id, self._previous_pointer(spec))
                self._link(spec, version_dir, self._pointer(spec))
                self._tidy(spec)
        except OSError as exc:
            raise storage_error(exc, f"promoting {spec}") from exc
        logger.info("promoted target=%s version=%s", spec, record.version)
        return InstallResult(spec, record, current, self.executable_path(spec))

    def discard_staged(self, spec: TargetSpec, digest_id: str) -> None:
        """Remove a staged version that failed its trial (never the current or previous one)."""
        if not digest_id or digest_id.startswith(".") or "/" in digest_id or "\\" in digest_id:
            return  # not a version directory's name (a damaged marker): "" or ".." would remove far more
        keep = {
            version_dir.name
            for pointer in (self._pointer(spec), self._previous_pointer(spec))
            if (version_dir := self._version_dir_of(spec, pointer)) is not None
        }
        if digest_id not in keep:
            remove(self.channel_dir(spec) / VERSIONS_DIR / digest_id)

    def _new_record(self, target: TargetInfo, digest_id: str) -> InstalledVersion:
        return InstalledVersion(
            digest_id=digest_id,
            hashes=target.hashes,
            length=target.length,
            version=target.version,
            installed_at=self._clock().isoformat(),
        )

    def _intact_record(self, spec: TargetSpec, version_dir: Path) -> InstalledVersion | None:
        """The record of ``version_dir`` when its executable is still exactly what was installed, else None (absent,
        incomplete, or damaged since — Fleet re-installed over such a file and left it broken)."""
        if not (version_dir / spec.executable).is_file():
            return None
        record = read_record(version_dir)
        if record is None:
            return None
        problem = self.version_problem(spec, version_dir.name)
        if problem is not None:
            logger.warning("damaged installed version target=%s id=%s problem=%s", spec, version_dir.name, problem)
            return None
        return record

    def version_problem(self, spec: TargetSpec, digest_id: str) -> str | None:
        """What is wrong with the executable of ``.versions/<digest_id>`` against its own record (full hash);
        None when it is intact or cannot be judged (a record without trusted hashes)."""
        version_dir = self.channel_dir(spec) / VERSIONS_DIR / digest_id
        record = read_record(version_dir)
        if record is None:
            return "no install record"
        expected = ExpectedFile.of_record(record, archive=spec.is_archive)
        if expected is None:
            return None
        return problem_with(version_dir / spec.executable, expected)

    def _build_version(
        self, spec: TargetSpec, downloaded: Path, version_dir: Path, record: InstalledVersion
    ) -> InstalledVersion:
        incoming = hidden_temp(version_dir.parent, version_dir.name)
        incoming.mkdir(mode=0o755)
        try:
            if spec.is_archive:
                safe_extract(downloaded, incoming, self._limits)
            else:
                move_file(downloaded, incoming / spec.file_name)
            executable = incoming / spec.executable
            if not executable.is_file() or executable.is_symlink():
                raise InstallError(f"{spec}: the executable {spec.executable} is missing from the target")
            executable.chmod(0o755)
            if spec.is_archive:  # measured inside the verified archive: what a later integrity check compares with
                record = replace(
                    record,
                    executable_length=executable.stat().st_size,
                    executable_sha256=file_digest(executable, "sha256"),
                )
            if is_native(spec.platform, system=self._system, machine=self._machine):
                self._exec_check(executable, self._exec_env(spec, executable))
            else:
                logger.info("exec check skipped for a foreign platform target=%s", spec)
            write_json_atomic(incoming / TARGET_RECORD, record.to_json())
            fsync_tree(incoming)
            remove(version_dir)
            os.rename(incoming, version_dir)
            fsync_dir(version_dir.parent)
        except BaseException:
            remove(incoming)
            raise
        return record

    def _adopt_current(self, spec: TargetSpec) -> InstalledVersion | None:
        """The version at the pointer; a file or directory placed by a package becomes a managed version first."""
        pointer = self._pointer(spec)
        if not pointer.exists():
            return None
        version_dir = self._version_dir_of(spec, pointer)
        if version_dir is not None:
            return read_record(version_dir)
        versions = self.channel_dir(spec) / VERSIONS_DIR
        hashes: dict[str, str] = {}
        length = 0
        hashed = self.channel_dir(spec) / spec.file_name if spec.is_archive else pointer
        if hashed.is_file():  # an archive's package copy ships the archive beside what it extracted
            hashes = {algorithm: file_digest(hashed, algorithm) for algorithm in ("sha512", "sha256")}
            length = hashed.stat().st_size
        digest_id = hashes["sha512"][:_DIGEST_NAME_LENGTH] if hashes else f"adopted-{secrets.token_hex(8)}"
        record = InstalledVersion(digest_id, MappingProxyType(hashes), length, None, self._clock().isoformat())
        incoming = hidden_temp(versions, digest_id)
        incoming.mkdir(mode=0o755)
        write_json_atomic(incoming / TARGET_RECORD, record.to_json())
        version_dir = versions / digest_id
        if spec.is_archive:
            # a real directory cannot be swapped for a link atomically: move it in and link it back at once
            # (``recover`` restores the link should we die in between)
            os.rename(incoming, version_dir)
            os.rename(pointer, version_dir / pointer.name)
            self._link(spec, version_dir, pointer)
        else:
            os.link(pointer, incoming / spec.file_name)
            remove(version_dir)
            os.rename(incoming, version_dir)
        fsync_dir(versions)
        logger.info("adopted the package-installed version target=%s id=%s", spec, digest_id)
        return record

    def _link_source(self, spec: TargetSpec, version_dir: Path) -> str:
        return f"{VERSIONS_DIR}/{version_dir.name}/{self._pointer(spec).name}"

    def _link(self, spec: TargetSpec, version_dir: Path, pointer: Path) -> None:
        """Atomically make ``pointer`` (the executed entry or ``.previous``) refer to ``version_dir``."""
        temp = hidden_temp(pointer.parent, pointer.name)
        if spec.is_archive:
            os.symlink(self._link_source(spec, version_dir), temp, target_is_directory=True)
        else:
            os.link(version_dir / spec.file_name, temp)
        replace_pointer(temp, pointer)
        fsync_dir(pointer.parent)

    def _tidy(self, spec: TargetSpec) -> None:
        """Keep the versions of the pointer and of ``.previous``; remove everything else in ``.versions``."""
        keep = {
            version_dir.name
            for pointer in (self._pointer(spec), self._previous_pointer(spec))
            if (version_dir := self._version_dir_of(spec, pointer)) is not None
        }
        versions = self.channel_dir(spec) / VERSIONS_DIR
        for entry in versions.iterdir():
            if entry.name not in keep:
                remove(entry)

    # -- repair ----------------------------------------------------------------------------------------------

    def version_record(self, spec: TargetSpec, digest_id: str) -> InstalledVersion | None:
        return read_record(self.channel_dir(spec) / VERSIONS_DIR / digest_id)

    def restore(self, spec: TargetSpec, digest_id: str) -> InstallResult:
        """Point the executed path at the intact version ``digest_id`` again (self-healing from the local versions
        store: the executed file was replaced or removed while that version's own copy stayed intact). Nothing is
        adopted: whatever stood at the executed path is discarded, ``.previous`` is left as it is."""
        if not digest_id or digest_id.startswith(".") or "/" in digest_id or "\\" in digest_id:
            raise InstallError(f"{spec}: {digest_id!r} is not a version")
        try:
            with self._lock(spec):
                version_dir = self.channel_dir(spec) / VERSIONS_DIR / digest_id
                record = read_record(version_dir)
                if record is None or not (version_dir / spec.executable).is_file():
                    raise InstallError(f"{spec}: no installed version {digest_id}")
                problem = self.version_problem(spec, digest_id)
                if problem is not None:
                    raise InstallError(f"{spec}: the stored version {digest_id} is damaged too ({problem})")
                self._link(spec, version_dir, self._pointer(spec))
        except OSError as exc:
            raise storage_error(exc, f"restoring {spec}") from exc
        logger.warning("restored target=%s version=%s from the local versions store", spec, record.version)
        return InstallResult(spec, record, self.previous(spec), self.executable_path(spec))

    # -- rollback and recovery -----------------------------------------------------------------------------

    def rollback(self, spec: TargetSpec) -> InstallResult:
        """Make the previous version current again (and the current one previous)."""
        try:
            with self._lock(spec):
                self._recover_unlocked(spec)
                pointer, previous_pointer = self._pointer(spec), self._previous_pointer(spec)
                current_dir = self._version_dir_of(spec, pointer)
                previous_dir = self._version_dir_of(spec, previous_pointer)
                previous = read_record(previous_dir) if previous_dir is not None else None
                if previous_dir is None or previous is None:
                    raise InstallError(f"{spec}: no previous version to roll back to")
                current = read_record(current_dir) if current_dir is not None else None
                self._link(spec, previous_dir, pointer)
                if current_dir is not None:
                    self._link(spec, current_dir, previous_pointer)
        except OSError as exc:
            raise storage_error(exc, f"rolling back {spec}") from exc
        logger.warning(
            "rolled back target=%s to version=%s from version=%s",
            spec,
            previous.version,
            current.version if current is not None else None,
        )
        return InstallResult(spec, previous, current, self.executable_path(spec))

    def recover(self, spec: TargetSpec) -> None:
        """Remove leftovers of an interrupted install and restore a missing pointer (call at start-up)."""
        if not self.channel_dir(spec).is_dir():
            return
        try:
            with self._lock(spec):
                self._recover_unlocked(spec)
        except OSError as exc:
            raise storage_error(exc, f"recovering {spec}") from exc

    def _recover_unlocked(self, spec: TargetSpec) -> None:
        channel = self.channel_dir(spec)
        versions = channel / VERSIONS_DIR
        for directory in (channel, versions):
            if directory.is_dir():
                for entry in directory.iterdir():
                    if entry.name.startswith(".") and entry.name.endswith((".incoming", ".tmp")):
                        remove(entry)
                    elif entry.name.startswith(f"{self._pointer(spec).name}.old"):
                        with contextlib.suppress(OSError):
                            remove(entry)  # Windows: the replaced executable, once it no longer runs
        pointer = self._pointer(spec)
        if pointer.exists() or not versions.is_dir():
            return
        candidate = self._version_dir_of(spec, self._previous_pointer(spec)) or self._newest_version(spec)
        if candidate is not None:
            logger.warning("restoring the missing executable target=%s from version=%s", spec, candidate.name)
            self._link(spec, candidate, pointer)

    def _newest_version(self, spec: TargetSpec) -> Path | None:
        versions = self.channel_dir(spec) / VERSIONS_DIR
        complete = [
            (record.installed_at or "", entry)
            for entry in versions.iterdir()
            if not entry.name.startswith(".")
            and (entry / spec.executable).is_file()
            and (record := read_record(entry)) is not None
        ]
        return max(complete)[1] if complete else None
