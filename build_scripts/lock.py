"""Hash-locked requirements per install profile (ADR 0010): ``make lock`` writes ``requirements/*.lock``.

``python build_scripts/lock.py [--only NAME] [--upgrade] [--check] [--uv PATH]``

* One lock per install profile (``PROFILES``): ``dev`` (every program, the dev tools and PyInstaller: bootstrap,
  ``make test``, CI), one per frozen program (its extra plus ``build``: build_scripts/freeze.py ``--venvs``) and one
  per program installed with pip (orbitctl, fleet-stub).
* ``uv pip compile --universal --generate-hashes``: every package ``==``-pinned with the hashes of all its files, with
  markers, so the same lock installs on Linux, macOS and Windows (``pip install --require-hashes -r LOCK``).
* The dev lock is resolved first; the others are constrained by it (``-c requirements/dev.lock``), so a program
  ships exactly the versions the tests ran with. uv keeps a lock's existing pins unless ``--upgrade`` is given.
* Each lock's header carries a sha256 of its inputs (``inputs_digest``): the pyproject.toml parts the profile
  installs, the uv version and the compile options. tests/unit/test_dependency_lock.py recomputes it, so
  ``make test`` fails on a lock that is older than pyproject.toml. ``--check`` does the same without uv or network.

Runs the uv pinned in the ``dev`` extra (the one in ``.venv``); any other version is refused.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = ROOT / "pyproject.toml"
LOCK_DIR = ROOT / "requirements"
# the interpreter floor the universal resolution starts from (pyproject: requires-python = ">=3.11")
PYTHON_VERSION = "3.11"
UV_COMPILE_OPTIONS = ("--universal", "--generate-hashes", "--python-version", PYTHON_VERSION, "--no-header")
DIGEST_LINE = re.compile(r"^# inputs-sha256: ([0-9a-f]{64})$", re.MULTILINE)
NAME = r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?"
# a requirement in pyproject.toml: name, optional [extras], optional ==version, optional ; marker
PYPROJECT_REQUIREMENT = re.compile(
    rf"^(?P<name>{NAME})\s*(?:\[(?P<extras>[^\]]*)\])?\s*(?P<spec>[^;]*?)\s*(?:;\s*(?P<marker>.+))?$"
)
# a requirement in a lock: name==version, optional ; marker, then the hashes
LOCK_REQUIREMENT = re.compile(rf"^(?P<name>{NAME})==(?P<version>[^\s;]+)\s*(?:;\s*(?P<marker>[^\\]+?))?\s*$")
HASH_OPTION = re.compile(r"^--hash=sha256:[0-9a-f]{64}$")


@dataclass(frozen=True)
class Profile:
    name: str  # requirements/NAME.lock
    extras: tuple[str, ...]
    purpose: str

    @property
    def path(self) -> Path:
        return LOCK_DIR / f"{self.name}.lock"


DEV = Profile("dev", ("dev", "build"), "development, tests and CI: every program, the dev tools and PyInstaller")
PROFILES: tuple[Profile, ...] = (
    DEV,
    Profile("orbit", ("orbit", "build"), "build the frozen orbit (build_scripts/freeze.py --venvs)"),
    Profile("fleet-desktop", ("desktop", "build"), "build the frozen fleet-desktop (build_scripts/freeze.py --venvs)"),
    Profile("osqueryd-sim", ("sim", "build"), "build the frozen osqueryd-sim (build_scripts/freeze.py --venvs)"),
    Profile("orbitctl", ("orbitctl",), "install orbitctl with pip (not frozen)"),
    Profile("fleet-stub", ("stub",), "install fleet-stub with pip (not frozen)"),
)


class LockError(RuntimeError):
    """pyproject.toml or a lock is not what this script can work with, or uv failed."""


@dataclass(frozen=True)
class Pin:
    """One requirement of pyproject.toml: ``name==version`` (``version`` empty unless pinned with one ``==``)."""

    name: str  # normalized (PEP 503)
    version: str
    extras: tuple[str, ...]
    text: str


@dataclass(frozen=True)
class LockedRequirement:
    name: str  # normalized (PEP 503)
    version: str
    marker: str
    hashes: tuple[str, ...]


@dataclass(frozen=True)
class ProjectInputs:
    """The dependency inputs of pyproject.toml, typed."""

    name: str
    requires_python: str
    dependencies: tuple[str, ...]
    extras: Mapping[str, tuple[str, ...]]
    build_requires: tuple[str, ...]


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _strings(value: object, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise LockError(f"pyproject.toml: {where} must be a list of strings")
    return tuple(value)


def project_inputs(text: str) -> ProjectInputs:
    document = tomllib.loads(text)
    project = document.get("project")
    if not isinstance(project, dict):
        raise LockError("pyproject.toml has no [project] table")
    name, requires_python = project.get("name"), project.get("requires-python")
    if not isinstance(name, str) or not isinstance(requires_python, str):
        raise LockError("pyproject.toml: [project] needs name and requires-python")
    optional = project.get("optional-dependencies", {})
    if not isinstance(optional, dict):
        raise LockError("pyproject.toml: [project.optional-dependencies] must be a table")
    build_system = document.get("build-system", {})
    if not isinstance(build_system, dict):
        raise LockError("pyproject.toml: [build-system] must be a table")
    return ProjectInputs(
        name=normalize(name),
        requires_python=requires_python,
        dependencies=_strings(project.get("dependencies", []), "project.dependencies"),
        extras={normalize(key): _strings(value, f"optional-dependencies.{key}") for key, value in optional.items()},
        build_requires=_strings(build_system.get("requires", []), "build-system.requires"),
    )


def parse_pin(text: str) -> Pin:
    match = PYPROJECT_REQUIREMENT.match(text.strip())
    if match is None:
        raise LockError(f"pyproject.toml: cannot read the requirement {text!r}")
    spec = match["spec"].replace(" ", "")
    version = spec[2:] if re.fullmatch(r"==[^,<>=!~*]+", spec) else ""
    extras = tuple(normalize(e.strip()) for e in (match["extras"] or "").split(",") if e.strip())
    return Pin(normalize(match["name"]), version, extras, text)


def profile_extras(inputs: ProjectInputs, extras: Iterable[str]) -> tuple[str, ...]:
    """The extras a profile installs, following self-references (``orbit-suite[all]``), sorted."""
    seen: set[str] = set()
    pending = [normalize(e) for e in extras]
    while pending:
        extra = pending.pop()
        if extra in seen:
            continue
        if extra not in inputs.extras:
            raise LockError(f"pyproject.toml has no extra {extra!r}")
        seen.add(extra)
        for text in inputs.extras[extra]:
            pin = parse_pin(text)
            if pin.name == inputs.name:
                pending.extend(pin.extras)
    return tuple(sorted(seen))


def direct_pins(inputs: ProjectInputs, profile: Profile) -> list[Pin]:
    """Every third-party requirement the profile installs directly (self-references expanded, not listed)."""
    texts = list(inputs.dependencies)
    for extra in profile_extras(inputs, profile.extras):
        texts.extend(inputs.extras[extra])
    pins = [parse_pin(text) for text in texts]
    return [pin for pin in pins if pin.name != inputs.name]


def uv_version(inputs: ProjectInputs) -> str:
    for text in inputs.extras.get("dev", ()):
        pin = parse_pin(text)
        if pin.name == "uv" and pin.version:
            return pin.version
    raise LockError("pyproject.toml: the dev extra must pin uv (uv==X.Y.Z)")


def inputs_digest(inputs: ProjectInputs, profile: Profile) -> str:
    """sha256 of everything the profile's lock is computed from (sorted, so reordering a list is no change)."""
    extras = profile_extras(inputs, profile.extras)
    payload = {
        "profile": list(profile.extras),
        "requires-python": inputs.requires_python,
        "dependencies": sorted(inputs.dependencies),
        "extras": {extra: sorted(inputs.extras[extra]) for extra in extras},
        "constraint": None if profile == DEV else DEV.name,
        "uv": uv_version(inputs),
        "options": list(UV_COMPILE_OPTIONS),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def header(inputs: ProjectInputs, profile: Profile) -> str:
    return "\n".join(
        [
            f"# requirements/{profile.name}.lock: {profile.purpose}.",
            f"# Generated by `make lock` (build_scripts/lock.py, uv {uv_version(inputs)}); do not edit.",
            f"# pyproject.toml extras: {', '.join(profile.extras)}",
            f"# install: pip install --require-hashes -r requirements/{profile.name}.lock",
            f"# inputs-sha256: {inputs_digest(inputs, profile)}",
        ]
    )


def lock_digest(text: str) -> str | None:
    match = DIGEST_LINE.search(text)
    return match[1] if match else None


def parse_lock(text: str) -> list[LockedRequirement]:
    """The requirements of a lock; a line that is not ``name==version [; marker]`` with hashes is an error."""
    logical: list[str] = []
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):  # a comment inside a continued requirement (uv puts none there; be strict)
            raise LockError(f"a comment inside a requirement: {raw!r}")
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    if current:
        logical.append(current)
    requirements = []
    for line in logical:
        requirement, *options = re.split(r"\s+(?=--)", line.strip())
        match = LOCK_REQUIREMENT.match(requirement)
        if match is None:
            raise LockError(f"not a name==version requirement: {line[:120]!r}")
        bad = [option for option in options if not HASH_OPTION.match(option)]
        if bad:
            raise LockError(f"{match['name']}: unexpected option {bad[0]!r}")
        hashes = tuple(option.removeprefix("--hash=") for option in options)
        name, version, marker = normalize(match["name"]), match["version"], match["marker"] or ""
        requirements.append(LockedRequirement(name, version, marker, hashes))
    return requirements


def lock_problems(inputs: ProjectInputs, profile: Profile, lock_text: str) -> list[str]:
    """What is wrong with one lock (an empty list: the lock is current and strict)."""
    where = f"requirements/{profile.name}.lock"
    problems = []
    if lock_digest(lock_text) != inputs_digest(inputs, profile):
        problems.append(f"{where} is stale (its inputs-sha256 is not that of pyproject.toml): run `make lock`")
    try:
        locked = parse_lock(lock_text)
    except LockError as error:
        return [*problems, f"{where}: {error}"]
    if not locked:
        problems.append(f"{where} has no requirements")
    problems += [f"{where}: {r.name}=={r.version} has no --hash" for r in locked if not r.hashes]
    versions = locked_versions(locked)
    pins = direct_pins(inputs, profile)
    if profile == DEV:  # bootstrap installs the project with --no-build-isolation: its build backend from this lock
        pins += [parse_pin(text) for text in inputs.build_requires]
    for pin in pins:
        if not pin.version:
            problems.append(f"pyproject.toml: {pin.text!r} is not pinned with ==")
        elif pin.name not in versions:
            problems.append(f"{where} lacks {pin.name} (pyproject.toml: {pin.text!r})")
        elif versions[pin.name] != {pin.version}:
            problems.append(f"{where} has {pin.name} {sorted(versions[pin.name])}, pyproject.toml {pin.text!r}")
    return problems


def locked_versions(locked: Iterable[LockedRequirement]) -> dict[str, set[str]]:
    versions: dict[str, set[str]] = {}
    for requirement in locked:
        versions.setdefault(requirement.name, set()).add(requirement.version)
    return versions


def pin_conflicts(inputs: ProjectInputs) -> list[str]:
    """A package pinned in several extras (or the build backend) must be pinned to one version everywhere."""
    seen: dict[str, tuple[str, str]] = {}
    problems = []
    groups = [("dependencies", inputs.dependencies), ("build-system", inputs.build_requires), *inputs.extras.items()]
    for group, texts in groups:
        for pin in (parse_pin(text) for text in texts):
            if pin.name == inputs.name or not pin.version:
                continue
            first = seen.setdefault(pin.name, (group, pin.version))
            if first[1] != pin.version:
                problems.append(f"pyproject.toml: {pin.name} is {first[1]} in {first[0]} but {pin.version} in {group}")
    return problems


def drift_from_dev(
    profile: Profile, locked: Iterable[LockedRequirement], dev: Iterable[LockedRequirement]
) -> list[str]:
    """A program's lock must hold the versions the tests ran with (the dev lock's)."""
    dev_versions = locked_versions(dev)
    return [
        f"requirements/{profile.name}.lock has {r.name} {r.version}, requirements/dev.lock "
        f"{sorted(dev_versions.get(r.name, set())) or 'nothing'}: run `make lock`"
        for r in locked
        if r.version not in dev_versions.get(r.name, set())
    ]


def all_problems(inputs: ProjectInputs, lock_texts: Mapping[str, str]) -> list[str]:
    """Everything wrong with pyproject.toml's pins and the locks (``lock_texts``: profile name → lock text)."""
    problems = pin_conflicts(inputs)
    for profile in PROFILES:
        problems += lock_problems(inputs, profile, lock_texts.get(profile.name, ""))
    try:
        dev = parse_lock(lock_texts.get(DEV.name, ""))
        for profile in PROFILES:
            if profile != DEV:
                problems += drift_from_dev(profile, parse_lock(lock_texts.get(profile.name, "")), dev)
    except LockError:
        pass  # already reported by lock_problems
    return problems


def read_locks(directory: Path = LOCK_DIR) -> dict[str, str]:
    paths = {profile.name: directory / f"{profile.name}.lock" for profile in PROFILES}
    return {name: path.read_text(encoding="utf-8") for name, path in paths.items() if path.is_file()}


def read_inputs(path: Path = PYPROJECT) -> ProjectInputs:
    return project_inputs(path.read_text(encoding="utf-8"))


def find_uv(option: str | None, wanted: str) -> str:
    candidates = [option] if option else [str(Path(sys.executable).parent / "uv"), shutil.which("uv")]
    for candidate in candidates:
        if not candidate or not Path(candidate).is_file():
            continue
        result = subprocess.run([candidate, "--version"], capture_output=True, text=True, check=False)
        found = result.stdout.split()[1] if result.returncode == 0 and len(result.stdout.split()) > 1 else "?"
        if found == wanted:
            return candidate
        if option:
            raise LockError(f"{candidate} is uv {found}, pyproject.toml pins uv {wanted}")
    raise LockError(f"uv {wanted} not found: run `make bootstrap` (it installs it into .venv) or pass --uv")


def compile_lock(uv: str, inputs: ProjectInputs, profile: Profile, *, upgrade: bool) -> None:
    command = [uv, "pip", "compile", "pyproject.toml", *UV_COMPILE_OPTIONS]
    for extra in profile.extras:
        command += ["--extra", extra]
    if profile != DEV:
        command += ["--constraint", str(DEV.path.relative_to(ROOT))]
    if upgrade:
        command.append("--upgrade")
    # uv reads the existing output file for its preferences: a relock keeps the versions it had unless --upgrade
    command += ["--output-file", str(profile.path.relative_to(ROOT)), "--quiet"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise LockError(f"uv failed for {profile.name} (exit {result.returncode}):\n{result.stderr[-4000:]}")
    lines = profile.path.read_text(encoding="utf-8").splitlines()
    while lines and (not lines[0].strip() or lines[0].startswith("#")):  # uv writes no header (--no-header)
        lines.pop(0)
    profile.path.write_text("\n".join([header(inputs, profile), *lines]) + "\n", encoding="utf-8")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="lock.py", description=__doc__.splitlines()[0] if __doc__ else None)
    names = [p.name for p in PROFILES]
    parser.add_argument("--only", choices=names, action="append", help="this profile only (dev is always relocked)")
    parser.add_argument("--upgrade", action="store_true", help="let uv move unpinned (transitive) packages forward")
    parser.add_argument("--check", action="store_true", help="only check that every lock is current (offline)")
    parser.add_argument("--uv", default=None, help="the uv executable (default: .venv's, then PATH's)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        inputs = read_inputs()
        if args.check:
            problems = all_problems(inputs, read_locks())
            for problem in problems:
                print(f"lock: {problem}", file=sys.stderr)
            return 1 if problems else 0
        uv = find_uv(args.uv, uv_version(inputs))
        LOCK_DIR.mkdir(exist_ok=True)
        wanted = set(args.only or [p.name for p in PROFILES]) | {DEV.name}
        for profile in PROFILES:  # dev first: the others are constrained by it
            if profile.name in wanted:
                compile_lock(uv, inputs, profile, upgrade=args.upgrade and profile == DEV)
                count = len(parse_lock(profile.path.read_text(encoding="utf-8")))
                print(f"lock: requirements/{profile.name}.lock ({', '.join(profile.extras)}): {count} packages")
    except (LockError, OSError) as error:
        print(f"lock: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
