"""``orbitctl package --type deb|rpm|pkg|msi …``: validate, fetch through TUF, stage, build, report."""

from __future__ import annotations

import argparse
import importlib
import os
import shutil
import sys
import tempfile
from pathlib import Path

from rich.console import Console

from packager.package.fetch import FetchError
from packager.package.package_options import PackageOptionsError, default_outfile, validate
from packager.package.stage import stage_package
from packager.package.staged import BuildResult, StagedPackage
from packager.signing.gpg_home import GpgError
from packager.signing.openpgp_options import SigningOptionsError, openpgp_options
from packager.signing.signing_key import SigningKey, SigningKeyError, load_signing_key
from packager.signing.signing_options import SigningOptions

BUILDERS = {
    "deb": "packager.formats.deb",
    "rpm": "packager.formats.rpm",
    "pkg": "packager.formats.pkg",
    "msi": "packager.formats.msi",
}


def build_with(
    kind: str,
    staged: StagedPackage,
    outfile: Path,
    signing: SigningOptions | None = None,
    signing_key: SigningKey | None = None,
) -> BuildResult:
    module = importlib.import_module(BUILDERS[kind])
    extra: dict[str, object] = {}
    if signing is not None:  # msi and pkg: the X.509 identity (validated by package_options)
        extra["signing"] = signing
    if signing_key is not None:  # rpm: the OpenPGP key (checked by _signing_key)
        extra["signing_key"] = signing_key
    result: BuildResult = module.build(staged, outfile, **extra)
    return result


def _signing_key(args: argparse.Namespace) -> SigningKey | None:
    """The .rpm's OpenPGP key, checked before anything is fetched (a wrong passphrase fails in a second)."""
    chosen = openpgp_options(args, os.environ)
    if chosen is None:
        return None
    if args.type != "rpm":
        raise SigningOptionsError(
            "--gpg-key signs --type rpm; a .deb is verified through a signed apt repository (orbitctl repo apt)"
        )
    return load_signing_key(chosen.key_file, chosen.passphrase)


def run(args: argparse.Namespace) -> int:
    console = Console(stderr=True, highlight=False)
    try:
        options = validate(args, os.environ)
        signing_key = _signing_key(args)
    except (PackageOptionsError, SigningOptionsError, SigningKeyError, GpgError) as exc:
        console.print(f"orbitctl package: {exc}", soft_wrap=True)
        return 2
    work = Path(tempfile.mkdtemp(prefix="orbitctl-package-"))
    try:
        with console.status("fetching the agent's binaries through TUF…"):
            staged = stage_package(
                options,
                work,
                os.environ,
                progress=lambda name, size: console.print(f"  fetching {name} ({size / 1e6:.1f} MB), verified"),
            )
        outfile = options.outfile or default_outfile(options.type, staged.version, options.arch)
        if not outfile.parent.is_dir() or not os.access(outfile.parent, os.W_OK):
            raise OSError(f"cannot write {outfile}: {outfile.parent} is not a writable directory")
        with console.status(f"building {outfile.name}…"):
            result = build_with(options.type, staged, outfile, options.signing, signing_key)
    except (FetchError, PackageOptionsError, ValueError) as exc:
        console.print(f"orbitctl package: {exc}", soft_wrap=True)
        return 1
    except OSError as exc:
        console.print(f"orbitctl package: {exc}", soft_wrap=True)
        return 1
    finally:
        shutil.rmtree(work, ignore_errors=True)
    # soft_wrap: one line even when stderr is not a terminal (rich would otherwise cut the hash at 80 columns)
    console.print(f"built {result.path} ({result.size} bytes, sha256 {result.sha256})", soft_wrap=True, highlight=False)
    if result.product_code is not None:
        code = result.product_code
        console.print(f"product code {code} (msiexec /x {code} /qn removes it)", soft_wrap=True, highlight=False)
    sys.stdout.write(f"{result.path}\n")
    return 0
