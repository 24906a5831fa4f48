"""``make demo``: the real deployment, made of processes, in well under a minute.

1. a signed TUF repository made with ``orbitctl updates`` in a temporary directory, with osqueryd 5.14.1 (an
   ``osqueryd-sim`` launcher), orbit 1.0.0 (an ``orbit`` launcher) and Fleet Desktop 1.0.0 (a ``fleet-desktop``
   launcher) published;
2. ``fleet-stub`` serving it (``--tuf-repo``), orbit (``--fleet-desktop``) run as this script's child from a
   temporary root dir laid out like a package, and ``osqueryd-sim load --hosts 300`` for a few hundred more hosts;
3. a live status view: orbit enrolled, osqueryd running, the tray's ``fleet-desktop status --json`` with the
   environment orbit gives it, the hosts on the server, a live query answered through the admin REST API for orbit's
   host; then osqueryd 5.15.0 is published, orbit gets SIGHUP (check now) and installs and restarts it;
4. meanwhile the launchers are published for macOS and Windows too and ``orbitctl package`` builds the .deb, .rpm,
   .pkg and .msi from this repository into ``dist/`` (``DEMO_DIST_DIR``), four children at once;
5. the admin console's URL is printed; on a terminal the stub, its console and orbit stay up until Ctrl-C
   (``--exit-at-end`` stops at once, as happens anyway when stdout is not a terminal; ``--keep-open`` stays);
6. everything it started is stopped (also on Ctrl-C / SIGTERM) and the temporary directory removed.

A launcher is a one-line shell script that stamps ``ORBIT_BUILD_VERSION`` and execs this interpreter, as a frozen
build would. ``--frozen`` (``make demo FROZEN=1``) publishes the Linux targets as frozen release builds instead
(build_scripts/demo_frozen.py): orbit, osqueryd and fleet-desktop then run as PyInstaller binaries, and the .deb and
.rpm carry them. ``ORBIT_DEV_*`` knobs (orbit/timings.py) compress orbit's minutes into seconds.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import ssl
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import IO, Any, TypeVar

import httpx
import psutil
from rich.console import Console

from build_scripts import demo_installers as installers
from build_scripts.demo_board import Board
from build_scripts.demo_frozen import FrozenBuild, FrozenBuildError, frozen_builds
from build_scripts.demo_jobs import Jobs
from build_scripts.demo_tray import TrayStatusError, parse_status, tray_environment
from build_scripts.publish import pack_desktop
from tuf_updates.targets import Platform, TargetName, TargetSpec

ROOT = Path(__file__).resolve().parent.parent
SECRET = "demo-enroll-secret"  # noqa: S105 - a throwaway demo secret
PASSPHRASES = {
    f"ORBITCTL_{role}_PASSPHRASE": f"demo-{role.lower()}" for role in ("ROOT", "TARGETS", "SNAPSHOT", "TIMESTAMP")
}
FAST_TIMINGS = {
    "ORBIT_DEV_CONFIG_INTERVAL": "1",
    "ORBIT_DEV_CONFIG_MAX_BACKOFF": "4",
    "ORBIT_DEV_REENROLL_DEBOUNCE": "2",
    "ORBIT_DEV_STATUS_INTERVAL": "0.5",
    "ORBIT_DEV_TOKEN_LOCAL_CHECK": "2",
    "FLEETD_ENROLL_RETRY_INTERVAL": "1s",
}
BACKGROUND = ("load", "hosts", "tray", *installers.INSTALLER_TYPES)  # rows that progress alongside the steps
LOAD_HOSTS = 300
LOAD_SECONDS = 8
TRAY_TIMEOUT = 30.0
DIST_ENV = "DEMO_DIST_DIR"  # where the installers go (default: the project's dist/)
LOGS_ENV = "DEMO_LOGS_DIR"  # where a failed run keeps its logs (default: the project's .demo-logs/)
FROZEN_PROGRAM = {"orbit": "orbit", "osqueryd": "osqueryd-sim", "fleet-desktop": "fleet-desktop"}  # name → freeze.py's
LAUNCHERS = {  # each TUF target's launcher: module, file name, first version
    TargetName.ORBIT: ("orbit", "orbit", "1.0.0"),
    TargetName.OSQUERYD: ("osquery_sim", "osqueryd", "5.14.1"),
    TargetName.DESKTOP: ("desktop_tray", "fleet-desktop", "1.0.0"),
}
T = TypeVar("T")


class DemoError(Exception):
    pass


def child_env(**extra: str) -> dict[str, str]:
    drop = ("FLEET_STUB_", "ORBIT_", "ORBITCTL_", "FLEETD_", "FLEET_DESKTOP_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env.update(NO_PROXY="127.0.0.1,localhost", PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


# -- the deployment ----------------------------------------------------------------------------------------------


class Demo:
    def __init__(
        self, base: Path, board: Board, dist: Path, frozen: dict[tuple[str, str], FrozenBuild] | None = None
    ) -> None:
        self.base = base
        self.frozen = frozen  # (freeze.py program, version) → build; None: launchers
        self.board = board
        self.dist = dist
        self.repo = base / "repo"
        self.root = base / "orbit-root"
        self.logs = base / "logs"
        self.logs.mkdir()
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.jobs = Jobs(board, self.logs, self.spawn)
        self.repo_lock = threading.Lock()  # orbitctl refuses a second writer: one publish at a time
        self.packages: installers.InstallerBuilds | None = None
        self.info: dict[str, Any] = {}
        self.client: httpx.Client | None = None
        self.orbit_host: dict[str, Any] | None = None
        self.facts: list[str] = []  # what the summary prints at the end
        self.last_poll = 0.0
        self.root_files: list[str] = []

    # processes

    def spawn(
        self, name: str, argv: list[str], env: dict[str, str], stdout: IO[bytes] | int | None = None
    ) -> subprocess.Popen[bytes]:
        with (self.logs / f"{name}.log").open("ab") as log:
            proc = self.procs[name] = subprocess.Popen(
                argv,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=stdout if stdout is not None else log,
                stderr=log,
                start_new_session=True,  # Ctrl-C reaches only the demo, which stops everything in order
            )
        return proc

    def orbitctl(self, *args: str) -> str:
        result = subprocess.run(
            [sys.executable, "-m", "packager", "updates", *args],
            capture_output=True,
            text=True,
            env=child_env(**PASSPHRASES),
            timeout=120,
            check=False,
            stdin=subprocess.DEVNULL,
        )
        if result.returncode != 0:
            raise DemoError(f"orbitctl updates {args[0]} failed: {result.stderr.strip()}")
        return result.stdout

    def launcher(self, module: str, name: str, version: str) -> Path:
        path = self.base / "builds" / f"{name}-{version}" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        body = f'ORBIT_BUILD_VERSION="{version}" PYTHONPATH="{ROOT}" exec "{sys.executable}" -m {module} "$@"\n'
        path.write_text(f"#!/bin/sh\n# {module} {version}\n{body}")
        path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        return path

    # waiting, with the background rows kept fresh

    def wait_for(self, predicate: Callable[[], T | None], timeout: float, what: str) -> T:
        deadline = time.monotonic() + timeout
        while True:
            self.poll_background()
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise DemoError(f"timed out after {timeout:g} s waiting for {what}")
            time.sleep(0.1)

    def api(self) -> httpx.Client:
        assert self.client is not None
        return self.client

    def hosts(self) -> list[dict[str, Any]]:
        response = self.api().get("/api/latest/fleet/hosts")
        response.raise_for_status()
        hosts: list[dict[str, Any]] = response.json()["hosts"]
        return hosts

    def poll_background(self) -> None:
        self.jobs.poll()
        if self.packages is not None:
            self.packages.poll()
        if self.client is None or time.monotonic() - self.last_poll < 0.5:
            return
        self.last_poll = time.monotonic()
        with contextlib.suppress(httpx.HTTPError):
            count = len(self.hosts())
            self.board.set("hosts", "running", f"{count} hosts on fleet-stub", quiet=True)
        load = self.procs.get("load")
        if load is not None and load.poll() is not None and self.board.rows["load"].state == "running":
            self.finish_load()

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

    # the steps

    def make_repo(self) -> None:
        self.board.set("tuf", "running", "orbitctl updates init")
        self.orbitctl("init", "--path", str(self.repo))
        (self.base / "root.json").write_text(self.orbitctl("roots", "--path", str(self.repo)))
        self.board.set("tuf", "running", "publishing osqueryd 5.14.1")
        self.publish_target("osquery_sim", "osqueryd", "5.14.1")
        self.board.set("tuf", "running", "publishing orbit 1.0.0")
        orbit_build = self.publish_target("orbit", "orbit", "1.0.0")
        self.board.set("tuf", "running", "publishing fleet-desktop 1.0.0")
        self.publish_platform_build(TargetSpec(TargetName.DESKTOP, Platform.LINUX, "stable"))
        self.board.set(
            "tuf",
            "ok",
            "signed (root/targets/snapshot/timestamp); osqueryd 5.14.1, orbit 1.0.0, fleet-desktop 1.0.0 on stable",
        )
        # what the package leaves behind: the stable orbit and the bin/orbit/orbit link
        channel_dir = self.root / "bin" / "orbit" / "linux" / "stable"
        channel_dir.mkdir(parents=True)
        shutil.copy2(orbit_build, channel_dir / "orbit")
        (self.root / "bin" / "orbit" / "orbit").symlink_to("linux/stable/orbit")

    def linux_build(self, module: str, name: str, version: str) -> Path:
        """The Linux build of a target: its frozen release build with ``--frozen``, else a launcher."""
        if self.frozen is None:
            return self.launcher(module, name, version)
        return self.frozen[(FROZEN_PROGRAM[name], version)].path

    def publish_target(self, module: str, name: str, version: str) -> Path:
        build = self.linux_build(module, name, version)
        self.publish(build, name, "linux", version)
        return build

    def publish(self, build: Path, name: str, platform: str, version: str) -> None:
        args = ["--target", str(build), "--name", name, "--platform", platform, "--version", version]
        with self.repo_lock:
            self.orbitctl("add", "--path", str(self.repo), *args, "-t", "stable")

    def publish_platform_build(self, spec: TargetSpec) -> None:
        """The launcher of ``spec``'s component, published under ``spec``'s file name (archived if need be)."""
        module, name, version = LAUNCHERS[spec.name]
        folder = self.base / "builds" / f"{spec.name}-{spec.platform}"
        if self.frozen is not None and spec.platform is Platform.LINUX and spec.name is TargetName.DESKTOP:
            folder.mkdir(parents=True, exist_ok=True)
            archive = pack_desktop(self.linux_build(module, name, version), folder / spec.file_name)
            self.publish(archive, spec.name, spec.platform, version)
            return
        build = self.launcher(module, name, version)  # macOS and Windows: launchers stand in (no freezing there)
        self.publish(installers.write_target_file(spec, build, folder), spec.name, spec.platform, version)

    def start_stub(self) -> None:
        self.board.set("stub", "running", "starting (HTTPS, self-signed CA, SQLite)")
        data_dir = self.base / "stub"
        argv = [sys.executable, "-m", "server_stub", "serve", "--data-dir", str(data_dir), "--listen", "127.0.0.1:0"]
        # a secret or token always as --flag=value or in the environment: a value may start with "-"
        argv += [f"--enroll-secret={SECRET}", "--tuf-repo", str(self.repo / "repository")]
        self.spawn("fleet-stub", argv, child_env(FLEET_STUB_DETAIL_UPDATE_INTERVAL="5"))
        proc = self.procs["fleet-stub"]
        info_path = data_dir / "server.json"

        def ready() -> dict[str, Any] | None:
            if proc.poll() is not None:
                raise DemoError(f"fleet-stub exited early with code {proc.returncode}")
            if info_path.is_file():
                with contextlib.suppress(ValueError):
                    info: dict[str, Any] = json.loads(info_path.read_text())
                    if info.get("pid") == proc.pid:
                        return info
            return None

        self.info = self.wait_for(ready, 30, "fleet-stub to become ready")
        self.client = httpx.Client(
            base_url=self.info["url"],
            verify=ssl.create_default_context(cafile=self.info["ca_cert"]),
            headers={"Authorization": f"Bearer {self.info['admin_token']}"},
            trust_env=False,
            timeout=40,
        )
        # answer live queries within ~2 s instead of osquery's default minute
        options = {"distributed_interval": 2, "logger_tls_period": 2}
        self.api().patch("/api/latest/fleet/config", json={"agent_options": {"config": {"options": options}}})
        self.board.set("stub", "ok", f"{self.info['url']}  (TUF at {self.info['tuf_url']})")
        self.facts.append(f"fleet-stub served {self.info['url']} (TUF repository at {self.info['tuf_url']})")
        url, token_file, _ = self.console_facts()
        self.facts.append(f"the admin console was at {url} (admin token in {token_file})")

    def start_orbit(self) -> None:
        self.board.set("orbit", "running", "starting orbit 1.0.0 from bin/orbit/orbit")
        ca = str(self.info["ca_cert"])
        argv = [str(self.root / "bin" / "orbit" / "orbit"), "--root-dir", str(self.root)]
        argv += ["--fleet-url", str(self.info["url"]), "--fleet-certificate", ca]
        argv += ["--update-url", str(self.info["tuf_url"]), "--update-tls-certificate", ca]
        argv += ["--update-roots", str(self.base / "root.json"), "--fleet-desktop"]
        argv += ["--", "--sim_hostname=demo-laptop"]
        self.spawn("orbit", argv, self.orbit_env())

    def orbit_env(self) -> dict[str, str]:
        return child_env(ORBIT_ENROLL_SECRET=SECRET, **FAST_TIMINGS)

    # the tray and the installers: one-shot children that finish in the background

    def start_tray_status(self) -> None:
        """``fleet-desktop status --json`` with the environment orbit gives the tray, once the token file exists."""
        env = tray_environment(
            fleet_url=str(self.info["url"]),
            root_dir=self.root,
            ca_cert=Path(self.info["ca_cert"]),
            orbit_environ=self.orbit_env(),
        )
        identifier = Path(env["FLEET_DESKTOP_DEVICE_IDENTIFIER_PATH"])
        self.board.set("tray", "running", f"waiting for orbit's device token ({identifier.name})")
        self.wait_for(identifier.is_file, 30, f"orbit to write {identifier}")
        self.board.set("tray", "running", "fleet-desktop status --json (one round of the tray's checks)")
        argv = [sys.executable, "-m", "desktop_tray", "status", "--json"]
        if self.frozen is not None:  # the frozen build itself (not orbit's installed copy: orbit owns that one)
            argv = [str(self.frozen[("fleet-desktop", "1.0.0")].path / "fleet-desktop"), "status", "--json"]
        self.jobs.start("tray-status", "tray", argv, child_env(**env), TRAY_TIMEOUT, self.finish_tray_status)

    def finish_tray_status(self, code: int) -> None:
        output = (self.logs / "tray-status.out").read_text(errors="replace")
        try:
            status = parse_status(output) if code == 0 else None
        except TrayStatusError as error:
            self.board.set("tray", "failed", f"status --json: {error}: {self.jobs.output('tray-status')}")
            return
        if status is None or status.state != "connected":
            self.board.set("tray", "failed", f"exit code {code}, not connected: {self.jobs.output('tray-status')}")
            return
        self.board.set("tray", "ok", status.summary())
        self.facts.append(f"fleet-desktop status --json (orbit's FLEET_DESKTOP_* environment): {status.summary()}")

    def start_installers(self) -> None:
        """The four installers, built from this repository alongside the rest (see demo_installers)."""
        scratch = self.base / "package-tmp"  # orbitctl's temporary directories go away with ours
        scratch.mkdir()
        epoch = os.environ.get("SOURCE_DATE_EPOCH") or installers.DEFAULT_EPOCH
        self.packages = installers.InstallerBuilds(
            self.board,
            self.dist,
            installers.PackageSource(
                str(self.info["url"]), str(self.info["ca_cert"]), str(self.info["tuf_url"]), self.base / "root.json"
            ),
            child_env(ORBITCTL_ENROLL_SECRET=SECRET, SOURCE_DATE_EPOCH=epoch, TMPDIR=str(scratch)),
            version=LAUNCHERS[TargetName.ORBIT][2],
            publish=self.publish_platform_build,
            jobs=self.jobs,
        )
        self.packages.start()

    def background_done(self) -> bool:
        ready = self.packages is None or self.packages.started_packaging
        return ready and self.jobs.all_done()

    def start_load(self) -> None:
        self.board.set("load", "running", f"{LOAD_HOSTS} simulated hosts with orbit traffic for {LOAD_SECONDS} s")
        argv = [sys.executable, "-m", "osquery_sim", "load", "--hosts", str(LOAD_HOSTS)]
        argv += ["--tls_hostname", str(self.info["url"]).removeprefix("https://")]
        argv += ["--tls_server_certs", str(self.info["ca_cert"]), "--duration", str(LOAD_SECONDS), "--with-orbit"]
        # the 8 s of traffic start once all hosts are in: on a busy machine enrolling 300 can take longer than that
        argv += ["--ramp", "2", "--progress_interval", "4", "--duration-after-enrollment"]
        # the admin token is URL-safe base64 and starts with "-" once in 64 runs: never a separate argv word
        env = child_env(ENROLL_SECRET=SECRET, FLEET_ADMIN_TOKEN=str(self.info["admin_token"]))
        with (self.logs / "load.json").open("wb") as out:
            self.spawn("load", argv, env, stdout=out)

    def finish_load(self) -> None:
        load = self.procs["load"]
        path = self.logs / "load.json"
        try:
            summary: dict[str, Any] = json.loads(path.read_text()) if path.read_text().strip() else {}
        except (OSError, ValueError):
            summary = {}
        if load.returncode != 0 or not summary:
            self.board.set("load", "failed", f"exit code {load.returncode}; see {self.logs / 'load.log'}")
            return
        lines = summary.get("log_lines", {})
        detail = (
            f"{summary.get('enrolled')} hosts enrolled, {summary.get('requests')} requests "
            f"({summary.get('requests_per_second')} req/s), errors {summary.get('errors')}, log lines acknowledged "
            f"{lines.get('acknowledged')}, lost {lines.get('lost')}, duplicated {lines.get('duplicated')}"
        )
        self.board.set("load", "ok", detail)
        self.facts.append(f"osqueryd-sim load: {detail}")

    def wait_orbit(self) -> None:
        orbit = self.procs["orbit"]

        def enrolled() -> dict[str, Any] | None:
            if orbit.poll() is not None:
                raise DemoError(f"orbit exited with code {orbit.returncode}; see {self.logs / 'orbit.log'}")
            status = self.status()
            return status if status.get("enrolled") is True else None

        status = self.wait_for(enrolled, 60, "orbit to enroll")
        self.board.set(
            "orbit", "ok", f"orbit {status.get('version')} pid {orbit.pid}, enrolled (uuid {status.get('host_uuid')})"
        )
        self.start_tray_status()
        self.board.set("osqueryd", "running", "orbit installs osqueryd from TUF and starts it")
        pid = self.wait_for(self.osqueryd_pid, 60, "osqueryd to run")
        self.board.set("osqueryd", "ok", f"osqueryd 5.14.1 running, pid {pid}")
        uuid = str(status.get("host_uuid") or "").lower()

        def host() -> dict[str, Any] | None:
            return next(
                (h for h in self.hosts() if str(h.get("uuid", "")).lower() == uuid and h.get("osquery_version")), None
            )

        self.board.set("host", "running", "waiting for osquery's host details")
        self.orbit_host = found = self.wait_for(host, 60, "orbit's host on the server")
        detail = (
            f"host {found['id']} {found.get('hostname')} ({found.get('platform')}), "
            f"osquery {found.get('osquery_version')}"
        )
        self.board.set("host", "ok", detail)
        self.facts.append(f"orbit enrolled: {detail}; osqueryd pid {pid}")

    def refresh_host(self) -> None:
        """The host record once the next detail round (every 5 s) has brought orbit_info and the new osqueryd."""
        assert self.orbit_host is not None
        host_id = self.orbit_host["id"]

        def fresh() -> dict[str, Any] | None:
            response = self.api().get(f"/api/latest/fleet/hosts/{host_id}")
            if response.status_code != 200:
                return None
            body: dict[str, Any] = response.json()
            host: dict[str, Any] = body.get("host", body)
            return host if host.get("orbit_version") else None

        self.board.set("host", "running", "waiting for orbit_info in the next host detail round")
        with contextlib.suppress(DemoError):
            self.orbit_host = self.wait_for(fresh, 8, "orbit_info on the host")
        found = self.orbit_host
        detail = (
            f"host {found['id']} {found.get('hostname')} ({found.get('platform')}), "
            f"osquery {found.get('osquery_version')}, orbit {found.get('orbit_version') or '?'}, "
            f"status {found.get('status')}"
        )
        self.board.set("host", "ok", detail)
        self.facts.append(f"host record at the end: {detail}")

    def osquery_version(self) -> str:
        """osquery_info.version of orbit's host, by a live query (``?`` when it does not answer)."""
        assert self.orbit_host is not None
        response = self.api().post(
            f"/api/latest/fleet/hosts/{self.orbit_host['id']}/query", json={"query": "SELECT version FROM osquery_info"}
        )
        rows = response.json().get("rows") or [] if response.status_code == 200 else []
        return str(rows[0].get("version", "?")) if rows else "?"

    def live_query(self) -> None:
        assert self.orbit_host is not None
        sql = "SELECT version FROM osquery_info"
        self.board.set("query", "running", f"POST /api/latest/fleet/hosts/{self.orbit_host['id']}/query  {sql}")
        response = self.api().post(f"/api/latest/fleet/hosts/{self.orbit_host['id']}/query", json={"query": sql})
        answer = response.json()
        rows = answer.get("rows") or []
        if response.status_code != 200 or answer.get("error") or not rows:
            raise DemoError(f"live query failed: HTTP {response.status_code} {answer}")
        detail = f"{sql} → {rows}"
        self.board.set("query", "ok", detail)
        self.facts.append(f"live query answered by host {self.orbit_host['id']}: {detail}")

    def update_osqueryd(self) -> None:
        first = self.osqueryd_pid()
        self.board.set("update", "running", "publishing osqueryd 5.15.0")
        build = self.publish_target("osquery_sim", "osqueryd", "5.15.0")
        self.board.set("update", "running", "SIGHUP to orbit (check for updates now)")
        os.kill(self.procs["orbit"].pid, signal.SIGHUP)
        installed = self.root / "bin" / "osqueryd" / "linux" / "stable" / "osqueryd"
        self.wait_for(
            lambda: installed.is_file() and installed.read_bytes() == build.read_bytes(), 60, "osqueryd 5.15.0"
        )
        self.board.set("update", "running", "5.15.0 installed; waiting for the restart")
        pid = self.wait_for(lambda: (p := self.osqueryd_pid()) not in (None, first) and p, 60, "osqueryd restart")
        running = "?"
        with contextlib.suppress(psutil.Error):
            running = psutil.Process(pid).environ().get("ORBIT_BUILD_VERSION", "?")
        if running == "?":  # a frozen build stamps its version inside the process: ask osqueryd itself
            running = self.osquery_version()
        targets = ((self.status().get("updates") or {}).get("last_check") or {}).get("targets") or []
        outcome: dict[str, Any] = next((t for t in targets if str(t.get("target", "")).startswith("osqueryd/")), {})
        detail = (
            f"osqueryd updated 5.14.1 → {running}: pid {first} → {pid}, "
            f"TUF target {outcome.get('version')} {outcome.get('outcome')}, {installed.relative_to(self.root)}"
        )
        self.board.set("update", "ok", detail)
        self.board.set("osqueryd", "ok", f"osqueryd {running} running, pid {pid}")
        self.facts.append(detail)

    def run(self) -> None:
        self.make_repo()
        self.start_stub()
        self.start_orbit()
        self.start_load()
        self.start_installers()
        self.wait_orbit()
        self.live_query()
        self.update_osqueryd()
        self.wait_for(lambda: self.board.rows["load"].state != "running", 60, "osqueryd-sim load to finish")
        self.wait_for(self.background_done, installers.PACKAGE_TIMEOUT + 10, "the installers and the tray check")
        self.refresh_host()
        self.last_poll = 0.0
        self.poll_background()
        self.board.set("hosts", "ok", self.board.rows["hosts"].detail)
        self.facts.append(f"fleet-stub knew {self.board.rows['hosts'].detail.split()[0]} hosts at the end")
        if self.packages is not None and self.packages.built:
            names = ", ".join(f"{path.name} ({path.stat().st_size:,} bytes)" for path in self.packages.built)
            self.facts.append(f"orbitctl package built into {self.dist}: {names}")
        failed = [row.title for row in self.board.rows.values() if row.state == "failed"]
        if failed:
            raise DemoError(f"{', '.join(failed)} failed (see above)")

    # the console, kept open on a terminal

    def console_facts(self) -> tuple[str, Path, Path]:
        """(the console's URL, the admin token file, the CA the browser must trust)."""
        data_dir = self.base / "stub"
        return f"{self.info['url']}/console", data_dir / "admin_token", Path(str(self.info["ca_cert"]))

    def keep_open(self, console: Console) -> None:
        """Until Ctrl-C or SIGTERM (each raises KeyboardInterrupt here): the stub, orbit and its osqueryd stay up."""
        url, token_file, ca = self.console_facts()
        say = console.print
        say(f"\n[bold green]The console is open:[/] {url}", soft_wrap=True)
        say(f"  log in with the admin token: cat {token_file}", markup=False, highlight=False, soft_wrap=True)
        say(
            f"  the browser does not know the demo's CA ({ca}): accept its warning once, or import that file",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        say("  orbit's host answers live queries from its page. [bold]Ctrl-C[/] stops everything.", soft_wrap=True)
        stub = self.procs["fleet-stub"]
        while stub.poll() is None:
            time.sleep(1.0)  # a signal ends the wait at once
        raise DemoError(f"fleet-stub exited with code {stub.returncode} while the console was open")

    # cleanup

    def stop(self) -> list[str]:
        """SIGTERM everything in reverse start order (orbit stops its osqueryd; orbitctl gets SIGINT, on which it
        deletes a half-written installer), then kill what survived."""
        notes: list[str] = []
        if self.packages is not None:
            self.packages.stop()  # waits for at most one orbitctl add
        if self.client is not None:
            self.client.close()
        family: list[psutil.Process] = []
        for started in self.procs.values():
            with contextlib.suppress(psutil.Error):
                family += psutil.Process(started.pid).children(recursive=True)
        for name, proc in reversed(self.procs.items()):
            if self.jobs.finished(name):
                continue  # its row says how it ended
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT if name.startswith("package-") else signal.SIGTERM)
            try:
                code = proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                code = proc.wait()
            notes.append(f"{name} (pid {proc.pid}) exited with code {code}")
        for orphan in family:
            with contextlib.suppress(psutil.Error):
                if orphan.is_running():
                    orphan.kill()
                    notes.append(f"killed leftover pid {orphan.pid}")
        marker = str(self.base)
        for other in psutil.process_iter(["pid", "cmdline"]):
            with contextlib.suppress(psutil.Error):
                if other.pid != os.getpid() and any(marker in part for part in other.info["cmdline"] or ()):
                    other.kill()
                    notes.append(f"killed leftover pid {other.pid}")
        return notes


def run_demo(console: Console, *, frozen: bool = False, keep_open: bool = False) -> int:
    builds: dict[tuple[str, str], FrozenBuild] | None = None
    if frozen:
        try:
            builds = frozen_builds(lambda line: console.print(line, markup=False, highlight=False))
        except FrozenBuildError as error:
            console.print(f"demo failed: {error}", style="bold red", markup=False)
            return 1
    board = Board(console)
    for key, title in (
        ("tuf", "TUF repository"),
        ("stub", "fleet-stub"),
        ("orbit", "orbit"),
        ("osqueryd", "osqueryd"),
        ("tray", "fleet-desktop status"),
        ("host", "orbit's host"),
        ("query", "live query"),
        ("load", "osqueryd-sim load"),
        ("hosts", "hosts on server"),
        ("update", "osqueryd update"),
        *((kind, f"installer .{kind}") for kind in installers.INSTALLER_TYPES),
    ):
        board.add(key, title)
    base = Path(tempfile.mkdtemp(prefix="fleet-demo-"))
    demo = Demo(base, board, Path(os.environ.get(DIST_ENV) or ROOT / "dist").absolute(), builds)
    if builds is not None:
        demo.facts.append(
            "frozen release builds (PyInstaller): "
            + ", ".join(f"{b.program} {b.version} {b.size_bytes / 1e6:.0f} MB" for b in builds.values())
        )
    code = 1
    try:
        with board.shown():
            try:
                demo.run()
                code = 0
            except KeyboardInterrupt:
                code = 130
            except DemoError as error:
                step = next(
                    (k for k, row in board.rows.items() if row.state == "running" and k not in BACKGROUND), None
                )
                if step is not None:
                    board.set(step, "failed", str(error))
                console.print(f"demo failed: {error}", style="bold red", markup=False)
        if code == 0 and keep_open:
            try:
                demo.keep_open(console)
            except KeyboardInterrupt:
                console.print("Ctrl-C: closing the console", style="bold yellow")
            except DemoError as error:
                console.print(f"demo failed: {error}", style="bold red", markup=False)
                code = 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # let the cleanup finish
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if code == 130:
            console.print("interrupted", style="bold yellow")
        console.print("stopping everything the demo started (SIGTERM, graceful)", style="bold cyan")
        notes = demo.stop()
        if demo.root.is_dir():
            demo.root_files = sorted(
                str(p.relative_to(demo.root))
                for p in demo.root.rglob("*")
                if (p.is_symlink() or p.is_file()) and p.name != ".lock"
            )
        if code == 1:
            show_failed_logs(console, demo, board)
        shutil.rmtree(base, ignore_errors=True)
        for note in notes:
            console.print(f"  {note}", markup=False, highlight=False)
    report(console, demo, board, code)
    return code


def show_failed_logs(console: Console, demo: Demo, board: Board) -> None:
    """Before the clean-up deletes them: the last lines of each failed step's logs on the screen, and every log kept
    under ``.demo-logs/`` (or ``DEMO_LOGS_DIR``) for a closer look."""
    failed = [key for key, row in board.rows.items() if row.state == "failed"]
    names = {
        "stub": "fleet-stub",
        "tray": "tray-status",
        **{kind: f"package-{kind}" for kind in installers.INSTALLER_TYPES},
    }
    shown = [names.get(key, key) for key in failed] or ["orbit"]
    for name in dict.fromkeys([*shown, "orbit"]):
        for log in sorted(demo.logs.glob(f"{name}.*")):
            tail = log.read_text(errors="replace").splitlines()[-15:]
            if tail:
                text = f"{log.name} (last lines):\n  " + "\n  ".join(tail)
                console.print(text, markup=False, highlight=False, soft_wrap=True)
    kept = Path(os.environ.get(LOGS_ENV) or ROOT / ".demo-logs").absolute() / time.strftime("%Y%m%d-%H%M%S")
    with contextlib.suppress(OSError):
        shutil.copytree(demo.logs, kept)
        console.print(f"all logs of this run kept in {kept}", markup=False, highlight=False)


def report(console: Console, demo: Demo, board: Board, code: int) -> None:
    elapsed = time.monotonic() - board.started
    say = console.print
    outcome = {0: "Done", 130: "Interrupted"}.get(code, "Failed")
    say(f"\n[bold]{outcome} in {elapsed:.1f} s.[/] Everything the demo started is stopped.")
    for fact in demo.facts:
        say(f"  • {fact}", markup=False, highlight=False, soft_wrap=True)
    say(
        f"\n[bold]The temporary directory {demo.base} is deleted.[/] orbit's root dir ({demo.root.name}/) held:",
        soft_wrap=True,
    )
    for name in demo.root_files:
        say(f"  {name}", markup=False, highlight=False, soft_wrap=True)
    built = demo.packages.built if demo.packages is not None else []
    if built:
        say(
            f"\n[bold]Installers in {demo.dist}[/] — look inside with dpkg-deb -c, rpm -qlp, bsdtar -tf, 7z l. They "
            + (
                "carry the frozen Linux builds (the .pkg and .msi launcher stand-ins)"
                if demo.frozen is not None
                else "carry the demo's launcher builds, not frozen binaries (make demo FROZEN=1 for those)"
            )
            + " and point at the demo's fleet-stub, which is gone now: build your own with `orbitctl package --help`.",
            soft_wrap=True,
        )
        for path in built:
            say(f"  {path}  ({path.stat().st_size:,} bytes)", markup=False, highlight=False, soft_wrap=True)
    say(
        "\n[bold]Next:[/] run the pieces yourself —\n"
        "  .venv/bin/fleet-stub serve --data-dir .demo/stub --enroll-secret demo-enroll-secret"
        "   (then open its URL + /api/latest/fleet/hosts with the admin token from server.json)\n"
        "  .venv/bin/orbitctl updates --help   (TUF repositories; orbitctl package builds installers)\n"
        "  tests/e2e/test_orbit_agent.py  (the same deployment, one behaviour per test)\n"
        "  README.md and docs/architecture.md",
        soft_wrap=True,
    )


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make demo", description="the real deployment, made of processes")
    parser.add_argument(
        "--frozen", action="store_true", help="publish frozen release builds (PyInstaller) instead of launchers"
    )
    ending = parser.add_mutually_exclusive_group()
    ending.add_argument(
        "--exit-at-end",
        action="store_true",
        help="stop everything as soon as the demo is done (the default when stdout is not a terminal, e.g. in CI)",
    )
    ending.add_argument(
        "--keep-open",
        action="store_true",
        help="keep fleet-stub, its console and orbit running until Ctrl-C (the default on a terminal)",
    )
    args = parser.parse_args(argv)
    console = Console()
    keep_open = args.keep_open or (console.is_terminal and not args.exit_at_end)
    signal.signal(signal.SIGTERM, _terminate)
    try:
        return run_demo(console, frozen=args.frozen, keep_open=keep_open)
    except KeyboardInterrupt:
        console.print("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
