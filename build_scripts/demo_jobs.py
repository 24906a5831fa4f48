"""The demo's one-shot children (the tray's ``status --json``, the four ``orbitctl package`` runs): started
alongside the steps, each finished by the demo's background polling — ``finish(exit code)`` sets its row, or the
time limit kills it and fails the row with what it printed."""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from build_scripts.demo_board import Board

Spawn = Callable[[str, list[str], dict[str, str], IO[bytes]], "subprocess.Popen[bytes]"]


@dataclass
class Job:
    row: str
    proc: subprocess.Popen[bytes]
    deadline: float
    finish: Callable[[int], None]
    done: bool = False


@dataclass
class Jobs:
    board: Board
    logs: Path  # <name>.out holds a job's stdout, <name>.log its stderr
    spawn: Spawn
    jobs: dict[str, Job] = field(default_factory=dict)

    def start(
        self, name: str, row: str, argv: list[str], env: dict[str, str], timeout: float, finish: Callable[[int], None]
    ) -> None:
        with (self.logs / f"{name}.out").open("wb") as out:
            proc = self.spawn(name, argv, env, out)
        self.jobs[name] = Job(row, proc, time.monotonic() + timeout, finish)

    def output(self, name: str, limit: int = 600) -> str:
        """The end of the job's stdout and stderr, on one line, for a failed row."""
        parts = []
        for suffix in ("out", "log"):
            with contextlib.suppress(OSError):
                parts.append((self.logs / f"{name}.{suffix}").read_text(errors="replace").strip())
        text = " | ".join(part for part in parts if part).replace("\n", " ⏎ ")
        return text[-limit:] or "no output"

    def poll(self) -> None:
        for name, job in self.jobs.items():
            if job.done or (job.proc.poll() is None and time.monotonic() < job.deadline):
                continue
            job.done = True
            if job.proc.returncode is None:
                job.proc.kill()
                job.proc.wait()
                self.board.set(job.row, "failed", f"no answer within the time limit: {self.output(name)}")
                continue
            try:
                job.finish(job.proc.returncode)
            except (OSError, ValueError) as error:
                self.board.set(job.row, "failed", str(error))

    def finished(self, name: str) -> bool:
        """``name`` is a job that has ended (its row says how), not a service to stop."""
        job = self.jobs.get(name)
        return job is not None and (job.done or job.proc.poll() is not None)

    def all_done(self) -> bool:
        return all(job.done for job in self.jobs.values())
