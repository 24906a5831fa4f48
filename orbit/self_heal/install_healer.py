"""Self-healing installs (issue 18): before a child starts, its executable is checked against what was signed, and
reinstalled when it is not that any more (truncated, altered, missing) — the field case behind Fleet's P1 where ~5 %
of a customer's hosts ran a truncated osqueryd that re-installing did not fix.

What is trusted: the installer's record of the version the executed path leads to (written from a verified
download), else orbit's own ``TrustedInstalls`` entry for the path. With neither (a file placed by a package, never
checked against the repository yet) there is nothing to compare with: the update check compares it with the
signed target and records it.

Cost (ADR 0017, agent side): the full hash runs at start and before every start that follows a crash (a damaged
binary is the crash's suspect); every other start compares the file's fingerprint (device, inode, size, mtime,
ctime) with the last full check and hashes only when it changed. A 60 MB osqueryd costs 0.1-0.3 s of one core per
full check, in a worker thread — never on the event loop (callers use ``asyncio.to_thread``).

Repair, first that works: (1) the local versions store — ``.versions/<id>`` intact (its own hash checked) while the
executed path was replaced or removed: the path is pointed at it again; (2) the update repository — the same signed
target downloaded, verified and installed again (a file truncated in place is damaged under both of its hard
links, so the store cannot help). A repository that now publishes another version for the channel is left to the
update check, which installs that one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from orbit.self_heal.trusted_installs import TrustedInstall, TrustedInstalls
from tuf_updates.errors import UpdateError
from tuf_updates.installer import TargetInstaller
from tuf_updates.integrity import ExpectedFile, Fingerprint, fingerprint, problem_with
from tuf_updates.targets import TargetSpec
from tuf_updates.update_runner import Repository

log = logging.getLogger(__name__)

LOCAL_STORE = "local versions store"
REPOSITORY = "update repository"


class HealState(Enum):
    UNCHANGED = "unchanged"  # same fingerprint as at the last full check: not hashed
    VERIFIED = "verified"  # hashed, equal to the signed file
    UNVERIFIABLE = "unverifiable"  # nothing trusted to compare with
    REPAIRED = "repaired"
    BROKEN = "broken"  # damaged and not repaired (no store copy, repository unreachable …)


@dataclass(frozen=True)
class HealReport:
    spec: TargetSpec
    state: HealState
    version: str | None = None
    digest: str | None = None  # the trusted digest: which version this is
    problem: str | None = None  # what was wrong (the outcome's reason)
    source: str | None = None  # where the repair came from
    error: str | None = None  # why it could not be repaired

    @property
    def usable(self) -> bool:
        return self.state is not HealState.BROKEN


class InstallHealer:
    def __init__(
        self,
        installer: TargetInstaller,
        trusted: TrustedInstalls,
        repository: Callable[[], Repository | None],
    ) -> None:
        self._installer = installer
        self._trusted = trusted
        self._repository = repository
        self._verified: dict[str, Fingerprint] = {}
        self.full_checks = 0

    # -- what is trusted -----------------------------------------------------------------------------------

    def trusted_for(self, spec: TargetSpec) -> TrustedInstall | None:
        """The installer's record when the executed path leads to one (and remember it), else orbit's own entry."""
        record = self._installer.installed(spec)
        if record is not None:
            expected = ExpectedFile.of_record(record, archive=spec.is_archive)
            if expected is not None:
                entry = TrustedInstall(spec.path, record.digest_id, record.version, expected)
                self._trusted.put(entry)
                return entry
        return self._trusted.get(spec.path)

    def note_signed_match(self, spec: TargetSpec, version: str | None, algorithm: str, digest: str) -> None:
        """An update check found the installed plain file equal to the signed target: trust it from now on (a
        package-placed file gets a record this way)."""
        if spec.is_archive or self._installer.installed(spec) is not None:
            return
        current = self._trusted.get(spec.path)
        if current is not None and current.expected.digest == digest:
            return
        info = fingerprint(self._installer.executable_path(spec))
        if info is None:
            return
        self._trusted.put(TrustedInstall(spec.path, None, version, ExpectedFile(info.size, algorithm, digest)))

    # -- the check -----------------------------------------------------------------------------------------

    def check(self, spec: TargetSpec, *, full: bool) -> HealReport:
        """Check (and if needed repair) the executable of ``spec``; blocking: run it in a worker thread."""
        path = self._installer.executable_path(spec)
        seen = fingerprint(path)
        if not full and seen is not None and seen == self._verified.get(spec.path):
            entry = self._trusted.get(spec.path)
            version, digest = (entry.version, entry.expected.digest) if entry is not None else (None, None)
            return HealReport(spec, HealState.UNCHANGED, version, digest)
        trusted = self.trusted_for(spec)
        if trusted is None and seen is None and self._restore_missing(spec):
            trusted = self.trusted_for(spec)
        if trusted is None:
            return HealReport(spec, HealState.UNVERIFIABLE)
        self.full_checks += 1
        problem = problem_with(path, trusted.expected)
        if problem is None:
            self._remember(spec)
            return HealReport(spec, HealState.VERIFIED, trusted.version, trusted.expected.digest)
        log.error("event=install_damaged target=%s version=%s problem=%r", spec.path, trusted.version, problem)
        return self._repair(spec, trusted, problem)

    def _remember(self, spec: TargetSpec) -> None:
        info = fingerprint(self._installer.executable_path(spec))
        if info is not None:
            self._verified[spec.path] = info

    def _restore_missing(self, spec: TargetSpec) -> bool:
        """No executable and no record of what belongs there: the installer's own recovery (the previous or newest
        complete version in the store), as the update runner does at start."""
        try:
            self._installer.recover(spec)
        except UpdateError as exc:
            log.warning("event=install_recover_failed target=%s error=%s", spec.path, exc)
            return False
        return self._installer.is_installed(spec)

    def _repair(self, spec: TargetSpec, trusted: TrustedInstall, problem: str) -> HealReport:
        errors: list[str] = []
        source = None
        if trusted.digest_id is not None:
            try:
                self._installer.restore(spec, trusted.digest_id)
                source = LOCAL_STORE
            except UpdateError as exc:
                errors.append(f"{LOCAL_STORE}: {exc}")
        if source is None:
            try:
                self._reinstall(spec, trusted)
                source = REPOSITORY
            except UpdateError as exc:
                errors.append(f"{REPOSITORY}: {exc}")
        if source is not None:
            after = self.trusted_for(spec) or trusted
            remaining = problem_with(self._installer.executable_path(spec), after.expected)
            if remaining is None:
                self._remember(spec)
                log.warning(
                    "event=install_repaired target=%s version=%s problem=%r source=%r",
                    spec.path,
                    after.version,
                    problem,
                    source,
                )
                return HealReport(spec, HealState.REPAIRED, after.version, after.expected.digest, problem, source)
            errors.append(f"{source}: still damaged after the repair ({remaining})")
        error = "; ".join(errors)
        self._verified.pop(spec.path, None)
        log.error("event=install_repair_failed target=%s problem=%r error=%s", spec.path, problem, error)
        return HealReport(spec, HealState.BROKEN, trusted.version, trusted.expected.digest, problem, error=error)

    def _reinstall(self, spec: TargetSpec, trusted: TrustedInstall) -> None:
        repository = self._repository()
        if repository is None:
            raise UpdateError("updates are disabled or unavailable")
        with repository:
            repository.refresh()
            target = repository.lookup_path(spec.path)
            if target is None:
                raise UpdateError(f"{spec.path} is not in the repository any more")
            if not spec.is_archive and target.hashes.get(trusted.expected.algorithm) != trusted.expected.digest:
                raise UpdateError(
                    f"the repository now publishes version {target.version} here (the update check installs it)"
                )
            if spec.is_archive and trusted.digest_id and not target.preferred_hash()[1].startswith(trusted.digest_id):
                raise UpdateError(
                    f"the repository now publishes version {target.version} here (the update check installs it)"
                )
            downloaded = repository.download(target, self._installer.staging_dir)
            self._installer.install(spec, target, downloaded)


__all__ = ["LOCAL_STORE", "REPOSITORY", "HealReport", "HealState", "InstallHealer"]
