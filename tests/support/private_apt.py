"""apt-get with a private configuration: its own sources, keyrings, lists, cache, status and config parts, so the
host's apt state is neither read nor written (the host's /etc/apt/apt.conf.d may hold hooks such as Docker's
``docker-clean``; APT_CONFIG is read before the parts directory, and names an empty one)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest


class PrivateApt:
    def __init__(self, base: Path, architecture: str = "amd64") -> None:
        self.base = base
        for folder in ("apt.conf.d", "sources.list.d", "trusted.gpg.d", "preferences.d", "lists/partial"):
            (base / folder).mkdir(parents=True, exist_ok=True)
        (base / "cache/archives/partial").mkdir(parents=True, exist_ok=True)
        (base / "log").mkdir(exist_ok=True)
        (base / "status").write_text("")
        settings = {
            "Dir::Etc::main": base / "apt.conf",
            "Dir::Etc::parts": base / "apt.conf.d",
            "Dir::Etc::sourcelist": base / "sources.list",
            "Dir::Etc::sourceparts": base / "sources.list.d",
            "Dir::Etc::trusted": base / "trusted.gpg",
            "Dir::Etc::trustedparts": base / "trusted.gpg.d",
            "Dir::Etc::preferences": base / "preferences",
            "Dir::Etc::preferencesparts": base / "preferences.d",
            "Dir::State": base,
            "Dir::State::lists": base / "lists",
            "Dir::State::status": base / "status",
            "Dir::Cache": base / "cache",
            "Dir::Log": base / "log",
            "Debug::NoLocking": "true",
            "APT::Sandbox::User": "root",
            "APT::Architecture": architecture,
            "Acquire::Languages": "none",
        }
        self.config = base / "apt-config"
        self.config.write_text("".join(f'{key} "{value}";\n' for key, value in settings.items()))
        (base / "apt.conf").write_text("")

    @property
    def archives(self) -> Path:
        return self.base / "cache/archives"

    def sources(self, line: str) -> None:
        (self.base / "sources.list").write_text(line + "\n")
        shutil.rmtree(self.base / "lists")
        (self.base / "lists/partial").mkdir(parents=True)

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {
            "APT_CONFIG": str(self.config),
            "PATH": os.environ["PATH"],
            "LC_ALL": "C",
            "DEBIAN_FRONTEND": "noninteractive",
        }
        return subprocess.run(
            ["apt-get", "-q", *args], env=env, capture_output=True, text=True, timeout=120, check=False
        )


def apt_or_skip() -> None:
    if shutil.which("apt-get") is None or shutil.which("gpgv") is None:
        if os.environ.get("CI"):
            pytest.fail("apt-get or gpgv is missing (build_scripts/apt-packages.txt: apt, gpgv)")
        pytest.skip("apt-get or gpgv is not installed")
