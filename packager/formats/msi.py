"""``fleet-osquery.msi``: wixl builds the MSI from the generated .wxs, ``msi_fixups`` adds what wixl cannot author
and makes it reproducible (docs/reference/packaging.md §3.5, §6; ADR 0007).

Steps: check the input (x64 only; no file, and no payload, over 2 GiB); copy every payload file into a private
build directory with its mtime set to ``SOURCE_DATE_EPOCH`` (the cabinet stores mtimes) while hashing it; render
the .wxs (``wxs.py``); ``wixl -a x64`` (with TZ=UTC: cabinet dates are local time); the ``msibuild`` SQL and the
summary-information rewrite (``msi_fixups.py``); with ``signing``, Authenticode by osslsigncode
(``packager/signing/authenticode.py``, signing time ``SOURCE_DATE_EPOCH``); then copy the result next to
``outfile`` and rename it into place, so an existing ``outfile`` is replaced whole or left alone. The MSI carries
``secret.txt``, so it is 0600 when the package has a secret.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from packager.formats import msi_fixups, wxs
from packager.formats.msi_fixups import MsiToolError
from packager.formats.output_file import package_output
from packager.formats.wxs import MsiInputError
from packager.package.staged import BuildResult, StagedPackage
from packager.signing.authenticode import sign_msi
from packager.signing.signing_options import SigningOptions

__all__ = ["MAX_FILE_BYTES", "MAX_PAYLOAD_BYTES", "MsiInputError", "MsiToolError", "build"]

# Windows Installer and the cabinet format count file sizes in signed 32 bits; the embedded cabinet and the
# compound file (version 3, 512-byte sectors) are limited to 2 GiB as well.
MAX_FILE_BYTES = 2**31 - 1
MAX_PAYLOAD_BYTES = 2**31 - 1
TOOL_TIMEOUT_S = 1800
_COPY_BUFFER = 1 << 20


def build(staged: StagedPackage, outfile: Path, *, signing: SigningOptions | None = None) -> BuildResult:
    """Build the MSI for ``staged`` at ``outfile``, Authenticode-signed with ``signing``. Raises ``MsiInputError``
    (a ``ValueError``) for input the MSI cannot carry and ``MsiToolError`` / ``AuthenticodeError`` (both ``OSError``)
    when wixl, msibuild or osslsigncode are missing or fail."""
    if staged.arch != "amd64":
        raise MsiInputError(f"MSI for {staged.arch} is not supported: wixl 0.101 builds x86 and x64 packages only")
    wxs.msi_product_version(staged.version)
    files = wxs.payload(staged)
    _check_sizes(files)
    wixl = shutil.which("wixl")
    if wixl is None:
        raise MsiToolError("wixl not found: install the Debian packages wixl and msitools")
    outfile = outfile.absolute()
    with tempfile.TemporaryDirectory(prefix="orbitctl-msi-") as work_name:
        work = Path(work_name)
        resolved = _stage_payload(files, work, staged.source_date_epoch)
        document = wxs.render(staged, resolved)
        (work / "fleet-osquery.wxs").write_text(document.xml, encoding="utf-8")
        built = work / "fleet-osquery.msi"
        _run_wixl(wixl, work, built)
        msi_fixups.apply_sql(built, msi_fixups.statements(msi_fixups.plan_for(document)))
        msi_fixups.rewrite_summary(built, document.package_code, staged.source_date_epoch)
        if signing is not None:
            unsigned, built = built, work / "fleet-osquery-signed.msi"
            sign_msi(unsigned, built, signing, signing_time=staged.source_date_epoch, description="Fleet osquery")
        digest = _publish(built, outfile, 0o600 if staged.secret is not None else 0o644)
    code = "{" + wxs.guid(document.product_code) + "}"
    return BuildResult(path=outfile, size=outfile.stat().st_size, sha256=digest, product_code=code)


def _check_sizes(files: tuple[wxs.PayloadFile, ...]) -> None:
    total = 0
    for item in files:
        if item.source is None:
            continue
        try:
            size = item.source.stat().st_size
        except OSError as exc:
            raise MsiInputError(f"cannot read {item.path} ({item.source}): {exc.strerror}") from None
        if size > MAX_FILE_BYTES:
            raise MsiInputError(
                f"{item.path} is {size} bytes: an MSI cannot carry a file over 2 GiB ({MAX_FILE_BYTES} bytes)"
            )
        total += size
    if total > MAX_PAYLOAD_BYTES:
        raise MsiInputError(
            f"the payload is {total} bytes: an MSI with an embedded cabinet cannot carry more than 2 GiB "
            f"({MAX_PAYLOAD_BYTES} bytes)"
        )


def _stage_payload(files: tuple[wxs.PayloadFile, ...], work: Path, epoch: int) -> list[wxs.ResolvedFile]:
    """Private copies (``payload/NNNN``, relative: wixl wants relative sources) with fixed mtimes, hashed while
    copied; the staged sources are never touched."""
    directory = work / "payload"
    directory.mkdir()
    resolved = []
    for index, item in enumerate(files):
        relative = Path("payload") / f"{index:04d}"
        target = work / relative
        digest = hashlib.sha256()
        try:
            with target.open("wb") as out:
                if item.source is None:
                    digest.update(item.data)
                    out.write(item.data)
                else:
                    with item.source.open("rb") as source:
                        while chunk := source.read(_COPY_BUFFER):
                            digest.update(chunk)
                            out.write(chunk)
        except OSError as exc:
            raise MsiInputError(f"cannot read {item.path} ({item.source}): {exc.strerror}") from None
        os.utime(target, (epoch, epoch))
        resolved.append(wxs.ResolvedFile(item.path, relative, digest.hexdigest(), item.mode))
    return resolved


def _run_wixl(wixl: str, work: Path, output: Path) -> None:
    argv = [wixl, "-a", "x64", "-o", str(output), "fleet-osquery.wxs"]
    env = {key: value for key, value in os.environ.items() if not key.startswith(("LC_", "LANG"))}
    env.update(TZ="UTC", LC_ALL="C.UTF-8")
    try:
        result = subprocess.run(
            argv, cwd=work, capture_output=True, text=True, timeout=TOOL_TIMEOUT_S, check=False, env=env
        )
    except subprocess.TimeoutExpired:
        raise MsiToolError(f"wixl did not finish within {TOOL_TIMEOUT_S} s") from None
    if result.returncode != 0 or not output.is_file():
        output_text = (result.stderr + result.stdout).strip()[-2000:]
        raise MsiToolError(f"wixl failed (exit {result.returncode}): {output_text}")


def _publish(built: Path, outfile: Path, mode: int) -> str:
    """Copy to a temp file beside ``outfile``, fsync, rename; returns the SHA-256."""
    digest = hashlib.sha256()
    with package_output(outfile, mode) as out, built.open("rb") as source:
        while chunk := source.read(_COPY_BUFFER):
            digest.update(chunk)
            out.write(chunk)
    return digest.hexdigest()
