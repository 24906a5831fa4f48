"""Clean Debian 12 system roots for the field tests (issue 16): built once from Debian's archive, booted with a real
systemd as PID 1 under ``systemd-nspawn`` (docs/field-feasibility.md says why this backend and what else was tried).

The pieces, each usable alone:

- :class:`RootSpec` — which root: suite, mmdebstrap variant, extra packages, apt sources (by default the host's
  own Debian entries, so the root comes from the mirror the host uses). Its :meth:`RootSpec.cache_key` names the
  cached tarball.
- :func:`root_tarball` — ``mmdebstrap`` the root into ``<cache>/<key>.tar.zst`` unless it is there already
  (~15 s and ~60 MB for minbase + systemd; a second call costs nothing).
- :func:`extract_root` — unpack a tarball into a fresh directory (~1 s): every test gets its own clean root.
- :func:`run_chrooted` — one command in the root without a service manager (``chroot``), e.g. ``dpkg -i`` the way
  an image build would run it: ``/run/systemd/system`` is absent, so ``systemctl enable`` works offline and
  ``systemctl start`` fails with "System has not been booted with systemd".
- :func:`booted` — a context manager that boots the root (``systemd-nspawn --boot``), waits until
  ``systemctl is-system-running`` answers, and yields a :class:`BootedSystem` whose :meth:`BootedSystem.run`
  executes commands inside it (``nsenter`` into the container's namespaces) — ``apt-get install ./x.deb``,
  ``systemctl``, ``journalctl`` all act on the container's own systemd. Leaving the block powers it off.

Everything needs root (mmdebstrap ``--mode=root``, chroot, nsenter) and the Debian packages ``mmdebstrap`` and
``systemd-container``; :func:`missing_prerequisites` says what is missing, for a ``pytest.skip``. The container
shares the host's network namespace (so it reaches a fleet-stub on 127.0.0.1) but has its own PID, mount, IPC,
UTS and cgroup namespaces. Secrets never go on an argv: :meth:`BootedSystem.run` passes ``env`` through the
environment of ``nsenter`` and ``input`` on stdin.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

SUITE = "bookworm"
# minbase has dpkg, apt and /bin/sh; systemd + systemd-sysv make /sbin/init a systemd; dbus for logind & co.;
# procps (ps, kill, pgrep, pkill: every real Debian host has it, our prerm calls pkill).
BASE_PACKAGES = ("systemd", "systemd-sysv", "dbus", "procps")
DEFAULT_CACHE = Path(__file__).resolve().parents[2] / "build" / "cache" / "field-roots"
HOST_SOURCES = (Path("/etc/apt/sources.list"), Path("/etc/apt/sources.list.d"))
FALLBACK_SOURCES = (
    "deb http://deb.debian.org/debian bookworm main",
    "deb http://deb.debian.org/debian bookworm-updates main",
    "deb http://deb.debian.org/debian-security bookworm-security main",
)
_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_BOOT_TIMEOUT_S = 60.0
_SHUTDOWN_TIMEOUT_S = 30.0


class FieldRootError(RuntimeError):
    """A root could not be built, booted or entered; the message holds the command's output."""


# --- which root ------------------------------------------------------------------------------------------------


def host_debian_sources(suite: str = SUITE, files: Sequence[Path] = HOST_SOURCES) -> tuple[str, ...]:
    """The host's apt entries for Debian ``suite`` (and its -updates/-security suites) as one-line ``deb`` lines,
    read from ``sources.list`` and deb822 ``*.sources`` files; other repositories (vendors' apt repos) are left out.
    Falls back to deb.debian.org when the host has none."""
    lines: list[str] = []
    for path in _source_files(files):
        text = path.read_text(errors="replace")
        entries = _deb822_entries(text) if path.suffix == ".sources" else _one_line_entries(text)
        for uri, suites, components in entries:
            lines.extend(
                f"deb {uri} {name} {' '.join(components)}"
                for name in suites
                if (name == suite or name.startswith(f"{suite}-")) and "debian" in uri
            )
    return tuple(dict.fromkeys(lines)) or FALLBACK_SOURCES


def _source_files(files: Sequence[Path]) -> list[Path]:
    found: list[Path] = []
    for item in files:
        if item.is_dir():
            found.extend(sorted(p for p in item.iterdir() if p.suffix in (".list", ".sources")))
        elif item.is_file():
            found.append(item)
    return found


def _one_line_entries(text: str) -> list[tuple[str, list[str], list[str]]]:
    entries: list[tuple[str, list[str], list[str]]] = []
    for raw in text.splitlines():
        words = re.sub(r"\[[^]]*\]", "", raw.split("#", 1)[0]).split()
        if len(words) >= 4 and words[0] == "deb":
            entries.append((words[1], [words[2]], words[3:]))
    return entries


def _deb822_entries(text: str) -> list[tuple[str, list[str], list[str]]]:
    entries: list[tuple[str, list[str], list[str]]] = []
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if line.startswith("#") or ":" not in line or line[:1].isspace():
                continue
            key, value = line.split(":", 1)
            fields[key.strip().lower()] = value.strip()
        if "deb" in fields.get("types", "").split() and fields.get("enabled", "yes") != "no":
            entries.extend(
                (uri, fields.get("suites", "").split(), fields.get("components", "").split())
                for uri in fields.get("uris", "").split()
            )
    return entries


@dataclass(frozen=True)
class RootSpec:
    """A Debian root: ``mmdebstrap --variant=<variant> --include=<packages> <suite>`` from ``sources``."""

    suite: str = SUITE
    variant: str = "minbase"
    packages: tuple[str, ...] = BASE_PACKAGES
    sources: tuple[str, ...] = field(default_factory=host_debian_sources)
    arch: str = "amd64"

    def cache_key(self) -> str:
        """``<suite>-<variant>-<hash>``, the hash over everything that changes the root's package set, including
        the mmdebstrap version. The archive itself moves on (point releases, security updates): delete the cache
        to pick those up."""
        facts = {
            "suite": self.suite,
            "variant": self.variant,
            "packages": sorted(set(self.packages)),
            "sources": list(self.sources),
            "arch": self.arch,
            "mmdebstrap": _tool_version(["mmdebstrap", "--version"]),
        }
        digest = hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:16]
        return f"{self.suite}-{self.variant}-{digest}"


def _tool_version(argv: list[str]) -> str:
    if shutil.which(argv[0]) is None:
        return "missing"
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    return (result.stdout + result.stderr).strip()


def missing_prerequisites() -> list[str]:
    """What this machine lacks for :func:`root_tarball` and :func:`booted` (empty when all is there)."""
    missing = [] if os.geteuid() == 0 else ["root privileges"]
    tools = {"mmdebstrap": "mmdebstrap", "systemd-nspawn": "systemd-container", "nsenter": "util-linux"}
    missing += [f"{tool} (apt-get install {package})" for tool, package in tools.items() if not shutil.which(tool)]
    if not shutil.which("zstd"):
        missing.append("zstd (apt-get install zstd)")
    return missing


# --- build, cache, extract -------------------------------------------------------------------------------------


def root_tarball(spec: RootSpec | None = None, cache_dir: Path = DEFAULT_CACHE) -> Path:
    """The cached ``.tar.zst`` of ``spec``'s root, built with mmdebstrap on first use. The tarball is written
    beside its final name and renamed into place, so concurrent callers never see half of one."""
    spec = spec or RootSpec()
    cache_dir.mkdir(parents=True, exist_ok=True)
    target = cache_dir / f"{spec.cache_key()}.tar.zst"
    if target.is_file():
        return target
    partial = cache_dir / f".{target.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tar.zst"
    argv = [
        "mmdebstrap",
        "--mode=root",
        f"--variant={spec.variant}",
        f"--architectures={spec.arch}",
        f"--include={','.join(spec.packages)}",
        spec.suite,
        str(partial),
        *spec.sources,
    ]
    try:
        _run(argv, timeout=900)
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)
    (cache_dir / f"{spec.cache_key()}.json").write_text(json.dumps(_describe(spec), indent=2) + "\n")
    return target


def _describe(spec: RootSpec) -> dict[str, object]:
    return {"suite": spec.suite, "variant": spec.variant, "packages": list(spec.packages), "sources": spec.sources}


def extract_root(tarball: Path, parent: Path, name: str = "root") -> Path:
    """Unpack ``tarball`` into ``parent/name`` (which must not exist) with owners, modes and device nodes kept."""
    root = parent / name
    root.mkdir(parents=True)
    _run(["tar", "--zstd", "--numeric-owner", "--xattrs", "--xattrs-include=*", "-C", str(root), "-xpf", str(tarball)])
    return root


def set_hostname(root: Path, hostname: str) -> None:
    """The name the booted system gives itself (and journal lines carry)."""
    (root / "etc/hostname").write_text(hostname + "\n")


# --- without a service manager -----------------------------------------------------------------------------------


def run_chrooted(
    root: Path,
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    input: str | None = None,
    check: bool = True,
    timeout: float = 300,
) -> subprocess.CompletedProcess[str]:
    """``argv`` chrooted into ``root`` with a clean environment (plus ``env``). /proc is mounted for the duration
    in a private mount namespace (``unshare --mount``), so nothing stays mounted on the host."""
    script = 'mount -t proc proc "$1/proc" && shift && exec chroot "$@"'
    wrapped = ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", str(root), str(root)]
    return _run([*wrapped, *argv], env=_clean_env(env), input=input, check=check, timeout=timeout)


# --- booted under systemd-nspawn ---------------------------------------------------------------------------------


@dataclass
class BootedSystem:
    """A root booted by ``systemd-nspawn --boot``: its own systemd as PID 1, reached through ``nsenter``."""

    root: Path
    machine: str
    nspawn: subprocess.Popen[bytes]
    console_log: Path
    boot_seconds: float = 0.0

    @property
    def leader_pid(self) -> int:
        """The host PID of the container's PID 1 (systemd-nspawn's only child)."""
        children = Path(f"/proc/{self.nspawn.pid}/task/{self.nspawn.pid}/children").read_text().split()
        if len(children) != 1:
            raise FieldRootError(f"systemd-nspawn has children {children}, expected the container's init alone")
        return int(children[0])

    def run(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        input: str | None = None,
        check: bool = True,
        timeout: float = 300,
    ) -> subprocess.CompletedProcess[str]:
        """``argv`` inside the container (all its namespaces, its root, as root) with a clean environment plus
        ``env``; the process is not part of any unit, like a command typed at a root shell."""
        wrapped = ["nsenter", f"--target={self.leader_pid}", "--all", "--wdns=/", *argv]
        return _run(wrapped, env=_clean_env(env), input=input, check=check, timeout=timeout)

    def systemctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run(["systemctl", "--no-pager", *args], check=check)

    def show(self, unit: str, *properties: str) -> dict[str, str]:
        """``systemctl show -p …`` as a dict (MainPID, NRestarts, ActiveState …)."""
        out = self.systemctl("show", *(f"--property={p}" for p in properties), unit).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def journal(self, unit: str) -> str:
        return self.run(["journalctl", "--no-pager", "-o", "short-monotonic", "-u", unit], check=False).stdout

    def host_path(self, absolute: str) -> Path:
        """Where ``absolute`` (a path inside the container, not under its tmpfs /run or /tmp) is on the host."""
        return self.root / absolute.lstrip("/")

    def wait_until_running(self, timeout: float = _BOOT_TIMEOUT_S) -> str:
        """Block until the boot is done; returns ``running`` or ``degraded`` (a unit failed; see ``--failed``)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.nspawn.poll() is not None:
                raise FieldRootError(f"the container exited {self.nspawn.returncode} while booting:\n{self.console()}")
            with suppress(FieldRootError):  # no child yet, or systemd not yet answering
                left = max(0.5, deadline - time.monotonic())
                result = self.run(["systemctl", "is-system-running", "--wait"], check=False, timeout=left)
                state = result.stdout.strip()
                if state in ("running", "degraded"):
                    return state
            time.sleep(0.05)
        raise FieldRootError(f"no finished boot within {timeout} s:\n{self.console()}")

    def console(self) -> str:
        """What systemd-nspawn and the container's systemd printed (the boot messages)."""
        return self.console_log.read_text(errors="replace") if self.console_log.exists() else ""

    def poweroff(self, timeout: float = _SHUTDOWN_TIMEOUT_S) -> None:
        """A clean shutdown (SIGTERM to systemd-nspawn = ``poweroff`` in the container), SIGKILL after ``timeout``."""
        if self.nspawn.poll() is not None:
            return
        self.nspawn.send_signal(signal.SIGTERM)
        try:
            self.nspawn.wait(timeout)
        except subprocess.TimeoutExpired:
            self.nspawn.kill()
            self.nspawn.wait(10)


@contextmanager
def booted(
    root: Path,
    *,
    machine: str | None = None,
    bind_ro: Sequence[tuple[Path, str]] = (),
    log_dir: Path | None = None,
    boot_timeout: float = _BOOT_TIMEOUT_S,
) -> Iterator[BootedSystem]:
    """Boot ``root`` with ``systemd-nspawn --boot`` and yield it once ``systemctl is-system-running`` says the boot
    is over; power it off on the way out. ``bind_ro`` maps host paths read-only into the container (e.g. the
    directory with the .deb under test). ``--register=no --keep-unit``: there is no host systemd/machined to
    register with (without them nspawn fails with "Failed to open system bus"); the container runs in the caller's
    cgroup. The host's network is shared (no ``--private-network``)."""
    machine = machine or f"field-{uuid.uuid4().hex[:8]}"
    log_dir = log_dir or root.parent
    console_log = log_dir / f"{machine}.console.log"
    argv = [
        "systemd-nspawn",
        "--quiet",
        "--boot",
        f"--directory={root}",
        f"--machine={machine}",
        "--register=no",
        "--keep-unit",
        "--console=read-only",
        *(f"--bind-ro={host}:{inside}" for host, inside in bind_ro),
    ]
    started = time.monotonic()
    with console_log.open("wb") as log:
        process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=_clean_env()
        )
    system = BootedSystem(root, machine, process, console_log)
    try:
        system.wait_until_running(boot_timeout)
        system.boot_seconds = time.monotonic() - started
        yield system
    finally:
        system.poweroff()


# --- plumbing ----------------------------------------------------------------------------------------------------


def _clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {"PATH": _PATH, "LC_ALL": "C.UTF-8", "HOME": "/root", "DEBIAN_FRONTEND": "noninteractive", "TERM": "dumb"}
    env.update(extra or {})
    return env


def _run(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    input: str | None = None,
    check: bool = True,
    timeout: float = 300,
) -> subprocess.CompletedProcess[str]:
    try:
        result = subprocess.run(
            list(argv),
            env=dict(env) if env is not None else _clean_env(),
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise FieldRootError(f"{' '.join(argv)}: {error}") from error
    if check and result.returncode != 0:
        raise FieldRootError(f"{' '.join(argv)} exited {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result


def scratch_dir(prefix: str = "field-") -> Path:
    """A fresh directory for extracted roots on the same disk as /tmp (roots are ~200 MB unpacked)."""
    return Path(tempfile.mkdtemp(prefix=prefix))
