"""``orbitctl repo apt --dir DIR --deb PKG… --gpg-key FILE``: a signed apt repository of the given .deb files
(``apt_repository``); prints the ``sources.list`` line that points apt at it."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from rich.console import Console

from packager.signing.apt_repository import AptIndexError, build_signed_apt_repository
from packager.signing.gpg_home import GpgError
from packager.signing.openpgp_options import SigningOptionsError, add_openpgp_arguments, openpgp_options
from packager.signing.signing_key import SigningKeyError, load_signing_key


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    repo = sub.add_parser("repo", help="package repositories of built installers")
    kinds = repo.add_subparsers(dest="repo_kind", required=True)
    apt = kinds.add_parser("apt", help="a signed apt repository (dists/, InRelease, Release.gpg) of .deb files")
    apt.add_argument("--dir", type=Path, required=True, help="the repository (new, empty, or one made before)")
    apt.add_argument("--deb", type=Path, action="append", required=True, help="a .deb to publish (repeatable)")
    apt.add_argument("--suite", default="stable", help="suite and codename (default stable)")
    apt.add_argument("--component", default="main", help="component (default main)")
    add_openpgp_arguments(apt, "the repository's Release (InRelease, Release.gpg); required")


def run(args: argparse.Namespace) -> int:
    console = Console(stderr=True, highlight=False)
    try:
        chosen = openpgp_options(args, os.environ)
        if chosen is None:
            raise SigningOptionsError("--gpg-key is required: apt verifies the repository with its public key")
        for deb in args.deb:
            if not deb.is_file():
                raise SigningOptionsError(f"--deb {deb} is not a readable file")
        key = load_signing_key(chosen.key_file, chosen.passphrase)
        epoch = _source_date_epoch()
    except (SigningOptionsError, SigningKeyError, GpgError) as exc:
        console.print(f"orbitctl repo apt: {exc}", soft_wrap=True)
        return 2
    try:
        repository = build_signed_apt_repository(
            args.dir, args.deb, key, date_epoch=epoch, suite=args.suite, component=args.component
        )
    except AptIndexError as exc:
        console.print(f"orbitctl repo apt: {exc}", soft_wrap=True)
        return 2
    except (SigningKeyError, GpgError, OSError) as exc:
        console.print(f"orbitctl repo apt: {exc}", soft_wrap=True)
        return 1
    console.print(f"signed apt repository {repository.root}: {', '.join(repository.packages)}", soft_wrap=True)
    sys.stdout.write(repository.sources_line() + "\n")
    return 0


def _source_date_epoch() -> int:
    value = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    if not value:
        return int(time.time())
    if not value.isdigit():
        raise SigningOptionsError("SOURCE_DATE_EPOCH must be a number of seconds")
    return int(value)
