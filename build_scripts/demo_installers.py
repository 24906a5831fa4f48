"""The demo's installers: what ``orbitctl package`` needs published, how it is called, what it must produce.

``orbitctl package`` fetches orbit, osqueryd and (with ``--fleet-desktop``) Fleet Desktop through TUF for the
installer's platform (``platforms_for`` in packager/package/fetch.py): deb and rpm take the ``linux`` targets, pkg
the ``macos`` ones (osqueryd as ``macos-app``), msi the ``windows`` ones. The demo publishes its one-line launcher
scripts under every one of those names — inside the ``.tar.gz`` app bundles where the target is an archive — so the
four installers are well-formed packages that carry the demo's launcher builds, not frozen binaries.

``InstallerBuilds`` runs it alongside the rest of the demo: the macOS/Windows launchers are published from a
thread (one ``orbitctl updates add`` at a time: the demo's lock), then the four ``orbitctl package`` children are
started as the demo's jobs (demo_jobs), and each row ends with the installer's name and size, or what went wrong.
"""

from __future__ import annotations

import functools
import gzip
import io
import shutil
import sys
import tarfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from build_scripts.demo_board import Board
from build_scripts.demo_jobs import Jobs
from packager.package.fetch import platforms_for
from packager.package.package_options import PLATFORM_OF, default_outfile
from tuf_updates.targets import Platform, TargetName, TargetSpec

INSTALLER_TYPES = ("deb", "rpm", "pkg", "msi")
ARCH = "amd64"
CHANNEL = "stable"
MAGIC = {
    "deb": b"!<arch>\ndebian-binary",
    "rpm": b"\xed\xab\xee\xdb",  # the rpm lead
    "pkg": b"xar!",
    "msi": b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1",  # an OLE compound file
}
MIN_SIZE = 1024
MSI_TOOLS = ("wixl", "msibuild")
PACKAGE_TIMEOUT = 120.0
DEFAULT_EPOCH = "1735689600"  # 2025-01-01, unless the caller's SOURCE_DATE_EPOCH says otherwise


@dataclass(frozen=True)
class PackageSource:
    """The server the installed agent will enroll with and the TUF repository the installers are built from."""

    fleet_url: str
    ca_cert: str
    tuf_url: str
    root_json: Path


def installer_targets(*, desktop: bool) -> list[TargetSpec]:
    """Every target the four installers fetch (stable channel), in a stable order, without repeats."""
    names = [TargetName.ORBIT, TargetName.OSQUERYD] + ([TargetName.DESKTOP] if desktop else [])
    specs: list[TargetSpec] = []
    for kind in INSTALLER_TYPES:
        platforms = platforms_for(PLATFORM_OF[kind], ARCH)
        for name in names:
            spec = TargetSpec(name, platforms[name], CHANNEL)
            if spec not in specs:
                specs.append(spec)
    return specs


def write_target_file(spec: TargetSpec, build: Path, directory: Path) -> Path:
    """``build`` as the file ``spec`` publishes: a copy named like the target, or a ``.tar.gz`` holding it at the
    archive's executable path (fixed owner and times, so the same build gives the same bytes)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / spec.file_name
    if not spec.is_archive:
        shutil.copyfile(build, path)
        return path
    body = build.read_bytes()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        parts = spec.executable.split("/")
        for depth in range(1, len(parts)):
            folder = tarfile.TarInfo("/".join(parts[:depth]))
            folder.type, folder.mode, folder.mtime = tarfile.DIRTYPE, 0o755, int(DEFAULT_EPOCH)
            tar.addfile(folder)
        member = tarfile.TarInfo(spec.executable)
        member.size, member.mode, member.mtime = len(body), 0o755, int(DEFAULT_EPOCH)
        tar.addfile(member, io.BytesIO(body))
    path.write_bytes(gzip.compress(buffer.getvalue(), mtime=0))
    return path


def installer_name(kind: str, version: str) -> str:
    """orbitctl's default output name (``fleet-osquery_<version>_amd64.deb``, …)."""
    return default_outfile(kind, version, ARCH).name


def package_args(kind: str, source: PackageSource, outfile: Path, *, desktop: bool) -> list[str]:
    """``orbitctl package`` arguments for ``kind``; the enroll secret goes in ``ORBITCTL_ENROLL_SECRET``."""
    args = ["package", "--type", kind, "--fleet-url", source.fleet_url, "--fleet-certificate", source.ca_cert]
    args += ["--update-url", source.tuf_url, "--update-tls-certificate", source.ca_cert]
    args += ["--update-roots", str(source.root_json), "--outfile", str(outfile)]
    return args + (["--fleet-desktop"] if desktop else [])


def missing_tools(kind: str) -> str | None:
    """Why ``kind`` cannot be built here (None: it can)."""
    if kind != "msi":
        return None
    absent = [tool for tool in MSI_TOOLS if shutil.which(tool) is None]
    if not absent:
        return None
    return (
        f"{' and '.join(absent)} not found: the MSI is built with wixl and msitools; run build_scripts/bootstrap.sh "
        "as root (it installs the Debian packages in build_scripts/apt-packages.txt) or apt-get install wixl msitools"
    )


def check_installer(kind: str, path: Path) -> str | None:
    """What is wrong with the built file (None: it exists, has a sane size and starts like a ``kind`` file)."""
    try:
        size = path.stat().st_size
        with path.open("rb") as handle:
            head = handle.read(len(MAGIC[kind]))
    except OSError as exc:
        return f"{path} is not readable: {exc.strerror or exc}"
    if size < MIN_SIZE:
        return f"{path.name} is only {size} bytes"
    if head != MAGIC[kind]:
        return f"{path.name} does not start like a .{kind} file ({head!r})"
    return None


def human_size(size: int) -> str:
    return f"{size / 1024:.1f} KiB" if size < 1024 * 1024 else f"{size / 1024 / 1024:.1f} MiB"


@dataclass
class InstallerBuilds:
    """The four installers, built alongside the demo; their rows are keyed by type (``deb``, …)."""

    board: Board
    dist: Path
    source: PackageSource
    env: dict[str, str]  # ORBITCTL_ENROLL_SECRET, SOURCE_DATE_EPOCH, …
    version: str  # orbit's: orbitctl names the .deb and .rpm after it
    publish: Callable[[TargetSpec], None]
    jobs: Jobs
    built: list[Path] = field(default_factory=list, init=False)
    started_packaging: bool = field(default=False, init=False)
    _cancel: threading.Event = field(default_factory=threading.Event, init=False)
    _thread: threading.Thread | None = field(default=None, init=False)
    _error: str | None = field(default=None, init=False)

    def start(self) -> None:
        """Publish the launchers the installers need beyond Linux's, in a thread."""
        wanted = [spec for spec in installer_targets(desktop=True) if spec.platform is not Platform.LINUX]
        for kind in INSTALLER_TYPES:
            self.board.set(kind, "waiting", f"publishing launcher builds for {len(wanted)} macOS/Windows targets")
        self._thread = threading.Thread(target=self._publish_all, args=(wanted,), name="platform-builds", daemon=True)
        self._thread.start()

    def _publish_all(self, wanted: list[TargetSpec]) -> None:
        try:
            for spec in wanted:
                if self._cancel.is_set():
                    return
                self.publish(spec)
        except Exception as error:  # reported on the board by poll(), in the demo's thread
            self._error = str(error) or type(error).__name__

    def poll(self) -> None:
        """Once the launchers are published: start the four ``orbitctl package`` children (once)."""
        thread = self._thread
        if thread is None or thread.is_alive() or self.started_packaging or self._cancel.is_set():
            return
        self.started_packaging = True
        if self._error is not None:
            for kind in INSTALLER_TYPES:
                self.board.set(kind, "failed", f"publishing the launcher builds failed: {self._error}")
            return
        try:
            self.dist.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            for kind in INSTALLER_TYPES:
                self.board.set(kind, "failed", f"cannot create {self.dist}: {error.strerror or error}")
            return
        for kind in INSTALLER_TYPES:
            problem = missing_tools(kind)
            if problem is not None:
                self.board.set(kind, "failed", problem)
                continue
            outfile = self.dist / installer_name(kind, self.version)
            args = package_args(kind, self.source, outfile, desktop=True)
            self.board.set(kind, "running", f"orbitctl package --type {kind} (orbit, osqueryd, desktop through TUF)")
            argv = [sys.executable, "-m", "packager", *args]
            finish = functools.partial(self._finish, kind, outfile)
            self.jobs.start(f"package-{kind}", kind, argv, self.env, PACKAGE_TIMEOUT, finish)

    def _finish(self, kind: str, outfile: Path, code: int) -> None:
        problem = check_installer(kind, outfile) if code == 0 else f"exit code {code}"
        if problem is not None:
            self.board.set(kind, "failed", f"{problem}: {self.jobs.output(f'package-{kind}')}")
            return
        self.built.append(outfile)
        self.board.set(kind, "ok", f"{outfile.name}  {human_size(outfile.stat().st_size)}")

    def stop(self) -> None:
        """No more publishing or packaging; waits for the ``orbitctl updates add`` under way, if any."""
        self._cancel.set()
        if self._thread is not None:
            self._thread.join(30)
