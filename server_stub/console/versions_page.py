"""The Versions page: how many hosts run each version of orbit, osqueryd and Fleet Desktop
(``host_listing.version_counts``, the query behind ``GET /api/latest/fleet/versions``), one chart per target.
Each bar links to the Hosts page filtered to that version."""

from __future__ import annotations

import sqlite3

from server_stub import host_listing
from server_stub.console.bar_chart import Bar, bar_chart
from server_stub.console.hosts_page import PATH as HOSTS_PATH
from server_stub.console.hosts_page import TARGET_TITLES
from server_stub.console.layout import REFRESH_SECONDS, Section, page
from server_stub.console.markup import Markup, html, join, query_url

FILTER_FOR_TARGET = {"orbit": "orbit_version", "osqueryd": "osquery_version", "desktop": "fleet_desktop_version"}


def render(conn: sqlite3.Connection, now: float, csrf_token: str) -> Markup:
    counts = host_listing.version_counts(conn)
    sections = []
    for target, versions in counts.items():
        bars = [
            Bar(
                v.version or "unknown",
                v.hosts,
                query_url(HOSTS_PATH, {FILTER_FOR_TARGET[target]: v.version}) if v.version else HOSTS_PATH,
            )
            for v in versions
        ]
        title = f"{TARGET_TITLES[target]}: hosts per version"
        sections.append(
            html(
                '<section class="card chart-card"><h2>{title}</h2>{chart}</section>',
                title=TARGET_TITLES[target],
                chart=bar_chart(title, bars, chart_id=f"chart-{target}"),
            )
        )
    main = html(
        '<div class="title"><h1>Versions</h1><p class="summary">Hosts per version of each target, newest version '
        "first; a bar opens those hosts.</p></div>{sections}",
        sections=join(sections),
    )
    return page(
        "Versions", main, csrf_token=csrf_token, active=Section.VERSIONS, refresh_seconds=REFRESH_SECONDS, now=now
    )
