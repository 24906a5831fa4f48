"""Frozen builds (build_scripts/freeze.py, ADR 0008) answer like the console scripts and publish to a TUF repository.

The three programs are built once per module (three PyInstaller processes side by side, ~35-45 s) from this venv
and run from a directory outside the project with a minimal environment, so nothing can come from the venv. The
build is kept in ``build/cache/frozen/`` under a key of all its inputs (build_scripts/build_cache.py: the
project's files, the interpreter and installed distributions, the Debian packages, the freeze arguments), so a
run with nothing changed reuses it; the reproducibility test below always builds orbit afresh and compares.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from build_scripts.build_cache import cached_build
from build_scripts.publish import pack_desktop
from tuf_updates.archive import safe_extract

ROOT = Path(__file__).resolve().parents[2]
VERSION = "1.2.3"
EPOCH = "1700000000"  # 2023-11-14T22:13:20Z
PASSPHRASES = {
    "ORBITCTL_ROOT_PASSPHRASE": "root-passphrase",
    "ORBITCTL_TARGETS_PASSPHRASE": "targets-passphrase",
    "ORBITCTL_SNAPSHOT_PASSPHRASE": "snapshot-passphrase",
    "ORBITCTL_TIMESTAMP_PASSPHRASE": "timestamp-passphrase",
}

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(900),
    # CI installs the build extra (bootstrap): there a missing PyInstaller must fail, not skip
    pytest.mark.skipif(
        importlib.util.find_spec("PyInstaller") is None and not os.environ.get("CI"),
        reason="needs the build extra (PyInstaller)",
    ),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the frozen builds tested here are Linux's"),
]


def minimal_env(home: Path, **extra: str) -> dict[str, str]:
    """No venv, no PYTHONPATH, no build stamps: only what a service manager would give."""
    return {"PATH": "/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8", **extra}


def run(
    command: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command,
        cwd=cwd,
        env=env if env is not None else minimal_env(cwd),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def freeze_arguments(*extra: str) -> list[str]:
    return [*extra, "--version", VERSION, "--commit", "abc1234"]


def freeze(out: Path, *extra: str) -> None:
    """build_scripts/freeze.py into ``out`` with this test's version, commit and SOURCE_DATE_EPOCH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ORBIT_BUILD_", "FLEET_DESKTOP_BUILD_"))}
    env["SOURCE_DATE_EPOCH"] = EPOCH
    result = subprocess.run(
        [sys.executable, str(ROOT / "build_scripts" / "freeze.py"), "--out", str(out), *freeze_arguments(*extra)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    key = [f"SOURCE_DATE_EPOCH={EPOCH}", *freeze_arguments("--jobs", "3")]
    built = cached_build("frozen", key, lambda out: freeze(out, "--jobs", "3"))
    out = tmp_path_factory.mktemp("dist")
    shutil.copytree(built, out, symlinks=True, dirs_exist_ok=True)  # the tests' own copy: the cache stays as built
    report = json.loads((out / "freeze-report.json").read_text())
    assert {p["name"]: p["mode"] for p in report["programs"]} == {
        "orbit": "onefile",
        "fleet-desktop": "onedir",
        "osqueryd-sim": "onefile",
    }
    return out


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A working directory that is not the project, so ``import orbit`` cannot find the sources."""
    path = tmp_path / "cwd"
    path.mkdir()
    return path


def executable(dist: Path, name: str) -> Path:
    return dist / "fleet-desktop" / "fleet-desktop" if name == "fleet-desktop" else dist / name


@pytest.mark.parametrize(
    ("name", "help_text"),
    [
        ("orbit", "usage: orbit"),
        ("fleet-desktop", "usage: fleet-desktop [--version | --help | status [--json]]"),
        ("osqueryd-sim", "Usage: osqueryd-sim [OPTION]... [SQL STATEMENT]"),
    ],
)
def test_frozen_program_answers_help(dist: Path, outside: Path, name: str, help_text: str) -> None:
    result = run([str(executable(dist, name)), "--help"], outside)
    assert result.returncode == 0, result.stderr
    assert help_text in result.stdout


@pytest.mark.parametrize(
    ("name", "first_line"),
    [
        ("orbit", f"orbit {VERSION}"),
        ("fleet-desktop", f"fleet-desktop {VERSION}"),
        ("osqueryd-sim", f"osqueryd version {VERSION}+sim"),  # the build's own version, marked as a simulator
    ],
)
def test_frozen_program_answers_version(dist: Path, outside: Path, name: str, first_line: str) -> None:
    result = run([str(executable(dist, name)), "--version"], outside)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == first_line


def test_frozen_orbit_version_is_the_baked_stamp(dist: Path, outside: Path) -> None:
    # the stamp is the binary's truth, also when an older orbit execs it with its own stamp in the environment
    result = run([str(dist / "orbit"), "version"], outside, minimal_env(outside, ORBIT_BUILD_VERSION="0.9.0"))
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"orbit {VERSION}\ncommit - abc1234\ndate - 2023-11-14T22:13:20Z\n"


def test_frozen_osqueryd_sim_answers_a_query_from_its_bundled_tables(dist: Path, outside: Path) -> None:
    result = run([str(dist / "osqueryd-sim"), "-S", "--json", "SELECT version FROM osquery_info"], outside)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [{"version": f"{VERSION}+sim"}]


def test_frozen_osqueryd_sim_rejects_an_unknown_flag_from_its_bundled_flag_table(dist: Path, outside: Path) -> None:
    result = run([str(dist / "osqueryd-sim"), "--no_such_flag_at_all"], outside)
    assert result.returncode != 0
    assert "no_such_flag_at_all" in result.stdout + result.stderr


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_frozen_fleet_desktop_status_reports_offline_without_a_server(dist: Path, outside: Path) -> None:
    token = outside / "identifier"
    token.write_text("device-token-1\n")
    env = minimal_env(
        outside,
        FLEET_DESKTOP_FLEET_URL=f"http://127.0.0.1:{closed_port()}",
        FLEET_DESKTOP_DEVICE_IDENTIFIER_PATH=str(token),
    )
    result = run([str(executable(dist, "fleet-desktop")), "status", "--json"], outside, env)
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["state"] == "offline"
    assert document["items"][0] == {"title": f"Fleet Desktop v{VERSION}", "enabled": False, "visible": True}


def test_frozen_fleet_desktop_status_without_configuration_is_a_usage_error(dist: Path, outside: Path) -> None:
    result = run([str(executable(dist, "fleet-desktop")), "status", "--json"], outside)
    assert result.returncode == 2
    assert "missing FLEET_DESKTOP_FLEET_URL" in result.stderr
    assert result.stdout == ""


def orbitctl(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORBITCTL_")} | PASSPHRASES
    return subprocess.run(
        [sys.executable, "-m", "packager", "updates", *args],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def publish(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORBITCTL_")} | PASSPHRASES
    env["SOURCE_DATE_EPOCH"] = EPOCH
    return subprocess.run(
        [sys.executable, str(ROOT / "build_scripts" / "publish.py"), *args],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def only_file(directory: Path, name: str) -> Path:
    """The published file under its plain name (consistent snapshots add hash-prefixed copies beside it)."""
    path = directory / name
    assert path.is_file(), sorted(p.name for p in directory.iterdir()) if directory.is_dir() else directory
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_publish_adds_the_frozen_builds_to_a_tuf_repository(dist: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    init = orbitctl("init", "--path", str(repo))
    assert init.returncode == 0, init.stderr

    result = publish("--repo", str(repo), "--dist", str(dist), "--version", VERSION, "-t", "stable", "-t", "edge")
    assert result.returncode == 0, result.stderr

    targets = repo / "repository" / "targets"
    for channel in (VERSION, "stable", "edge"):
        orbit = only_file(targets / "orbit" / "linux" / channel, "orbit")
        assert sha256(orbit) == sha256(dist / "orbit")
        osqueryd = only_file(targets / "osqueryd" / "linux" / channel, "osqueryd")
        assert sha256(osqueryd) == sha256(dist / "osqueryd-sim")
        only_file(targets / "desktop" / "linux" / channel, "desktop.tar.gz")

    # the desktop archive is what orbit installs: its own extractor accepts it and the program inside runs
    archive = only_file(targets / "desktop" / "linux" / "stable", "desktop.tar.gz")
    installed = tmp_path / "installed"
    safe_extract(archive, installed)
    answer = run([str(installed / "fleet-desktop" / "fleet-desktop"), "--version"], tmp_path)
    assert answer.returncode == 0, answer.stderr
    assert answer.stdout == f"fleet-desktop {VERSION}\n"


def test_publish_packs_the_desktop_archive_reproducibly(dist: Path, tmp_path: Path) -> None:
    # a copy made later (new mtimes, another path) packs to the same bytes
    copy = tmp_path / "copy" / "fleet-desktop"
    shutil.copytree(dist / "fleet-desktop", copy, symlinks=True, copy_function=shutil.copy)
    first = pack_desktop(dist / "fleet-desktop", tmp_path / "a" / "desktop.tar.gz", mtime=int(EPOCH))
    second = pack_desktop(copy, tmp_path / "b" / "desktop.tar.gz", mtime=int(EPOCH))
    assert sha256(first) == sha256(second)
    with tarfile.open(first) as tar:
        names = tar.getnames()
        assert names[0] == "fleet-desktop"
        assert "fleet-desktop/fleet-desktop" in names
        assert {m.mtime for m in tar.getmembers()} == {int(EPOCH)}
        assert tar.getmember("fleet-desktop/fleet-desktop").mode & 0o111


def test_publish_refuses_a_one_folder_orbit_and_changes_nothing(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    assert orbitctl("init", "--path", str(repo)).returncode == 0
    before = sorted(p.relative_to(repo).as_posix() for p in repo.rglob("*"))
    fake = tmp_path / "dist"
    (fake / "orbit" / "_internal").mkdir(parents=True)
    (fake / "orbit" / "orbit").write_text("#!/bin/sh\n")
    result = publish("--repo", str(repo), "--dist", str(fake), "--version", VERSION)
    assert result.returncode == 1
    assert "must be a single executable file" in result.stderr
    assert sorted(p.relative_to(repo).as_posix() for p in repo.rglob("*")) == before


def test_publish_without_builds_says_so(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    result = publish("--repo", str(tmp_path / "repo"), "--dist", str(tmp_path / "empty"), "--version", VERSION)
    assert result.returncode == 1
    assert "no builds" in result.stderr


def test_a_rebuild_of_orbit_is_byte_identical(dist: Path, tmp_path: Path) -> None:
    """PYTHONHASHSEED=0 + SOURCE_DATE_EPOCH: the same sources give the same one-file orbit, byte for byte (checked
    by hand for osqueryd-sim and the fleet-desktop folder too; only orbit is rebuilt here, ≈ 30 s)."""
    again = tmp_path / "again"
    freeze(again, "--only", "orbit")
    assert (again / "orbit").read_bytes() == (dist / "orbit").read_bytes()


def test_kill_9_of_a_one_file_child_leaves_no_orphan_worker_and_no_unpacked_folder(dist: Path, outside: Path) -> None:
    """A one-file PyInstaller osqueryd is two processes: the bootloader (the pid orbit supervises) and the program
    it unpacked and started. kill -9 of the bootloader must not leave that program running beside the restart, nor
    the folder it unpacked into (``_MEI…`` in the child's TMPDIR): the restart removes it (stale_bundles)."""
    import asyncio  # noqa: PLC0415

    import psutil  # noqa: PLC0415

    from orbit.children.supervisor import ChildSpec, Supervisor  # noqa: PLC0415

    sim = dist / "osqueryd-sim"
    argv = [
        str(sim),
        "--tls_hostname=127.0.0.1:9",  # nothing listens: the daemon keeps retrying its enrollment, as osqueryd does
        f"--database_path={outside / 'osquery.db'}",
        f"--pidfile={outside / 'osquery.pid'}",
        f"--extensions_socket={outside / 'osquery.em'}",
    ]
    tmp = outside / "tmp"
    tmp.mkdir()
    spec = ChildSpec(
        name="osqueryd",
        argv=lambda: argv,
        env=lambda: minimal_env(outside, TMPDIR=str(tmp)),
        record=outside / "state" / "osqueryd.child.json",
        log_path=outside / "osqueryd.log",
    )

    def family(pid: int) -> list[int]:
        try:
            return [p.pid for p in psutil.Process(pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def unpacked() -> list[str]:
        return sorted(p.name for p in tmp.iterdir() if p.name.startswith("_MEI"))

    async def scenario() -> tuple[list[int], list[int], list[str], list[str]]:
        supervisor = Supervisor(spec)
        stop = asyncio.Event()
        task = asyncio.create_task(supervisor.run(stop))
        deadline = asyncio.get_running_loop().time() + 120
        while not ((pid := supervisor.status().pid) and family(pid)):
            assert asyncio.get_running_loop().time() < deadline, "the frozen osqueryd-sim never started its worker"
            await asyncio.sleep(0.05)
        bootloader, workers = pid, family(pid)
        before = unpacked()  # the first bootloader's folder
        os.kill(bootloader, 9)
        while (new := supervisor.status().pid) in (None, bootloader) or not family(new):
            assert asyncio.get_running_loop().time() < deadline, "no restart"
            await asyncio.sleep(0.05)
        survivors = [w for w in workers if psutil.pid_exists(w) and psutil.Process(w).status() != psutil.STATUS_ZOMBIE]
        running = [new, *family(new)]
        after = unpacked()  # the new bootloader's folder only
        stop.set()
        await asyncio.wait_for(task, 60)
        return survivors, running, before, after

    survivors, running, before, after = asyncio.run(scenario())
    assert survivors == []  # the old worker went with its bootloader's group
    assert len(running) == 2  # exactly one new osqueryd (bootloader + worker)
    assert len(before) == 1, before
    assert len(after) == 1 and after != before, (before, after)  # the killed one's folder was removed
    assert not (tmp / before[0]).exists()


def test_frozen_orbit_installs_osqueryd_through_its_own_update_helper(dist: Path, tmp_path: Path) -> None:
    """ADR 0020: a frozen one-file orbit runs each update check by re-entering its own executable as
    ``orbit update-helper`` (python-tuf and cryptography live only there). Here the frozen orbit is the service of
    the e2e world: osqueryd is not installed yet, so the start-up check must install it through the helper; the
    helper unpacks no bundle of its own (it runs inside the daemon's), so TMPDIR holds exactly one ``_MEI`` folder."""
    from tests.support.orbit_world import OrbitWorld, wait_for  # noqa: PLC0415

    world = OrbitWorld(tmp_path / "world")
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    try:
        world.publish_osqueryd("5.14.1")
        world.publish("orbit", dist / "orbit", VERSION)
        channel_dir = world.root / "bin" / "orbit" / "linux" / "stable"
        channel_dir.mkdir(parents=True)
        shutil.copy2(dist / "orbit", channel_dir / "orbit")
        (world.root / "bin" / "orbit" / "orbit").symlink_to("linux/stable/orbit")
        service = world.start_service(env=world.orbit_env(TMPDIR=str(tmp)))
        helpers: set[int] = set()
        bundles: set[str] = set()

        def watch() -> bool:
            import psutil  # noqa: PLC0415

            bundles.update(p.name for p in tmp.iterdir() if p.name.startswith("_MEI"))
            if service.pid is not None:
                try:
                    for child in psutil.Process(service.pid).children(recursive=True):
                        if child.cmdline()[1:] == ["update-helper"]:
                            helpers.add(child.pid)
                except psutil.Error:
                    pass
            return bool(world.status().get("enrolled") and world.osqueryd_pid())

        wait_for(watch, timeout=180, interval=0.02, what="the frozen orbit enrolled with osqueryd installed")
        assert (world.root / "bin" / "osqueryd" / "linux" / "stable" / "osqueryd").is_file()
        assert "downloaded target=osqueryd/linux/stable/osqueryd" in service.log()  # the helper's line, relayed
        assert helpers, "no update-helper process was seen"
        assert len(bundles) == 1, bundles  # the daemon's own bundle; the helpers reused it
    finally:
        world.close()


# what belongs to another program or to development only; none of it may be in a release build of orbit or osqueryd-sim
_NOT_IN_AGENT_BUILDS = ("uvicorn", "starlette", "pystray", "PIL", "Xlib", "packager", "server_stub", "desktop_tray")
_NOT_IN_AGENT_BUILDS += ("pytest", "hypothesis", "mypy", "ruff", "PyInstaller")


def _bundled_modules(executable: Path) -> set[str]:
    """Top-level names of everything a one-file build carries (its archive and the PYZ inside, by PyInstaller's own
    archive viewer)."""
    viewer = Path(sys.executable).with_name("pyi-archive_viewer")
    listing = run([str(viewer), "-r", "-b", str(executable)], cwd=executable.parent, timeout=120)
    assert listing.returncode == 0, listing.stderr
    names = {line.strip().replace("/", ".").split(".")[0] for line in listing.stdout.splitlines() if line.strip()}
    assert {"orbit_entry", "python3"} & names or "osquery_sim" in names, sorted(names)[:40]
    return names


@pytest.mark.parametrize(("name", "own"), [("orbit", "orbit"), ("osqueryd-sim", "osquery_sim")])
def test_a_release_build_carries_none_of_the_other_programs_dependencies(dist: Path, name: str, own: str) -> None:
    """Issue 16: the frozen orbit must not carry uvicorn, pystray or the packager (nor the stub, nor test tools)."""
    names = _bundled_modules(dist / name)
    assert own in names
    carried = sorted(set(_NOT_IN_AGENT_BUILDS) & names)
    assert carried == [], f"{name} carries {carried}"
    if name == "osqueryd-sim":  # a stand-in for a foreign binary: nothing of ours but itself
        assert not {"orbit", "tuf_updates", "safe_fs", "osquery_bin_manager"} & names
