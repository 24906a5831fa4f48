"""orbit's host-info query against osqueryd-sim run as a binary, exactly as orbit runs it."""

from __future__ import annotations

from pathlib import Path

import pytest

from osquery_bin_manager.host_info import HostInfoError, read_host_info
from tests.support.sim_binary import make_osqueryd


def test_host_info_from_the_sim(tmp_path: Path) -> None:
    osqueryd = make_osqueryd(tmp_path / "bin")
    info = read_host_info(osqueryd, tmp_path / "osquery.db")
    again = read_host_info(osqueryd, tmp_path / "osquery.db")
    assert info.hardware_uuid and info.hostname
    assert info.osquery_version == "5.14.1+sim"
    assert info.instance_id == again.instance_id  # kept in the database, as osquery does


def test_missing_binary_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(HostInfoError, match="doesn't exist at path"):
        read_host_info(tmp_path / "nope", tmp_path / "osquery.db")


def test_a_binary_that_prints_garbage(tmp_path: Path) -> None:
    fake = tmp_path / "osqueryd"
    fake.write_text("#!/bin/sh\necho oops\nexit 78\n")
    fake.chmod(0o755)
    with pytest.raises(HostInfoError, match="exit 78"):
        read_host_info(fake, tmp_path / "osquery.db")
