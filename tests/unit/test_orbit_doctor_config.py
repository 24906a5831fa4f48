"""orbit doctor names a persistent failure to reach the server, with its cause."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from orbit.doctor import Doctor, Verdict
from orbit.options import parse_options
from orbit.root_layout import InstanceLock


def _doctor_with_status(tmp_path: Path, config: dict[str, object]) -> list[tuple[str, Verdict, str]]:
    (tmp_path / "state").mkdir(parents=True)
    status = {"written_at": datetime.now(UTC).isoformat(), "version": "1.0.0", "enrolled": False, "config": config}
    (tmp_path / "state" / "status.json").write_text(json.dumps(status))
    lock = InstanceLock(tmp_path / "orbit.lock")
    lock.acquire()
    try:
        options = parse_options(["--root-dir", str(tmp_path), "--fleet-url", "https://fleet.example.com"], {})
        doctor = Doctor(options, {}, "linux")
        doctor.check_agent()
        return [(check.name, check.status, check.detail) for check in doctor.checks]
    finally:
        lock.release()


def test_a_server_that_never_answered_is_a_failure_with_its_cause(tmp_path: Path) -> None:
    refused = "config: cannot reach https://fleet.example.com: [Errno 111] Connection refused"
    checks = _doctor_with_status(
        tmp_path, {"polls": 40, "failures": 40, "last_error": refused, "seconds_since_success": None}
    )
    (verdict, detail) = next((v, d) for name, v, d in checks if name == "config polls")
    assert verdict is Verdict.FAIL and "Connection refused" in detail and "never succeeded" in detail


def test_a_short_outage_is_a_warning_and_health_a_pass(tmp_path: Path) -> None:
    checks = _doctor_with_status(
        tmp_path,
        {"polls": 9, "failures": 2, "last_error": "TLS: certificate verify failed", "seconds_since_success": 61},
    )
    assert ("config polls", Verdict.WARN) in [(n, v) for n, v, _ in checks]
    healthy = _doctor_with_status(tmp_path / "h", {"polls": 9, "failures": 0, "last_error": None})
    assert ("config polls", Verdict.PASS) in [(n, v) for n, v, _ in healthy]
