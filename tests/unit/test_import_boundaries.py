"""The import boundaries in .importlinter hold on the tree, and each kind of contract fails on a deliberate violation.

The violations are made in a copy of the packages (``PYTHONPATH`` puts the copy first), so the real tree is never
touched. ``lint-imports`` itself also runs in ``make lint``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / ".importlinter"
PACKAGES = (
    "orbit",
    "tuf_updates",
    "safe_fs",
    "osquery_bin_manager",
    "packager",
    "desktop_tray",
    "server_stub",
    "osquery_sim",
)
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint(tree: Path, *contracts: str) -> subprocess.CompletedProcess[str]:
    argv = [str(LINT_IMPORTS), str(CONFIG), "--no-cache"]
    for contract in contracts:
        argv += ["--contract", contract]
    env = {**os.environ, "PYTHONPATH": str(tree), "NO_COLOR": "1", "COLUMNS": "200"}
    return subprocess.run(argv, cwd=tree, env=env, capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("tree")
    for package in PACKAGES:
        shutil.copytree(ROOT / package, base / package, ignore=shutil.ignore_patterns("__pycache__"))
    return base


def test_the_tree_keeps_every_contract(tree: Path) -> None:
    result = _lint(tree)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def _violate(tree: Path, module: str, line: str) -> Path:
    """Append an import to a copy of ``module`` and return a fresh tree with it (each case starts clean)."""
    case = tree.parent / f"case-{module.replace('.', '-')}"
    if case.exists():
        shutil.rmtree(case)
    shutil.copytree(tree, case)
    path = case / (module.replace(".", "/") + ".py")
    path.write_text(path.read_text(encoding="utf-8") + f"\n{line}\n", encoding="utf-8")
    return case


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        # the server must not share a schema with a client (ADR 0002)
        ("server_stub.routes_orbit", "import orbit.fleet.client  # noqa", "stub-independent"),
        # the tray ships alone
        ("desktop_tray.token_file", "import safe_fs.atomic_write  # noqa", "desktop-alone"),
        # the update library must not know orbit
        ("tuf_updates.installer", "import orbit.root_layout  # noqa", "client-layers"),
        # a wing reaching into another wing
        ("orbit.fleet.config_poller", "import orbit.children.supervisor  # noqa", "orbit-wings"),
        # a wing reaching up into the agent
        ("orbit.self_update.trial_boot", "import orbit.agent_state  # noqa", "orbit-wings"),
        # a circle between siblings (installer imports errors already)
        ("tuf_updates.errors", "import tuf_updates.installer  # noqa", "no-cycles"),
    ],
)
def test_a_deliberate_violation_breaks_its_contract(tree: Path, module: str, line: str, contract: str) -> None:
    case = _violate(tree, module, line)
    result = _lint(case, contract)
    assert result.returncode != 0, result.stdout
    assert "BROKEN" in result.stdout
    assert module.rsplit(".", 1)[1] in result.stdout  # the report names the offending importer
