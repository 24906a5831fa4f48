"""Building the update machinery from the options: trusted root, TUF client, installer, tracked targets.

Trust: ``tuf/root.json`` once orbit has run (python-tuf keeps the newest trusted root there); before that the root
given with ``--update-roots`` (a path or the JSON itself, as ``orbitctl package`` takes it), else the ``root.json``
inside Fleet's single-file store ``updates-metadata.json`` / ``tuf-metadata.json`` that packages ship. There is no
built-in fallback root: an agent without a root does not update (and says so) rather than trust someone else's.
"""

from __future__ import annotations

import json
import logging
import platform as platform_module
import sys
from dataclasses import dataclass
from pathlib import Path

from orbit.root_layout import RootLayout
from tuf_updates.helper_protocol import UPDATE_HELPER_COMMAND, HelperConfig
from tuf_updates.http_client import TlsOptions
from tuf_updates.installer import TargetInstaller
from tuf_updates.repository_process import RepositoryProcess
from tuf_updates.targets import Platform, TargetName, TargetSpec, host_platform

log = logging.getLogger(__name__)


class TrustRootError(RuntimeError):
    pass


def _root_from_store(path: Path) -> bytes | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise TrustRootError(f"{path} is not readable TUF metadata: {exc}") from None
    root = data.get("root.json") if isinstance(data, dict) else None
    if root is None:
        return None
    if isinstance(root, str):
        return root.encode("utf-8")
    return json.dumps(root).encode("utf-8")


def bootstrap_root(layout: RootLayout, update_roots: str | None) -> bytes | None:
    """The root to start trusting from, or None when ``tuf/root.json`` already holds the trusted root."""
    if (layout.tuf_dir / "root.json").is_file():
        return None
    if update_roots:
        text = update_roots.strip()
        if text.startswith("{"):
            data = text.encode("utf-8")
        else:
            try:
                data = Path(text).read_bytes()
            except OSError as exc:
                raise TrustRootError(f"--update-roots {text!r}: {exc.strerror}") from None
        try:
            json.loads(data)
        except ValueError:
            raise TrustRootError("--update-roots is not JSON root metadata") from None
        return data
    for store in (layout.update_metadata_file, layout.legacy_update_metadata_file):
        found = _root_from_store(store)
        if found is not None:
            return found
    raise TrustRootError(
        "no trusted TUF root: give --update-roots, or install a package that ships updates-metadata.json"
    )


@dataclass(frozen=True)
class TrackedTargets:
    orbit: TargetSpec
    osqueryd: TargetSpec
    desktop: TargetSpec | None

    def all(self, *, include_orbit: bool) -> list[TargetSpec]:
        specs = [self.osqueryd]
        if self.desktop is not None:
            specs.append(self.desktop)
        if include_orbit:
            specs.insert(0, self.orbit)
        return specs


def tracked_targets(orbit_channel: str, osqueryd_channel: str, desktop_channel: str, desktop: bool) -> TrackedTargets:
    return TrackedTargets(
        orbit=TargetSpec(TargetName.ORBIT, host_platform("orbit"), orbit_channel),
        osqueryd=TargetSpec(TargetName.OSQUERYD, host_platform("osqueryd"), osqueryd_channel),
        desktop=TargetSpec(TargetName.DESKTOP, host_platform("desktop"), desktop_channel) if desktop else None,
    )


def user_agent(version: str) -> str:
    return f"orbit/{version} ({platform_module.system().lower()} {platform_module.machine().lower()})"


def update_tls(layout: RootLayout, ca: Path | None, insecure: bool) -> TlsOptions:
    return TlsOptions.with_client_files(ca, layout.update_client_cert, layout.update_client_key, insecure=insecure)


def update_helper_argv(executable: str | None = None, *, frozen: bool | None = None) -> list[str]:
    """How orbit starts its update helper: its own executable with the helper subcommand (ADR 0020). A frozen
    build (PyInstaller one-file) is re-entered as itself; from sources, the same interpreter runs ``-m orbit``."""
    program = executable or sys.executable
    if frozen if frozen is not None else bool(getattr(sys, "frozen", False)):
        return [program, UPDATE_HELPER_COMMAND]
    return [program, "-m", "orbit", UPDATE_HELPER_COMMAND]


def make_update_client(
    layout: RootLayout, update_url: str, root: bytes | None, tls: TlsOptions, version: str
) -> RepositoryProcess:
    """The TUF client, run in a short-lived helper process per check so the daemon never holds python-tuf and
    cryptography in memory (ADR 0020)."""
    config = HelperConfig(
        metadata_dir=layout.tuf_dir,
        base_url=update_url,
        bootstrap_root=root,
        user_agent=user_agent(version),
        root_ca=tls.root_ca,
        client_cert=tls.client_cert,
        client_key=tls.client_key,
        insecure=tls.insecure,
    )
    return RepositoryProcess(update_helper_argv(), config)


def make_installer(layout: RootLayout) -> TargetInstaller:
    return TargetInstaller(layout.bin_dir.parent)


def orbit_link(layout: RootLayout, platform: Platform | None = None) -> Path:
    """``bin/orbit/orbit`` (``orbit.exe``): what the service runs."""
    spec_platform = platform or host_platform("orbit")
    name = "orbit.exe" if str(spec_platform).startswith("windows") else "orbit"
    return layout.bin_dir / "orbit" / name
