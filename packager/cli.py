"""``orbitctl``: the admin tool (``orbitctl updates …`` for the TUF repository; installers come with ``package``;
``repo apt`` publishes .deb files in a signed apt repository; ``mdm profile`` writes the macOS configuration
profile an MDM pushes beside the package)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from packager import __version__
from packager.mdm import cli as mdm_cli
from packager.package import cli as package_cli
from packager.package import package_options
from packager.signing import repo_cli
from packager.updates import cli as updates_cli


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="orbitctl", description="Build agent installers and manage their updates.")
    top.add_argument("--version", action="version", version=f"orbitctl {__version__}")
    sub = top.add_subparsers(dest="command", required=True)
    updates_cli.add_parser(sub)
    package_options.add_parser(sub)
    repo_cli.add_parser(sub)
    mdm_cli.add_parser(sub)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    return _quiet_broken_pipe(lambda: _main(argv))


def _main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "updates":
        return updates_cli.run(args)
    if args.command == "package":
        return package_cli.run(args)
    if args.command == "repo":
        return repo_cli.run(args)
    if args.command == "mdm":
        return mdm_cli.run(args)
    return 2


def _quiet_broken_pipe(run: Callable[[], int]) -> int:
    """A reader that stopped early (``orbitctl updates roots | head``): not our error, no traceback, exit 141."""
    try:
        code = run()
        sys.stdout.flush()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # the exit-time flush must not fail again
        return 128 + 13  # SIGPIPE
    return code


if __name__ == "__main__":
    sys.exit(main())
