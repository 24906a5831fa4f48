"""Each program's extra in pyproject.toml is what the program imports (ADR 0010).

From each console script's module, follow the imports of our own modules (also those named as strings, e.g.
``importlib.import_module(BUILDERS[kind])``), collect the third-party top-level names and map them to distributions
through this venv's metadata. A missing distribution would break that program's frozen build; an extra one would
ship a library it never imports.
"""

from __future__ import annotations

import ast
import importlib.metadata
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from build_scripts.lock import normalize, parse_pin, read_inputs

ROOT = Path(__file__).resolve().parents[2]
EXTRA_OF_SCRIPT = {"orbit": "orbit", "orbitctl": "orbitctl", "fleet-desktop": "desktop", "fleet-stub": "stub"}
EXTRA_OF_SCRIPT["osqueryd-sim"] = "sim"
# pinned in an extra although the program never imports them by name
NOT_IMPORTED = {
    "sniffio": "httpcore looks it up on every lock; without it each lookup is a failed import (~13 % CPU)",
    "securesystemslib": "python-tuf's signing library; pinned to the version tested",
    "httptools": 'uvicorn loads it by name (server_stub: http="httptools")',
}
# imported where available, deliberately not in the program's extra
OPTIONAL = {
    ("desktop", "pygobject"): "pystray's gtk/appindicator backends: dev only; the frozen tray uses xorg (ADR 0008)",
}


def module_file(name: str) -> Path | None:
    parts = name.split(".")
    if not all(part.isidentifier() for part in parts):
        return None
    for candidate in (ROOT.joinpath(*parts).with_suffix(".py"), ROOT.joinpath(*parts, "__init__.py")):
        if candidate.is_file():
            return candidate
    return None


def imported_names(path: Path) -> Iterator[str]:
    """Module names imported by a file: import statements anywhere (also in functions), ``import_module("x")``, and
    string constants that name one of our modules."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and module_file(node.value) is not None:
            yield node.value  # one of our modules named by a string: imported dynamically
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "import_module" and node.args:
            first = node.args[0]
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                yield first.value


def third_party_imports(entry: str) -> set[str]:
    """Top-level third-party names imported by everything reachable from ``entry`` in this project."""
    seen: set[Path] = set()
    third_party: set[str] = set()
    pending = [entry]
    while pending:
        name = pending.pop()
        top = name.split(".")[0]
        if top in sys.stdlib_module_names or top == "__future__":
            continue
        path = module_file(name)
        if path is None:
            if module_file(top) is None and top not in {"tests", "build_scripts", "benchmarks"}:
                third_party.add(top)
            continue
        # importing a.b.c runs a/__init__.py and a/b/__init__.py too
        parents = [".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)]
        pending.extend(parents)
        if path in seen:
            continue
        seen.add(path)
        pending.extend(imported_names(path))
    return third_party


def distributions(top_level_names: set[str]) -> set[str]:
    mapping = importlib.metadata.packages_distributions()
    found = set()
    for name in top_level_names:
        assert name in mapping, f"no installed distribution provides {name!r}"
        found.update(normalize(dist) for dist in mapping[name])
    return found


def script_entries() -> dict[str, str]:
    with (ROOT / "pyproject.toml").open("rb") as handle:
        scripts = tomllib.load(handle)["project"]["scripts"]
    return {str(name): str(target).split(":")[0] for name, target in scripts.items()}


def test_every_console_script_has_an_extra() -> None:
    assert set(script_entries()) == set(EXTRA_OF_SCRIPT)
    inputs = read_inputs()
    assert set(EXTRA_OF_SCRIPT.values()) <= set(inputs.extras)
    assert {extra for pin in map(parse_pin, inputs.extras["all"]) for extra in pin.extras} == set(
        EXTRA_OF_SCRIPT.values()
    )


@pytest.mark.parametrize("script", sorted(EXTRA_OF_SCRIPT))
def test_the_extra_is_what_the_program_imports(script: str) -> None:
    extra = EXTRA_OF_SCRIPT[script]
    imported = distributions(third_party_imports(script_entries()[script]))
    pinned = {parse_pin(text).name for text in read_inputs().extras[extra]}
    optional = {dist for (name, dist) in OPTIONAL if name == extra}
    assert imported - optional <= pinned, f"{script} imports {sorted(imported - pinned)}, not in the {extra} extra"
    unused = pinned - imported - set(NOT_IMPORTED)
    assert not unused, f"the {extra} extra pins {sorted(unused)}, which {script} does not import"


def test_the_import_walk_sees_our_dynamic_and_nested_imports() -> None:
    """The walk itself: string-named builders (orbitctl) and importlib backends (the tray) are followed."""
    assert {"olefile", "rpm_rs"} <= third_party_imports("packager.__main__")
    assert {"pystray", "Xlib", "PIL"} <= third_party_imports("desktop_tray.__main__")
    assert "starlette" not in third_party_imports("orbit.__main__")
