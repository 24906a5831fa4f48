"""``orbitctl updates init|add|timestamp|rotate|roots --path REPO …`` (Fleet's ``fleetctl updates`` verbs)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path

from packager.updates import repository, role_keys
from packager.updates.repository import Expiries, RepoPaths, RepositoryError
from packager.updates.target_names import NAMES, PLATFORMS, UnknownTarget

DEFAULTS = Expiries()


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    updates = sub.add_parser("updates", help="manage the TUF repository agents update from")
    verbs = updates.add_subparsers(dest="verb", required=True)

    def verb(name: str, help_text: str) -> argparse.ArgumentParser:
        parser = verbs.add_parser(name, help=help_text)
        parser.add_argument("--path", required=True, help="repository directory (keys/ and repository/)")
        return parser

    def expiry_flags(parser: argparse.ArgumentParser, roles: tuple[str, ...]) -> None:
        for role in roles:
            parser.add_argument(
                f"--{role}-expires",
                type=float,
                metavar="DAYS",
                help=f"{role} metadata lifetime (default {DEFAULTS.of(role).days} days)",
            )

    init = verb("init", "create keys and sign version 1 of every role")
    expiry_flags(init, repository.TOP_ROLES)
    add = verb("add", "publish a file for a target, version and channels")
    add.add_argument("--target", required=True, help="the file to publish")
    add.add_argument("--name", required=True, choices=NAMES)
    add.add_argument("--platform", required=True, choices=PLATFORMS)
    add.add_argument("--version", required=True, help="exact version, X.Y.Z (always published as a channel too)")
    add.add_argument("-t", "--tag", dest="channels", action="append", default=[], help="channel, may be repeated")
    expiry_flags(add, ("targets", "snapshot", "timestamp"))
    timestamp = verb("timestamp", "re-sign timestamp.json with a bumped version (run from cron)")
    expiry_flags(timestamp, ("timestamp",))
    rotate = verb("rotate", "replace a role's key")
    rotate.add_argument("--role", required=True, choices=repository.TOP_ROLES)
    expiry_flags(rotate, repository.TOP_ROLES)
    verb("roots", "print the trusted root metadata (for packaging: --update-roots)")


def _expiries(args: argparse.Namespace) -> Expiries:
    values = {}
    for role in repository.TOP_ROLES:
        days = getattr(args, f"{role}_expires", None)
        if days is not None:
            if days <= 0:
                raise RepositoryError(f"--{role}-expires must be a positive number of days")
            values[role] = timedelta(days=days)
    return Expiries(**values)


def _passphrases(roles: tuple[str, ...], env: Mapping[str, str], *, confirm: bool = False) -> dict[str, bytes]:
    return {role: role_keys.passphrase_for(role, env, confirm=confirm) for role in roles}


def run(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> int:
    env = os.environ if env is None else env
    paths = RepoPaths(Path(args.path).expanduser().absolute())
    now = repository.utcnow()
    try:
        if args.verb == "roots":
            sys.stdout.buffer.write(repository.current_root(paths))
            return 0
        expiries = _expiries(args)
        with repository.locked(paths):
            if args.verb == "init":
                keyids = repository.init(paths, _passphrases(repository.TOP_ROLES, env, confirm=True), now, expiries)
                for role, keyid in keyids.items():
                    print(f"{role:<10} key {keyid}")
                print(f"initialized {paths.repository} (serve it; ship `orbitctl updates roots` with installers)")
            elif args.verb == "add":
                published = repository.add(
                    paths,
                    _passphrases(("targets", "snapshot", "timestamp"), env),
                    now,
                    expiries,
                    source=Path(args.target),
                    name=args.name,
                    platform=args.platform,
                    version=args.version,
                    channels=args.channels,
                )
                for path in published:
                    print(f"published {path}")
            elif args.verb == "timestamp":
                version = repository.refresh_timestamp(paths, _passphrases(("timestamp",), env), now, expiries)
                print(f"timestamp.json is now version {version}")
            elif args.verb == "rotate":
                roles = tuple(
                    sorted(
                        {
                            "root",
                            args.role,
                            *{"targets": ("snapshot", "timestamp"), "snapshot": ("timestamp",)}.get(args.role, ()),
                        }
                    )
                )
                old, new = repository.rotate(paths, args.role, _passphrases(roles, env), now, expiries)
                print(f"rotated the {args.role} key: {old[:16]}… → {new[:16]}…")
    except (RepositoryError, role_keys.KeyUnavailable, UnknownTarget) as exc:
        print(f"orbitctl: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"orbitctl: error: {exc.strerror or exc} ({exc.filename or args.path})", file=sys.stderr)
        return 1
    return 0
