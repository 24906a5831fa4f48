"""A full disk never duplicates osquery logs: a batch that is not acknowledged leaves nothing behind, so osqueryd's
retry stores each line exactly once — whether the append itself or the commit of the counters ran out of space.

For real: fleet-stub's data directory is a small tmpfs, filled until writes fail; space is freed and the same batch
retried, as osqueryd would. The commit path is also driven with an injected failure (it is hard to make SQLite's
commit, not the append, hit the wall on a real disk every time).
"""

from __future__ import annotations

import json
import os
import sqlite3
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from server_stub.database import open_database
from server_stub.log_sink import LogSink, LogWriteError
from tests.support.stub_process import StubProcess

SECRET = "disk-full-secret"


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0 and not os.environ.get("CI"):
        pytest.skip("mounting a tmpfs needs root")
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(disk: Path, leave: int) -> Path:
    """A filler file that leaves about ``leave`` bytes free."""
    filler = disk / "filler"
    free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
    with filler.open("ab") as handle:
        handle.write(b"\0" * max(0, free - leave))
    return filler


def test_a_full_disk_never_stores_a_retried_batch_twice(small_disk: Path) -> None:
    stub = StubProcess(small_disk / "stub", f"--enroll-secret={SECRET}")
    info = stub.wait_ready()
    context = ssl.create_default_context(cafile=str(info["ca_cert"]))
    try:
        with httpx.Client(base_url=str(info["url"]), verify=context, timeout=30) as client:
            enrolled = client.post("/api/v1/osquery/enroll", json={"enroll_secret": SECRET, "host_identifier": "h1"})
            key = enrolled.json()["node_key"]
            filler = _fill(small_disk, leave=64 * 1024)
            failures = 0
            for batch in range(60):
                lines = [{"name": "q", "batch": batch, "line": n, "pad": "x" * 200} for n in range(20)]
                body = {"node_key": key, "log_type": "result", "data": lines}
                while (answer := client.post("/api/v1/osquery/log", json=body)).status_code != 200:
                    failures += 1
                    assert failures < 200, answer.text
                    with filler.open("r+b") as handle:  # an admin frees some space; osqueryd retries the batch
                        size = handle.seek(0, os.SEEK_END)
                        handle.truncate(max(0, size - 32 * 1024))
        assert failures > 0, "the disk never filled up: the test proved nothing"
        host_dir = next((small_disk / "stub" / "logs").iterdir())
        stored = [json.loads(line) for line in (host_dir / "result.jsonl").read_text().splitlines()]
        seen = [(item["batch"], item["line"]) for item in stored]
        assert sorted(seen) == [(b, n) for b in range(60) for n in range(20)]  # every line, exactly once
    finally:
        stub.stop()


class _FailingCommit:
    """A connection whose next COMMIT fails as a full disk makes it fail."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self.fail_next_commit = False

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        if sql == "COMMIT" and self.fail_next_commit:
            self.fail_next_commit = False
            raise sqlite3.OperationalError("database or disk is full")
        return self._conn.execute(sql, *args)

    @property
    def in_transaction(self) -> bool:
        return self._conn.in_transaction


def test_a_failed_commit_cuts_the_appended_batch_back(tmp_path: Path) -> None:
    conn = open_database(tmp_path / "db.sqlite3")
    failing = _FailingCommit(conn)
    sink = LogSink(failing, tmp_path / "logs")  # type: ignore[arg-type]
    sink.append(1, "result", [{"n": 1}])
    failing.fail_next_commit = True
    with pytest.raises(LogWriteError, match="disk is full"):
        sink.append(1, "result", [{"n": 2}])
    assert not conn.in_transaction  # the failed commit did not leave a transaction open for the next request
    sink.append(1, "result", [{"n": 2}])  # the retry
    lines = [json.loads(line)["n"] for line in sink.path_for(1, "result").read_text().splitlines()]
    assert lines == [1, 2]
    assert sink.counts(1).result == 2
