"""Crash-safe moves of installed files: hidden temporaries, pointer swaps (Windows-safe), removal, digests."""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import shutil
import sys
from pathlib import Path

_HASH_CHUNK = 1024 * 1024


def file_digest(path: Path, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    with path.open("rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def remove(path: Path) -> None:
    """Remove a file, link or directory tree; absent is fine."""
    if path.is_symlink() or path.is_file():
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    elif path.is_dir():
        shutil.rmtree(path, ignore_errors=True)


def hidden_temp(directory: Path, label: str) -> Path:
    """A hidden name in ``directory`` for something that is still arriving (``.<label>.<random>.incoming``)."""
    return directory / f".{label}.{secrets.token_hex(4)}.incoming"


def replace_pointer(temp: Path, pointer: Path) -> None:
    """``rename(temp, pointer)``; Windows cannot replace a running executable, so move it aside first."""
    if sys.platform == "win32" and pointer.is_file() and not pointer.is_symlink():
        aside = pointer.with_name(f"{pointer.name}.old.{secrets.token_hex(4)}")
        os.replace(pointer, aside)
        os.replace(temp, pointer)
        with contextlib.suppress(OSError):
            aside.unlink()
        return
    os.replace(temp, pointer)


def move_file(source: Path, destination: Path) -> None:
    """Rename, or copy + fsync across file systems."""
    try:
        os.replace(source, destination)
    except OSError:
        shutil.copyfile(source, destination)
        with destination.open("rb+") as handle:
            os.fsync(handle.fileno())
