"""Crash-safe file-system moves for the installer: hidden temporaries, fsync, atomic replace, digests."""

from __future__ import annotations

import contextlib
import hashlib
import json
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


def fsync_dir(path: Path) -> None:
    if sys.platform == "win32":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json_atomic(path: Path, data: dict[str, object]) -> None:
    temp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    with temp.open("w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=1, sort_keys=True)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, path)


def remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    elif path.is_dir():
        shutil.rmtree(path, ignore_errors=True)


def hidden_temp(directory: Path, label: str) -> Path:
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
    try:
        os.replace(source, destination)
    except OSError:
        shutil.copyfile(source, destination)
        with destination.open("rb+") as handle:
            os.fsync(handle.fileno())


def fsync_tree(root: Path) -> None:
    if sys.platform == "win32":
        return
    for directory, _dirs, files in os.walk(root):
        for name in files:
            path = Path(directory, name)
            if not path.is_symlink():
                with path.open("rb") as handle:
                    os.fsync(handle.fileno())
        fsync_dir(Path(directory))
