"""requirements/*.lock are current and strict (ADR 0010): offline, from pyproject.toml and the lock files alone.

A lock is current when the inputs-sha256 in its header is the one build_scripts/lock.py computes from pyproject.toml
now; strict when every requirement is ``==``-pinned with at least one ``--hash``. Every direct pin of pyproject.toml
is the version in the locks, and a program's lock holds the versions the dev lock (the tests' venv) holds.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from build_scripts.freeze import PROGRAMS
from build_scripts.lock import (
    DEV,
    LOCK_DIR,
    PROFILES,
    PYPROJECT,
    LockError,
    all_problems,
    direct_pins,
    inputs_digest,
    lock_digest,
    lock_problems,
    parse_lock,
    project_inputs,
    read_inputs,
    read_locks,
)

PROFILE_NAMES = [p.name for p in PROFILES]


def lock_text(name: str) -> str:
    return (LOCK_DIR / f"{name}.lock").read_text(encoding="utf-8")


def test_every_profile_has_a_lock_and_nothing_else_is_there() -> None:
    assert sorted(p.name for p in LOCK_DIR.glob("*.lock")) == sorted(f"{name}.lock" for name in PROFILE_NAMES)


def test_the_locks_are_current_and_strict() -> None:
    """The whole check of `make lock`'s output; on failure the message says what to run."""
    assert all_problems(read_inputs(), read_locks()) == []


@pytest.mark.parametrize("name", PROFILE_NAMES)
def test_header_digest_is_that_of_pyproject(name: str) -> None:
    profile = next(p for p in PROFILES if p.name == name)
    assert lock_digest(lock_text(name)) == inputs_digest(read_inputs(), profile), "stale lock: run `make lock`"


@pytest.mark.parametrize("name", PROFILE_NAMES)
def test_every_requirement_is_pinned_with_hashes(name: str) -> None:
    locked = parse_lock(lock_text(name))
    assert locked
    for requirement in locked:
        assert requirement.version, requirement
        assert requirement.hashes, f"{requirement.name} has no --hash"
        assert all(h.startswith("sha256:") and len(h) == len("sha256:") + 64 for h in requirement.hashes)


@pytest.mark.parametrize("name", PROFILE_NAMES)
def test_direct_pins_are_the_locked_versions(name: str) -> None:
    profile = next(p for p in PROFILES if p.name == name)
    inputs = read_inputs()
    locked = {r.name: r.version for r in parse_lock(lock_text(name))}
    pins = direct_pins(inputs, profile)
    assert pins
    for pin in pins:
        assert pin.version, f"{pin.text!r} is not pinned with =="
        assert locked.get(pin.name) == pin.version, pin.text


def test_frozen_program_locks_carry_only_their_program() -> None:
    """What the freeze of each program installs: no test tools, no other program's libraries."""
    names = {name: {r.name for r in parse_lock(lock_text(name))} for name in PROFILE_NAMES}
    for name in ("orbit", "fleet-desktop", "osqueryd-sim"):
        assert "pyinstaller" in names[name]
        assert not names[name] & {"pytest", "mypy", "ruff", "pygobject", "uv", "starlette", "uvicorn"}, name
    assert not names["orbit"] & {"pillow", "pystray", "rich", "platformdirs"}
    assert not names["fleet-desktop"] & {"tuf", "keyring", "psutil", "cryptography"}
    assert not names["osqueryd-sim"] & {"tuf", "keyring", "cryptography", "pillow"}
    assert "pyinstaller" not in names["orbitctl"] | names["fleet-stub"]
    assert {"pyinstaller", "pytest", "pygobject", "pycairo", "uv", "setuptools"} <= names[DEV.name]


def test_every_frozen_program_is_built_from_a_lock_with_pyinstaller() -> None:
    """build_scripts/freeze.py --venvs installs requirements/NAME.lock for program NAME."""
    profiles = {p.name: p for p in PROFILES}
    for program in PROGRAMS.values():
        assert program.lock == LOCK_DIR / f"{program.name}.lock"
        assert program.lock.is_file()
        assert "build" in profiles[program.name].extras


# --- the check fails when it should -------------------------------------------------------------------------------


@pytest.fixture
def pyproject_copy(tmp_path: Path) -> Path:
    path = tmp_path / "pyproject.toml"
    shutil.copyfile(PYPROJECT, path)
    return path


def test_a_changed_pin_makes_the_locks_stale(pyproject_copy: Path) -> None:
    text = pyproject_copy.read_text(encoding="utf-8")
    assert text.count('"psutil==7.2.2"') == 2  # the orbit and sim extras
    pyproject_copy.write_text(text.replace('"psutil==7.2.2"', '"psutil==7.2.1"'), encoding="utf-8")
    problems = all_problems(project_inputs(pyproject_copy.read_text(encoding="utf-8")), read_locks())
    stale = {p.split(" ")[0] for p in problems if "is stale" in p}
    # dev installs every program; orbit and osqueryd-sim are the programs that import psutil
    assert stale == {"requirements/dev.lock", "requirements/orbit.lock", "requirements/osqueryd-sim.lock"}
    assert "requirements/orbit.lock has psutil ['7.2.2'], pyproject.toml 'psutil==7.2.1'" in problems


def test_a_new_dependency_makes_the_locks_stale(pyproject_copy: Path) -> None:
    text = pyproject_copy.read_text(encoding="utf-8")
    pyproject_copy.write_text(text.replace("stub = [\n", 'stub = [\n    "orjson==3.11.0",\n'), encoding="utf-8")
    problems = all_problems(project_inputs(pyproject_copy.read_text(encoding="utf-8")), read_locks())
    assert (
        "requirements/fleet-stub.lock is stale (its inputs-sha256 is not that of pyproject.toml): run `make lock`"
        in (problems)
    )
    assert "requirements/fleet-stub.lock lacks orjson (pyproject.toml: 'orjson==3.11.0')" in problems
    assert not any(p.startswith("requirements/orbit.lock") for p in problems)


def test_reordering_an_extra_is_no_change(pyproject_copy: Path) -> None:
    text = pyproject_copy.read_text(encoding="utf-8")
    reordered = text.replace(
        '    "psutil==7.2.2",\n    "httpx==0.28.1",\n', '    "httpx==0.28.1",\n    "psutil==7.2.2",\n', 1
    )
    assert reordered != text
    assert all_problems(project_inputs(reordered), read_locks()) == []


def test_an_unpinned_requirement_and_a_split_version_are_reported(pyproject_copy: Path) -> None:
    text = pyproject_copy.read_text(encoding="utf-8")
    text = text.replace('"rich==15.0.0"', '"rich>=15"').replace('"Pillow==13.0.0"', '"Pillow==12.0.0"')
    problems = all_problems(project_inputs(text), read_locks())
    assert "pyproject.toml: 'rich>=15' is not pinned with ==" in problems
    # Pillow is pinned only in the desktop extra: the lock disagrees, not another extra
    assert "requirements/fleet-desktop.lock has pillow ['13.0.0'], pyproject.toml 'Pillow==12.0.0'" in problems


def test_two_versions_of_one_package_in_two_extras_are_reported(pyproject_copy: Path) -> None:
    text = pyproject_copy.read_text(encoding="utf-8")
    head, tail = text.split("# osqueryd-sim:", 1)
    text = head + "# osqueryd-sim:" + tail.replace('"httpx==0.28.1"', '"httpx==0.28.0"', 1)
    problems = all_problems(project_inputs(text), read_locks())
    assert "pyproject.toml: httpx is 0.28.1 in orbit but 0.28.0 in sim" in problems


def test_an_unhashed_or_loose_lock_line_is_reported() -> None:
    inputs = read_inputs()
    orbit = next(p for p in PROFILES if p.name == "orbit")
    text = lock_text("orbit")
    unhashed = text + "extra-package==1.0\n"
    assert "requirements/orbit.lock: extra-package==1.0 has no --hash" in lock_problems(inputs, orbit, unhashed)
    loose = text + "extra-package>=1.0 \\\n    --hash=sha256:" + "0" * 64 + "\n"
    assert any("not a name==version requirement" in p for p in lock_problems(inputs, orbit, loose))
    indexed = "--index-url https://example.invalid/simple\n" + text
    assert any("not a name==version requirement" in p for p in lock_problems(inputs, orbit, indexed))


def test_a_program_lock_that_drifts_from_the_dev_lock_is_reported() -> None:
    locks = read_locks()
    locks["osqueryd-sim"] = locks["osqueryd-sim"].replace("\nidna==3.20 ", "\nidna==3.10 ")
    assert "requirements/osqueryd-sim.lock has idna 3.10, requirements/dev.lock ['3.20']: run `make lock`" in (
        all_problems(read_inputs(), locks)
    )


def test_a_missing_lock_is_reported() -> None:
    locks = read_locks()
    del locks["orbit"]
    problems = all_problems(read_inputs(), locks)
    assert "requirements/orbit.lock has no requirements" in problems


def test_parse_lock_reads_markers_and_hashes() -> None:
    text = (
        "# header\n"
        "uvloop==0.23.0 ; sys_platform != 'win32' \\\n"
        "    --hash=sha256:" + "a" * 64 + " \\\n"
        "    --hash=sha256:" + "b" * 64 + "\n"
        "    # via\n"
        "    #   orbit-suite (pyproject.toml)\n"
        "Jaraco.Classes==3.4.0 \\\n"
        "    --hash=sha256:" + "c" * 64 + "\n"
    )
    first, second = parse_lock(text)
    assert (first.name, first.version, first.marker) == ("uvloop", "0.23.0", "sys_platform != 'win32'")
    assert first.hashes == ("sha256:" + "a" * 64, "sha256:" + "b" * 64)
    assert (second.name, second.marker) == ("jaraco-classes", "")
    with pytest.raises(LockError):
        parse_lock("uvloop==0.23.0 --no-binary :all:\n")
