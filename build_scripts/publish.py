"""Publish frozen builds (``build_scripts/freeze.py``) to a TUF repository with ``orbitctl updates add``.

``python build_scripts/publish.py --repo REPO --dist DIR --version V [-t CHANNEL ...] [--platform linux]``

For each program found in ``DIR``:

* ``DIR/orbit`` → target ``orbit`` (a single executable file);
* ``DIR/osqueryd-sim`` → target ``osqueryd`` (a single executable file);
* ``DIR/fleet-desktop/`` (one-folder build) → packed as ``desktop.tar.gz`` whose top directory ``fleet-desktop/``
  holds the executable ``fleet-desktop`` — the layout orbit extracts (tuf_updates/targets.py) — then target
  ``desktop``. The archive is reproducible (sorted members, ``SOURCE_DATE_EPOCH`` mtimes, no owner names, gzip
  header without time or name); symlinks that would leave their directory are stored as the files they point to,
  because orbit's extractor only accepts downward links.

Each target is published under ``V`` (orbitctl always adds the version as a channel) and every ``-t`` channel.
The role passphrases come from ``ORBITCTL_<ROLE>_PASSPHRASE`` in the environment, never from argv.
"""

from __future__ import annotations

import argparse
import gzip
import os
import shlex
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

DESKTOP_TOP = "fleet-desktop"
DESKTOP_ARCHIVE = "desktop.tar.gz"


class PublishError(RuntimeError):
    """A build is missing or malformed, or orbitctl refused."""


@dataclass(frozen=True)
class Publication:
    name: str  # orbitctl's --name
    source: Path  # the file handed to orbitctl --target


def _source_date_epoch() -> int:
    text = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    return int(text) if text.isdigit() else 0


def _stays_inside(link_target: str) -> bool:
    return bool(link_target) and not link_target.startswith("/") and ".." not in link_target.split("/")


def pack_desktop(build: Path, archive: Path, *, mtime: int | None = None) -> Path:
    """``build`` is a one-folder build directory (holding ``fleet-desktop``) or a one-file executable."""
    stamp = _source_date_epoch() if mtime is None else mtime
    if build.is_dir():
        if not (build / DESKTOP_TOP).is_file():
            raise PublishError(f"{build} has no {DESKTOP_TOP} executable: not a fleet-desktop one-folder build")
        entries = sorted(build.rglob("*"), key=lambda p: p.relative_to(build).as_posix())
    elif build.is_file():
        entries = [build]
    else:
        raise PublishError(f"no fleet-desktop build at {build}")

    def member(path: Path) -> tuple[tarfile.TarInfo, Path | None]:
        relative = path.name if build.is_file() else path.relative_to(build).as_posix()
        name = f"{DESKTOP_TOP}/{relative}"
        if path.is_symlink() and _stays_inside(os.readlink(path)):
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = os.readlink(path)
            info.mode = 0o777
            content: Path | None = None
        elif path.is_dir():
            info = tarfile.TarInfo(name)
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
            content = None
        else:
            resolved = path.resolve()  # an outward symlink is stored as what it points to
            if not resolved.is_file():
                raise PublishError(f"{path} points outside the build to {resolved}, which is not a file")
            info = tarfile.TarInfo(name)
            info.size = resolved.stat().st_size
            info.mode = 0o755 if os.access(resolved, os.X_OK) else 0o644
            content = resolved
        info.mtime = stamp
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        return info, content

    top = tarfile.TarInfo(DESKTOP_TOP)
    top.type, top.mode, top.mtime = tarfile.DIRTYPE, 0o755, stamp
    archive.parent.mkdir(parents=True, exist_ok=True)
    with (
        archive.open("wb") as raw,
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=6) as zipped,
        tarfile.open(fileobj=zipped, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        tar.addfile(top)
        for path in entries:
            info, content = member(path)
            if content is None:
                tar.addfile(info)
            else:
                with content.open("rb") as handle:
                    tar.addfile(info, handle)
    return archive


def _single_executable(path: Path, program: str) -> Path:
    if path.is_dir():
        raise PublishError(f"{path} is a one-folder build; the {program} target must be a single executable file")
    if not os.access(path, os.X_OK):
        raise PublishError(f"{path} is not executable")
    return path


def publications(dist: Path, scratch: Path) -> list[Publication]:
    found: list[Publication] = []
    if (dist / "orbit").exists():
        found.append(Publication("orbit", _single_executable(dist / "orbit", "orbit")))
    if (dist / "osqueryd-sim").exists():
        found.append(Publication("osqueryd", _single_executable(dist / "osqueryd-sim", "osqueryd")))
    if (dist / "fleet-desktop").exists():
        found.append(Publication("desktop", pack_desktop(dist / "fleet-desktop", scratch / DESKTOP_ARCHIVE)))
    if not found:
        raise PublishError(f"no builds (orbit, osqueryd-sim, fleet-desktop) in {dist}")
    return found


def orbitctl_add(
    orbitctl: Sequence[str], repo: Path, item: Publication, *, platform: str, version: str, channels: Sequence[str]
) -> None:
    command = [*orbitctl, "updates", "add", "--path", str(repo), "--target", str(item.source)]
    command += ["--name", item.name, "--platform", platform, "--version", version]
    for channel in channels:
        command += ["-t", channel]
    result = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise PublishError(
            f"orbitctl updates add {item.name} failed (exit {result.returncode}): {result.stderr.strip()}"
        )
    print(f"published {item.name} {version} ({', '.join(channels) or 'version channel only'}) from {item.source.name}")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="publish.py", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--repo", type=Path, required=True, help="repository directory made by orbitctl updates init")
    parser.add_argument("--dist", type=Path, required=True, help="freeze.py's output directory")
    parser.add_argument("--version", required=True, help="exact version, X.Y.Z")
    parser.add_argument("-t", "--tag", dest="channels", action="append", default=[], help="channel, may be repeated")
    parser.add_argument("--platform", default="linux", choices=("linux", "linux-arm64"), help="default: linux")
    parser.add_argument(
        "--orbitctl",
        default=f"{shlex.quote(sys.executable)} -m packager",
        help="the orbitctl command (default: this interpreter's `-m packager`, which is orbitctl)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        with tempfile.TemporaryDirectory(prefix="publish-") as scratch:
            for item in publications(args.dist, Path(scratch)):
                orbitctl_add(
                    shlex.split(args.orbitctl),
                    args.repo,
                    item,
                    platform=args.platform,
                    version=args.version,
                    channels=args.channels,
                )
    except PublishError as exc:
        print(f"publish: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
