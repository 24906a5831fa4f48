"""A scratch root for installing the .deb and .rpm for real (docs/reference/packaging.md §4.5): ``dpkg --root`` and
``rpm --root`` run the maintainer scripts chrooted into it, so it holds a static busybox for ``/bin/sh`` and the
core tools, a ``/dev/null``, empty dpkg and rpm databases, and stubs for ``systemctl``, ``systemd-run`` and
``pkill`` that append their argv to ``/service-calls.log`` — the tests read which service actions each step
took. Nothing leaves the root; it needs root privileges (chroot, mknod), like dpkg itself.

Knobs: ``systemd_running`` (``/run/systemd/system`` exists, as on a booted systemd host), ``systemctl``
(``"stub"``, ``"failing"`` — every call exits 1 —, or ``"missing"``), ``inside_orbit`` (``/proc/self/cgroup``
says the scripts run inside orbit.service's control group, as when a Fleet script runs the package manager).
"""

from __future__ import annotations

import os
import pickle
import shutil
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

CALL_LOG = "service-calls.log"
_BUSYBOX_APPLETS = (
    "sh", "rm", "rmdir", "grep", "cat", "echo", "mkdir", "ln", "test", "[", "sed", "ls", "chmod", "mv", "cp",
    "true", "false", "readlink", "basename", "dirname", "env", "printf", "id", "touch", "sleep",
)  # fmt: skip
_STUB = f"""#!/bin/sh
echo "${{0##*/}} $*" >> /{CALL_LOG}
[ -f /stub-fails ] && exit 1
exit 0
"""
_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
_TIMEOUT_S = 60


@dataclass(frozen=True)
class ScratchRoot:
    path: Path

    def host(self, absolute: str) -> Path:
        """The host path of ``absolute`` inside the root (no symlink resolution)."""
        return self.path / absolute.lstrip("/")

    def calls(self) -> list[str]:
        log = self.path / CALL_LOG
        return log.read_text().splitlines() if log.exists() else []

    def take_calls(self) -> list[str]:
        """The calls recorded since the last ``take_calls``."""
        calls = self.calls()
        (self.path / CALL_LOG).unlink(missing_ok=True)
        return calls

    def dpkg(self, *args: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self._run(["dpkg", f"--root={self.path}", "--force-not-root", *map(str, args)], check)

    def rpm(self, *args: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self._run(["rpm", "--root", str(self.path), "--dbpath", "/var/lib/rpm", *map(str, args)], check)

    def _run(self, argv: list[str], check: bool) -> subprocess.CompletedProcess[str]:
        env = {"PATH": _PATH, "LC_ALL": "C", "HOME": "/root", "DEBIAN_FRONTEND": "noninteractive"}
        result = subprocess.run(
            argv, env=env, capture_output=True, text=True, timeout=_TIMEOUT_S, stdin=subprocess.DEVNULL, check=False
        )
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} exited {result.returncode}\n{result.stdout}\n{result.stderr}")
        return result


def make_scratch_root(
    path: Path, *, systemd_running: bool = True, systemctl: str = "stub", inside_orbit: bool = False
) -> ScratchRoot:
    if systemctl not in ("stub", "failing", "missing"):
        raise ValueError(systemctl)
    for directory in ("bin", "sbin", "usr/bin", "usr/sbin", "dev", "etc", "root", "var/log", "var/lib/rpm"):
        (path / directory).mkdir(parents=True, exist_ok=True)
    (path / "tmp").mkdir(mode=0o1777, exist_ok=True)
    dpkg_admin = path / "var/lib/dpkg"
    for directory in ("info", "updates", "triggers", "alternatives"):
        (dpkg_admin / directory).mkdir(parents=True, exist_ok=True)
    for name in ("status", "available"):
        (dpkg_admin / name).touch()
    os.mknod(path / "dev/null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    os.chmod(path / "dev/null", 0o666)
    busybox = shutil.which("busybox")
    if busybox is None:
        raise RuntimeError("busybox not found: apt-get install busybox-static")
    shutil.copy2(busybox, path / "bin/busybox")
    for applet in _BUSYBOX_APPLETS:
        (path / "bin" / applet).symlink_to("busybox")
    stubs = ["systemd-run", "pkill"] + ([] if systemctl == "missing" else ["systemctl"])
    for name in stubs:
        stub = path / "usr/bin" / name
        stub.write_text(_STUB)
        stub.chmod(0o755)
    if systemctl == "failing":
        (path / "stub-fails").touch()
    if systemd_running:
        (path / "run/systemd/system").mkdir(parents=True)
    if inside_orbit:
        (path / "proc/self").mkdir(parents=True)
        (path / "proc/self/cgroup").write_text("0::/system.slice/orbit.service\n")
    root = ScratchRoot(path)
    root.rpm("--initdb")
    return root


def run_tool(*argv: str | Path, check: bool = True, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """A verifier on the host (dpkg-deb, lintian, rpm -q …) with a fixed locale and UTC dates."""
    env = {"PATH": _PATH, "LC_ALL": "C.UTF-8", "TZ": "UTC", "HOME": os.environ.get("HOME", "/root")}
    result = subprocess.run(
        [str(arg) for arg in argv], env=env, cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(f"{argv} exited {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result


def verify_unit(root: ScratchRoot, unit: str = "/usr/lib/systemd/system/orbit.service") -> str:
    """``systemd-analyze verify --root`` on an installed unit; returns its complaints ("" when clean). The host's
    targets and slices are copied in so the unit's default dependencies resolve; ExecStart must exist in the
    root. Unknown keys and bad values only warn (exit 0), so the caller must assert on the text."""
    system = root.host("/usr/lib/systemd/system")
    for pattern in ("*.target", "*.slice"):
        for path in Path("/usr/lib/systemd/system").glob(pattern):
            if not (system / path.name).exists():
                shutil.copy(path, system / path.name, follow_symlinks=False)
    result = run_tool("systemd-analyze", "verify", f"--root={root.path}", unit, check=False)
    complaints = (result.stdout + result.stderr).strip()
    return complaints if complaints or result.returncode == 0 else f"exit {result.returncode}"


_LIMITED_BUILD = """
import importlib, pickle, resource, sys
from pathlib import Path
builder = importlib.import_module("packager.formats." + sys.argv[1])
staged = pickle.loads(Path(sys.argv[2]).read_bytes())
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[4]), resource.RLIM_INFINITY))
try:
    builder.build(staged, Path(sys.argv[3]))
except OSError as exc:
    print(type(exc).__name__, exc)
    sys.exit(3)
"""


def build_with_file_size_limit(
    kind: str, staged: object, outfile: Path, scratch: Path, limit: int = 500_000
) -> subprocess.CompletedProcess[str]:
    """Run ``packager.formats.<kind>.build`` in a child whose files may not grow past ``limit`` bytes (EFBIG, as
    on a full disk). Exit 3 and ``<ExceptionType> <message>`` on stdout when the build raised an OSError."""
    scratch.write_bytes(pickle.dumps(staged))
    return subprocess.run(
        [sys.executable, "-c", _LIMITED_BUILD, kind, str(scratch), str(outfile), str(limit)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[2],
        check=False,
    )
