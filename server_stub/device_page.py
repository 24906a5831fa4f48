"""The "My device" web page that Fleet Desktop opens in the browser: server-rendered HTML, no JavaScript.

``/device/{token}`` (summary and policies), ``/device/{token}/policies`` and ``/device/{token}/self-service``.
An unknown or expired token gets a page that says so and what to do, with status 401.
"""

from __future__ import annotations

from html import escape

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from server_stub import device_tokens, hosts, policies
from server_stub.api import Family, Handler, endpoint
from server_stub.rfc3339 import iso_time
from server_stub.state import StubState

_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;background:#f9fafc;color:#192147}
header{background:#192147;color:#fff;padding:16px 32px}header a{color:#fff;margin-right:16px}
main{max-width:880px;margin:24px auto;padding:0 24px}
section{background:#fff;border:1px solid #e2e4ea;border-radius:8px;padding:16px 24px;margin-bottom:16px}
dl{display:grid;grid-template-columns:max-content 1fr;gap:6px 24px}dt{color:#515774}
.pass{color:#3db67b}.fail{color:#d66c7b}.none{color:#8b8fa2}
li{margin:8px 0}.resolution{color:#515774;font-size:.9em;margin-left:24px}
"""


# The page's URL carries the device token: nothing may cache it, frame it, run foreign script in it or leak the URL
# as a referrer. The only style is inline, the only links are our own pages and the transparency redirect.
PAGE_SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; form-action 'self'; "
        "base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
    "Pragma": "no-cache",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    html = (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head><body>{body}</body></html>"
    )
    return HTMLResponse(html, status_code=status, headers=PAGE_SECURITY_HEADERS)


def _invalid() -> HTMLResponse:
    return _page(
        "Link expired",
        "<main><section><h1>This link is invalid or has expired</h1>"
        "<p>My device links are valid for one hour. Open <b>My device</b> again from the Fleet Desktop menu "
        "in your system tray to get a fresh link.</p></section></main>",
        status=401,
    )


def _host_for(request: Request, state: StubState) -> hosts.Host | Response:
    """The token's host, or the page to answer: invalid link, or 429 once this client has guessed too often."""
    client = request.client.host if request.client is not None else "?"
    if (wait := state.device_guesses.retry_after(client)) is not None:
        page = _page("Too many attempts", "<main><h1>Too many attempts</h1><p>Try again later.</p></main>", 429)
        page.headers["Retry-After"] = str(max(1, round(wait)))
        return page
    token = str(request.path_params.get("token", ""))
    host_id = device_tokens.host_for_token(state.conn, token, state.clock())
    host = hosts.get_host(state.conn, host_id) if host_id is not None else None
    if host is None:
        state.device_guesses.failed(client)
        return _invalid()
    return host


def _nav(token: str) -> str:
    safe = escape(token, quote=True)
    return (
        f"<header><strong>My device</strong> &nbsp; <a href='/device/{safe}'>About</a>"
        f"<a href='/device/{safe}/policies'>Policies</a><a href='/device/{safe}/self-service'>Self-service</a>"
        "</header>"
    )


def _policies_section(state: StubState, host: hosts.Host) -> str:
    results = policies.results_for_host(state.conn, host.id, host.team_id, host.platform)
    if not results:
        return "<section><h2>Policies</h2><p>No policies apply to this device.</p></section>"
    failing = policies.failing_count(results)
    items = []
    for result in results:
        css, label = {"pass": ("pass", "Pass"), "fail": ("fail", "Fail")}.get(
            result.response, ("none", "No result yet")
        )
        resolution = ""
        if result.response == "fail" and result.policy.resolution:
            resolution = f"<div class='resolution'>To fix: {escape(result.policy.resolution)}</div>"
        items.append(
            f"<li><span class='{css}'>● {label}</span> — {escape(result.policy.name)}"
            f"<div class='resolution'>{escape(result.policy.description)}</div>{resolution}</li>"
        )
    return f"<section><h2>Policies</h2><p>{failing} failing of {len(results)}.</p><ul>{''.join(items)}</ul></section>"


async def my_device(request: Request, state: StubState) -> Response:
    host = _host_for(request, state)
    if not isinstance(host, hosts.Host):
        return host
    token = str(request.path_params["token"])
    rows = [
        ("Host name", host.computer_name or host.hostname),
        ("Operating system", host.os_version or host.platform),
        ("Hardware model", host.hardware_model),
        ("Serial number", host.hardware_serial),
        ("osquery version", host.osquery_version or "unknown"),
        ("Orbit version", host.orbit_version or "unknown"),
        ("Last seen", iso_time(host.seen_time) or "never"),
        ("Status", hosts.host_status(host, state.clock())),
    ]
    details = "".join(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in rows)
    body = (
        f"{_nav(token)}<main><section><h1>{escape(host.computer_name or host.hostname or 'This device')}</h1>"
        f"<dl>{details}</dl></section>{_policies_section(state, host)}</main>"
    )
    return _page("My device", body)


async def policies_page(request: Request, state: StubState) -> Response:
    host = _host_for(request, state)
    if not isinstance(host, hosts.Host):
        return host
    return _page("Policies", f"{_nav(str(request.path_params['token']))}<main>{_policies_section(state, host)}</main>")


async def self_service(request: Request, state: StubState) -> Response:
    host = _host_for(request, state)
    if not isinstance(host, hosts.Host):
        return host
    body = (
        f"{_nav(str(request.path_params['token']))}<main><section><h1>Self-service</h1>"
        "<p>Your IT department has not made any software available for self-service on this device.</p>"
        "</section></main>"
    )
    return _page("Self-service", body)


def routes() -> list[Route]:
    def route(path: str, name: str, handler: Handler) -> Route:
        return Route(path, endpoint(name, Family.WEB, handler), methods=["GET"])

    return [
        route("/device/{token}", "web_my_device", my_device),
        route("/device/{token}/policies", "web_policies", policies_page),
        route("/device/{token}/self-service", "web_self_service", self_service),
    ]
