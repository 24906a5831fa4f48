"""``orbitctl mdm profile``: the fleetd configuration profile for a package built with
``--use-system-configuration``; ``orbitctl mdm uninstall-script``: the macOS removal script the .pkg also ships as
``/opt/orbit/bin/uninstall``, for MDMs that push a script rather than run a command.

    orbitctl mdm profile --fleet-url https://fleet.example.com --enroll-secret-file secret.txt \\
        [--enable-scripts] [--organization NAME] [--outfile fleetd.mobileconfig] \\
        [--sign-certificate cert.pem [--sign-key key.pem] [--sign-passphrase-file F]]

The secret comes from ``--enroll-secret-file`` or ``ORBITCTL_ENROLL_SECRET`` — there is no flag that takes it in
argv. The output holds the secret, so it is written 0600, atomically. Signed, it is a DER CMS SignedData with the
plist inside (signing time ``SOURCE_DATE_EPOCH``, so reproducible), which macOS shows as "Verified" when the chain is
trusted. Exit 2 for bad input, with a message that never shows the secret.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
from collections.abc import Mapping
from pathlib import Path

from rich.console import Console

from packager.formats import macos_templates
from packager.mdm.fleetd_profile import FleetdProfile, ProfileError, profile_plist
from packager.package.staged import UNIX_ROOT
from packager.signing import cms_signature, signing_options
from packager.signing.x509_identity import SigningIdentity, SigningIdentityError
from safe_fs.atomic_write import SECRET_MODE, atomic_output
from safe_fs.secret_read import SecretFileError, read_secret_file

SECRET_ENV = "ORBITCTL_ENROLL_SECRET"  # noqa: S105 - the variable's name, as orbitctl package
MAX_SECRET_BYTES = 4096


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    mdm = sub.add_parser("mdm", help="what an MDM pushes beside the installer")
    kinds = mdm.add_subparsers(dest="mdm_kind", required=True)
    profile = kinds.add_parser(
        "profile",
        help="the macOS configuration profile (.mobileconfig) with the Fleet URL and enroll secret",
        allow_abbrev=False,  # "--enroll-secret" must not quietly mean --enroll-secret-file
    )
    add = profile.add_argument
    add("--fleet-url", required=True, help="https:// URL of the Fleet server")
    add("--enroll-secret-file", type=Path, help=f"a file holding the enroll secret (or the {SECRET_ENV} variable)")
    add("--enroll-secret", dest="argv_secret", help=argparse.SUPPRESS)  # refused in run(), never echoed
    add("--enable-scripts", action="store_true", help="EnableScripts in the profile")
    add("--organization", help="PayloadOrganization shown in System Settings")
    add("--outfile", type=Path, default=Path("fleetd.mobileconfig"), help="default fleetd.mobileconfig")
    signing_options.add_arguments(profile)
    script = kinds.add_parser(
        "uninstall-script",
        help="print the macOS removal script the .pkg ships as /opt/orbit/bin/uninstall (for MDMs that push scripts)",
        allow_abbrev=False,
    )
    script.add_argument("--identifier", default="com.fleetdm.orbit", help="the package's --identifier")


def _secret(path: Path | None, env: Mapping[str, str]) -> str:
    if path is None:
        secret = env.get(SECRET_ENV, "").strip()
        if not secret:
            raise ProfileError(f"the enroll secret is required: --enroll-secret-file FILE or {SECRET_ENV}")
        return secret
    if env.get(SECRET_ENV):
        raise ProfileError(f"--enroll-secret-file and {SECRET_ENV} are mutually exclusive")
    try:
        from_file = read_secret_file(path, MAX_SECRET_BYTES)
    except SecretFileError as exc:
        raise ProfileError(f"--enroll-secret-file {exc.path} {exc.reason}") from None
    if from_file is None:
        raise ProfileError(f"--enroll-secret-file {path}: missing or empty")
    return from_file


def _signing_time(env: Mapping[str, str]) -> datetime.datetime:
    value = env.get("SOURCE_DATE_EPOCH", "").strip()
    if not value:
        return datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    if not value.isdigit():
        raise ProfileError("SOURCE_DATE_EPOCH must be a number of seconds")
    return datetime.datetime.fromtimestamp(int(value), datetime.UTC)


def signed_profile(plist: bytes, identity: SigningIdentity, signing_time: datetime.datetime) -> bytes:
    signer = cms_signature.CmsSigner(
        certificates=identity.chain_der(),
        signature_size=identity.rsa_signature_size,
        sign=lambda attributes: identity.sign_data(attributes, "sha256"),
    )
    return cms_signature.attached_signature(signer, plist, signing_time)


def run(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> int:
    if args.mdm_kind == "uninstall-script":
        sys.stdout.write(macos_templates.uninstall_script(args.identifier, str(UNIX_ROOT)).decode("utf-8"))
        return 0
    return _profile(args, os.environ if env is None else env)


def _profile(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    console = Console(stderr=True, highlight=False)
    try:
        if args.argv_secret is not None:
            raise ProfileError(
                f"--enroll-secret is not accepted: argv is visible to every user (ps); "
                f"use --enroll-secret-file FILE or {SECRET_ENV}"
            )
        profile = FleetdProfile(
            fleet_url=args.fleet_url,
            enroll_secret=_secret(args.enroll_secret_file, env),
            enable_scripts=args.enable_scripts,
            organization=args.organization,
        )
        signing_time = _signing_time(env)
        signing = signing_options.from_args(args, env, "profile", datetime.datetime.now(datetime.UTC))
        if not args.outfile.parent.is_dir():
            raise ProfileError(f"--outfile {args.outfile}: the directory does not exist")
    except (ProfileError, SigningIdentityError) as exc:
        console.print(f"orbitctl mdm profile: {exc}", soft_wrap=True)
        return 2
    data = profile_plist(profile)
    if signing is not None:
        data = signed_profile(data, signing.identity, signing_time)
    try:
        with atomic_output(args.outfile, SECRET_MODE) as out:
            out.write(data)
    except OSError as exc:
        console.print(f"orbitctl mdm profile: cannot write {args.outfile}: {exc.strerror or exc}", soft_wrap=True)
        return 1
    kind = "signed " if signing is not None else ""
    console.print(f"wrote {kind}configuration profile {args.outfile} ({len(data)} bytes, mode 0600)", soft_wrap=True)
    sys.stdout.write(f"{args.outfile}\n")
    return 0
