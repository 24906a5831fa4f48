"""Pure parts of the console (issue 20): escaping, sessions, list parameters, the SVG chart, and the listing
queries on a real SQLite database (the SQL failing-policy count agrees with the Python one; sorted pages walk an
index)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server_stub import hosts, policies
from server_stub.admin_sessions import SessionState, SessionStore, csrf_matches
from server_stub.console.bar_chart import Bar, bar_chart
from server_stub.console.markup import Markup, html, join, query_url
from server_stub.database import open_database
from server_stub.host_listing import (
    ONLINE_SQL,
    HostListQuery,
    HostQueryError,
    HostStatus,
    list_page,
    parse_host_list_query,
    version_counts,
)
from server_stub.version_changes import KEEP_PER_HOST, for_host

HOSTILE = "<img src=x onerror=alert(1)>\"'&"


# --- markup -------------------------------------------------------------------------------------------------------


def test_every_value_is_escaped_unless_it_is_markup() -> None:
    page = html('<td title="{t}">{v}</td>', t=HOSTILE, v=HOSTILE)
    assert "<img" not in page and "onerror=alert(1)&gt;" in page
    assert page.count("&quot;") == 2 and page.count("&#x27;") == 2 and page.count("&amp;") == 2
    inner = html("<b>{x}</b>", x="1 < 2")
    assert html("<p>{inner}</p>", inner=inner) == "<p><b>1 &lt; 2</b></p>"
    assert join([inner, html("{y}", y="&")], Markup("|")) == "<b>1 &lt; 2</b>|&amp;"
    assert html("{n}", n=None) == "None" and html("{n}", n=3) == "3"


def test_templates_refuse_conversions_that_would_skip_escaping() -> None:
    with pytest.raises(ValueError):
        html("{v!r}", v=HOSTILE)


def test_query_urls_stay_on_this_server() -> None:
    assert query_url("/console/hosts", {"query": "a&b=<c>"}) == "/console/hosts?query=a%26b%3D%3Cc%3E"
    assert query_url("/console/hosts", {}) == "/console/hosts"
    for bad in ("//evil.example/x", "https://evil.example/", "javascript:alert(1)"):
        with pytest.raises(ValueError):
            query_url(bad, {})


def test_bar_chart_escapes_labels_and_scales_bars() -> None:
    chart = bar_chart(
        "t", [Bar(HOSTILE, 10, "/console/hosts?x=1&y=2"), Bar("1.0.0", 5, "/console/hosts")], chart_id="c"
    )
    assert "<img" not in chart and "&lt;img" in chart
    assert 'href="/console/hosts?x=1&amp;y=2"' in chart
    assert 'width="460"' in chart and 'width="230"' in chart  # the biggest bar fills the area, the other half
    assert "style=" not in chart  # the CSP allows no inline style
    assert "no hosts" in bar_chart("t", [], chart_id="c")


# --- sessions -----------------------------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _store(tmp_path: Path, clock: Clock, **kwargs: float) -> SessionStore:
    return SessionStore(open_database(tmp_path / "sessions.sqlite3"), clock, **kwargs)  # type: ignore[arg-type]


def test_session_lives_until_idle_or_max_age(tmp_path: Path) -> None:
    clock = Clock()
    store = _store(tmp_path, clock, idle_seconds=60, max_age_seconds=300)
    cookie, session = store.create()
    assert store.lookup(cookie).session == session
    clock.now += 59
    assert store.lookup(cookie).state is SessionState.VALID  # use restarts the idle time
    clock.now += 59
    assert store.lookup(cookie).state is SessionState.VALID
    clock.now += 61
    assert store.lookup(cookie).state is SessionState.EXPIRED
    assert store.lookup(cookie).state is SessionState.NONE  # forgotten once expired

    cookie, _ = store.create()
    for _ in range(6):
        clock.now += 50
        assert store.lookup(cookie).state is SessionState.VALID
    clock.now += 1
    assert store.lookup(cookie).state is SessionState.EXPIRED  # 300 s after login, however busy


def test_sessions_end_are_unguessable_and_bounded(tmp_path: Path) -> None:
    clock = Clock()
    store = _store(tmp_path, clock, max_sessions=3)
    cookies = [store.create()[0] for _ in range(5)]
    assert len(store) == 3
    assert store.lookup(cookies[0]).state is SessionState.NONE  # the oldest went first
    assert len(set(cookies)) == 5 and all(len(c) >= 43 for c in cookies)
    store.end(cookies[4])
    assert store.lookup(cookies[4]).state is SessionState.NONE
    for bad in (None, "", "x" * 10_000, cookies[3] + "x"):
        assert store.lookup(bad).state is SessionState.NONE
        store.end(bad)  # ending what is not a session changes nothing
    assert store.lookup(cookies[3]).state is SessionState.VALID


def test_sessions_are_shared_by_every_connection_and_keep_no_cookie(tmp_path: Path) -> None:
    """Two processes' connections to one database (ADR 0019): a login through one is known to the other, a logout
    through either ends it for both; the table holds a hash of the cookie, never the cookie."""
    clock = Clock()
    first, second = _store(tmp_path, clock), _store(tmp_path, clock)
    cookie, session = first.create()
    assert second.lookup(cookie).session == session
    database = (tmp_path / "sessions.sqlite3").read_bytes() + (tmp_path / "sessions.sqlite3-wal").read_bytes()
    assert cookie.encode() not in database
    second.end(cookie)
    assert first.lookup(cookie).state is SessionState.NONE
    cookie, _ = first.create()
    second.clear()  # the server starts: nobody is logged in
    assert first.lookup(cookie).state is SessionState.NONE


def test_csrf_token_must_match_exactly(tmp_path: Path) -> None:
    _, session = _store(tmp_path, Clock()).create()
    assert csrf_matches(session, session.csrf_token)
    for bad in (None, "", session.csrf_token[:-1], session.csrf_token + "x", "é" * 43):
        assert not csrf_matches(session, bad)


# --- list parameters ----------------------------------------------------------------------------------------------


def test_list_parameters_parse_like_fleets() -> None:
    query = parse_host_list_query(
        {"order_key": "seen_time", "order_direction": "DESC", "page": "2", "per_page": "25", "status": "online"}
    )
    assert query.order_key == "seen_time" and query.descending and query.page == 2 and query.per_page == 25
    assert query.status is HostStatus.ONLINE
    assert parse_host_list_query({}).per_page is None  # the REST API's "every host"
    assert parse_host_list_query({}, default_per_page=50).per_page == 50
    assert parse_host_list_query({"team_id": "0"}).team_id == 0
    assert parse_host_list_query({"unknown": "x", "query": "  lap "}).search == "lap"
    assert parse_host_list_query({"osquery_version": "5.1"}).versions == {"osquery_version": "5.1"}


@pytest.mark.parametrize(
    "params",
    [
        {"order_key": "node_key"},
        {"order_key": "hostname; DROP TABLE hosts"},
        {"order_direction": "sideways"},
        {"page": "-1"},
        {"page": "1.5"},
        {"page": "٣"},
        {"page": "9" * 400},
        {"per_page": "0"},
        {"per_page": "10001"},
        {"status": "mia"},
        {"team_id": "abc"},
        {"query": "x" * 257},
        {"query": "a\x00b"},
        {"platform": "p" * 65},
    ],
)
def test_bad_list_parameters_are_refused_with_their_name(params: dict[str, str]) -> None:
    with pytest.raises(HostQueryError) as refused:
        parse_host_list_query(params)
    assert next(iter(params)) in str(refused.value)


def test_params_round_trip() -> None:
    query = parse_host_list_query({"order_key": "platform", "query": "x", "team_id": "3", "per_page": "50"})
    again = parse_host_list_query(query.params())
    assert again == query
    assert "page" not in query.params(page=None) and query.params(page="4")["page"] == "4"


# --- the listing queries on a real database -------------------------------------------------------------------------


@pytest.fixture
def conn(tmp_path: Path) -> sqlite3.Connection:
    return open_database(tmp_path / "db.sqlite3")


def _enroll(conn: sqlite3.Connection, name: str, platform: str, team_id: int | None = None, **extra: str) -> int:
    details = {"hostname": name, "platform": platform, "osquery_version": "5.14.1", **extra}
    host_id, _ = hosts.enroll_osquery(conn, f"uuid-{name}", team_id, details, 100.0)
    return host_id


def test_sql_failing_count_agrees_with_the_python_one(conn: sqlite3.Connection) -> None:
    conn.execute("INSERT INTO teams (id, name) VALUES (7, 'Laptops')")
    mac = _enroll(conn, "mac", "darwin", 7)
    linux = _enroll(conn, "linux", "ubuntu")
    made = {}
    for name, platform, team in (
        ("all", "", None),
        ("mac only", "darwin", None),
        ("linux only", "linux", None),
        ("team", "", 7),
        ("errored", "", None),
    ):
        made[name] = policies.upsert_policy(
            conn,
            name=name,
            query="SELECT 1",
            description="",
            resolution="",
            platform=platform,
            team_id=team,
            source="api",
            now=1.0,
        ).id
    for host in (mac, linux):
        for name, policy_id in made.items():
            policies.record_result(conn, host, policy_id, None if name == "errored" else False, 2.0)
    page = list_page(conn, HostListQuery(order_key="id"), 200.0)
    by_id = {row.host.id: row.failing_policies for row in page.rows}
    for host_id in (mac, linux):
        record = hosts.get_host(conn, host_id)
        assert record is not None
        results = policies.results_for_host(conn, record.id, record.team_id, record.platform)
        python = policies.failing_count(results)
        assert by_id[host_id] == python
    assert by_id == {mac: 3, linux: 2}  # all + mac only + team; all + linux only


def test_pages_sort_filter_and_count(conn: sqlite3.Connection) -> None:
    for index in range(120):
        _enroll(conn, f"host-{index:03d}", "darwin" if index % 3 == 0 else "ubuntu")
    first = list_page(conn, HostListQuery(per_page=50), 200.0)
    assert first.total == 120 and first.pages == 3 and len(first.rows) == 50
    assert [r.host.hostname for r in first.rows][:2] == ["host-000", "host-001"]
    last = list_page(conn, HostListQuery(per_page=50, page=2, descending=True), 200.0)
    assert len(last.rows) == 20 and last.rows[-1].host.hostname == "host-000"
    assert list_page(conn, HostListQuery(per_page=50, page=99), 200.0).rows == []
    darwin = list_page(conn, HostListQuery(per_page=500, platform="darwin"), 200.0)
    assert darwin.total == 40 and {r.host.platform for r in darwin.rows} == {"darwin"}
    found = list_page(conn, HostListQuery(per_page=10, search="host-11"), 200.0)
    assert [r.host.hostname for r in found.rows] == [f"host-11{i}" for i in range(10)]
    assert list_page(conn, HostListQuery(search="%"), 200.0).rows == []  # LIKE wildcards are literal
    online = list_page(conn, HostListQuery(status=HostStatus.ONLINE), 100.0 + 30)
    offline = list_page(conn, HostListQuery(status=HostStatus.OFFLINE), 100.0 + 30)
    assert online.total == 120 and offline.total == 0
    assert list_page(conn, HostListQuery(status=HostStatus.OFFLINE), 100.0 + 3600).total == 120


def test_sorted_pages_walk_an_index(conn: sqlite3.Connection) -> None:
    for order_key in ("hostname", "platform", "seen_time", "orbit_version", "osquery_version", "fleet_desktop_version"):
        plan = _plan(conn, HostListQuery(order_key=order_key, per_page=50, page=3))
        assert "TEMP B-TREE" not in plan, (order_key, plan)
        assert "USING INDEX hosts_by_" in plan, (order_key, plan)


def _plan(conn: sqlite3.Connection, query: HostListQuery) -> str:
    traced: list[str] = []
    conn.set_trace_callback(traced.append)
    list_page(conn, query, 0.0)
    conn.set_trace_callback(None)
    select = next(s for s in traced if "FROM hosts h LEFT JOIN teams" in s)
    rows = conn.execute("EXPLAIN QUERY PLAN " + select).fetchall()
    return " | ".join(str(r["detail"]) for r in rows)


def test_version_changes_are_recorded_and_capped(conn: sqlite3.Connection) -> None:
    host_id = _enroll(conn, "h", "ubuntu")
    hosts.update_details(conn, host_id, {"osquery_version": "5.14.1"}, 150.0)  # unchanged: nothing
    hosts.update_details(conn, host_id, {"osquery_version": "5.15.0", "orbit_version": "1.0.0"}, 200.0)
    changes = for_host(conn, host_id)
    assert [(c.target, c.previous_version, c.version) for c in changes] == [
        ("osqueryd", "5.14.1", "5.15.0"),
        ("orbit", "", "1.0.0"),
        ("osqueryd", "", "5.14.1"),
    ]
    page = list_page(conn, HostListQuery(), 300.0)
    change = page.rows[0].last_change
    assert change is not None and (change.previous_version, change.version) == ("5.14.1", "5.15.0")
    for index in range(KEEP_PER_HOST * 2):
        hosts.update_details(conn, host_id, {"osquery_version": f"6.{index}"}, 300.0 + index)
    kept = for_host(conn, host_id, limit=1000)
    assert len(kept) == KEEP_PER_HOST and kept[0].version == f"6.{KEEP_PER_HOST * 2 - 1}"


def test_version_counts_newest_first_unknown_last(conn: sqlite3.Connection) -> None:
    for name, version in (("a", "5.9.0"), ("b", "5.10.0"), ("c", "5.10.0"), ("d", "")):
        host_id = _enroll(conn, name, "ubuntu")
        conn.execute("UPDATE hosts SET osquery_version = ? WHERE id = ?", (version, host_id))
    counts = version_counts(conn)["osqueryd"]
    assert [(c.version, c.hosts) for c in counts] == [("5.10.0", 2), ("5.9.0", 1), ("", 1)]
    assert [(c.version, c.hosts) for c in version_counts(conn)["orbit"]] == [("", 4)]


@settings(max_examples=400, deadline=None)
@given(
    seen=st.one_of(st.none(), st.floats(min_value=0, max_value=1e6, allow_nan=False)),
    distributed=st.integers(min_value=-5, max_value=4000),
    refresh=st.integers(min_value=-5, max_value=4000),
    logger=st.integers(min_value=-5, max_value=4000),
    age=st.floats(min_value=-100, max_value=10_000, allow_nan=False),
)
def test_the_sql_online_rule_is_the_python_one(
    seen: float | None, distributed: int, refresh: int, logger: int, age: float
) -> None:
    now = (seen or 0.0) + age
    with sqlite3.connect(":memory:") as memory:
        memory.execute(
            "CREATE TABLE hosts (seen_time REAL, distributed_interval INT, config_tls_refresh INT,"
            " logger_tls_period INT)"
        )
        memory.execute("INSERT INTO hosts VALUES (?, ?, ?, ?)", (seen, distributed, refresh, logger))
        in_sql = memory.execute(f"SELECT {ONLINE_SQL} FROM hosts h", (now,)).fetchone()[0]
    assert bool(in_sql) == hosts.is_online(seen, distributed, refresh, logger, now)
