"""A whole deployment for end-to-end tests, made of real processes.

- a TUF repository made with ``orbitctl updates`` (real keys, real signatures), served by
- a real ``fleet-stub`` (TLS on loopback, ``--tuf-repo``), where
- osqueryd is published as an ``osqueryd-sim`` launcher and orbit as an ``orbit`` launcher (each launcher is a
  one-line shell script that stamps its version and execs this interpreter, as a frozen build would), and
- a root dir laid out as a package leaves it (``bin/orbit/linux/stable/orbit`` and the ``bin/orbit/orbit`` link),
- run by ``ServiceManager``: the part of systemd that matters here (``Restart=always``, ``RestartSec``,
  SIGTERM to stop).
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import ssl
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

import orbit
from tests.support.stub_process import StubProcess, clean_env

SECRET = "e2e-enroll-secret-0123456789"
ORBITCTL = [sys.executable, "-m", "packager"]
PASSPHRASES = {
    "ORBITCTL_ROOT_PASSPHRASE": "root-passphrase",
    "ORBITCTL_TARGETS_PASSPHRASE": "targets-passphrase",
    "ORBITCTL_SNAPSHOT_PASSPHRASE": "snapshot-passphrase",
    "ORBITCTL_TIMESTAMP_PASSPHRASE": "timestamp-passphrase",
}
PACKAGE_ROOT = Path(orbit.__file__).resolve().parent.parent

# compressed timings (ORBIT_DEV_*; see orbit/timings.py) so a test sees minutes of behaviour in seconds
FAST_TIMINGS = {
    "ORBIT_DEV_CONFIG_INTERVAL": "1",
    "ORBIT_DEV_CONFIG_MAX_BACKOFF": "4",
    "ORBIT_DEV_REENROLL_DEBOUNCE": "2",
    "ORBIT_DEV_TRIAL_HEALTHY_PERIOD": "3",
    "ORBIT_DEV_TRIAL_DEADLINE": "40",
    "ORBIT_DEV_STATUS_INTERVAL": "0.5",
    "ORBIT_DEV_TOKEN_LOCAL_CHECK": "2",
    "FLEETD_ENROLL_RETRY_INTERVAL": "1s",
}


def wait_for(predicate: Callable[[], Any], timeout: float = 30.0, interval: float = 0.1, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)


def orbitctl(*args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORBITCTL_")}
    env.update(PASSPHRASES)
    result = subprocess.run(
        [*ORBITCTL, "updates", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def write_launcher(path: Path, module: str, *, version: str, body: str | None = None) -> Path:
    """An executable that runs ``python -m module`` stamped with ``version`` (or runs ``body`` instead)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if body is None:
        body = f'ORBIT_BUILD_VERSION="{version}" PYTHONPATH="{PACKAGE_ROOT}" exec "{sys.executable}" -m {module} "$@"\n'
    path.write_text(f"#!/bin/sh\n# {module} {version}\n{body}")
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


class ServiceManager:
    """Runs ``argv`` like a systemd unit with ``Restart=always``: restarted ``restart_sec`` after any exit."""

    def __init__(self, argv: list[str], env: dict[str, str], log_path: Path, restart_sec: float = 0.5) -> None:
        self.argv = argv
        self.env = env
        self.log_path = log_path
        self.restart_sec = restart_sec
        self.starts: list[int] = []
        self.exits: list[int] = []
        self._proc: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stopping.is_set():
            with self._lock, self.log_path.open("ab") as log:
                self._proc = subprocess.Popen(
                    self.argv, env=self.env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
                )
                self.starts.append(self._proc.pid)
            code = self._proc.wait()
            self.exits.append(code)
            if self._stopping.wait(self.restart_sec):
                return

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def signal(self, sig: int) -> None:
        pid = self.pid
        if pid is not None:
            os.kill(pid, sig)

    def stop(self, timeout: float = 40.0) -> int | None:
        self._stopping.set()
        with self._lock:
            proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                raise AssertionError("orbit did not stop within the timeout after SIGTERM") from None
        self._thread.join(timeout)
        return proc.returncode if proc is not None else None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class OrbitWorld:
    def __init__(self, base: Path, *, timestamp_expires: float | None = None) -> None:
        self.base = base
        self.repo = base / "repo"
        init = ["init", "--path", str(self.repo)]
        if timestamp_expires is not None:
            init += ["--timestamp-expires", str(timestamp_expires)]
        orbitctl(*init)
        self.root_json = base / "root.json"
        self.root_json.write_text(orbitctl("roots", "--path", str(self.repo)))
        self.stub_dir = base / "stub"
        self.stub: StubProcess | None = None
        self.port: int | None = None
        self.root = base / "orbit-root"
        self.service: ServiceManager | None = None
        self.start_stub()

    # -- server --------------------------------------------------------------------------------------------

    def start_stub(self) -> None:
        args = [f"--enroll-secret={SECRET}", "--tuf-repo", str(self.repo / "repository")]
        if self.port is not None:
            args += ["--listen", f"127.0.0.1:{self.port}"]
        # host details every 5 s (Fleet's osquery_detail_update_interval, 1 h by default): orbit registers its
        # extension a moment after osqueryd starts, so the very first detail round can miss orbit_info
        self.stub = StubProcess(self.stub_dir, *args, env=clean_env(FLEET_STUB_DETAIL_UPDATE_INTERVAL="5"))
        info = self.stub.wait_ready()
        self.url = str(info["url"])
        self.ca = str(info["ca_cert"])
        self.tuf_url = str(info["tuf_url"])
        self.admin_token = str(info["admin_token"])
        self.port = int(self.url.rsplit(":", 1)[1])

    def stop_stub(self) -> None:
        if self.stub is not None:
            self.stub.stop()
            self.stub = None

    def ca_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.ca)

    def admin(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.url,
            verify=ssl.create_default_context(cafile=self.ca),
            headers={"Authorization": f"Bearer {self.admin_token}"},
            timeout=40,
        )

    def hosts(self) -> list[dict[str, Any]]:
        with self.admin() as client:
            response = client.get("/api/latest/fleet/hosts")
            response.raise_for_status()
            hosts: list[dict[str, Any]] = response.json()["hosts"]
            return hosts

    def server_outcomes(self, target: str | None = None) -> list[dict[str, Any]]:
        """The update outcomes the stub stored (read-only from its SQLite database, oldest first)."""
        path = self.stub_dir / "fleet-stub.sqlite3"
        if not path.exists():
            return []
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
        try:
            conn.row_factory = sqlite3.Row
            rows = conn.execute("SELECT * FROM update_outcomes ORDER BY id").fetchall()
        except sqlite3.OperationalError:  # not migrated yet
            return []
        finally:
            conn.close()
        return [dict(row) for row in rows if target is None or row["target"] == target]

    # -- publishing ----------------------------------------------------------------------------------------

    def publish(self, name: str, file: Path, version: str, *channels: str, extra: tuple[str, ...] = ()) -> None:
        self.publish_to(name, file, version, "linux", *channels, extra=extra)

    def publish_to(
        self, name: str, file: Path, version: str, platform: str, *channels: str, extra: tuple[str, ...] = ()
    ) -> None:
        """Publish ``file`` for ``platform`` (installers for macOS and Windows are built here too)."""
        args = ["add", "--path", str(self.repo), "--target", str(file), "--name", name, *extra]
        args += ["--platform", platform, "--version", version]
        for channel in channels or ("stable",):
            args += ["-t", channel]
        orbitctl(*args)

    def osqueryd_build(self, version: str) -> Path:
        return write_launcher(self.base / "builds" / f"osqueryd-{version}" / "osqueryd", "osquery_sim", version=version)

    def orbit_build(self, version: str, *, body: str | None = None) -> Path:
        return write_launcher(self.base / "builds" / f"orbit-{version}" / "orbit", "orbit", version=version, body=body)

    def publish_osqueryd(self, version: str, *channels: str, extra: tuple[str, ...] = ()) -> Path:
        build = self.osqueryd_build(version)
        self.publish("osqueryd", build, version, *channels, extra=extra)
        return build

    def publish_orbit(self, version: str, *channels: str, body: str | None = None) -> Path:
        build = self.orbit_build(version, body=body)
        self.publish("orbit", build, version, *channels)
        return build

    # -- the host ------------------------------------------------------------------------------------------

    def install_package(self, orbit_version: str) -> None:
        """What a .deb leaves behind: the orbit binary for the stable channel and the ``bin/orbit/orbit`` link."""
        channel_dir = self.root / "bin" / "orbit" / "linux" / "stable"
        channel_dir.mkdir(parents=True, exist_ok=True)
        (channel_dir / "orbit").write_bytes(self.orbit_build(orbit_version).read_bytes())
        (channel_dir / "orbit").chmod(0o755)
        link = self.root / "bin" / "orbit" / "orbit"
        if not link.is_symlink():
            link.symlink_to("linux/stable/orbit")

    def orbit_env(self, **extra: str) -> dict[str, str]:
        env = clean_env(ORBIT_ENROLL_SECRET=SECRET, **FAST_TIMINGS)
        env = {k: v for k, v in env.items() if not k.startswith(("ORBIT_BUILD", "ORBIT_TRIAL"))}
        env.update(extra)
        return env

    def orbit_args(self, *extra: str) -> list[str]:
        return [
            "--root-dir",
            str(self.root),
            "--fleet-url",
            self.url,
            "--fleet-certificate",
            self.ca,
            "--update-url",
            self.tuf_url,
            "--update-tls-certificate",
            self.ca,
            "--update-roots",
            str(self.root_json),
            *extra,
        ]

    def start_service(self, *extra: str, env: dict[str, str] | None = None) -> ServiceManager:
        link = self.root / "bin" / "orbit" / "orbit"
        self.service = ServiceManager(
            [str(link), *self.orbit_args(*extra)], env or self.orbit_env(), self.base / "orbit.log"
        )
        return self.service

    def status(self) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads((self.root / "state" / "status.json").read_text())
        except (OSError, ValueError):
            return {}
        return data

    def osqueryd_pid(self) -> int | None:
        child = (self.status().get("children") or {}).get("osqueryd") or {}
        pid = child.get("pid")
        return pid if isinstance(pid, int) and child.get("state") == "running" else None

    def osqueryd_channel_running(self) -> str | None:
        """The channel directory of the running osqueryd (orbit's child record names the executable it started)."""
        pid = self.osqueryd_pid()
        try:
            record = json.loads((self.root / "state" / "osqueryd.child.json").read_text())
        except (OSError, ValueError):
            return None
        if pid is None or record.get("pid") != pid:
            return None
        return str(record["executable"]).split("/bin/osqueryd/linux/", 1)[-1].split("/", 1)[0]

    def close(self) -> None:
        try:
            if self.service is not None:
                self.service.stop()
        finally:
            self.stop_stub()
