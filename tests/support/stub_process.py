"""fleet-stub as a real process, driven through its CLI (docs/contracts.md)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

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
    """``output_dir``: stdout and stderr go to files there instead of pipes, for a long run whose output would fill a
    pipe nobody reads (the server would then block on its next log line). ``open_files``: the server runs with that
    open-files limit (soft and hard)."""

    def __init__(
        self,
        data_dir: Path,
        *args: str,
        env: dict[str, str] | None = None,
        open_files: int | None = None,
        output_dir: Path | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.output_dir = output_dir
        prefix = [*OPEN_FILES_WRAPPER, str(open_files)] if open_files is not None else []
        sinks: list[IO[bytes]] = []
        if output_dir is not None:
            output_dir.mkdir(parents=True, exist_ok=True)
            sinks = [(output_dir / name).open("wb") for name in ("stdout.txt", "stderr.txt")]
        try:
            self.proc = subprocess.Popen(
                [*prefix, *STUB, "serve", "--data-dir", str(data_dir), "--listen", "127.0.0.1:0", *args],
                stdout=sinks[0] if sinks else subprocess.PIPE,
                stderr=sinks[1] if sinks else subprocess.PIPE,
                text=True,
                env=env or clean_env(),
            )
        finally:
            for sink in sinks:  # the child has its own descriptors
                sink.close()

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
        if self.output_dir is not None:
            self.proc.wait(30)
            out, err = (
                (self.output_dir / name).read_text(encoding="utf-8", errors="replace")
                for name in ("stdout.txt", "stderr.txt")
            )
            return out, err
        out, err = self.proc.communicate(timeout=30)
        return out, err
