"""File carves: ``carve/begin`` opens a session, ``carve/block`` stores blocks strictly in order.

Rules (Fleet's, docs/reference/fleet-api.md §3.6–3.7): ``carve_size > 0``; ``block_size`` and ``carve_size`` below the
maximums; ``(block_count-1)*block_size < carve_size <= block_count*block_size``; block ids start at 0 and each
must be the previous maximum + 1. Blocks are written at their offset in ``DIR/carves/<session>.bin`` before the
counter moves, so re-sending the last block (a lost response) is harmless and accepted.
"""

from __future__ import annotations

import os
import sqlite3
import uuid
from dataclasses import dataclass
from pathlib import Path

from server_stub.transactions import write_transaction

MAX_BLOCK_SIZE = 64 * 1024 * 1024
MAX_CARVE_SIZE = 8 * 1024 * 1024 * 1024


class CarveError(ValueError):
    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.status = status


@dataclass(frozen=True)
class Carve:
    id: int
    session_id: str
    host_id: int
    carve_id: str
    request_id: str
    block_count: int
    block_size: int
    carve_size: int
    max_block: int
    created_at: float
    completed_at: float | None

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "host_id": self.host_id,
            "session_id": self.session_id,
            "request_id": self.request_id,
            "carve_id": self.carve_id,
            "block_count": self.block_count,
            "block_size": self.block_size,
            "carve_size": self.carve_size,
            "max_block": self.max_block,
            "created_at": self.created_at,
            "completed": self.completed_at is not None,
        }


def validate_sizes(block_count: int, block_size: int, carve_size: int) -> None:
    if carve_size <= 0:
        raise CarveError("carve_size must be greater than 0")
    if block_size <= 0:
        raise CarveError("block_size must be greater than 0")
    if block_size > MAX_BLOCK_SIZE:
        raise CarveError("block_size exceeds max")
    if carve_size > MAX_CARVE_SIZE:
        raise CarveError("carve_size exceeds max")
    if block_count <= 0 or not ((block_count - 1) * block_size < carve_size <= block_count * block_size):
        raise CarveError("carve_size does not match block_size and block_count")


def _carve(row: sqlite3.Row) -> Carve:
    return Carve(**{k: row[k] for k in row.keys()})  # noqa: SIM118 - sqlite3.Row has no items()


class CarveStore:
    def __init__(self, conn: sqlite3.Connection, root: Path) -> None:
        self._conn = conn
        self._root = root
        root.mkdir(parents=True, exist_ok=True)

    def path_for(self, session_id: str) -> Path:
        return self._root / f"{session_id}.bin"

    def begin(
        self,
        host_id: int,
        carve_id: str,
        request_id: str,
        block_count: int,
        block_size: int,
        carve_size: int,
        now: float,
    ) -> Carve:
        validate_sizes(block_count, block_size, carve_size)
        session_id = str(uuid.uuid4())
        with write_transaction(self._conn):
            self._conn.execute(
                """INSERT INTO carves (session_id, host_id, carve_id, request_id, block_count, block_size,
                   carve_size, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)""",
                (session_id, host_id, carve_id, request_id, block_count, block_size, carve_size, now),
            )
        self.path_for(session_id).touch(mode=0o640)
        found = self.get(session_id)
        assert found is not None
        return found

    def get(self, session_id: str) -> Carve | None:
        row = self._conn.execute("SELECT * FROM carves WHERE session_id = ?", (session_id,)).fetchone()
        return _carve(row) if row else None

    def list(self) -> list[Carve]:
        return [_carve(r) for r in self._conn.execute("SELECT * FROM carves ORDER BY id")]

    def check_block(self, session_id: str, request_id: str | None, block_id: int | None) -> Carve:
        """What can be checked before a block's data is read (carve_upload): the session, and the request id and
        block id when they are known. Raises CarveError."""
        carve = self.get(session_id)
        if carve is None:
            raise CarveError("validate carve block: unknown session_id", 404)
        if request_id is not None and request_id != carve.request_id:
            raise CarveError("validate carve block: request_id does not match")
        if block_id is None:
            return carve
        if carve.completed_at is not None and block_id != carve.max_block:
            raise CarveError("validate carve block: carve is already complete")
        if block_id not in (carve.max_block, carve.max_block + 1) or block_id < 0:
            raise CarveError(f"validate carve block: block_id {block_id} out of order (expected {carve.max_block + 1})")
        if block_id >= carve.block_count:
            raise CarveError("validate carve block: block_id exceeds block_count")
        return carve

    def add_block(self, session_id: str, request_id: str, block_id: int, data: bytes, now: float) -> Carve:
        carve = self.check_block(session_id, request_id, block_id)
        if len(data) > carve.block_size:
            raise CarveError("validate carve block: block exceeds block_size")
        is_last = block_id == carve.block_count - 1
        expected_last = carve.carve_size - (carve.block_count - 1) * carve.block_size
        if is_last and len(data) != expected_last:
            raise CarveError("validate carve block: last block does not complete carve_size")
        if not is_last and len(data) != carve.block_size:
            raise CarveError("validate carve block: block is shorter than block_size")
        fd = os.open(self.path_for(session_id), os.O_WRONLY | os.O_CREAT, 0o640)
        try:
            os.pwrite(fd, data, block_id * carve.block_size)
        finally:
            os.close(fd)
        with write_transaction(self._conn):
            self._conn.execute(
                "UPDATE carves SET max_block = MAX(max_block, ?), completed_at = COALESCE(completed_at, ?) "
                "WHERE session_id = ?",
                (block_id, now if is_last else None, session_id),
            )
        updated = self.get(session_id)
        assert updated is not None
        return updated
