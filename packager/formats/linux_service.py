"""The text both Linux packages install and run (ADR 0006): the systemd unit, the environment file and the
maintainer scripts (dpkg) / scriptlets (rpm), plus the package metadata the two formats share.

Everything here is a pure function of its arguments, so the rendered text is unit-testable and identical in the
.deb and the .rpm. The two package managers call their scripts with different arguments (dpkg: ``configure``,
``remove``, ``upgrade``, ``purge`` …; rpm: the number of instances left, ``0`` on erase), so each format gets
its own thin ``case`` around the same shell functions.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from packager.package.staged import ARCHES, StagedPackage

SERVICE_NAME = "orbit.service"
UNIT_PATH = PurePosixPath("/usr/lib/systemd/system/orbit.service")
ENV_FILE_PATH = PurePosixPath("/etc/default/orbit")
CLI_LINK_PATH = PurePosixPath("/usr/local/bin/orbit")
LOG_DIRS = (PurePosixPath("/var/log/orbit"), PurePosixPath("/var/log/osquery"))
LEGACY_ROOT = PurePosixPath("/var/lib/orbit")
# What `systemctl enable` creates; removed on purge/erase too, in case `disable` could not run.
ENABLE_LINK = PurePosixPath("/etc/systemd/system/multi-user.target.wants/orbit.service")

SUMMARY = "Fleet osquery -- runtime and autoupdater"
DESCRIPTION = (  # lines under 80 characters (Debian's extended description)
    "orbit keeps osqueryd (and optionally Fleet Desktop) running, enrolls the\n"
    "host in Fleet and updates itself and osqueryd from a TUF repository.\n"
    "Built by orbitctl package."
)
MAINTAINER = "Fleet Device Management <engineering@fleetdm.com>"
VENDOR = "Fleet Device Management"
HOMEPAGE = "https://fleetdm.com"
LICENSE = "Apache-2.0"

# Deferred restart/stop when the package manager runs inside orbit's own control group (see _SERVICE_ACTION).
DEFERRED_ACTION_DELAY_S = 60

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Printed bare; anything else is single-quoted (literal both for systemd's EnvironmentFile= parser and for sh).
_BARE_VALUE = re.compile(r"[A-Za-z0-9_./:@%+,=-]*")
_FORBIDDEN_IN_VALUE = ("'", "\n", "\r", "\0")


class LinuxPackageError(ValueError):
    """The staged input cannot become a .deb/.rpm (the message says why); nothing was written."""


class ServiceConfigError(LinuxPackageError):
    """A value that cannot go into the unit, the environment file or the scripts without changing its meaning."""


_PACKAGE_NAME = re.compile(r"[a-z0-9][a-z0-9.+-]+")
_SAFE_PATH = re.compile(r"(/[A-Za-z0-9._+-]+)+")


def purge_paths(agent_root: PurePosixPath) -> tuple[PurePosixPath, ...]:
    """Everything the package or the agent created, removed on ``dpkg --purge`` and on ``rpm -e``."""
    check_agent_root(agent_root)
    return (agent_root, LEGACY_ROOT, LOG_DIRS[0], ENV_FILE_PATH, UNIT_PATH, CLI_LINK_PATH, ENABLE_LINK)


def check_agent_root(agent_root: PurePosixPath) -> None:
    """The root goes unquoted into ``rm -rf`` and into the unit: absolute, at least two levels deep (never ``/``
    or ``/opt``), no ``..`` and no characters the shell or systemd would interpret."""
    text = str(agent_root)
    if not _SAFE_PATH.fullmatch(text) or len(agent_root.parts) < 3 or ".." in agent_root.parts:
        raise ServiceConfigError(f"unusable agent root {text!r}: need an absolute path like /opt/orbit")


@dataclass(frozen=True)
class PayloadEntry:
    """One path both packages install: a directory (no source, content or target), a file (``source`` on disk
    or generated ``content``) or a symlink (``link_target``)."""

    path: PurePosixPath  # absolute
    mode: int  # permission bits only
    source: Path | None = None
    content: bytes | None = None
    link_target: str | None = None

    @property
    def is_dir(self) -> bool:
        return self.source is None and self.content is None and self.link_target is None

    @property
    def is_file(self) -> bool:
        return self.source is not None or self.content is not None


def _relative(path: PurePosixPath, what: str) -> PurePosixPath:
    if path.is_absolute() or not path.parts or ".." in path.parts or "." in str(path).split("/"):
        raise LinuxPackageError(f"{what} {str(path)!r} must be a plain relative path inside the agent root")
    return path


def _owned_dirs(root: PurePosixPath, relatives: Iterable[PurePosixPath]) -> set[PurePosixPath]:
    dirs = {root}
    for relative in relatives:
        dirs.update(root / parent for parent in relative.parents if parent != PurePosixPath("."))
    return dirs


def linux_payload(staged: StagedPackage) -> tuple[PayloadEntry, ...]:
    """What the .deb and the .rpm install, sorted parents-first: the agent root with the staged files (their
    modes) and symlinks, every directory below it, the unit, the environment file (0600), the CLI link and the
    two empty log directories. Parents outside the agent root (``/etc``, ``/usr`` …) are the format's business."""
    if staged.platform != "linux":
        raise LinuxPackageError(f"a Linux package needs a linux staging, not {staged.platform!r}")
    if not _PACKAGE_NAME.fullmatch(staged.name):
        raise LinuxPackageError(f"unusable package name {staged.name!r} (lower-case letters, digits, '.', '+', '-')")
    if staged.arch not in ARCHES:
        raise LinuxPackageError(f"unsupported architecture {staged.arch!r} (expected one of {', '.join(ARCHES)})")
    root = staged.agent_root
    check_agent_root(root)
    entries: dict[PurePosixPath, PayloadEntry] = {}

    def add(entry: PayloadEntry) -> None:
        if entry.path in entries:
            raise LinuxPackageError(f"{entry.path} is staged twice")
        entries[entry.path] = entry

    for item in staged.files:
        relative = _relative(item.path, "staged file")
        if item.mode & ~0o777:
            raise LinuxPackageError(f"{relative}: mode {item.mode:#o} has set-id or sticky bits; refusing")
        add(PayloadEntry(root / relative, item.mode, source=item.source))
    for link in staged.symlinks:
        relative = _relative(link.path, "staged symlink")
        if not link.target or "\0" in link.target or "\n" in link.target:
            raise LinuxPackageError(f"{relative}: unusable symlink target {link.target!r}")
        add(PayloadEntry(root / relative, 0o777, link_target=link.target))
    exec_start = root / staged.orbit_executable
    if exec_start not in entries:
        raise LinuxPackageError(f"nothing staged at {exec_start}, the path the service runs")
    relatives = [item.path for item in staged.files] + [link.path for link in staged.symlinks]
    for directory in _owned_dirs(root, relatives) | set(LOG_DIRS):
        add(PayloadEntry(directory, 0o755))
    add(PayloadEntry(UNIT_PATH, 0o644, content=systemd_unit(exec_start).encode()))
    add(PayloadEntry(ENV_FILE_PATH, 0o600, content=env_file(staged.orbit_env, staged.secret).encode()))
    add(PayloadEntry(CLI_LINK_PATH, 0o777, link_target=str(exec_start)))
    return tuple(sorted(entries.values(), key=lambda entry: entry.path.parts))


def systemd_unit(exec_start: PurePosixPath, env_file: PurePosixPath = ENV_FILE_PATH) -> str:
    """``orbit.service``. orbit supervises osqueryd and fleet-desktop itself and exits only for a signal or when a
    self-update candidate dies (ADR 0005), so systemd's only job is to bring it back, at once and forever."""
    return f"""\
# Fleet's orbit agent, installed by the fleet-osquery package and replaced on every upgrade.
# Local changes belong in a drop-in: systemctl edit orbit.service
[Unit]
Description=Orbit osquery
Documentation=https://fleetdm.com/docs
After=network.target network-online.target
StartLimitIntervalSec=0

[Service]
Type=simple
EnvironmentFile={env_file}
ExecStart={exec_start}
Restart=always
RestartSec=1
KillMode=control-group
KillSignal=SIGTERM
TimeoutStopSec=30
CPUQuota=20%

[Install]
WantedBy=multi-user.target
"""


def _env_value(name: str, value: str) -> str:
    if any(bad in value for bad in _FORBIDDEN_IN_VALUE):
        raise ServiceConfigError(f"{name}: a value for the environment file must not contain quotes or line breaks")
    return value if _BARE_VALUE.fullmatch(value) else f"'{value}'"


def env_file(orbit_env: Mapping[str, str], secret: str | None) -> str:
    """``/etc/default/orbit``: the agent's ``ORBIT_*`` settings (sorted, so the bytes do not depend on dict order)
    and, last, ``ORBIT_ENROLL_SECRET`` — Fleet's place for the Linux enroll secret. Installed 0600 root:root."""
    lines = [
        "# Environment of orbit.service, written by orbitctl package (fleet-osquery) and replaced on every upgrade.",
        "# It holds the enroll secret: keep it readable by root only.",
    ]
    for name in sorted(orbit_env):
        if not _ENV_NAME.fullmatch(name):
            raise ServiceConfigError(f"{name!r} is not a valid environment variable name")
        if name == "ORBIT_ENROLL_SECRET":
            raise ServiceConfigError("the enroll secret belongs in StagedPackage.secret, not in orbit_env")
        lines.append(f"{name}={_env_value(name, orbit_env[name])}")
    if secret is not None:
        if not secret.strip():
            raise ServiceConfigError("the enroll secret is empty")
        lines.append(f"ORBIT_ENROLL_SECRET={_env_value('ORBIT_ENROLL_SECRET', secret)}")
    return "\n".join(lines) + "\n"


# The scripts' shell functions, POSIX sh (busybox, dash, bash). Nothing here may fail the package operation: a
# host without systemd (a container, an image build) or with a failing systemctl still gets its files.
_BASE = """\
warn() {
    echo "fleet-osquery: $*" >&2
}

have_systemctl() {
    command -v systemctl >/dev/null 2>&1
}

# systemd is the running init (sd_booted): only then reload, start or stop anything.
systemd_running() {
    [ -d /run/systemd/system ]
}
"""

_SERVICE_ACTION = f"""\
# True when this script is a descendant of orbit itself (a Fleet script or software install ran the package
# manager): stopping or restarting orbit.service now would kill that package manager half-way.
inside_orbit() {{
    grep -qsE '/orbit\\.service(/|$)' /proc/self/cgroup
}}

# systemctl VERB orbit.service now, or {DEFERRED_ACTION_DELAY_S} s later from a transient timer outside orbit's cgroup.
service_action() {{
    if inside_orbit; then
        systemd-run --on-active={DEFERRED_ACTION_DELAY_S} --timer-property=AccuracySec=1s \\
            "$(command -v systemctl)" "$1" "$UNIT" || warn "could not schedule 'systemctl $1 $UNIT'"
    else
        systemctl "$1" "$UNIT" || warn "'systemctl $1 $UNIT' failed"
    fi
}}
"""

_ACTIVATE = """\
# Install or upgrade done: load the (new) unit, enable it, (re)start the agent.
activate_service() {
    have_systemctl || return 0
    if systemd_running; then
        systemctl daemon-reload || warn "'systemctl daemon-reload' failed"
    fi
    if [ "$START_SERVICE" = yes ]; then
        systemctl enable "$UNIT" || warn "could not enable $UNIT"
        if systemd_running; then service_action restart; fi
    elif systemd_running; then
        service_action try-restart
    fi
}
"""

_DEACTIVATE = """\
# Real removal (never an upgrade): stop and disable the agent, end the tray app in the users' sessions.
deactivate_service() {
    if have_systemctl; then
        if systemd_running; then service_action stop; fi
        systemctl disable "$UNIT" || warn "could not disable $UNIT"
    fi
    pkill -x fleet-desktop >/dev/null 2>&1 || true
}
"""

_FORGET = """\
# The unit file is gone: let systemd forget it.
forget_service() {
    if have_systemctl && systemd_running; then
        systemctl daemon-reload || warn "'systemctl daemon-reload' failed"
    fi
}
"""


def _script(name: str, functions: tuple[str, ...], body: str, **variables: str) -> str:
    header = f"#!/bin/sh\n# {name} of the fleet-osquery package, written by orbitctl package.\nset -e\n\n"
    if any('"$UNIT"' in function for function in functions):
        variables = {"UNIT": SERVICE_NAME, **variables}
    settings = "".join(f"{key}={value}\n" for key, value in variables.items())
    return header + settings + "\n" + "\n".join((_BASE, *functions)) + "\n" + body + "\nexit 0\n"


def _purge_variable(agent_root: PurePosixPath) -> str:
    return "'" + " ".join(str(path) for path in purge_paths(agent_root)) + "'"


# Directories every Debian system has but no package lists (base-files creates them in its postinst): a .deb that
# listed them would own them alone, and dpkg would delete them on remove/purge when they are empty. The preinst
# creates them instead (dpkg needs a file's parent to exist), so they are never ours.
SYSTEM_DIRS = (PurePosixPath("/opt"), PurePosixPath("/usr/local"), PurePosixPath("/usr/local/bin"))


def deb_preinst() -> str:
    """Before unpacking: the system directories our files go into exist (they are not in the package)."""
    return _script(
        "preinst",
        (),
        """case "$1" in
    install|upgrade)
        for dir in $SYSTEM_DIRS; do
            [ -d "$dir" ] || { mkdir -p "$dir" && chmod 0755 "$dir"; }
        done
        ;;
esac
""",
        SYSTEM_DIRS="'" + " ".join(str(path) for path in SYSTEM_DIRS) + "'",
    )


def deb_postinst(*, start_service: bool) -> str:
    """dpkg calls it with ``configure`` after unpacking (install and upgrade alike) and with ``abort-*`` when it
    rolls back a failed removal or upgrade; each time the agent must end up enabled and running."""
    return _script(
        "postinst",
        (_SERVICE_ACTION, _ACTIVATE),
        """\
case "$1" in
    configure|abort-upgrade|abort-remove|abort-deconfigure)
        activate_service
        ;;
esac
""",
        START_SERVICE="yes" if start_service else "no",
    )


def deb_prerm() -> str:
    """``remove``/``deconfigure`` stop and disable; ``upgrade``/``failed-upgrade`` do nothing — the new
    package's postinst restarts the running agent, so an upgrade never leaves it stopped."""
    return _script(
        "prerm",
        (_SERVICE_ACTION, _DEACTIVATE),
        """\
case "$1" in
    remove|deconfigure)
        deactivate_service
        ;;
    upgrade|failed-upgrade)
        ;;
esac
""",
    )


def deb_postrm(agent_root: PurePosixPath) -> str:
    """``remove``: dpkg has deleted the package's files; the agent's own state (node key, osquery database,
    logs) stays for a reinstall, as Debian does. ``purge``: delete everything we or the agent created."""
    return _script(
        "postrm",
        (_FORGET,),
        """\
case "$1" in
    remove)
        forget_service
        ;;
    purge)
        # shellcheck disable=SC2086
        rm -rf $PURGE_PATHS
        forget_service
        ;;
esac
""",
        PURGE_PATHS=_purge_variable(agent_root),
    )


def rpm_preun() -> str:
    """rpm passes the number of instances left after the operation: ``0`` = erase → stop and disable;
    ``1`` or more = upgrade → never stop (the new package's %posttrans restarts the agent)."""
    return _script(
        "%preun",
        (_SERVICE_ACTION, _DEACTIVATE),
        """\
case "$1" in
    0)
        deactivate_service
        ;;
esac
""",
    )


def rpm_postun(agent_root: PurePosixPath) -> str:
    """Erase (``0``): rpm has no purge, so remove everything we or the agent created. Upgrade: nothing."""
    return _script(
        "%postun",
        (_FORGET,),
        """\
case "$1" in
    0)
        # shellcheck disable=SC2086
        rm -rf $PURGE_PATHS
        forget_service
        ;;
esac
""",
        PURGE_PATHS=_purge_variable(agent_root),
    )


def rpm_posttrans(*, start_service: bool) -> str:
    """Runs once after the whole transaction — after the *old* package's %preun/%postun on an upgrade, which
    may have stopped or disabled the service (Fleet's own packages do on upgrade) — so it does what a deb's
    postinst does."""
    return _script(
        "%posttrans",
        (_SERVICE_ACTION, _ACTIVATE),
        "activate_service\n",
        START_SERVICE="yes" if start_service else "no",
    )
