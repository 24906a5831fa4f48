"""Where osquery result and status logs go: one JSON-lines file per host and log type, plus counters.

``DIR/logs/<host id>/<log type>.jsonl``. A batch is appended with a single ``write`` on an ``O_APPEND`` descriptor
before the request is acknowledged, so a process crash cannot lose an acknowledged batch. If the write fails
(disk full) the file is cut back to where it was, nothing of the batch remains, and the client is told to retry —
so a retried batch is never stored twice. With several worker processes (ADR 0019) two batches for one file can
arrive at two workers at once: the append holds an exclusive ``flock`` on the file from its size check to its
counter update, so a cut-back never cuts another worker's batch. Counters (lines and bytes) live in SQLite; at
start-up they are reconciled with the files, which are the truth (a crash can fall between the append and the
counter update).
Every line is strict JSON (RFC 8259, UTF-8); an item that cannot be written so is left out alone (``encode_line``).
"""

from __future__ import annotations

import json
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: one process only (workers need fork)
    fcntl = None  # type: ignore[assignment]

from server_stub.int_ranges import parse_id_or_none
from server_stub.transactions import write_transaction

LOG_TYPES = ("result", "status")


class LogWriteError(OSError):
    pass


@dataclass(frozen=True)
class LogCounts:
    result: int
    status: int


def encode_line(item: dict[str, object]) -> bytes | None:
    """One item as one line of strict JSON (RFC 8259: no NaN/Infinity, valid UTF-8), or None when it cannot be.

    Request decoding already made every value valid (``json_text``); this is the last line of defence, and it is
    per line: an item that still cannot be written costs that item, never its batch.
    """
    try:
        return json.dumps(item, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8") + b"\n"
    except (ValueError, TypeError, RecursionError):  # UnicodeEncodeError is a ValueError
        return None


def encode_batch(items: list[dict[str, object]]) -> tuple[bytes, int]:
    """The lines that can be written, joined, and how many they are."""
    lines = [line for line in map(encode_line, items) if line is not None]
    return b"".join(lines), len(lines)


class LogSink:
    def __init__(self, conn: sqlite3.Connection, root: Path) -> None:
        self._conn = conn
        self._root = root
        root.mkdir(parents=True, exist_ok=True)

    def path_for(self, host_id: int, log_type: str) -> Path:
        if log_type not in LOG_TYPES:
            raise ValueError(f"unknown log type: {log_type}")
        return self._root / str(host_id) / f"{log_type}.jsonl"

    def append(self, host_id: int, log_type: str, items: list[dict[str, object]]) -> int:
        """Store a batch durably against process crashes; returns the number of lines stored (items that cannot be
        written as strict JSON are left out: see ``encode_line``)."""
        data, lines = encode_batch(items)
        if not lines:
            return 0
        path = self.path_for(host_id, log_type)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX)  # released by the close
            start = os.fstat(fd).st_size
            try:
                written = os.write(fd, data)
                if written != len(data):
                    raise LogWriteError(f"short write: {written} of {len(data)} bytes")
            except OSError as exc:
                os.ftruncate(fd, start)
                raise LogWriteError(str(exc)) from exc
            try:
                with write_transaction(self._conn):
                    self._conn.execute(
                        """INSERT INTO log_counters (host_id, log_type, lines, bytes) VALUES (?, ?, ?, ?)
                           ON CONFLICT(host_id, log_type) DO UPDATE SET lines = lines + excluded.lines,
                           bytes = bytes + excluded.bytes""",
                        (host_id, log_type, lines, len(data)),
                    )
            except sqlite3.Error as exc:
                # the batch will not be acknowledged, so it must not stay: its retry would store it twice
                os.ftruncate(fd, start)
                raise LogWriteError(f"cannot record the batch: {exc}") from exc
        finally:
            os.close(fd)
        return lines

    def snapshot(self, host_id: int, log_type: str) -> os.stat_result | None:
        """The file's status with its length at a batch boundary (None: nothing stored yet).

        Send only that many bytes: agents append while the file is sent, and a batch being written (or cut back
        after a failed write) holds the exclusive lock, so the length taken under a shared lock ends after a whole,
        recorded batch. What lies before it never changes (the file only grows; a cut-back stays past it).
        """
        try:
            fd = os.open(self.path_for(host_id, log_type), os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_SH)  # released by the close
            return os.fstat(fd)
        finally:
            os.close(fd)

    def counts(self, host_id: int) -> LogCounts:
        found = {
            str(r["log_type"]): int(r["lines"])
            for r in self._conn.execute("SELECT log_type, lines FROM log_counters WHERE host_id = ?", (host_id,))
        }
        return LogCounts(result=found.get("result", 0), status=found.get("status", 0))

    def totals(self) -> dict[str, int]:
        totals = dict.fromkeys(LOG_TYPES, 0)
        for row in self._conn.execute("SELECT log_type, SUM(lines) AS n FROM log_counters GROUP BY log_type"):
            totals[str(row["log_type"])] = int(row["n"] or 0)
        return totals

    def reconcile(self) -> int:
        """Make counters agree with the files after a crash; returns how many files needed fixing."""
        fixed = 0
        if not self._root.is_dir():
            return 0
        for host_dir in self._root.iterdir():
            host_id = parse_id_or_none(host_dir.name)
            if not host_dir.is_dir() or host_id is None:
                continue
            for log_type in LOG_TYPES:
                path = host_dir / f"{log_type}.jsonl"
                if path.is_file() and self._reconcile_file(host_id, log_type, path):
                    fixed += 1
        return fixed

    def _reconcile_file(self, host_id: int, log_type: str, path: Path) -> bool:
        row = self._conn.execute(
            "SELECT lines, bytes FROM log_counters WHERE host_id = ? AND log_type = ?", (host_id, log_type)
        ).fetchone()
        lines, size = (int(row["lines"]), int(row["bytes"])) if row else (0, 0)
        actual = path.stat().st_size
        if actual == size:
            return False
        with path.open("rb+") as handle:
            if actual < size:  # counters ahead of the file (should not happen): count everything again
                lines, size = 0, 0
            handle.seek(size)
            tail = handle.read()
            complete = tail.rfind(b"\n") + 1
            if complete < len(tail):  # a torn, never-acknowledged write: drop it
                handle.truncate(size + complete)
            lines += tail[:complete].count(b"\n")
            size += complete
        with write_transaction(self._conn):
            self._conn.execute(
                """INSERT INTO log_counters (host_id, log_type, lines, bytes) VALUES (?, ?, ?, ?)
                   ON CONFLICT(host_id, log_type) DO UPDATE SET lines = excluded.lines, bytes = excluded.bytes""",
                (host_id, log_type, lines, size),
            )
        return True
