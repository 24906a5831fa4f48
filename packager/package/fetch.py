"""Fetching the agent's binaries for a package through orbit's own TUF client (docs/reference/packaging.md §3.2).

Every byte that goes into a package is verified against the repository's signed metadata, starting from the root
given with ``--update-roots``; the refreshed metadata itself is embedded in the package (Fleet's single-file store,
``updates-metadata.json`` and the legacy ``tuf-metadata.json``), so the installed agent trusts exactly the root the
package was built from.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from packager.package.target_cache import TargetCache
from tuf_updates.archive import safe_extract
from tuf_updates.errors import UpdateError
from tuf_updates.http_client import TlsOptions, build_http_client
from tuf_updates.repository_client import TargetInfo, UpdateClient
from tuf_updates.targets import Platform, TargetName, TargetSpec

METADATA_ROLES = ("root", "targets", "snapshot", "timestamp")


class FetchError(RuntimeError):
    pass


@dataclass(frozen=True)
class FetchedTarget:
    spec: TargetSpec
    info: TargetInfo
    path: Path  # the downloaded file (archives: also extracted beside it)


def platforms_for(kind_platform: str, arch: str) -> dict[TargetName, Platform]:
    if kind_platform == "linux":
        linux = Platform.LINUX if arch == "amd64" else Platform.LINUX_ARM64
        return {TargetName.ORBIT: linux, TargetName.OSQUERYD: linux, TargetName.DESKTOP: linux}
    if kind_platform == "macos":
        return {
            TargetName.ORBIT: Platform.MACOS,
            TargetName.OSQUERYD: Platform.MACOS_APP,
            TargetName.DESKTOP: Platform.MACOS,
        }
    windows = Platform.WINDOWS if arch == "amd64" else Platform.WINDOWS_ARM64
    return {TargetName.ORBIT: windows, TargetName.OSQUERYD: windows, TargetName.DESKTOP: windows}


def read_roots(update_roots: str) -> bytes:
    text = update_roots.strip()
    data = text.encode("utf-8") if text.startswith("{") else Path(text).read_bytes()
    try:
        parsed = json.loads(data)
    except ValueError:
        raise FetchError("--update-roots is not JSON root metadata") from None
    if not isinstance(parsed, dict) or parsed.get("signed", {}).get("_type") != "root":
        raise FetchError("--update-roots is not a signed root.json (use `orbitctl updates roots --path REPO`)")
    return data


class TargetFetcher:
    def __init__(
        self,
        update_url: str,
        update_roots: str,
        tls: TlsOptions,
        work_dir: Path,
        *,
        progress: Callable[[str, int], None] | None = None,
        cache: TargetCache | None = None,
    ) -> None:
        """``work_dir`` (created if needed) holds the TUF metadata; it belongs to the caller's temporary build
        directory, so nothing is left in the system's temp dir after a build."""
        self._work = work_dir
        work_dir.mkdir(parents=True, exist_ok=True)
        self._client = UpdateClient(
            self._work / "metadata",
            update_url,
            bootstrap_root=read_roots(update_roots),
            http=build_http_client(tls, user_agent="orbitctl"),
        )
        self._progress = progress or (lambda _name, _size: None)
        self._cache = cache

    def refresh(self) -> None:
        try:
            with self._client:
                self._client.refresh()
        except UpdateError as exc:
            raise FetchError(f"TUF repository: {exc}") from None

    def fetch(self, spec: TargetSpec, destination_root: Path) -> FetchedTarget:
        """Download ``spec`` to ``<root>/bin/<name>/<platform>/<channel>/<file>`` (archives extracted beside it)."""
        try:
            with self._client:
                info = self._client.lookup_path(spec.path)
                if info is None:
                    raise FetchError(f"{spec.path} is not published in the repository (check the channel)")
                channel_dir = destination_root.joinpath("bin", *spec.install_parts)
                path = channel_dir / spec.file_name
                channel_dir.mkdir(parents=True, exist_ok=True)
                if self._cache is not None and self._cache.restore(info, path):
                    self._progress(f"{spec.path} (cached)", info.length)
                else:
                    self._progress(spec.path, info.length)
                    self._client.download_to(info, path)
                    if self._cache is not None:
                        self._cache.store(info, path)
        except UpdateError as exc:
            raise FetchError(f"{spec.path}: {exc}") from None
        if spec.is_archive:
            try:
                safe_extract(path, channel_dir)
            except UpdateError as exc:
                raise FetchError(f"{spec.path}: {exc}") from None
            if not (channel_dir / spec.executable).is_file():
                raise FetchError(f"{spec.path}: the archive has no {spec.executable}")
        return FetchedTarget(spec, info, path)

    def metadata_store(self) -> bytes:
        """Fleet's single-file TUF store: ``{"root.json": {...}, "targets.json": {...}, ...}``."""
        store: dict[str, object] = {}
        for role in METADATA_ROLES:
            path = self._client.metadata_dir / f"{role}.json"
            if path.is_file():
                store[f"{role}.json"] = json.loads(path.read_bytes())
        if "root.json" not in store:
            raise FetchError("no TUF metadata was fetched")
        return (json.dumps(store, indent=1, sort_keys=True) + "\n").encode("utf-8")
