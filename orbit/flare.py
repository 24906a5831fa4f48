"""``orbit flare``: one support bundle (tar.gz) with what a support engineer asks for first, and no secret.

Contents (all under ``orbit-flare/``):

- ``manifest.json``: when, which orbit, which host, what is inside (and what could not be read);
- ``doctor.json``: ``orbit doctor --json``;
- ``options.json``: the effective options, every secret replaced by ``<redacted>``;
- ``status.json``, ``crashes.json``: the agent's last status, its children's restarts and exit codes, rollbacks,
  the trial marker and quarantined updates;
- ``versions.json``: orbit's version and every installed target's record (version, hash);
- ``root-listing.txt``: every file under the root dir with its mode, owner, size and time — never its content;
- ``tuf/``: the trusted TUF metadata (public by design) and a summary of versions and expiries;
- ``logs/``: orbit's log (``--log-file``, with its rotations) and osqueryd's own logs, the last 5 MiB of each.

Secrets never leave the host: the files that hold them (node key, device token, enroll secret, client keys) are
listed but not read into the bundle, and every text that goes in passes through ``Redactor``, which replaces the
host's actual secret values wherever they appear (a log line that leaked one, say) and anything shaped like a
private key, a bearer token or a ``…secret``/``…key``/``…token`` field. Kolide's flare is the anchor; ours adds the
redaction of known values.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import platform as platform_module
import re
import socket
import stat
import tarfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path

from orbit.doctor import doctor_report
from orbit.options import Options
from orbit.root_layout import RootLayout
from orbit.version import orbit_version
from safe_fs.atomic_write import SECRET_MODE, atomic_output
from safe_fs.secret_read import read_text_or_none

log = logging.getLogger(__name__)

LOG_TAIL_BYTES = 5 * 1024 * 1024
REDACTED = "<redacted>"
SECRET_OPTIONS = frozenset({"enroll_secret"})
_PRIVATE_KEY = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(-----END [A-Z ]*PRIVATE KEY-----|\Z)", re.S)
_BEARER = re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+")
_FIELD = re.compile(
    r"""(?ix)
    (["']?[a-z0-9_-]*(?:secret|node_key|nodekey|token|password|passphrase)["']?\s*[:=]\s*["']?)
    ([^\s"',}&]+)
    """
)
# files whose content is a secret: listed in root-listing.txt, never read into the bundle
SECRET_FILE_NAMES = frozenset(
    {"secret-orbit-node-key.txt", "identifier", "secret.txt", "fleet_client.key", "update_client.key"}
)


@dataclass
class Redactor:
    """Replaces known secret values and secret-shaped text."""

    values: dict[str, str] = field(default_factory=dict)  # secret value → what it was (for the placeholder)

    def add(self, name: str, value: str | None) -> None:
        if value and len(value.strip()) >= 4:  # shorter "secrets" would shred ordinary text
            self.values[value.strip()] = name

    def text(self, text: str) -> str:
        for value, name in sorted(self.values.items(), key=lambda item: -len(item[0])):
            text = text.replace(value, f"<redacted:{name}>")
        text = _PRIVATE_KEY.sub("<redacted:private-key>", text)
        text = _BEARER.sub(r"\1" + REDACTED, text)
        return _FIELD.sub(lambda m: m.group(1) + (m.group(2) if m.group(2).startswith("<redacted") else REDACTED), text)


def known_secrets(options: Options, layout: RootLayout, env: Mapping[str, str]) -> Redactor:
    redactor = Redactor()
    redactor.add("enroll-secret", options.enroll_secret)
    redactor.add("enroll-secret", env.get("ORBIT_ENROLL_SECRET"))
    paths = {
        "enroll-secret": Path(options.enroll_secret_path) if options.enroll_secret_path else layout.secret_file,
        "node-key": layout.node_key,
        "device-token": layout.device_token,
    }
    for name, path in paths.items():
        with contextlib.suppress(OSError, ValueError):
            redactor.add(name, read_text_or_none(path))
    for path in (layout.fleet_client_key, layout.update_client_key):
        with contextlib.suppress(OSError, ValueError):
            redactor.add("client-key", read_text_or_none(path))
    return redactor


def _options_document(options: Options) -> dict[str, object]:
    document: dict[str, object] = {}
    for item in fields(options):
        value = getattr(options, item.name)
        if item.name in SECRET_OPTIONS:
            value = REDACTED if value else None
        elif isinstance(value, tuple):
            value = list(value)
        elif value is not None and not isinstance(value, bool | int | float | str):
            value = str(value)
        document[item.name] = value
    return document


def _listing(root: Path) -> str:
    lines = []
    for directory, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted([*dirs, *files]):
            path = Path(directory, name)
            with contextlib.suppress(OSError):
                info = path.lstat()
                kind = "l" if stat.S_ISLNK(info.st_mode) else "d" if stat.S_ISDIR(info.st_mode) else "-"
                when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(info.st_mtime))
                target = f" -> {os.readlink(path)}" if kind == "l" else ""
                lines.append(
                    f"{kind}{stat.S_IMODE(info.st_mode):04o} {info.st_uid}:{info.st_gid} {info.st_size:>12} {when} "
                    f"{path.relative_to(root)}{target}"
                )
    return "\n".join(lines) + "\n"


def _tail(path: Path, limit: int = LOG_TAIL_BYTES) -> str:
    with path.open("rb") as handle:
        size = handle.seek(0, os.SEEK_END)
        handle.seek(max(0, size - limit))
        data = handle.read(limit)
    prefix = f"[orbit flare: the first {size - limit} bytes were left out]\n" if size > limit else ""
    return prefix + data.decode("utf-8", "replace")


def _tuf_summary(tuf_dir: Path) -> tuple[dict[str, object], list[Path]]:
    summary: dict[str, object] = {}
    files = sorted(tuf_dir.glob("*.json")) if tuf_dir.is_dir() else []
    for path in files:
        with contextlib.suppress(OSError, ValueError, AttributeError, TypeError):
            signed = json.loads(path.read_text(encoding="utf-8"))["signed"]
            summary[path.name] = {"version": signed.get("version"), "expires": signed.get("expires")}
    return summary, files


def _install_records(bin_dir: Path) -> list[dict[str, object]]:
    records = []
    for record in sorted(bin_dir.glob("*/*/*/.versions/*/target.json")) if bin_dir.is_dir() else []:
        with contextlib.suppress(OSError, ValueError):
            records.append({"path": str(record.relative_to(bin_dir)), **json.loads(record.read_text())})
    return records


def _log_files(options: Options, layout: RootLayout) -> Iterable[Path]:
    if options.log_file is not None:
        log_file = Path(options.log_file)
        yield from sorted(p for p in log_file.parent.glob(f"{log_file.name}*") if p.is_file())
    if layout.osquery_log_dir.is_dir():
        yield from sorted(p for p in layout.osquery_log_dir.iterdir() if p.is_file())


class Bundle:
    def __init__(self, redactor: Redactor) -> None:
        self.redactor = redactor
        self.members: dict[str, bytes] = {}
        self.problems: list[str] = []

    def add_text(self, name: str, text: str) -> None:
        self.members[name] = self.redactor.text(text).encode("utf-8")

    def add_json(self, name: str, document: object) -> None:
        self.add_text(name, json.dumps(document, indent=1, sort_keys=True, default=str) + "\n")

    def add_file(self, name: str, path: Path) -> None:
        if path.name in SECRET_FILE_NAMES:
            self.problems.append(f"{path}: holds a secret, left out")
            return
        try:
            self.add_text(name, _tail(path))
        except OSError as exc:
            self.problems.append(f"{path}: {exc.strerror or exc}")

    def write(self, output: Path, epoch: float) -> None:
        with atomic_output(output, SECRET_MODE) as raw, tarfile.open(fileobj=raw, mode="w:gz") as tar:
            for name, data in sorted(self.members.items()):
                info = tarfile.TarInfo(f"orbit-flare/{name}")
                info.size, info.mtime, info.mode = len(data), int(epoch), 0o600
                tar.addfile(info, io.BytesIO(data))


def build_flare(options: Options, env: Mapping[str, str], output: Path, *, now: float | None = None) -> Bundle:
    epoch = time.time() if now is None else now
    layout = RootLayout(Path(options.root_dir))
    bundle = Bundle(known_secrets(options, layout, env))
    _failed, _checks, report = doctor_report(options, env)
    bundle.add_json("doctor.json", report)
    bundle.add_json("options.json", _options_document(options))
    status: dict[str, object] = {}
    with contextlib.suppress(OSError, ValueError):
        status = json.loads(layout.status_file.read_text(encoding="utf-8"))
    bundle.add_json("status.json", status)
    crashes: dict[str, object] = {
        "children": status.get("children"),
        "rollbacks": status.get("rollbacks"),
        "quarantined": status.get("quarantined"),
    }
    for name, path in (("trial_marker", layout.trial_marker), ("quarantine_file", layout.quarantine)):
        with contextlib.suppress(OSError, ValueError):
            crashes[name] = json.loads(path.read_text(encoding="utf-8"))
    bundle.add_json("crashes.json", crashes)
    bundle.add_json("versions.json", {"orbit": orbit_version(), "installed": _install_records(layout.bin_dir)})
    if layout.root.is_dir():
        bundle.add_text("root-listing.txt", _listing(layout.root))
    summary, tuf_files = _tuf_summary(layout.tuf_dir)
    bundle.add_json("tuf/summary.json", summary)
    for path in tuf_files:
        bundle.add_file(f"tuf/{path.name}", path)
    for path in _log_files(options, layout):
        bundle.add_file(f"logs/{path.name}", path)
    bundle.add_json(
        "manifest.json",
        {
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch)),
            "orbit_version": orbit_version(),
            "hostname": socket.gethostname(),
            "platform": f"{platform_module.system()} {platform_module.release()} {platform_module.machine()}",
            "root_dir": str(layout.root),
            "members": sorted([*bundle.members, "manifest.json"]),
            "left_out": bundle.problems,
        },
    )
    bundle.write(output, epoch)
    return bundle


def default_output(now: float) -> Path:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
    host = re.sub(r"[^A-Za-z0-9.-]", "_", socket.gethostname()) or "host"
    return Path.cwd() / f"orbit-flare-{host}-{stamp}.tar.gz"


def run_flare(options: Options, env: Mapping[str, str]) -> int:
    now = time.time()
    output = Path(options.output) if options.output else default_output(now)
    try:
        bundle = build_flare(options, env, output, now=now)
    except OSError as exc:
        print(f"orbit flare: cannot write {output}: {exc.strerror or exc}")
        return 1
    print(f"orbit flare: wrote {output} ({len(bundle.members)} files, secrets redacted)")
    for problem in bundle.problems:
        print(f"  left out: {problem}")
    return 0
