"""Pure cores of fleet-stub: settings, tokens, planning, policies, carves, agent options, config files."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from server_stub import device_tokens
from server_stub.agent_options import InvalidAgentOptions, validate_agent_options, validate_notifications
from server_stub.carves import CarveError, validate_sizes
from server_stub.declarative_config import ConfigFileError, parse_config
from server_stub.distributed_plan import details_due, plan, policies_due
from server_stub.errors import ApiError
from server_stub.host_details import details_from_enroll, osquery_identifier
from server_stub.hosts import Host, host_status
from server_stub.http_body import inflate_gzip
from server_stub.live_queries import PendingQuery, query_id_from_name
from server_stub.metrics import Gauge, Metrics
from server_stub.osquery_config import config_for_host, interval_options
from server_stub.policies import Policy, applies_to, platform_family, policy_id_from_name
from server_stub.settings import SettingsError, build_settings, parse_enroll_secret, parse_listen


def test_parse_listen_forms() -> None:
    assert parse_listen("127.0.0.1:0") == ("127.0.0.1", 0)
    assert parse_listen("[::1]:8412") == ("::1", 8412)
    assert parse_listen(":9000") == ("127.0.0.1", 9000)
    assert parse_listen("localhost:1") == ("localhost", 1)
    for bad in ("8412", "::1:80", "host.example:80", "1.2.3.4:x", "[::1]80", "1.2.3.4:70000"):
        with pytest.raises(SettingsError):
            parse_listen(bad)


def test_enroll_secret_with_team() -> None:
    assert parse_enroll_secret("abc").team is None
    assert parse_enroll_secret("abc:Laptops").team == "Laptops"
    with pytest.raises(SettingsError):
        parse_enroll_secret(":team")


def test_flags_win_over_environment(tmp_path: Path) -> None:
    env = {
        "FLEET_STUB_DATA_DIR": str(tmp_path / "env"),
        "FLEET_STUB_LISTEN": "127.0.0.1:1",
        "FLEET_STUB_ENROLL_SECRET": "a,b:T",
    }
    common = {"enroll_secrets": None, "tuf_repo": None, "admin_token": None, "tls_cert": None, "tls_key": None}
    from_env = build_settings(data_dir=None, listen=None, config_file=None, env=env, **common)
    assert from_env.data_dir == tmp_path / "env" and from_env.listen_port == 1
    assert [(s.secret, s.team) for s in from_env.enroll_secrets] == [("a", None), ("b", "T")]
    flags = build_settings(data_dir=str(tmp_path / "flag"), listen="127.0.0.1:2", config_file=None, env=env, **common)
    assert flags.data_dir == tmp_path / "flag" and flags.listen_port == 2
    with pytest.raises(SettingsError, match="data-dir is required"):
        build_settings(data_dir=None, listen=None, config_file=None, env={}, **common)


def test_device_token_text_rules() -> None:
    assert device_tokens.validate_token_text("f3f5c5e1-6a7b-4b8c-9d0e-1f2a3b4c5d6e") is None
    assert device_tokens.validate_token_text("") is device_tokens.TokenProblem.EMPTY
    for bad in ("a/b", "a b", "a+b", "é", "a?b", "a%20"):
        assert device_tokens.validate_token_text(bad) is device_tokens.TokenProblem.NOT_URL_SAFE
    assert device_tokens.validate_token_text("a" * 600) is device_tokens.TokenProblem.TOO_LONG


def test_device_token_freshness() -> None:
    assert device_tokens.token_is_fresh(1000.0, 1000.0 + 3600)
    assert not device_tokens.token_is_fresh(1000.0, 1000.0 + 3600.5)
    assert device_tokens.token_is_fresh(1000.0, 900.0)  # clock stepped back: still valid


def _policy(policy_id: int, query: str = "SELECT 1", platform: str = "") -> Policy:
    return Policy(policy_id, f"p{policy_id}", query, "", "", platform, None, 0.0)


def test_plan_gives_every_query_a_discovery_and_skips_empty_sql() -> None:
    decided = plan(
        live=[PendingQuery(7, "SELECT 7"), PendingQuery(8, "  ")],
        send_details=True,
        policies=[_policy(1), _policy(2, query="")],
        details_known=True,
    )
    assert "fleet_distributed_query_7" in decided.queries
    assert "fleet_distributed_query_8" not in decided.queries
    assert "fleet_policy_query_1" in decided.queries and "fleet_policy_query_2" not in decided.queries
    assert set(decided.discovery) == set(decided.queries)
    assert all(decided.queries.values()) and all(decided.discovery.values())
    assert "accelerate" not in decided.to_json()
    assert plan(live=[], send_details=False, policies=[], details_known=False).to_json() == {
        "queries": {},
        "discovery": {},
        "accelerate": 10,
    }


def test_due_rules() -> None:
    assert details_due(None, 100.0, 3600)
    assert not details_due(100.0, 200.0, 3600)
    assert details_due(100.0, 3700.0, 3600)
    assert policies_due(None, 0.0, 1.0, 3600)
    assert policies_due(100.0, 150.0, 200.0, 3600)  # a policy changed since the last run
    assert not policies_due(100.0, 50.0, 200.0, 3600)


def test_query_names_round_trip() -> None:
    assert query_id_from_name("fleet_distributed_query_12") == 12
    assert query_id_from_name("fleet_distributed_query_x") is None
    assert policy_id_from_name("fleet_policy_query_3") == 3
    assert policy_id_from_name("fleet_detail_query_system_info") is None


def test_policy_platforms() -> None:
    assert platform_family("ubuntu") == "linux" and platform_family("darwin") == "darwin"
    assert applies_to(_policy(1), "windows")
    assert applies_to(_policy(1, platform="linux,darwin"), "rhel")
    assert not applies_to(_policy(1, platform="darwin"), "ubuntu")


@pytest.mark.parametrize(
    ("count", "size", "total", "ok"),
    [(1, 100, 100, True), (2, 100, 101, True), (2, 100, 100, False), (1, 100, 0, False), (0, 100, 1, False)],
)
def test_carve_size_rule(count: int, size: int, total: int, ok: bool) -> None:
    if ok:
        validate_sizes(count, size, total)
    else:
        with pytest.raises(CarveError):
            validate_sizes(count, size, total)


def test_agent_options_validation() -> None:
    assert validate_agent_options({"config": {"options": {}}, "update_channels": {"orbit": "edge"}})
    bad_documents: list[object] = [
        [],
        {"nope": 1},
        {"config": []},
        {"config": {"options": []}},
        {"overrides": {"platforms": {"darwin": 1}}},
        {"command_line_flags": {"--verbose": True}},
        {"command_line_flags": {"x": [1]}},
        {"update_channels": {"agent": "stable"}},
        {"update_channels": {"orbit": ""}},
        {"script_execution_timeout": 0},
        {"script_execution_timeout": True},
    ]
    for bad in bad_documents:
        with pytest.raises(InvalidAgentOptions):
            validate_agent_options(bad)
    with pytest.raises(InvalidAgentOptions):
        validate_notifications({"pending_script_execution_ids": []})


def test_platform_overrides_replace_the_config() -> None:
    options = {"config": {"options": {"distributed_interval": 10}}, "overrides": {"platforms": {"darwin": {"a": 1}}}}
    assert config_for_host(options, "darwin") == {"a": 1}
    assert config_for_host(options, "ubuntu") == {"options": {"distributed_interval": 10}}
    assert interval_options({"options": {"distributed_interval": 5, "config_refresh": "60"}}) == (5, 60, 0)
    assert interval_options({"options": "junk"}) == (0, 0, 0)


def test_host_identity_from_enrollment() -> None:
    details = {"system_info": {"hostname": "h", "uuid": "U"}, "osquery_info": {"instance_id": "I", "uuid": "U2"}}
    assert osquery_identifier("provided", "P", details) == "P"
    assert osquery_identifier("instance", "P", details) == "I"
    assert osquery_identifier("uuid", "P", details) == "U2"
    assert osquery_identifier("hostname", "P", details) == "h"
    assert osquery_identifier("instance", "P", {}) == "P"
    assert details_from_enroll(details)["hostname"] == "h"


def _host(seen: float | None, distributed: int = 0, refresh: int = 0) -> Host:
    return Host(
        1, "x", "", "", "", "", "", "", "", "", "", "", None, 0.0, seen, None, None, None, None, distributed, refresh, 0
    )


def test_host_status() -> None:
    assert host_status(_host(None), 100.0) == "offline"
    assert host_status(_host(100.0, distributed=10), 169.0) == "online"
    assert host_status(_host(100.0, distributed=10), 171.0) == "offline"
    assert host_status(_host(100.0), 159.0) == "online"


def test_gzip_inflation_is_bounded() -> None:
    assert inflate_gzip(gzip.compress(b"{}"), 10) == b"{}"
    with pytest.raises(ApiError) as too_big:
        inflate_gzip(gzip.compress(b"x" * 100), 50)
    assert too_big.value.status == 413
    with pytest.raises(ApiError) as broken:
        inflate_gzip(b"not gzip", 50)
    assert broken.value.status == 400


def test_metrics_render_prometheus_text() -> None:
    metrics = Metrics()
    metrics.observe("osquery_config", 200, 0.003)
    metrics.observe("osquery_config", 401, 0.2)
    metrics.count("log_lines_result", 5)
    text = metrics.render([Gauge("hosts_enrolled", "Hosts.", 3)])
    assert 'fleet_stub_http_requests_total{endpoint="osquery_config",status="200"} 1' in text
    assert 'fleet_stub_http_request_duration_seconds_bucket{endpoint="osquery_config",le="0.005"} 1' in text
    assert 'fleet_stub_http_request_duration_seconds_bucket{endpoint="osquery_config",le="+Inf"} 2' in text
    assert "fleet_stub_log_lines_result_total 5" in text
    assert "fleet_stub_hosts_enrolled 3" in text
    assert text.endswith("\n")


def test_declarative_config_parse_errors() -> None:
    good = parse_config(
        {"teams": [{"name": "A", "enroll_secrets": ["s"]}], "policies": [{"name": "p", "query": "q", "team": "A"}]}
    )
    assert good.teams[0].name == "A" and good.policies[0].team == "A"
    for bad, message in [
        ([], "top level"),
        ({"global": {"enroll_secrets": "s"}}, "list of non-empty strings"),
        ({"global": {"enroll_secrets": ["s"]}, "teams": [{"name": "A", "enroll_secrets": ["s"]}]}, "more than once"),
        ({"policies": [{"name": "p"}]}, "query"),
        ({"teams": [{"name": ""}]}, "name"),
    ]:
        with pytest.raises(ConfigFileError, match=message):
            parse_config(bad)
