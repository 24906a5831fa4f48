"""The fleet ``benchmarks/rollout.py`` runs rollouts over: a TUF repository from ``orbitctl updates`` holding the
versions as exact-version channels, a ``fleet-stub`` serving it, and one ``osqueryd-sim load --with-orbit`` process
whose simulated hosts follow the channels their orbit config pins and report update outcomes.

The generator prints one ``agent_updates`` JSON line per progress interval (who runs, ever ran and failed on which
version — the ground truth a server cannot see); ``SimFleet.figures`` is the newest of them.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
from stub_throughput import BenchmarkError, ServerProcess, fleet_stub_command, read_json_file, wait_for_file

PASSPHRASES = {
    "ORBITCTL_ROOT_PASSPHRASE": "bench-root",
    "ORBITCTL_TARGETS_PASSPHRASE": "bench-targets",
    "ORBITCTL_SNAPSHOT_PASSPHRASE": "bench-snapshot",
    "ORBITCTL_TIMESTAMP_PASSPHRASE": "bench-timestamp",
}
UPDATES_LINE = re.compile(r"^agent_updates t=(\d+)s (\{.*\})$")
PROGRESS_LINE = re.compile(r"enrolled=(\d+)/(\d+)")


def orbitctl(*args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORBITCTL_")} | PASSPHRASES
    result = subprocess.run(
        [sys.executable, "-m", "packager", "updates", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    if result.returncode != 0:
        raise BenchmarkError(f"orbitctl updates {args[0]}: {result.stderr.strip()}")
    return result.stdout


def make_repository(work: Path, versions: Sequence[str]) -> Path:
    """A repository with a small osqueryd stand-in for each version, each on its exact-version channel (the first
    version also on ``stable``); returns the folder to serve."""
    repo = work / "repo"
    orbitctl("init", "--path", str(repo))
    for index, version in enumerate(versions):
        build = work / "builds" / version / "osqueryd"
        build.parent.mkdir(parents=True, exist_ok=True)
        build.write_text(f"#!/bin/sh\n# osqueryd {version} (benchmark stand-in)\necho 'osqueryd {version}'\n")
        build.chmod(0o755)
        channels = ["-t", version, *(["-t", "stable"] if index == 0 else [])]
        orbitctl(
            "add",
            "--path",
            str(repo),
            "--target",
            str(build),
            "--name",
            "osqueryd",
            "--platform",
            "linux",
            "--version",
            version,
            *channels,
        )
    return repo / "repository"


@dataclass(frozen=True)
class Stub:
    url: str
    ca: Path
    admin_token: str
    process: ServerProcess

    def admin(self, timeout: float = 60.0) -> httpx.Client:
        return httpx.Client(
            base_url=self.url,
            verify=str(self.ca),
            trust_env=False,
            timeout=timeout,
            headers={"Authorization": f"Bearer {self.admin_token}"},
        )


def start_stub(work: Path, secret: str, repository: Path, stack: contextlib.ExitStack, **env: str) -> Stub:
    data_dir = work / "stub"
    argv = [*fleet_stub_command(), "serve", "--data-dir", str(data_dir), "--listen", "127.0.0.1:0"]
    argv += ["--tuf-repo", str(repository)]
    environ = {**os.environ, "FLEET_STUB_ENROLL_SECRET": secret, **env}
    process = ServerProcess("fleet-stub", argv, env=environ, log_path=work / "fleet-stub.out", cpus=None, stack=stack)
    wait_for_file(data_dir / "server.json", process)
    info = read_json_file(data_dir / "server.json")
    url, ca, token = info.get("url"), info.get("ca_cert"), info.get("admin_token")
    if not isinstance(url, str) or not isinstance(ca, str) or not isinstance(token, str):
        raise BenchmarkError(f"unexpected server.json: {sorted(info)}")
    return Stub(url, Path(ca), token, process)


@dataclass(frozen=True)
class SimSettings:
    hosts: int
    config_interval: float
    stable_period: float
    failure_after: float
    fail_rules: tuple[str, ...]
    ramp: float
    seed: str = "rollout-bench"


class SimFleet:
    """The simulated hosts; ``figures()`` reads the generator's newest ``agent_updates`` line."""

    def __init__(self, work: Path, stub: Stub, secret: str, settings: SimSettings, stack: contextlib.ExitStack) -> None:
        sim = Path(sys.executable).parent / "osqueryd-sim"
        command = [str(sim)] if sim.is_file() else [sys.executable, "-m", "osquery_sim"]
        argv = [
            *command,
            "load",
            "--hosts",
            str(settings.hosts),
            "--tls_hostname",
            stub.url.removeprefix("https://"),
            "--tls_server_certs",
            str(stub.ca),
            "--with-orbit",
            "--ramp",
            str(settings.ramp),
            "--progress_interval",
            "2",
            # the osquery side at a quiet pace: this benchmark is about the orbit side
            "--distributed_interval",
            "60",
            "--config_refresh",
            "300",
            "--logger_tls_period",
            "60",
            "--orbit-config-interval",
            str(settings.config_interval),
            "--stable-period",
            str(settings.stable_period),
            "--failure-after",
            str(settings.failure_after),
            "--seed",
            settings.seed,
        ]
        for rule in settings.fail_rules:
            argv += ["--fail-fraction-on", rule]
        self.log_path = work / "sim.out"
        env = {**os.environ, "ENROLL_SECRET": secret}
        self.process = ServerProcess("osqueryd-sim", argv, env=env, log_path=self.log_path, cpus=None, stack=stack)
        self.hosts = settings.hosts
        self._offset = 0
        self._latest: dict[str, object] = {}
        self._enrolled = 0

    def _read(self) -> None:
        try:
            with self.log_path.open("rb") as log:
                log.seek(self._offset)
                chunk = log.read()
        except OSError:
            return
        complete = chunk.rfind(b"\n") + 1
        self._offset += complete
        for line in chunk[:complete].decode("utf-8", "replace").splitlines():
            if (found := UPDATES_LINE.match(line)) is not None:
                self._latest = json.loads(found[2])
            elif (progress := PROGRESS_LINE.search(line)) is not None:
                self._enrolled = int(progress[1])

    def figures(self) -> dict[str, object]:
        self._read()
        if (code := self.process.exited()) is not None:
            raise BenchmarkError(f"the generator exited with {code}:\n{self.process.log_tail()}")
        return self._latest

    def enrolled(self) -> int:
        self.figures()
        return self._enrolled

    def version(self, version: str, target: str = "osqueryd") -> dict[str, int]:
        """``{"ever_ran", "running", "failed"}`` of hosts for ``version`` (zeros when none)."""
        versions = self.figures().get("versions")
        per_target = versions.get(target, {}) if isinstance(versions, dict) else {}
        found = per_target.get(version) if isinstance(per_target, dict) else None
        empty = {"ever_ran": 0, "running": 0, "failed": 0}
        return {**empty, **found} if isinstance(found, dict) else empty


def wait_until(
    check: Callable[[], object],
    timeout: float,
    what: str,
    *,
    every: float = 1.0,
    on_wait: Callable[[], None] = lambda: None,
) -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise BenchmarkError(f"timed out after {timeout:.0f} s waiting for {what}")
        on_wait()
        time.sleep(every)


def pin_everyone(stub: Stub, channels: dict[str, str]) -> None:
    """The all-at-once baseline: agent options pin every host (what publishing to ``stable`` amounts to)."""
    with stub.admin() as admin:
        answer = admin.patch(
            "/api/latest/fleet/config", json={"agent_options": {"config": {}, "update_channels": channels}}
        )
    if answer.status_code != 200:
        raise BenchmarkError(f"pinning through agent options: {answer.status_code} {answer.text[:200]}")
