"""``python -m tuf_updates.conformance_client``: the TUF conformance suite's CLIENT-CLI on orbit's update code.

``--metadata-dir DIR init ROOT`` copies the trusted root (no network); ``refresh`` and ``download`` run the same
``UpdateClient`` and ``HttpxFetcher`` as the agent, trusting ``DIR/root.json`` (``bootstrap_root=None``). Metadata
is kept under non-versioned names in ``DIR``; targets go to ``--target-dir`` under their URL-quoted paths and are
not downloaded again while the cached copy matches. Exit 0 on success, 1 on any failure.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import quote

from tuf_updates.errors import TargetNotFoundError, UpdateError
from tuf_updates.http_client import TlsOptions, build_http_client
from tuf_updates.repository_client import UpdateClient

logger = logging.getLogger("tuf_updates.conformance_client")

USER_AGENT = "orbit-py-conformance/0.1"


def init(metadata_dir: Path, trusted_root: Path) -> None:
    """Place the trusted root as ``root.json`` atomically; no checks, no requests (CLIENT-CLI.md)."""
    metadata_dir.mkdir(parents=True, exist_ok=True)
    data = trusted_root.read_bytes()
    with tempfile.NamedTemporaryFile(dir=metadata_dir, delete=False, prefix=".root.", suffix=".tmp") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(handle.name, metadata_dir / "root.json")


def _client(args: argparse.Namespace) -> UpdateClient:
    if not args.metadata_url:
        raise UpdateError("--metadata-url is required")
    http = build_http_client(TlsOptions(), user_agent=USER_AGENT, connect_retries=0)
    return UpdateClient(
        Path(args.metadata_dir),
        args.metadata_url,
        bootstrap_root=None,
        http=http,
        target_base_url=args.target_base_url,
    )


def refresh(args: argparse.Namespace) -> None:
    with _client(args) as client:
        client.refresh()


def download(args: argparse.Namespace) -> None:
    if not args.target_name or not args.target_dir or not args.target_base_url:
        raise UpdateError("download needs --target-name, --target-dir and --target-base-url")
    target_dir = Path(args.target_dir)
    with _client(args) as client:
        client.refresh()
        for name in args.target_name:
            target = client.lookup_path(name)
            if target is None:
                raise TargetNotFoundError(f"{name} is not in the repository")
            destination = target_dir / quote(name, safe="")
            if client.is_cached(target, destination):
                logger.info("cached target=%s", name)
                continue
            client.download_to(target, destination)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="tuf_updates.conformance_client", description=__doc__)
    parser.add_argument("--metadata-dir", required=True)
    parser.add_argument("--metadata-url")
    parser.add_argument("--target-name", action="append")
    parser.add_argument("--target-base-url")
    parser.add_argument("--target-dir")
    parser.add_argument("-v", "--verbose", action="count", default=0)
    commands = parser.add_subparsers(dest="command", required=True)
    init_parser = commands.add_parser("init", help="trust the given root.json")
    init_parser.add_argument("trusted_root")
    commands.add_parser("refresh", help="update the top-level metadata")
    commands.add_parser("download", help="download and verify targets")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, stream=sys.stderr)
    try:
        if args.command == "init":
            init(Path(args.metadata_dir), Path(args.trusted_root))
        elif args.command == "refresh":
            refresh(args)
        else:
            download(args)
    except (UpdateError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
