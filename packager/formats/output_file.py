"""Where every format writes its package: replaced whole or left alone, 0600 when it carries the enroll secret.

The mechanics are ``safe_fs.atomic_write``; this module adds the packager's error (a clear ``cannot write …``
naming the output) and the refusal to write over a directory.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from safe_fs.atomic_write import atomic_output, install_file


class PackageOutputError(OSError):
    """The package could not be written where asked (a directory, no space, no permission …)."""


def _check_target(outfile: Path) -> None:
    if outfile.is_dir():
        raise PackageOutputError(f"cannot write {outfile}: it is a directory")


@contextlib.contextmanager
def package_output(outfile: Path, mode: int) -> Iterator[BinaryIO]:
    """A stream that becomes ``outfile`` when the block completes (temp file beside it, fsync, rename)."""
    _check_target(outfile)
    try:
        with atomic_output(outfile, mode) as handle:
            yield handle
    except PackageOutputError:
        raise
    except OSError as exc:
        raise PackageOutputError(f"cannot write {outfile}: {exc.strerror or exc}") from exc


def place_finished(finished: Path, outfile: Path, mode: int) -> None:
    """A package a tool wrote into a temp directory beside ``outfile`` becomes ``outfile``."""
    _check_target(outfile)
    try:
        install_file(finished, outfile, mode)
    except OSError as exc:
        raise PackageOutputError(f"cannot write {outfile}: {exc.strerror or exc}") from exc
