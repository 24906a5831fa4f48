"""The log sink: acknowledged batches survive, failed writes leave nothing behind, counters follow the files."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import threading
from pathlib import Path

import pytest

from server_stub.database import open_database, schema_version
from server_stub.log_sink import LogSink, LogWriteError


def _sink(tmp_path: Path) -> LogSink:
    return LogSink(open_database(tmp_path / "db.sqlite3"), tmp_path / "logs")


def test_append_and_count(tmp_path: Path) -> None:
    sink = _sink(tmp_path)
    assert sink.append(1, "result", [{"a": 1}, {"b": "ü"}]) == 2
    assert sink.append(1, "status", [{"m": "x"}]) == 1
    assert sink.counts(1).result == 2 and sink.counts(1).status == 1
    lines = sink.path_for(1, "result").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == [{"a": 1}, {"b": "ü"}]
    assert sink.totals() == {"result": 2, "status": 1}


def test_failed_write_leaves_no_partial_batch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sink = _sink(tmp_path)
    sink.append(1, "result", [{"n": 0}])
    real_write = os.write

    def half_then_full_disk(fd: int, data: bytes) -> int:
        real_write(fd, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", half_then_full_disk)
    with pytest.raises(LogWriteError, match="No space left"):
        sink.append(1, "result", [{"n": 1}, {"n": 2}])
    monkeypatch.undo()
    assert sink.path_for(1, "result").read_text() == '{"n":0}\n'
    assert sink.counts(1).result == 1
    sink.append(1, "result", [{"n": 1}, {"n": 2}])  # the client's retry is stored exactly once
    assert [json.loads(x)["n"] for x in sink.path_for(1, "result").read_text().splitlines()] == [0, 1, 2]


def test_reconcile_after_a_crash(tmp_path: Path) -> None:
    sink = _sink(tmp_path)
    sink.append(3, "result", [{"n": 0}])
    path = sink.path_for(3, "result")
    with path.open("ab") as handle:  # a batch written but not counted, then a torn write
        handle.write(b'{"n":1}\n{"n":2}\n{"n":')
    fresh = LogSink(open_database(tmp_path / "db.sqlite3"), tmp_path / "logs")
    assert fresh.reconcile() == 1
    assert fresh.counts(3).result == 3
    assert path.read_bytes().endswith(b'{"n":2}\n')
    assert fresh.reconcile() == 0


def test_unknown_log_type_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown log type"):
        _sink(tmp_path).path_for(1, "../../etc")


def test_migrations_are_idempotent(tmp_path: Path) -> None:
    first = open_database(tmp_path / "db.sqlite3")
    version = schema_version(first)
    first.close()
    again = open_database(tmp_path / "db.sqlite3")
    assert schema_version(again) == version >= 1
    assert again.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def _strict(line: str) -> object:
    def refuse(name: str) -> object:
        raise ValueError(f"not JSON: {name}")

    return json.loads(line, parse_constant=refuse)


def test_a_line_that_cannot_be_strict_json_costs_that_line_only(tmp_path: Path) -> None:
    """NaN/Infinity and lone surrogates cannot be written as RFC 8259 UTF-8 JSON: those items are left out, the
    rest of the batch is stored and counted (request decoding repairs them first; this is the last defence)."""
    sink = _sink(tmp_path)
    batch: list[dict[str, object]] = [
        {"n": 0},
        {"n": float("nan")},
        {"n": float("inf")},
        {"s": "\ud800"},
        {"\udfff": 1},
        {"n": 1, "deep": [{"ok": -float("1e308")}]},
    ]
    assert sink.append(1, "result", batch) == 2
    lines = sink.path_for(1, "result").read_text(encoding="utf-8").splitlines()
    assert [_strict(line) for line in lines] == [{"n": 0}, {"n": 1, "deep": [{"ok": -1e308}]}]
    assert sink.counts(1).result == 2
    assert sink.append(1, "result", [{"n": float("-inf")}]) == 0  # nothing writable: nothing written, no error
    assert sink.counts(1).result == 2
    fresh = LogSink(open_database(tmp_path / "db.sqlite3"), tmp_path / "logs")
    assert fresh.reconcile() == 0  # counters match the file exactly


def test_reconcile_skips_directories_that_are_not_host_ids(tmp_path: Path) -> None:
    sink = _sink(tmp_path)
    sink.append(1, "result", [{"n": 0}])
    for name in ("²", "٣", "9" * 30):
        (tmp_path / "logs" / name).mkdir()
        (tmp_path / "logs" / name / "result.jsonl").write_text('{"n":1}\n')
    assert sink.reconcile() == 0
    assert sink.totals() == {"result": 1, "status": 0}


def test_a_snapshot_ends_after_the_last_whole_batch(tmp_path: Path) -> None:
    """The admin download sends a snapshot's length only: lines appended meanwhile are not part of it."""
    sink = _sink(tmp_path)
    assert sink.snapshot(1, "result") is None
    sink.append(1, "result", [{"n": 0}, {"n": 1}])
    snapshot = sink.snapshot(1, "result")
    assert snapshot is not None
    sink.append(1, "result", [{"n": 2}])
    assert sink.path_for(1, "result").read_bytes()[: snapshot.st_size] == b'{"n":0}\n{"n":1}\n'


def test_a_snapshot_waits_for_a_batch_being_written(tmp_path: Path) -> None:
    """A batch half written (then cut back, as after a full disk) is never inside a snapshot's length."""
    sink = _sink(tmp_path)
    sink.append(1, "result", [{"n": 0}])
    path = sink.path_for(1, "result")
    sizes: list[int] = []

    def take() -> None:
        snapshot = sink.snapshot(1, "result")
        assert snapshot is not None
        sizes.append(snapshot.st_size)

    with path.open("ab") as writer:
        fcntl.flock(writer.fileno(), fcntl.LOCK_EX)
        writer.write(b'{"n":1')  # half a batch
        writer.flush()
        reader = threading.Thread(target=take)
        reader.start()
        reader.join(0.5)
        assert reader.is_alive()  # held back by the writer's lock
        os.ftruncate(writer.fileno(), len(b'{"n":0}\n'))
        fcntl.flock(writer.fileno(), fcntl.LOCK_UN)
    reader.join(30)
    assert sizes == [len(b'{"n":0}\n')]
