"""The pure parts of fleet-stub's worker model (ADR 0019): summing figures across processes, the control channel's
framing, shares of limits, restart delays; and the log file several processes write."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from server_stub.metrics import BUCKETS, Gauge, Metrics, Series
from server_stub.worker_channel import MAX_FRAME, ChannelError, FrameReader, encode
from server_stub.worker_shares import MAX_RESTART_DELAY, restart_delay, share_of, share_of_rate


def _worker_figures(requests: int, seconds: float, counter: int) -> Metrics:
    metrics = Metrics()
    for _ in range(requests):
        metrics.observe("osquery_config", 200, seconds)
    metrics.observe("osquery_config", 401, 0.2)
    metrics.count("log_lines_result", counter)
    return metrics


def test_figures_of_several_workers_add_up_through_json() -> None:
    total = Metrics()
    for figures in (_worker_figures(3, 0.003, 5), _worker_figures(2, 0.03, 7)):
        total.absorb(json.loads(json.dumps(figures.snapshot())))  # as they travel on the control channel
    text = total.render([])
    assert 'fleet_stub_http_requests_total{endpoint="osquery_config",status="200"} 5' in text
    assert 'fleet_stub_http_requests_total{endpoint="osquery_config",status="401"} 2' in text
    assert 'fleet_stub_http_request_duration_seconds_bucket{endpoint="osquery_config",le="0.005"} 3' in text
    assert 'fleet_stub_http_request_duration_seconds_bucket{endpoint="osquery_config",le="+Inf"} 7' in text
    assert 'fleet_stub_http_request_duration_seconds_sum{endpoint="osquery_config"} 0.469000' in text
    assert "fleet_stub_log_lines_result_total 12" in text
    assert total.total_requests == 7


def test_absorb_skips_what_is_not_in_the_snapshot_shape() -> None:
    metrics = Metrics()
    metrics.absorb(
        {
            "requests": [["ok", 200, 2], ["bad", "200", 1], ["short", 200], ["bool", 200, True], "junk"],
            "latency": {"ok": {"counts": [1] * len(BUCKETS), "total": 14, "sum": 1.5}, "short": {"counts": [1]}},
            "counters": {"good": 3, "float": 1.5, "bool": False},
        }
    )
    metrics.absorb({"requests": "nope", "latency": [], "counters": None})
    snapshot = metrics.snapshot()
    assert snapshot["requests"] == [["ok", 200, 2]]
    assert list(snapshot["latency"]) == ["ok"]  # type: ignore[call-overload]
    assert snapshot["counters"] == {"good": 3}


def test_series_render_one_sample_per_label_value() -> None:
    text = Metrics().render(
        [Gauge("workers", "Workers.", 2)],
        [Series("worker_requests_total", "Per worker.", "counter", "worker", (("1", 5.0), ("2", 7.0)))],
    )
    assert text.count("# TYPE fleet_stub_worker_requests_total counter") == 1
    assert 'fleet_stub_worker_requests_total{worker="1"} 5' in text
    assert 'fleet_stub_worker_requests_total{worker="2"} 7' in text


def test_frames_round_trip_in_any_pieces() -> None:
    data = encode({"t": "pub", "topic": "live_query_done", "value": 42}) + encode({"t": "ready"})
    reader = FrameReader()
    received = []
    for byte in data:  # one byte at a time
        received += reader.feed(bytes([byte]))
    assert received == [{"t": "pub", "topic": "live_query_done", "value": 42}, {"t": "ready"}]


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (struct.pack(">I", MAX_FRAME + 1), "exceeds"),
        (struct.pack(">I", 4) + b"\xff\xfe{}", "not JSON"),
        (struct.pack(">I", 2) + b"[]", "typed JSON object"),
        (struct.pack(">I", 9) + b'{"t": 1 }', "typed JSON object"),
        (struct.pack(">I", 3) + b"NaN", "typed JSON object"),
    ],
)
def test_broken_frames_are_refused(frame: bytes, message: str) -> None:
    with pytest.raises(ChannelError, match=message):
        FrameReader().feed(frame)


def test_a_message_too_large_or_not_strict_json_is_not_sent() -> None:
    with pytest.raises(ChannelError):
        encode({"t": "snap", "data": "x" * MAX_FRAME})
    with pytest.raises(ValueError):
        encode({"t": "snap", "value": float("nan")})


def test_shares_of_limits_and_restart_delays() -> None:
    assert share_of(1000, 3) == 334 and share_of(1, 4) == 1 and share_of(100, 1) == 100
    assert share_of_rate(720.0, 2) == 360.0
    assert restart_delay(0) == 0.1 and restart_delay(1) == 0.2 and restart_delay(3) == 0.8
    assert restart_delay(50) == MAX_RESTART_DELAY


WRITER = """
import logging, sys
from pathlib import Path
from server_stub.shared_log_file import SharedRotatingLog
handler = SharedRotatingLog(Path(sys.argv[1]), 4096, 3)
handler.setFormatter(logging.Formatter("%(message)s"))
log = logging.getLogger("w")
log.addHandler(handler)
log.setLevel(logging.INFO)
for n in range(int(sys.argv[3])):
    log.info("%s %05d %s", sys.argv[2], n, "x" * 40)
"""


@pytest.mark.skipif(os.name != "posix", reason="several workers need fork (POSIX)")
def test_a_log_file_written_by_several_processes_rotates_without_losing_or_mixing_lines(tmp_path: Path) -> None:
    path = tmp_path / "fleet-stub.log"
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(path), name, "200"]) for name in ("alpha", "beta", "gamma")
    ]
    assert [w.wait(60) for w in writers] == [0, 0, 0]
    files = [path, *(tmp_path / f"fleet-stub.log.{n}" for n in (1, 2, 3))]
    assert all(f.exists() for f in files) and not (tmp_path / "fleet-stub.log.4").exists()
    lines = [line for f in files for line in f.read_text().splitlines()]
    for line in lines:  # whole lines only: one write per record
        name, number, filler = line.split(" ")
        assert name in ("alpha", "beta", "gamma") and len(number) == 5 and filler == "x" * 40
    assert all(f.stat().st_size <= 4096 for f in files)
    # 3 × 200 lines of 52 bytes are ≈ 31 KB: the oldest were rotated away, and no line is kept twice; the three
    # older files are full — a rotation never threw away a file that had just been started
    assert len(lines) == len(set(lines))
    assert all(f.stat().st_size > 4096 - 52 for f in files[1:])
