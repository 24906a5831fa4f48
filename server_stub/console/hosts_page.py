"""The Hosts page: one page of ``host_listing.list_page`` (the REST API's query) as a sortable, filterable table.

Sorting is by column-header links and filtering by a GET form, so both work without JavaScript; the URL holds the
whole view (the REST API takes the same parameters).
"""

from __future__ import annotations

import sqlite3

from server_stub import host_listing, teams
from server_stub.console.layout import REFRESH_SECONDS, Section, page
from server_stub.console.markup import Markup, html, join, query_url
from server_stub.console.time_text import ago, reported
from server_stub.host_listing import HostListQuery, HostPage, HostRow, HostStatus

PATH = "/console/hosts"
DEFAULT_PER_PAGE = 50
MAX_PER_PAGE = 500
PER_PAGE_CHOICES = (25, 50, 100, 200, 500)
TARGET_TITLES = {"orbit": "orbit", "osqueryd": "osqueryd", "desktop": "Fleet Desktop"}

# (title, order_key or None when the column does not sort)
COLUMNS: tuple[tuple[str, str | None], ...] = (
    ("Hostname", "hostname"),
    ("Platform", "platform"),
    ("Status", "seen_time"),
    ("Team", "team_name"),
    ("orbit", "orbit_version"),
    ("osqueryd", "osquery_version"),
    ("Desktop", "fleet_desktop_version"),
    ("Failing policies", "failing_policies_count"),
    ("Last update", None),
)


def _header(query: HostListQuery, title: str, order_key: str | None) -> Markup:
    if order_key is None:
        return html('<th scope="col">{title}</th>', title=title)
    current = query.order_key == order_key
    descending = not query.descending if current else False
    params = query.params(order_key=order_key, order_direction="desc" if descending else "asc", page=None)
    arrow = ("▼" if query.descending else "▲") if current else ""
    sort = ("descending" if query.descending else "ascending") if current else "none"
    return html(
        '<th scope="col" aria-sort="{sort}"><a href="{url}">{title}</a> <span class="arrow">{arrow}</span></th>',
        sort=sort,
        url=query_url(PATH, params),
        title=title,
        arrow=arrow,
    )


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _version(text: str) -> Markup:
    return html("<code>{v}</code>", v=text) if text else html('<span class="muted">unknown</span>')


OUTCOME_TITLES = {
    "confirmed": "confirmed",
    "rolled_back": "rolled back",
    "crash_loop": "crash loop",
    "install_failed": "install failed",
    "repaired": "repaired",
}


def outcome_badge(outcome: str) -> Markup:
    css = "good" if outcome == "confirmed" else "warn" if outcome == "repaired" else "bad"
    return html('<span class="outcome {css}">{title}</span>', css=css, title=OUTCOME_TITLES.get(outcome, outcome))


def last_update(row: HostRow, now: float) -> Markup:
    """The newest outcome orbit reported (with its reason as a tooltip), else the newest version change seen."""
    outcome = row.last_outcome
    if outcome is not None:
        return html(
            '<span class="change" title="{reason}">{target} {version} {badge}</span> {when}',
            reason=outcome.reason or "",
            target=TARGET_TITLES.get(outcome.target, outcome.target),
            version=outcome.version,
            badge=outcome_badge(outcome.outcome),
            when=reported(outcome.at, now),
        )
    change = row.last_change
    if change is None:
        return html('<span class="muted">none seen</span>')
    return html(
        '<span class="change">{target} {old} → {new}</span> {when}',
        target=TARGET_TITLES.get(change.target, change.target),
        old=change.previous_version,
        new=change.version,
        when=ago(change.seen_at, now),
    )


def status_badge(online: bool, seen_time: float | None, now: float) -> Markup:
    label = HostStatus.ONLINE.value if online else HostStatus.OFFLINE.value
    return html('<span class="status {label}">{label}</span> {seen}', label=label, seen=ago(seen_time, now))


def _row(row: HostRow, now: float) -> Markup:
    host = row.host
    name = host.computer_name or host.hostname or host.osquery_host_id
    failing = (
        html('<span class="failing">{n}</span>', n=row.failing_policies)
        if row.failing_policies
        else html('<span class="muted">0</span>')
    )
    return html(
        '<tr><td><a href="/console/hosts/{id}">{name}</a></td><td>{platform}</td><td>{status}</td><td>{team}</td>'
        "<td>{orbit}</td><td>{osquery}</td><td>{desktop}</td><td>{failing}</td><td>{last}</td></tr>",
        id=host.id,
        name=name,
        platform=host.platform or "—",
        status=status_badge(row.online, host.seen_time, now),
        team=row.team_name or "—",
        orbit=_version(host.orbit_version),
        osquery=_version(host.osquery_version),
        desktop=_version(host.desktop_version),
        failing=failing,
        last=last_update(row, now),
    )


def _option(value: str, label: str, selected: bool) -> Markup:
    chosen = Markup.trusted(" selected") if selected else Markup.trusted("")
    return html('<option value="{value}"{chosen}>{label}</option>', value=value, chosen=chosen, label=label)


def _filters(query: HostListQuery, team_list: list[teams.Team], platforms: list[str]) -> Markup:
    status = join(
        [
            _option("", "any status", query.status is None),
            *(_option(s.value, s.value, query.status is s) for s in HostStatus),
        ]
    )
    team_options = join(
        [
            _option("", "any team", query.team_id is None),
            _option("0", "no team", query.team_id == 0),
            *(_option(str(t.id), t.name, query.team_id == t.id) for t in team_list),
        ]
    )
    platform_options = join(
        [_option("", "any platform", not query.platform), *(_option(p, p, query.platform == p) for p in platforms)]
    )
    per_page = join(_option(str(n), f"{n} a page", query.per_page == n) for n in PER_PAGE_CHOICES)
    kept = join(
        html('<input type="hidden" name="{name}" value="{value}">', name=name, value=value)
        for name, value in query.params(
            page=None, query=None, status=None, team_id=None, platform=None, per_page=None
        ).items()
    )
    return html(
        '<form class="filters" method="get" action="{path}" role="search">'
        '<label>Search <input type="search" name="query" value="{search}" maxlength="256" '
        'placeholder="hostname, serial, uuid"></label>'
        '<label>Status <select name="status">{status}</select></label>'
        '<label>Team <select name="team_id">{teams}</select></label>'
        '<label>Platform <select name="platform">{platforms}</select></label>'
        '<label>Rows <select name="per_page">{per_page}</select></label>{kept}'
        '<button type="submit">Apply</button> <a href="{path}">Clear</a></form>',
        path=PATH,
        search=query.search,
        status=status,
        teams=team_options,
        platforms=platform_options,
        per_page=per_page,
        kept=kept,
    )


def _pager(result: HostPage) -> Markup:
    query = result.query
    last = result.pages - 1

    def link(label: str, target: int, enabled: bool) -> Markup:
        if not enabled:
            return html('<span class="disabled">{label}</span>', label=label)
        return html(
            '<a href="{url}">{label}</a>',
            url=query_url(PATH, query.params(page=str(target) if target else None)),
            label=label,
        )

    return html(
        '<nav class="pager" aria-label="pages">{first} {prev} <span>Page {page} of {pages}</span> {next} {last}</nav>',
        first=link("« First", 0, query.page > 0),
        prev=link("‹ Previous", query.page - 1, query.page > 0),
        page=query.page + 1,
        pages=result.pages,
        next=link("Next ›", query.page + 1, query.page < last),
        last=link("Last »", last, query.page < last),
    )


def render(conn: sqlite3.Connection, query: HostListQuery, now: float, csrf_token: str) -> Markup:
    result = host_listing.list_page(conn, query, now)
    everyone = HostListQuery()
    total = host_listing.count_hosts(conn, everyone, now)
    online = host_listing.count_hosts(conn, HostListQuery(status=HostStatus.ONLINE), now)
    headers = join(_header(query, title, key) for title, key in COLUMNS)
    body = join(_row(r, now) for r in result.rows) or html(
        '<tr><td colspan="{n}" class="empty">No hosts match.</td></tr>', n=len(COLUMNS)
    )
    main = html(
        '<div class="title"><h1>Hosts</h1><p class="summary" id="host-summary">{total}, {online} online · '
        "{matching} shown by the filters</p></div>{filters}"
        '<div class="table-wrap"><table class="hosts" id="hosts-table"><thead><tr>{headers}</tr></thead>'
        "<tbody>{body}</tbody></table></div>{pager}",
        total=plural(total, "host"),
        online=online,
        matching=result.total,
        filters=_filters(query, teams.list_teams(conn), host_listing.platforms(conn)),
        headers=headers,
        body=body,
        pager=_pager(result),
    )
    return page("Hosts", main, csrf_token=csrf_token, active=Section.HOSTS, refresh_seconds=REFRESH_SECONDS, now=now)
