"""The frame of every console page: head with our own stylesheet and script, navigation, logout form, and the
headers that go with it (no inline script or style anywhere, so the CSP can forbid both)."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import Enum

from starlette.responses import HTMLResponse

from server_stub.console.markup import Markup, html, join

CONSOLE_SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
        "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
    "Pragma": "no-cache",
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
    "Cross-Origin-Opener-Policy": "same-origin",
}
REFRESH_SECONDS = 10


class Section(Enum):
    HOSTS = ("Hosts", "/console/hosts")
    VERSIONS = ("Versions", "/console/versions")
    ROLLOUTS = ("Rollouts", "/console/rollouts")

    @property
    def title(self) -> str:
        return self.value[0]

    @property
    def path(self) -> str:
        return self.value[1]


def _nav(active: Section | None, sections: tuple[Section, ...]) -> Markup:
    links = (
        html('<a href="{path}"{current}>{title}</a>', path=s.path, title=s.title, current=_current(s is active))
        for s in sections
    )
    return join(links)


def _current(active: bool) -> Markup:
    return Markup.trusted(' aria-current="page" class="active"') if active else Markup.trusted("")


def page(
    title: str,
    main: Markup,
    *,
    csrf_token: str | None,
    active: Section | None = None,
    sections: tuple[Section, ...] = (Section.HOSTS, Section.VERSIONS, Section.ROLLOUTS),
    refresh_seconds: int | None = None,
    now: float | None = None,
) -> Markup:
    """A whole page. With ``csrf_token`` (logged in) the navigation and the logout form are shown."""
    header = Markup.trusted("")
    if csrf_token is not None:
        header = html(
            '<nav class="sections">{links}</nav>'
            '<form class="logout" method="post" action="/console/logout">'
            '<input type="hidden" name="csrf" value="{csrf}"><button type="submit">Log out</button></form>',
            links=_nav(active, sections),
            csrf=csrf_token,
        )
    footer = Markup.trusted("")
    if now is not None:
        stamp = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        refresh = f" · refreshed every {refresh_seconds} s while JavaScript is on" if refresh_seconds else ""
        footer = html(
            '<footer><span id="rendered-at">Rendered {stamp}</span>{refresh}</footer>', stamp=stamp, refresh=refresh
        )
    return html(
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        "<title>{title} · fleet-stub console</title>"
        '<link rel="icon" href="/console/static/favicon.svg" type="image/svg+xml">'
        '<link rel="stylesheet" href="/console/static/console.css">'
        '<script src="/console/static/console.js" defer></script></head>'
        '<body data-refresh="{refresh}"><header class="top"><a class="brand" href="/console/hosts">fleet-stub</a>'
        '{header}</header><main id="main">{main}</main>{footer}</body></html>',
        title=title,
        refresh=refresh_seconds or "",
        header=header,
        main=main,
        footer=footer,
    )


def response(document: Markup, status: int = 200) -> HTMLResponse:
    return HTMLResponse(str(document), status_code=status, headers=CONSOLE_SECURITY_HEADERS)


def message_page(status: int, title: str, message: str, *, csrf_token: str | None = None) -> HTMLResponse:
    main = html(
        '<section class="card"><h1>{title}</h1><p>{message}</p><p><a href="/console/hosts">Back to hosts</a></p>'
        "</section>",
        title=title,
        message=message,
    )
    return response(page(title, main, csrf_token=csrf_token), status)
