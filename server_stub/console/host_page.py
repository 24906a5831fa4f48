"""A host's page: details, versions and their changes, Desktop token state, policies, recent scripts, live query.

Each section reads with the function the admin REST API answers from (``hosts.get_host``,
``version_changes.for_host``, ``device_tokens.token_state``, ``policies.results_for_host``,
``scripts.recent_for_host``, ``live_queries.recent_for_host`` / ``stored_query``). The live-query form posts to
``/console/hosts/{id}/query``, which asks the host through the same live-query hub as
``POST /api/latest/fleet/hosts/{id}/query`` and comes back here with ``?query_id=`` to show the answer.
"""

from __future__ import annotations

import sqlite3

from server_stub import (
    device_tokens,
    hosts,
    live_queries,
    policies,
    scripts,
    teams,
    update_outcomes,
    version_changes,
)
from server_stub.console.hosts_page import TARGET_TITLES, outcome_badge, plural, status_badge
from server_stub.console.layout import REFRESH_SECONDS, Section, page
from server_stub.console.markup import Markup, html, join
from server_stub.console.time_text import ago, reported, utc_text
from server_stub.version_changes import TARGET_COLUMNS

MAX_ROWS_SHOWN = 500
MAX_COLUMNS_SHOWN = 50
MAX_CELL_CHARS = 2000
MAX_OUTPUT_CHARS = 4000
RECENT = 10
RECENT_OUTCOMES = 20


def _dl(pairs: list[tuple[str, Markup | str]]) -> Markup:
    return join(html("<dt>{k}</dt><dd>{v}</dd>", k=k, v=v if v != "" else "—") for k, v in pairs)


def _details(conn: sqlite3.Connection, host: hosts.Host, now: float) -> Markup:
    team = teams.get_team(conn, host.team_id) if host.team_id is not None else None
    pairs: list[tuple[str, Markup | str]] = [
        ("Hostname", host.hostname),
        ("Computer name", host.computer_name),
        ("Status", status_badge(hosts.host_status(host, now) == "online", host.seen_time, now)),
        ("Platform", host.platform),
        ("Operating system", host.os_version),
        ("Team", team.name if team else "no team"),
        ("Hardware", " ".join(p for p in (host.hardware_model, host.hardware_serial) if p)),
        ("UUID", host.uuid or host.osquery_host_id),
        ("osquery enrolled", ago(host.osquery_enrolled_at, now)),
        ("orbit enrolled", ago(host.orbit_enrolled_at, now)),
        ("Details updated", ago(host.detail_updated_at, now)),
        (
            "Check-in intervals",
            f"distributed {host.distributed_interval} s, config {host.config_tls_refresh} s, "
            f"logs {host.logger_tls_period} s",
        ),
    ]
    return html('<section class="card"><h2>Details</h2><dl>{dl}</dl></section>', dl=_dl(pairs))


def _versions(conn: sqlite3.Connection, host: hosts.Host, now: float) -> Markup:
    installed = join(
        html(
            '<tr><th scope="row">{title}</th><td>{version}</td></tr>',
            title=TARGET_TITLES[target],
            version=html("<code>{v}</code>", v=getattr(host, column)) if getattr(host, column) else "unknown",
        )
        for target, column in TARGET_COLUMNS.items()
    )
    changes = version_changes.for_host(conn, host.id)
    history = join(
        html(
            "<tr><td>{when}</td><td>{target}</td><td>{change}</td></tr>",
            when=ago(c.seen_at, now),
            target=TARGET_TITLES.get(c.target, c.target),
            change=html("<code>{old}</code> → <code>{new}</code>", old=c.previous_version, new=c.version)
            if c.previous_version
            else html("first seen <code>{new}</code>", new=c.version),
        )
        for c in changes
    ) or html('<tr><td colspan="3" class="empty">No versions reported yet.</td></tr>')
    outcomes = join(
        html(
            "<tr><td>{when}</td><td>{target}</td><td>{change}</td><td>{badge}</td><td>{reason}</td></tr>",
            when=reported(str(o["at"]), now),
            target=TARGET_TITLES.get(str(o["target"]), str(o["target"])),
            change=html("<code>{old}</code> → <code>{new}</code>", old=o["previous_version"], new=o["version"])
            if o["previous_version"]
            else html("<code>{new}</code>", new=o["version"]),
            badge=outcome_badge(str(o["outcome"])),
            reason=o["reason"] or "",
        )
        for o in update_outcomes.recent_outcomes(conn, host.id, RECENT_OUTCOMES)
    ) or html(
        '<tr><td colspan="5" class="empty">None reported (orbit reports them to a stub since issue 18).</td></tr>'
    )
    return html(
        '<section class="card" id="versions"><h2>Installed versions</h2>'
        '<table class="compact"><tbody>{installed}</tbody></table>'
        "<h3>Update outcomes</h3>"
        '<p class="note">What orbit reported after each install, newest first: rollbacks and crash loops with '
        "their reason.</p>"
        '<table class="compact" id="update-outcomes"><thead><tr><th scope="col">When</th>'
        '<th scope="col">Target</th><th scope="col">Version</th><th scope="col">Outcome</th>'
        '<th scope="col">Reason</th></tr></thead><tbody>{outcomes}</tbody></table>'
        "<h3>Install history</h3>"
        '<p class="note">Versions as the server saw them change in the host\'s own reports, newest first.</p>'
        '<table class="compact" id="version-history"><thead><tr><th scope="col">When</th><th scope="col">Target</th>'
        '<th scope="col">Change</th></tr></thead><tbody>{history}</tbody></table></section>',
        installed=installed,
        outcomes=outcomes,
        history=history,
    )


def _token(conn: sqlite3.Connection, host: hosts.Host, now: float) -> Markup:
    token = device_tokens.token_state(conn, host.id, now)
    if token.state == "none":
        text = html('<span class="muted">none registered</span> (orbit registers one when Fleet Desktop runs)')
    elif token.state == "valid":
        text = html(
            '<span class="status online">valid</span> until {utc} (expires {until}), set {set}',
            utc=utc_text(token.expires_at or 0.0),
            until=ago(token.expires_at, now),
            set=ago(token.updated_at, now),
        )
    else:
        text = html(
            '<span class="status offline">expired</span> {when} (set {set}); orbit rotates it hourly',
            when=ago(token.expires_at, now),
            set=ago(token.updated_at, now),
        )
    return html(
        '<section class="card" id="device-token"><h2>Fleet Desktop token</h2><p>{text}</p></section>', text=text
    )


def _policies(conn: sqlite3.Connection, host: hosts.Host) -> Markup:
    results = policies.results_for_host(conn, host.id, host.team_id, host.platform)
    if not results:
        return html('<section class="card" id="policies"><h2>Policies</h2><p class="muted">None apply.</p></section>')
    items = join(
        html(
            '<li><span class="{css}">{label}</span> {name}</li>',
            css={"pass": "pass", "fail": "failing"}.get(r.response, "muted"),
            label={"pass": "Pass", "fail": "Fail"}.get(r.response, "No result"),
            name=r.policy.name,
        )
        for r in results
    )
    return html(
        '<section class="card" id="policies"><h2>Policies</h2><p>{failing} failing of {total}</p>'
        '<ul class="plain">{items}</ul></section>',
        failing=policies.failing_count(results),
        total=len(results),
        items=items,
    )


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + f"… ({len(text) - limit} more characters)"


def _scripts(conn: sqlite3.Connection, host: hosts.Host, now: float) -> Markup:
    found = scripts.recent_for_host(conn, host.id, RECENT)
    rows = join(
        html(
            "<tr><td>{when}</td><td><pre>{contents}</pre></td><td>{state}</td><td><pre>{output}</pre></td></tr>",
            when=ago(s.created_at, now),
            contents=_clip(s.contents, 300),
            state=html('<span class="muted">pending</span>')
            if s.completed_at is None
            else html(
                '<span class="{css}">exit {code}</span>, {runtime} s',
                css="pass" if s.exit_code == 0 else "failing",
                code=s.exit_code,
                runtime=s.runtime,
            ),
            output=_clip(s.output, MAX_OUTPUT_CHARS),
        )
        for s in found
    ) or html('<tr><td colspan="4" class="empty">No scripts run on this host.</td></tr>')
    return html(
        '<section class="card" id="scripts"><h2>Recent scripts</h2><table class="compact"><thead><tr>'
        '<th scope="col">Queued</th><th scope="col">Script</th><th scope="col">Result</th><th scope="col">Output</th>'
        "</tr></thead><tbody>{rows}</tbody></table></section>",
        rows=rows,
    )


def _answer(answer: live_queries.StoredQuery | None, now: float) -> Markup:
    if answer is None:
        return Markup.trusted("")
    head = html(
        '<p class="query-sql"><code>{sql}</code> · asked {when} · ',
        sql=_clip(answer.sql, 500),
        when=ago(answer.created_at, now),
    )
    if answer.state != "done":
        state = {"expired": "the host did not answer in time (offline?)"}.get(answer.state, "waiting for the host")
        return html(
            '<div class="answer" id="query-answer">{head}<span class="failing">{state}</span></p></div>',
            head=head,
            state=state,
        )
    if answer.error:
        return html(
            '<div class="answer" id="query-answer">{head}<span class="failing">error</span></p>'
            "<pre>{error}</pre></div>",
            head=head,
            error=_clip(answer.error, MAX_OUTPUT_CHARS),
        )
    columns: list[str] = []
    for row in answer.rows[:MAX_ROWS_SHOWN]:
        for name in row:
            if name not in columns and len(columns) < MAX_COLUMNS_SHOWN:
                columns.append(name)
    header = join(html('<th scope="col">{c}</th>', c=c) for c in columns)
    body = join(
        html(
            "<tr>{cells}</tr>",
            cells=join(html("<td>{v}</td>", v=_clip(str(r.get(c, "")), MAX_CELL_CHARS)) for c in columns),
        )
        for r in answer.rows[:MAX_ROWS_SHOWN]
    )
    shown = len(answer.rows) if len(answer.rows) <= MAX_ROWS_SHOWN else f"first {MAX_ROWS_SHOWN} of {len(answer.rows)}"
    return html(
        '<div class="answer" id="query-answer">{head}<span class="pass">{count}</span> ({shown} shown)</p>'
        '<div class="table-wrap"><table class="compact" id="query-rows"><thead><tr>{header}</tr></thead>'
        "<tbody>{body}</tbody></table></div></div>",
        head=head,
        count=plural(len(answer.rows), "row"),
        shown=shown,
        header=header,
        body=body,
    )


def _live_query(
    conn: sqlite3.Connection, host: hosts.Host, now: float, csrf_token: str, query_id: int | None, sql: str
) -> Markup:
    answer = live_queries.stored_query(conn, host.id, query_id) if query_id is not None else None
    recent = join(
        html(
            '<li><a href="/console/hosts/{host}?query_id={id}#live-query"><code>{sql}</code></a> {when} · {state}</li>',
            host=host.id,
            id=q.query_id,
            sql=_clip(q.sql, 120),
            when=ago(q.created_at, now),
            state={"done": "answered" if not q.error else "error"}.get(q.state, q.state),
        )
        for q in live_queries.recent_for_host(conn, host.id, RECENT)
    )
    text = answer.sql if answer is not None and not sql else sql or "SELECT * FROM osquery_info;"
    return html(
        '<section class="card" id="live-query"><h2>Live query</h2>'
        '<form method="post" action="/console/hosts/{id}/query" class="live-query">'
        '<input type="hidden" name="csrf" value="{csrf}">'
        '<label for="sql">SQL, run by osqueryd on this host at its next check-in</label>'
        '<textarea id="sql" name="query" rows="3" maxlength="65536" required>{text}</textarea>'
        '<button type="submit">Run</button></form>{answer}'
        '<h3>Recent live queries</h3><ul class="plain recent">{recent}</ul></section>',
        id=host.id,
        csrf=csrf_token,
        text=text,
        answer=_answer(answer, now),
        recent=recent or html('<li class="muted">none yet</li>'),
    )


def render(
    conn: sqlite3.Connection, host_id: int, now: float, csrf_token: str, query_id: int | None = None, sql: str = ""
) -> Markup | None:
    """The host's page, or None when there is no such host."""
    host = hosts.get_host(conn, host_id)
    if host is None:
        return None
    name = host.computer_name or host.hostname or host.osquery_host_id
    main = html(
        '<p class="crumbs"><a href="/console/hosts">Hosts</a> ›</p><div class="title"><h1 id="host-name">{name}</h1>'
        "</div>"
        '<div class="grid">{details}{versions}{token}{policies}</div>{scripts}{live}',
        name=name,
        details=_details(conn, host, now),
        versions=_versions(conn, host, now),
        token=_token(conn, host, now),
        policies=_policies(conn, host),
        scripts=_scripts(conn, host, now),
        live=_live_query(conn, host, now, csrf_token, query_id, sql),
    )
    return page(name, main, csrf_token=csrf_token, active=Section.HOSTS, refresh_seconds=REFRESH_SECONDS, now=now)
