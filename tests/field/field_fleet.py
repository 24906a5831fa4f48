"""The server side of the field tests (issue 16): a TUF repository signed with real keys holding *frozen* release
builds, a fleet-stub serving it and the agents' API on 127.0.0.1 (the booted roots share the host's network), and
``orbitctl package`` building the .deb / .rpm that point at both.

Nothing of this checkout's interpreter reaches the system under test: the packages carry the PyInstaller builds
of ``build_scripts/freeze.py`` (cached by ``build_scripts.demo_frozen.frozen_build``), fetched through TUF by
``orbitctl package`` as IT would build them. The stub and orbitctl run on the host, like a Fleet server and an
admin's workstation.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from build_scripts.demo_frozen import frozen_build

ROOT = Path(__file__).resolve().parents[2]
PASSPHRASES = {
    f"ORBITCTL_{role}_PASSPHRASE": f"field-{role.lower()}" for role in ("ROOT", "TARGETS", "SNAPSHOT", "TIMESTAMP")
}
SECRET = "field-enroll-secret"
EPOCH = "1735689600"
# a real product option at its floor (orbit refuses less): a published release is seen within a minute, not 15
UPDATE_INTERVAL = "1m"
# orbit that passes the installer's exec check (``--help`` exits 0) and dies at start: a release that cannot run
BROKEN_ORBIT = """#!/bin/sh
# a broken orbit release (field test): passes the exec check, dies at start
case "$1" in
  --help) echo "orbit (broken release)"; exit 0 ;;
  version|--version) echo "orbit 9.9.9-broken"; exit 0 ;;
esac
echo "broken orbit release: refusing to start" >&2
exit 1
"""


class FieldFleetError(RuntimeError):
    pass


def _clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    drop = ("FLEET_STUB_", "ORBIT_", "ORBITCTL_", "FLEETD_", "FLEET_DESKTOP_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env.update(NO_PROXY="127.0.0.1,localhost,::1", PYTHONUNBUFFERED="1")
    env.update(extra or {})
    return env


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, detail: Callable[[], str] | None = None) -> Any:
    """``predicate()``'s first truthy value, polled every 0.2 s; an AssertionError naming ``what`` (and
    ``detail()``, e.g. a journal tail) after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            extra = f"\n{detail()}" if detail is not None else ""
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}{extra}")
        time.sleep(0.2)


@dataclass
class FieldFleet:
    """A TUF repository + fleet-stub on loopback + package builds, all under ``base``."""

    base: Path
    repo: Path = field(init=False)
    stub_dir: Path = field(init=False)
    info: dict[str, Any] = field(default_factory=dict, init=False)
    _stub: subprocess.Popen[bytes] | None = field(default=None, init=False)
    _client: httpx.Client | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.repo = self.base / "repo"
        self.stub_dir = self.base / "stub"

    # --- the repository --------------------------------------------------------------------------------------

    def orbitctl(self, *args: str, extra_env: Mapping[str, str] | None = None, timeout: float = 300) -> str:
        env = _clean_env({**PASSPHRASES, "SOURCE_DATE_EPOCH": EPOCH, **(extra_env or {})})
        result = subprocess.run(
            [sys.executable, "-m", "packager", *args],
            capture_output=True,
            text=True,
            env=env,
            cwd=ROOT,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
        )
        if result.returncode != 0:
            raise FieldFleetError(f"orbitctl {' '.join(args[:2])} exited {result.returncode}: {result.stderr[-3000:]}")
        return result.stdout

    def init_repo(self) -> None:
        self.orbitctl("updates", "init", "--path", str(self.repo))
        (self.base / "root.json").write_text(self.orbitctl("updates", "roots", "--path", str(self.repo)))

    def publish(self, build: Path, name: str, version: str, *channels: str) -> None:
        """``build`` as target ``name`` (linux) at ``version`` on ``channels`` (stable by default) and on the
        exact-version channel."""
        tags = [arg for channel in (channels or ("stable",)) for arg in ("-t", channel)]
        self.orbitctl(
            "updates", "add", "--path", str(self.repo), "--target", str(build), "--name", name,
            "--platform", "linux", "--version", version, *tags,
        )  # fmt: skip

    def publish_frozen(self, program: str, name: str, version: str) -> Path:
        build = frozen_build(program, version).path
        self.publish(build, name, version)
        return build

    def publish_broken_orbit(self, version: str) -> Path:
        path = self.base / "builds" / f"orbit-{version}-broken" / "orbit"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(BROKEN_ORBIT)
        path.chmod(0o755)
        self.publish(path, "orbit", version)
        return path

    # --- the server ------------------------------------------------------------------------------------------

    def start_stub(self) -> None:
        self.stub_dir.mkdir(parents=True, exist_ok=True)
        secrets = self.base / "enroll-secrets.txt"
        secrets.write_text(SECRET + "\n")
        secrets.chmod(0o600)
        argv = [sys.executable, "-m", "server_stub", "serve", "--data-dir", str(self.stub_dir)]
        argv += ["--listen", "127.0.0.1:0", "--enroll-secret-file", str(secrets)]
        argv += ["--tuf-repo", str(self.repo / "repository")]
        log = (self.base / "fleet-stub.log").open("ab")
        with log:
            # hosts refresh their details (orbit_info: the orbit version) every 5 s instead of every hour
            self._stub = subprocess.Popen(
                argv,
                env=_clean_env({"FLEET_STUB_DETAIL_UPDATE_INTERVAL": "5"}),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                cwd=ROOT,
                start_new_session=True,
            )
        stub = self._stub
        info_path = self.stub_dir / "server.json"

        def ready() -> dict[str, Any] | None:
            if stub.poll() is not None:
                raise FieldFleetError(f"fleet-stub exited {stub.returncode}: {self.stub_log()}")
            with contextlib.suppress(OSError, ValueError):
                info: dict[str, Any] = json.loads(info_path.read_text())
                if info.get("pid") == stub.pid:
                    return info
            return None

        self.info = wait_for(ready, 60, "fleet-stub to become ready")
        self._client = httpx.Client(
            base_url=self.info["url"],
            verify=ssl.create_default_context(cafile=self.info["ca_cert"]),
            headers={"Authorization": f"Bearer {self.info['admin_token']}"},
            trust_env=False,
            timeout=60,
        )

    def stub_log(self) -> str:
        path = self.base / "fleet-stub.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def stop(self) -> None:
        if self._client is not None:
            self._client.close()
        if self._stub is not None and self._stub.poll() is None:
            self._stub.send_signal(signal.SIGTERM)
            try:
                self._stub.wait(30)
            except subprocess.TimeoutExpired:
                self._stub.kill()
                self._stub.wait(10)

    @property
    def api(self) -> httpx.Client:
        if self._client is None:
            raise FieldFleetError("the stub is not started")
        return self._client

    def hosts(self) -> list[dict[str, Any]]:
        answer = self.api.get("/api/latest/fleet/hosts")
        answer.raise_for_status()
        hosts: list[dict[str, Any]] = answer.json()["hosts"]
        return hosts

    def host(self, host_id: int) -> dict[str, Any]:
        answer = self.api.get(f"/api/latest/fleet/hosts/{host_id}")
        answer.raise_for_status()
        host: dict[str, Any] = answer.json()["host"]
        return host

    # --- the installers --------------------------------------------------------------------------------------

    def package(self, kind: str, version: str, out_dir: Path) -> Path:
        """``orbitctl package --type kind`` from the repository's stable channel, pointing at this stub."""
        out_dir.mkdir(parents=True, exist_ok=True)
        outfile = out_dir / f"fleet-osquery-{version}.{kind}"
        ca = str(self.info["ca_cert"])
        self.orbitctl(
            "package", "--type", kind, "--fleet-url", str(self.info["url"]), "--fleet-certificate", ca,
            "--update-url", str(self.info["tuf_url"]), "--update-tls-certificate", ca,
            "--update-roots", str(self.base / "root.json"), "--update-interval", UPDATE_INTERVAL,
            "--version", version, "--outfile", str(outfile),
            extra_env={"ORBITCTL_ENROLL_SECRET": SECRET},
        )  # fmt: skip
        return outfile


@contextlib.contextmanager
def field_fleet(base: Path) -> Iterator[FieldFleet]:
    """A repository with frozen orbit 1.0.0 and osqueryd-sim 5.14.1 on stable, served by a running fleet-stub."""
    fleet = FieldFleet(base)
    try:
        fleet.init_repo()
        fleet.publish_frozen("osqueryd-sim", "osqueryd", "5.14.1")
        fleet.publish_frozen("orbit", "orbit", "1.0.0")
        fleet.start_stub()
        yield fleet
    finally:
        fleet.stop()
