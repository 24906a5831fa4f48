"""``make demo`` end to end: it runs the real deployment, ends by itself and leaves no process behind.

Every process the demo starts has its temporary directory in its command line; the demo makes that directory with
``tempfile``, so pointing ``TMPDIR`` at this test's ``tmp_path`` makes ``tmp_path`` the marker to look for.
``DEMO_DIST_DIR`` sends the installers to ``tmp_path/dist`` instead of the project's ``dist/``.
"""

from __future__ import annotations

import os
import re
import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
# what each installer starts with: an ar archive whose first member is debian-binary, the rpm lead, a xar archive,
# an OLE compound file
MAGIC = {
    ".deb": b"!<arch>\ndebian-binary",
    ".rpm": b"\xed\xab\xee\xdb",
    ".pkg": b"xar!",
    ".msi": b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1",
}


def demo_env(tmp_path: Path) -> dict[str, str]:
    drop = ("FLEET_STUB_", "ORBIT_", "ORBITCTL_", "FLEET_DESKTOP_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env.update(TMPDIR=str(tmp_path), PYTHONUNBUFFERED="1", NO_PROXY="127.0.0.1,localhost")
    env["DEMO_DIST_DIR"] = str(tmp_path / "dist")
    return env


def assert_installers(dist: Path, out: str) -> None:
    """Exactly the four installers (no half-written leftovers), each of a sane size and recognisable format, and
    the report names them."""
    files = sorted(dist.iterdir())
    assert sorted(path.suffix for path in files) == sorted(MAGIC), [path.name for path in files]
    for path in files:
        assert path.name.startswith("fleet-osquery"), path.name
        size = path.stat().st_size
        assert 2_000 < size < 50_000_000, f"{path.name}: {size} bytes"
        magic = MAGIC[path.suffix]
        with path.open("rb") as handle:
            assert handle.read(len(magic)) == magic, path.name
        assert f"installer {path.suffix}: ok {path.name}" in out  # its row on the board
        assert f"  {path}  ({size:,} bytes)" in out  # the report at the end


def survivors(marker: Path) -> list[str]:
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            cmdline = proc.info["cmdline"] or []
        except psutil.Error:
            continue
        if proc.pid != os.getpid() and any(str(marker) in part for part in cmdline):
            found.append(f"{proc.pid}: {' '.join(cmdline)}")
    return found


def assert_nothing_left(marker: Path) -> None:
    deadline = time.monotonic() + 5
    while (left := survivors(marker)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left, left
    assert not [p for p in marker.iterdir() if p.name.startswith("fleet-demo-")], "the temporary directory is left"


def open_console(lines: list[str]) -> str:
    """Log in to the console the demo printed (URL, ``cat <token file>``, the CA) and read its Hosts page."""
    text = "".join(lines)
    url = re.search(r"The console is open: (https://\S+)", text)
    token_file = re.search(r"log in with the admin token: cat (\S+)", text)
    ca = re.search(r"the demo's CA \((\S+)\)", text)
    assert url and token_file and ca, text
    token = Path(token_file.group(1)).read_text().strip()
    context = ssl.create_default_context(cafile=ca.group(1))
    with httpx.Client(verify=context, trust_env=False, timeout=30, follow_redirects=True) as browser:
        assert browser.get(url.group(1)).url.path == "/console/login"
        hosts = browser.post(url.group(1) + "/login", data={"token": token})
        assert hosts.status_code == 200 and hosts.url.path == "/console/hosts", hosts.text[:500]
        return hosts.text


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_demo_runs_the_deployment_and_cleans_up(tmp_path: Path) -> None:
    """With ``--keep-open`` (the default on a terminal) the console stays up after the run until Ctrl-C."""
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "build_scripts.demo", "--keep-open"],
        cwd=ROOT,
        env=demo_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    seen: list[str] = []
    try:
        for line in proc.stdout:
            seen.append(line)
            if "Ctrl-C stops everything" in line:
                break
        elapsed = time.monotonic() - started
        page = open_console(seen)
        assert "demo-laptop" in page and "sim-00000" in page and "301 hosts" in page, page[:3000]
        proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
        rest, _ = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:  # a failed check above: the demo still stops what it started (its children run in
            proc.send_signal(signal.SIGTERM)  # their own sessions, a SIGKILL of the demo alone would orphan them)
            try:
                proc.communicate(timeout=90)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    out = "".join(seen) + rest
    assert proc.returncode == 0, out
    assert "closing the console" in out and "the admin console was at https://127.0.0.1:" in out
    assert "orbit: ok orbit 1.0.0" in out and "enrolled" in out
    assert "orbit enrolled: host " in out and "demo-laptop" in out
    assert "osqueryd: ok osqueryd 5.14.1 running, pid" in out
    assert "live query answered by host" in out and "'version': '5.14.1+sim'" in out
    assert "osqueryd updated 5.14.1 → 5.15.0: pid" in out and "TUF target 5.15.0 installed" in out
    assert "300 hosts enrolled" in out
    assert "fleet-stub knew 301 hosts" in out
    assert "bin/osqueryd/linux/stable/osqueryd" in out  # what the deleted root dir held
    # the tray's one round of checks, with the environment orbit gives it, reaches the server with orbit's token
    assert "fleet-desktop status: ok connected · " in out and "My device" in out
    assert "\n  identifier\n" in out  # orbit (--fleet-desktop) wrote the device token file into its root dir
    assert_installers(tmp_path / "dist", out)
    print(f"the demo took {elapsed:.0f} s")  # reported, not asserted: the machine may be busy with other work
    assert_nothing_left(tmp_path)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_frozen_demo_runs_release_builds(tmp_path: Path) -> None:
    """``make demo FROZEN=1``: orbit, osqueryd and fleet-desktop are PyInstaller builds (frozen now, or from
    build/cache/demo-frozen), and the Linux installers carry them."""
    result = subprocess.run(
        [sys.executable, "-m", "build_scripts.demo", "--frozen"],
        cwd=ROOT,
        env=demo_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=850,
        check=False,
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    for build in ("orbit 1.0.0", "osqueryd-sim 5.14.1", "osqueryd-sim 5.15.0", "fleet-desktop 1.0.0"):
        assert f"  {build}: " in out  # frozen now or taken from the cache, with its size
    assert "orbit: ok orbit 1.0.0" in out and "enrolled" in out
    # the running osqueryd's version comes from the frozen binary's own stamp, asked by a live query
    assert "osqueryd updated 5.14.1 → 5.15.0+sim: pid" in out and "TUF target 5.15.0 installed" in out
    assert "fleet-desktop status: ok connected · " in out
    sizes = {path.suffix: path.stat().st_size for path in (tmp_path / "dist").iterdir()}
    assert sorted(sizes) == sorted(MAGIC)
    assert sizes[".deb"] > 40_000_000 and sizes[".rpm"] > 40_000_000, sizes  # the frozen binaries are inside
    assert "carry the frozen Linux builds" in out
    assert_nothing_left(tmp_path)


@pytest.mark.slow
@pytest.mark.timeout(200)
@pytest.mark.parametrize(
    "moment",
    [
        "osqueryd: ok",  # fleet-stub, orbit, osqueryd and the load are all running
        "installer .msi: running",  # and the four orbitctl package children too
    ],
)
def test_sigterm_mid_demo_stops_everything(tmp_path: Path, moment: str) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "build_scripts.demo"],
        cwd=ROOT,
        env=demo_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    seen = []
    try:
        for line in proc.stdout:
            seen.append(line)
            if moment in line:
                break
        assert survivors(tmp_path), "the demo's processes should be running now"
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    output = "".join(seen) + rest
    assert proc.returncode == 130, output
    assert "interrupted" in output and "Interrupted in" in output
    assert "orbit (pid" in output and "exited with code 0" in output
    assert_nothing_left(tmp_path)
    # orbitctl package is stopped with SIGINT, on which it deletes its half-written output: what is there is whole
    dist = tmp_path / "dist"
    for path in sorted(dist.iterdir()) if dist.is_dir() else []:
        assert path.suffix in MAGIC and not path.name.startswith("."), path.name
        with path.open("rb") as handle:
            assert handle.read(len(MAGIC[path.suffix])) == MAGIC[path.suffix], path.name
