"""Running osqueryd-sim as a process with the command line orbit gives osqueryd (docs/reference/orbit-behaviour.md
§6)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

SIM = [sys.executable, "-m", "osquery_sim"]


def orbit_style_args(root: Path, url: str, ca: Path, *extra: str) -> list[str]:
    host = url.removeprefix("https://")
    return [
        f"--pidfile={root}/osquery.pid",
        f"--extensions_socket={root}/orbit-osquery.em",
        f"--logger_path={root}/osquery_log",
        "--enroll_secret_env",
        "ENROLL_SECRET",
        "--host_identifier=uuid",
        f"--tls_hostname={host}",
        "--enroll_tls_endpoint=/api/v1/osquery/enroll",
        "--config_plugin=tls",
        "--config_tls_endpoint=/api/v1/osquery/config",
        "--config_refresh=60",
        "--disable_distributed=false",
        "--distributed_plugin=tls",
        "--distributed_tls_max_attempts=10",
        "--distributed_tls_read_endpoint=/api/v1/osquery/distributed/read",
        "--distributed_tls_write_endpoint=/api/v1/osquery/distributed/write",
        "--logger_plugin=tls,filesystem",
        "--logger_tls_endpoint=/api/v1/osquery/log",
        "--disable_carver=false",
        "--carver_disable_function=false",
        "--carver_start_endpoint=/api/v1/osquery/carve/begin",
        "--carver_continue_endpoint=/api/v1/osquery/carve/block",
        "--carver_block_size=2000000",
        "--tls_server_certs",
        str(ca),
        "--force",
        *extra,
        "--host-identifier",
        "uuid",
        "--database_path",
        f"{root}/osquery.db",
    ]


class SimProcess:
    def __init__(self, args: list[str], *, secret: str | None = None, log_path: Path | None = None) -> None:
        env = {k: v for k, v in os.environ.items() if k != "ENROLL_SECRET"}
        if secret is not None:
            env["ENROLL_SECRET"] = secret
        self._log = (log_path or Path(os.devnull)).open("wb")
        self.proc = subprocess.Popen([*SIM, *args], stdout=self._log, stderr=subprocess.STDOUT, env=env)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        finally:
            self._log.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._log.close()


def wait_for(predicate: Callable[[], object], timeout: float = 30.0, interval: float = 0.2) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s")
