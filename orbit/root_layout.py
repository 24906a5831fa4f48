"""Names and modes of everything in orbit's root directory (docs/reference/orbit-behaviour.md §9.2), in one place.

Existing Fleet tooling and admin runbooks look for these exact names, so they are constants, not choices. Files
that are ours alone (not Fleet's) are marked as such.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from safe_fs.file_lock import try_lock, unlock

log = logging.getLogger(__name__)

ROOT_DIR_MODE = 0o755
UNIX_SOCKET_PATH_MAX = 107  # sun_path is 108 bytes including the terminating NUL on Linux


class InstanceLockError(RuntimeError):
    pass


@dataclass(frozen=True)
class RootLayout:
    root: Path

    # Fleet's files
    @property
    def node_key(self) -> Path:
        return self.root / "secret-orbit-node-key.txt"

    @property
    def device_token(self) -> Path:
        return self.root / "identifier"

    @property
    def secret_file(self) -> Path:
        return self.root / "secret.txt"

    @property
    def osquery_flags(self) -> Path:
        return self.root / "osquery.flags"

    @property
    def server_overrides(self) -> Path:
        return self.root / "server-overrides.json"

    @property
    def extensions_load(self) -> Path:
        return self.root / "extensions.load"

    @property
    def certs_bundle(self) -> Path:
        return self.root / "certs.pem"

    @property
    def fleet_client_cert(self) -> Path:
        return self.root / "fleet_client.crt"

    @property
    def fleet_client_key(self) -> Path:
        return self.root / "fleet_client.key"

    @property
    def update_client_cert(self) -> Path:
        return self.root / "update_client.crt"

    @property
    def update_client_key(self) -> Path:
        return self.root / "update_client.key"

    @property
    def osquery_pidfile(self) -> Path:
        return self.root / "osquery.pid"

    @property
    def extension_socket(self) -> Path:
        return self.root / "orbit-osquery.em"

    @property
    def osquery_log_dir(self) -> Path:
        return self.root / "osquery_log"

    @property
    def bin_dir(self) -> Path:
        return self.root / "bin"

    @property
    def staging(self) -> Path:
        return self.root / "staging"

    @property
    def update_metadata_file(self) -> Path:
        """Fleet's single-file TUF store (``updates-metadata.json``); imported into ``tuf/`` when present."""
        return self.root / "updates-metadata.json"

    @property
    def legacy_update_metadata_file(self) -> Path:
        return self.root / "tuf-metadata.json"

    @property
    def hardware_uuid(self) -> Path:
        return self.root / "hardware-uuid.txt"

    # ours
    @property
    def tuf_dir(self) -> Path:
        """python-tuf's metadata directory (root.json, timestamp.json, … and root history)."""
        return self.root / "tuf"

    @property
    def instance_lock(self) -> Path:
        return self.root / "orbit.lock"

    @property
    def state_dir(self) -> Path:
        """orbit's own bookkeeping (trial boots, quarantine, status for ``orbit doctor``)."""
        return self.root / "state"

    @property
    def trial_marker(self) -> Path:
        return self.state_dir / "trial-boot.json"

    @property
    def quarantine(self) -> Path:
        return self.state_dir / "quarantined-updates.json"

    @property
    def status_file(self) -> Path:
        return self.state_dir / "status.json"

    @property
    def update_outcomes(self) -> Path:
        """Outcomes of installs waiting to be reported (issue 18): 0600, replaced whole."""
        return self.state_dir / "update-outcomes.json"

    @property
    def trusted_installs(self) -> Path:
        """The signed length/hash of each installed executable, for the self-heal check (issue 18)."""
        return self.state_dir / "trusted-installs.json"

    @property
    def child_probation(self) -> Path:
        """Which osqueryd/desktop version is confirmed and which one is still on probation (issue 18)."""
        return self.state_dir / "child-versions.json"

    @property
    def osqueryd_restart_request(self) -> Path:
        """The last server request to restart osqueryd that was handled, so a restarted orbit does not repeat it."""
        return self.state_dir / "osqueryd-restart-request.json"

    def child_record(self, name: str) -> Path:
        """orbit's record of a running child (pid, group, start time), for orphan detection after a crash."""
        return self.state_dir / f"{name}.child.json"

    @property
    def desktop_pidfile(self) -> Path:
        return self.root / "fleet-desktop.pid"

    @property
    def osqueryd_log(self) -> Path:
        return self.root / "osquery_log" / "osqueryd.stderr.log"

    def socket_path_problem(self) -> str | None:
        """osquery's extension sockets (``orbit-osquery.em`` and ``orbit-osquery.em.<uuid>``) must fit a Unix socket
        address (107 bytes); a deep root dir makes orbit's tables silently unavailable otherwise."""
        longest = len(os.fsencode(self.extension_socket)) + len(".65535")
        if sys.platform != "win32" and longest > UNIX_SOCKET_PATH_MAX:
            return (
                f"the root dir is too deep for osquery's extension socket ({longest} > {UNIX_SOCKET_PATH_MAX} bytes): "
                "orbit_info will not reach Fleet; use a shorter --root-dir"
            )
        return None

    def ensure(self) -> None:
        """Create the root (0755) and the directories orbit writes into."""
        self.root.mkdir(parents=True, exist_ok=True, mode=ROOT_DIR_MODE)
        for directory in (self.state_dir, self.tuf_dir, self.staging, self.osquery_log_dir):
            directory.mkdir(parents=True, exist_ok=True, mode=ROOT_DIR_MODE)
        self.state_dir.chmod(0o700)
        self.tuf_dir.chmod(0o700)

    def remove_old_files(self) -> int:
        """Delete ``*.old`` leftovers of Windows binary swaps and of orbit's link switch (Fleet's start-up step)."""
        removed = 0
        for path in self.root.rglob("*.old"):
            with contextlib.suppress(OSError):
                if path.is_dir() and not path.is_symlink():
                    continue
                path.unlink()
                removed += 1
        return removed


class InstanceLock:
    """One orbit per root directory: an exclusive ``flock`` on ``orbit.lock`` held for the life of the process.

    Fleet relies on the service manager alone; a second orbit (an admin running it by hand, a stuck unit) would
    fight the first over osqueryd's database. The lock dies with the process (no stale-lock clean-up needed), and
    the holder's pid is written into the file for the error message.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        try:
            locked = try_lock(fd, exclusive=True)
        except OSError:
            os.close(fd)
            raise
        if not locked:
            holder = _read_at_start(fd)
            os.close(fd)
            raise InstanceLockError(
                f"another orbit (pid {holder or 'unknown'}) is already running with root dir {self.path.parent}"
            )
        if sys.platform != "win32":  # the Windows lock covers byte 0: the pid cannot be written there
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode("ascii"))
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                unlock(self._fd)
                os.close(self._fd)
            self._fd = None

    def holder_pid(self) -> int | None:
        """The pid of a running holder, or None (used by ``orbit doctor``)."""
        try:
            fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except OSError:
            return None
        try:
            if not try_lock(fd, exclusive=False):
                text = _read_at_start(fd)
                return int(text) if text.isdigit() else -1
            unlock(fd)
            return None
        finally:
            os.close(fd)


def _read_at_start(fd: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    return os.read(fd, 32).decode("ascii", "replace").strip()
