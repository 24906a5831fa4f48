"""fleet-stub as a real process, driven through its CLI (docs/contracts.md)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

STUB = [sys.executable, "-m", "server_stub"]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEET_STUB_")}
    env.update(NO_PROXY="127.0.0.1,localhost", PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


# Runs a command with a lower open-files limit (soft and hard): ``[*OPEN_FILES_WRAPPER, "256", *argv]``. The program
# stays the same process (exec), so ``server.json``'s pid is still ``proc.pid``.
OPEN_FILES_WRAPPER = [
    sys.executable,
    "-c",
    "import os, resource, sys; n = int(sys.argv[1]); resource.setrlimit(resource.RLIMIT_NOFILE, (n, n)); "
    "os.execv(sys.argv[2], sys.argv[2:])",
]


class StubProcess:
    def __init__(
        self, data_dir: Path, *args: str, env: dict[str, str] | None = None, open_files: int | None = None
    ) -> None:
        self.data_dir = data_dir
        prefix = [*OPEN_FILES_WRAPPER, str(open_files)] if open_files is not None else []
        self.proc = subprocess.Popen(
            [*prefix, *STUB, "serve", "--data-dir", str(data_dir), "--listen", "127.0.0.1:0", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env or clean_env(),
        )

    def wait_ready(self, timeout: float = 30.0) -> dict[str, object]:
        path = self.data_dir / "server.json"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"fleet-stub exited {self.proc.returncode}: {self.proc.stderr.read()}")  # type: ignore[union-attr]
            if path.is_file():
                info: dict[str, object] = json.loads(path.read_text())
                if info.get("pid") == self.proc.pid:
                    return info
            time.sleep(0.05)
        raise TimeoutError("fleet-stub did not become ready")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout)

    def output(self) -> tuple[str, str]:
        out, err = self.proc.communicate(timeout=30)
        return out, err
