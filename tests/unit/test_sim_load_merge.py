"""``osqueryd-sim load --processes``: shares, source addresses, child command lines and the merged summary."""

from __future__ import annotations

import json

import pytest

from osquery_sim.load_merge import merge_summaries
from osquery_sim.load_options import LoadOptions, parse_args
from osquery_sim.load_processes import child_argv, host_shares, source_addresses
from osquery_sim.load_stats import LATENCY_SAMPLES, LoadStats


def _options(**changes: object) -> LoadOptions:
    base = {"hosts": 10, "tls_hostname": "127.0.0.1:8412", "tls_server_certs": "/ca.pem", "enroll_secret": "s"}
    return LoadOptions(**{**base, **changes})  # type: ignore[arg-type]


def test_hosts_are_shared_as_evenly_as_possible() -> None:
    assert host_shares(10, 3) == [4, 3, 3]
    assert host_shares(9, 3) == [3, 3, 3]
    assert sum(host_shares(10_001, 4)) == 10_001


def test_each_process_gets_its_own_loopback_source_address() -> None:
    assert source_addresses(_options(processes=3)) == ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
    assert source_addresses(_options(processes=2, source_address="10.0.0.5")) == ["10.0.0.5", "10.0.0.5"]
    assert source_addresses(_options(processes=2, tls_hostname="fleet.example:443")) == ["", ""]
    assert source_addresses(_options(processes=2, tls_hostname="[::1]:8412")) == ["", ""]
    assert source_addresses(_options(processes=2, tls_hostname="192.0.2.1:8412")) == ["", ""]


def test_a_child_gets_its_share_and_no_secret_in_argv() -> None:
    argv = child_argv(_options(enroll_secret="TOPSECRET", admin_token="ADMIN", duration=5.0), 4, 6, "127.0.0.3", 2.0)
    assert argv[argv.index("--hosts") + 1] == "4" and argv[argv.index("--first_host") + 1] == "6"
    assert argv[argv.index("--source_address") + 1] == "127.0.0.3" and "--latency_samples" in argv
    assert not any("TOPSECRET" in arg or "ADMIN" in arg for arg in argv)
    assert parse_args([*argv[argv.index("load") + 1 :], "--enroll_secret", "x"]).first_host == 6


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--processes", "0"], "--processes must be between"),
        (["--processes", "11"], "--processes must not exceed --hosts"),
        (["--source_address", "not-an-ip"], "--source_address must be an IP address"),
    ],
)
def test_bad_process_options_are_refused(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(["--hosts", "10", "--tls_hostname", "127.0.0.1:1", "--enroll_secret", "s", *argv])
    assert message in capsys.readouterr().err


def _summary(latencies: list[float], errors: int, lost: int, checked: bool) -> dict[str, object]:
    stats = LoadStats()
    for index, seconds in enumerate(latencies):
        stats.observe("/read", seconds, index >= errors)
    decoded: dict[str, object] = json.loads(
        json.dumps(
            {
                "hosts": 5,
                "enrolled": 5,
                "seconds": 10.0 + errors,
                "requests": len(latencies),
                "errors": errors,
                "endpoints_seconds": 8.0,
                "log_lines": {
                    "produced": 10,
                    "acknowledged": 10 - lost,
                    "buffered": 0,
                    "lost": lost,
                    "duplicated": 0,
                    "checked_against_server": checked,
                },
                "distributed": {"reads": 3, "writes_acknowledged": 2},
                LATENCY_SAMPLES: stats.samples(),
            }
        )
    )
    return decoded


def test_summaries_merge_counts_and_recompute_percentiles_from_samples() -> None:
    fast = _summary([0.001] * 99, 0, 0, True)
    slow = _summary([0.5] * 99, 1, 2, True)
    merged = merge_summaries([fast, slow])
    assert merged["hosts"] == 10 and merged["enrolled"] == 10 and merged["processes"] == 2
    assert merged["requests"] == 198 and merged["errors"] == 1 and merged["seconds"] == 11.0
    assert merged["requests_per_second"] == 18.0
    read = merged["endpoints"]["/read"]  # type: ignore[index]
    assert read["requests"] == 198 and read["errors"] == 1
    assert read["p50_ms"] == 1.0 and read["p99_ms"] == 500.0  # not the average of the two processes' p99
    lines = merged["log_lines"]
    assert lines == {
        "produced": 20,
        "acknowledged": 18,
        "buffered": 0,
        "lost": 2,
        "duplicated": 0,
        "checked_against_server": True,
    }
    assert merged["distributed"] == {"reads": 6, "writes_acknowledged": 4}
    assert LATENCY_SAMPLES not in merged
    assert merge_summaries([fast, _summary([0.1], 0, 0, False)])["log_lines"]["checked_against_server"] is False  # type: ignore[index]


def test_a_child_simulates_the_same_orbit_updates() -> None:
    """``--processes`` with ``--with-orbit``: every child fails on the same versions with the same timings."""
    argv = [
        "--hosts", "10", "--tls_hostname", "127.0.0.1:1", "--enroll_secret", "s", "--with-orbit",
        "--fail-fraction-on", "1.4.0=0.2", "--fail-fraction-on", "osqueryd:5.15.0=0.25",
        "--orbit-config-interval", "2", "--stable-period", "3", "--failure-after", "1.5",
        "--orbit-version", "1.3.0", "--osqueryd-version", "5.14.1", "--desktop-version", "1.3.0",
    ]  # fmt: skip
    parent = parse_args(argv)
    child = child_argv(parent, 5, 5, "", 0.0)
    again = parse_args([*child[child.index("load") + 1 :], "--enroll_secret", "x"])
    assert again.fail_rules == parent.fail_rules and again.baseline == parent.baseline
    assert (again.orbit_config_interval, again.stable_period, again.failure_after) == (2.0, 3.0, 1.5)


def test_agent_updates_add_up_across_processes() -> None:
    def part(ever_ran: int, failed: int, unsent: int) -> dict[str, object]:
        counts = {"ever_ran": ever_ran, "running": ever_ran - failed, "failed": failed}
        return {"versions": {"orbit": {"1.4.0": counts}}, "outcomes_unsent": unsent, "outcomes_sent": 7}

    merged = merge_summaries([{"agent_updates": part(10, 2, 1)}, {"agent_updates": part(5, 1, 0)}])
    assert merged["agent_updates"] == {
        "versions": {"orbit": {"1.4.0": {"ever_ran": 15, "running": 12, "failed": 3}}},
        "outcomes_unsent": 1,
        "outcomes_sent": 14,
    }
    assert "agent_updates" not in merge_summaries([{"hosts": 1}])
