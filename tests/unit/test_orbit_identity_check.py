"""A host whose hardware UUID changed (a cloned VM, a restored image) starts over as a new host."""

from __future__ import annotations

from pathlib import Path

from orbit.fleet.identity_check import check_identity
from orbit.root_layout import RootLayout


def test_first_start_records_the_uuid(tmp_path: Path) -> None:
    layout = RootLayout(tmp_path)
    assert check_identity(layout, tmp_path / "osquery.db", "UUID-A") is None
    assert (tmp_path / "hardware-uuid.txt").read_text() == "UUID-A"
    assert (tmp_path / "hardware-uuid.txt").stat().st_mode & 0o777 == 0o644


def test_same_uuid_keeps_everything(tmp_path: Path) -> None:
    layout = RootLayout(tmp_path)
    check_identity(layout, tmp_path / "osquery.db", "UUID-A")
    (tmp_path / "secret-orbit-node-key.txt").write_text("key")
    (tmp_path / "osquery.db").mkdir()
    assert check_identity(layout, tmp_path / "osquery.db", "UUID-A") is None
    assert (tmp_path / "secret-orbit-node-key.txt").exists() and (tmp_path / "osquery.db").is_dir()


def test_a_changed_uuid_discards_the_old_identity(tmp_path: Path) -> None:
    layout = RootLayout(tmp_path)
    check_identity(layout, tmp_path / "osquery.db", "UUID-A")
    (tmp_path / "secret-orbit-node-key.txt").write_text("key of host A")
    (tmp_path / "identifier").write_text("token of host A")
    (tmp_path / "osquery.db").mkdir()
    (tmp_path / "osquery.db" / "node_key").write_text("osquery key of host A")
    assert check_identity(layout, tmp_path / "osquery.db", "UUID-B") == {"from": "UUID-A", "to": "UUID-B"}
    assert not (tmp_path / "secret-orbit-node-key.txt").exists()
    assert not (tmp_path / "identifier").exists()
    assert not (tmp_path / "osquery.db").exists()
    assert (tmp_path / "hardware-uuid.txt").read_text() == "UUID-B"
