"""The Rollouts pages: every staged rollout (issue 18, docs/adr/0017) with its waves' targeted / updated / healthy /
rolled back / offline counts, its halt reason, and pause / resume / abort buttons.

Read with ``rollout_status.rollout_statuses`` / ``rollout_status`` — the query behind ``GET /api/latest/fleet/
rollouts[/{id}]``; the buttons post CSRF-checked forms to ``/console/rollouts/{id}/{action}``, which call the same
``RolloutEngine.transition`` as ``POST /api/latest/fleet/rollouts/{id}/{action}``.
"""

from __future__ import annotations

import sqlite3

from server_stub.console.bar_chart import stacked_bar
from server_stub.console.hosts_page import TARGET_TITLES, plural
from server_stub.console.layout import REFRESH_SECONDS, Section, page
from server_stub.console.markup import Markup, html, join
from server_stub.console.time_text import ago
from server_stub.rollout_health import WaveCounts, totals
from server_stub.rollout_model import RolloutState
from server_stub.rollout_rules import AdminAction
from server_stub.rollout_status import RolloutStatus, rollout_status, rollout_statuses

PATH = "/console/rollouts"
# what an admin may do in each state (rollout_rules.admin_transition refuses the rest)
ACTIONS: dict[RolloutState, tuple[AdminAction, ...]] = {
    RolloutState.RUNNING: (AdminAction.PAUSE, AdminAction.ABORT),
    RolloutState.PAUSED: (AdminAction.RESUME, AdminAction.ABORT),
    RolloutState.HALTED: (AdminAction.RESUME, AdminAction.ABORT),
    RolloutState.ABORTED: (),
    RolloutState.COMPLETED: (),
}
STATE_CSS = {
    RolloutState.RUNNING: "online",
    RolloutState.PAUSED: "paused",
    RolloutState.HALTED: "halted",
    RolloutState.ABORTED: "offline",
    RolloutState.COMPLETED: "online",
}


def _buttons(status: RolloutStatus, csrf_token: str) -> Markup:
    rollout = status.rollout
    forms = [
        html(
            '<form method="post" action="{path}/{id}/{action}" class="rollout-action">'
            '<input type="hidden" name="csrf" value="{csrf}">'
            '<button type="submit" class="{css}">{title}</button></form>',
            path=PATH,
            id=rollout.id,
            action=action.value,
            csrf=csrf_token,
            css="danger" if action is AdminAction.ABORT else "",
            title=action.value.capitalize(),
        )
        for action in ACTIONS.get(rollout.state, ())
    ]
    return html('<div class="actions">{forms}</div>', forms=join(forms))


def _wave_row(wave: WaveCounts, current: int, state: RolloutState) -> Markup:
    here = wave.wave == current and state in (RolloutState.RUNNING, RolloutState.PAUSED, RolloutState.HALTED)
    mark = "current" if here else "reached" if wave.reached else "waiting"
    return html(
        '<tr class="{mark}"><th scope="row">{number}</th><td>{percent} %</td><td>{mark}</td><td>{targeted}</td>'
        "<td>{updated}</td><td>{healthy}</td><td>{rolled_back}</td><td>{offline}</td><td>{on_from}</td></tr>",
        mark=mark,
        number=wave.wave + 1,
        percent=f"{wave.percent:g}",
        targeted=wave.targeted,
        updated=wave.updated,
        healthy=wave.healthy,
        rolled_back=html('<span class="failing">{n}</span>', n=wave.rolled_back) if wave.rolled_back else 0,
        offline=wave.offline,
        on_from=wave.on_from_version,
    )


def _card(status: RolloutStatus, now: float, csrf_token: str, *, with_events: bool) -> Markup:
    rollout, spec = status.rollout, status.rollout.spec
    summed = totals(status.waves)
    halt = Markup.trusted("")
    if rollout.halt_reason:
        halt = html('<p class="halt" role="alert"><b>Halted:</b> {reason}</p>', reason=rollout.halt_reason)
    next_wave = Markup.trusted("")
    if status.next_wave_at is not None and rollout.current_wave + 1 < rollout.wave_count:
        next_wave = html(" · next wave {when}", when=ago(status.next_wave_at, now))
    teams = "every host" if spec.team_ids is None else "teams " + ", ".join(str(t) for t in spec.team_ids)
    rows = join(_wave_row(w, rollout.current_wave, rollout.state) for w in status.waves)
    events = Markup.trusted("")
    if with_events:
        events = html(
            '<h3>Events</h3><ul class="plain events">{items}</ul>',
            items=join(
                html(
                    "<li>{when} <b>{event}</b> {detail}</li>", when=ago(e.at, now), event=e.event, detail=e.detail or ""
                )
                for e in status.events
            )
            or html('<li class="muted">none</li>'),
        )
    bar = stacked_bar(
        [
            ("healthy", summed["healthy"]),
            ("updated", max(0, summed["updated"] - summed["healthy"] - summed["rolled_back"])),
            ("rolled back", summed["rolled_back"]),
            ("not yet", max(0, summed["targeted"] - summed["updated"])),
        ],
        chart_id=f"rollout-bar-{rollout.id}",
    )
    return html(
        '<section class="card rollout" id="rollout-{id}"><div class="rollout-head">'
        '<h2><a href="{path}/{id}">{name}</a></h2><span class="status {css}">{state}</span>{buttons}</div>'
        '<p class="summary">{target} <code>{old}</code> → <code>{new}</code> for {teams} · wave {wave} of {waves} '
        "started {started}{next_wave} · soak {soak} · halts above {max_failed:g} % failed or below "
        "{min_healthy:g} % healthy</p>{halt}{bar}"
        '<table class="compact waves"><thead><tr><th scope="col">Wave</th><th scope="col">Of hosts</th>'
        '<th scope="col"></th><th scope="col">Targeted</th><th scope="col">Updated</th><th scope="col">Healthy</th>'
        '<th scope="col">Rolled back</th><th scope="col">Offline</th><th scope="col">On {old}</th></tr></thead>'
        '<tbody>{rows}</tbody><tfoot><tr><th scope="row">All</th><td></td><td></td><td>{t_targeted}</td>'
        "<td>{t_updated}</td><td>{t_healthy}</td><td>{t_rolled}</td><td>{t_offline}</td><td>{t_from}</td></tr>"
        "</tfoot></table>{events}</section>",
        id=rollout.id,
        path=PATH,
        name=spec.name,
        css=STATE_CSS.get(rollout.state, "offline"),
        state=str(rollout.state),
        buttons=_buttons(status, csrf_token),
        target=TARGET_TITLES.get(str(spec.target), str(spec.target)),
        old=spec.from_version,
        new=spec.version,
        teams=teams,
        wave=rollout.current_wave + 1,
        waves=rollout.wave_count,
        started=ago(rollout.wave_started_at, now),
        next_wave=next_wave,
        soak=_duration(spec.soak_seconds),
        max_failed=spec.rules.max_failed_percent,
        min_healthy=spec.rules.min_healthy_percent,
        halt=halt,
        bar=bar,
        rows=rows,
        t_targeted=summed["targeted"],
        t_updated=summed["updated"],
        t_healthy=summed["healthy"],
        t_rolled=summed["rolled_back"],
        t_offline=summed["offline"],
        t_from=summed["on_from_version"],
        events=events,
    )


def _duration(seconds: int) -> str:
    if seconds % 3600 == 0 and seconds:
        return f"{seconds // 3600} h"
    if seconds % 60 == 0 and seconds:
        return f"{seconds // 60} min"
    return f"{seconds} s"


def render_list(conn: sqlite3.Connection, now: float, csrf_token: str) -> Markup:
    statuses = rollout_statuses(conn, now)
    active = sum(1 for s in statuses if s.rollout.state in (RolloutState.RUNNING, RolloutState.PAUSED))
    cards = join(_card(s, now, csrf_token, with_events=False) for s in reversed(statuses)) or html(
        '<section class="card"><p class="muted">No rollouts yet. Start one with '
        "<code>fleet-stub rollouts create</code> or <code>POST /api/latest/fleet/rollouts</code> (docs/adr/0017)."
        "</p></section>"
    )
    main = html(
        '<div class="title"><h1>Rollouts</h1><p class="summary" id="rollout-summary">{count}, {active} active, '
        "newest first</p></div>{cards}",
        count=plural(len(statuses), "rollout"),
        active=active,
        cards=cards,
    )
    return page(
        "Rollouts", main, csrf_token=csrf_token, active=Section.ROLLOUTS, refresh_seconds=REFRESH_SECONDS, now=now
    )


def render_one(conn: sqlite3.Connection, rollout_id: int, now: float, csrf_token: str) -> Markup | None:
    status = rollout_status(conn, rollout_id, now)
    if status is None:
        return None
    main = html(
        '<p class="crumbs"><a href="{path}">Rollouts</a> ›</p>{card}',
        path=PATH,
        card=_card(status, now, csrf_token, with_events=True),
    )
    return page(
        status.rollout.spec.name,
        main,
        csrf_token=csrf_token,
        active=Section.ROLLOUTS,
        refresh_seconds=REFRESH_SECONDS,
        now=now,
    )
