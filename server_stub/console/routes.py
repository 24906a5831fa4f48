"""The console's routes: login with the admin token, session cookie, CSRF-checked forms, the pages, static files.

* ``GET /`` and ``GET /console`` lead to the Hosts page (or the login page).
* ``POST /console/login`` compares the submitted token with the admin token (constant time, failures paced per
  client address like device-token guesses) and sets ``__Host-fleet_console``: ``Secure``, ``HttpOnly``,
  ``SameSite=Strict``, ``Path=/``, no ``Domain``, ``Max-Age`` = the session's longest life.
* Every ``POST`` must come from our own pages: a cross-site ``Origin`` or ``Sec-Fetch-Site`` is refused (403) and,
  once logged in, the form's ``csrf`` field must equal the session's token (403 otherwise).
* A page asked for without a valid session redirects to the login page (which says when the session expired).
* Bad list parameters are a 400 page; nothing a client sends makes a 5xx.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from importlib import resources
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from server_stub.admin_sessions import AdminSession, SessionState, csrf_matches
from server_stub.api import Family, endpoint
from server_stub.console import host_page, hosts_page, rollouts_page, versions_page
from server_stub.console.layout import CONSOLE_SECURITY_HEADERS, message_page, page, response
from server_stub.console.markup import Markup, html
from server_stub.errors import ApiError
from server_stub.host_listing import HostQueryError, parse_host_list_query
from server_stub.http_body import KIB, read_limited
from server_stub.int_ranges import IdOutOfRange, parse_id
from server_stub.rollout_rules import AdminAction
from server_stub.rollouts import RolloutRefused
from server_stub.state import StubState

log = logging.getLogger(__name__)

COOKIE = "__Host-fleet_console"
FORM_LIMIT = 128 * KIB
MAX_FORM_FIELDS = 20
HOSTS = "/console/hosts"
LOGIN = "/console/login"
STATIC_TYPES = {
    "console.css": "text/css; charset=utf-8",
    "console.js": "text/javascript; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}


def _load_static() -> dict[str, bytes]:
    folder = resources.files("server_stub.console") / "static"
    return {name: (folder / name).read_bytes() for name in STATIC_TYPES}


STATIC = _load_static()

ConsoleHandler = Callable[[Request, StubState], Awaitable[Response]]


class _Refused(Exception):
    def __init__(self, response: Response) -> None:
        super().__init__("refused")
        self.response = response


def _redirect(path: str) -> RedirectResponse:
    answer = RedirectResponse(path, status_code=303)
    answer.headers.update({"Cache-Control": "no-store", "Referrer-Policy": "same-origin"})
    return answer


def _forget_cookie(answer: Response) -> Response:
    answer.delete_cookie(COOKIE, path="/", secure=True, httponly=True, samesite="strict")
    return answer


def _session(request: Request, state: StubState) -> AdminSession:
    """The request's valid session; otherwise the login page (GET) or a 403 (POST) is the answer.

    The cookie is cleared only when one was sent and is dead: a request without it (a link or form from another
    site, which gets no ``SameSite=Strict`` cookie) must not log the admin out of the browser's real session."""
    presented = request.cookies.get(COOKIE)
    found = state.sessions.lookup(presented)
    if found.session is not None:
        state.fresh_seen_times()  # the pages show who is online
        return found.session
    if request.method != "GET":
        answer: Response = message_page(403, "Not logged in", "Log in again, then repeat what you did.")
    else:
        answer = _redirect(LOGIN + ("?expired=1" if found.state is SessionState.EXPIRED else ""))
    raise _Refused(_forget_cookie(answer) if presented else answer)


def _same_origin(request: Request) -> bool:
    fetch_site = request.headers.get("sec-fetch-site")
    if fetch_site is not None and fetch_site not in ("same-origin", "none"):
        return False
    origin = request.headers.get("origin")
    return origin is None or origin == f"{request.url.scheme}://{request.url.netloc}"


async def _form(request: Request) -> dict[str, str]:
    """An ``application/x-www-form-urlencoded`` body, refused unless it comes from one of our pages."""
    if not _same_origin(request):
        raise _Refused(message_page(403, "Refused", "This form was sent from another site."))
    raw = await read_limited(request, FORM_LIMIT)
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if raw and kind != "application/x-www-form-urlencoded":
        raise _Refused(message_page(415, "Unsupported form", "Forms are sent URL-encoded."))
    try:
        parsed = parse_qs(
            raw.decode("utf-8", "replace"), keep_blank_values=True, max_num_fields=MAX_FORM_FIELDS, errors="replace"
        )
    except ValueError:
        raise _Refused(message_page(400, "Bad form", "The form has too many fields.")) from None
    return {key: values[0] for key, values in parsed.items() if values}


async def _checked_form(request: Request, state: StubState) -> tuple[AdminSession, dict[str, str]]:
    if not _same_origin(request):
        raise _Refused(message_page(403, "Refused", "This form was sent from another site."))
    session = _session(request, state)
    form = await _form(request)
    if not csrf_matches(session, form.get("csrf")):
        log.warning("event=console_csrf_refused path=%s", request.url.path)
        raise _Refused(
            message_page(403, "Refused", "The form's security token is missing or stale: reload the page and retry.")
        )
    return session, form


def _console(name: str, handler: ConsoleHandler) -> Callable[[Request], Awaitable[Response]]:
    async def run(request: Request, state: StubState) -> Response:
        try:
            return await handler(request, state)
        except _Refused as refused:
            return refused.response
        except HostQueryError as exc:
            return message_page(400, "Bad request", str(exc), csrf_token=None)
        except ApiError as exc:
            return message_page(exc.status, "Request failed", exc.reason)

    return endpoint(name, Family.WEB, run)


# --- login and logout -------------------------------------------------------------------------------------------


def _login_page(status: int, notice: str = "", *, error: bool = False) -> Response:
    note = (
        html('<p class="{css}" role="alert">{text}</p>', css="error" if error else "notice", text=notice)
        if notice
        else Markup("")
    )
    main = html(
        '<section class="card login"><h1>Log in</h1>{note}<form method="post" action="{login}">'
        '<input type="text" name="username" value="admin" autocomplete="username" hidden>'
        '<label for="token">Admin token</label>'
        '<input id="token" name="token" type="password" autocomplete="current-password" required autofocus>'
        '<p class="note">The token is in <code>server.json</code> or <code>admin_token</code> in the stub\'s data '
        'directory.</p><button type="submit">Log in</button></form></section>',
        note=note,
        login=LOGIN,
    )
    return response(page("Log in", main, csrf_token=None), status)


async def login_form(request: Request, state: StubState) -> Response:
    if state.sessions.lookup(request.cookies.get(COOKIE)).session is not None:
        return _redirect(HOSTS)
    if request.query_params.get("expired"):
        return _login_page(200, "Your session has expired. Log in again.")
    if request.query_params.get("logged_out"):
        return _login_page(200, "You are logged out.")
    return _login_page(200)


async def login(request: Request, state: StubState) -> Response:
    client = request.client.host if request.client is not None else "?"
    if (wait := state.login_guesses.retry_after(client)) is not None:
        answer = _login_page(429, "Too many failed attempts. Try again later.", error=True)
        answer.headers["Retry-After"] = str(max(1, round(wait)))
        return answer
    form = await _form(request)
    token = form.get("token", "").strip()
    if not token or not hmac.compare_digest(token.encode(), state.admin_token.encode()):
        state.login_guesses.failed(client)
        log.warning("event=console_login_failed client=%s", client)
        return _login_page(401, "That is not the admin token.", error=True)
    cookie_value, session = state.sessions.create()
    log.info("event=console_login client=%s", client)
    answer = _redirect(HOSTS)
    answer.set_cookie(
        COOKIE,
        cookie_value,
        max_age=int(state.sessions.remaining_seconds(session)),
        path="/",
        secure=True,
        httponly=True,
        samesite="strict",
    )
    return answer


async def logout(request: Request, state: StubState) -> Response:
    await _checked_form(request, state)
    state.sessions.end(request.cookies.get(COOKIE))
    return _forget_cookie(_redirect(LOGIN + "?logged_out=1"))


async def root(request: Request, state: StubState) -> Response:
    return _redirect(HOSTS)


# --- pages ------------------------------------------------------------------------------------------------------


async def hosts(request: Request, state: StubState) -> Response:
    session = _session(request, state)
    query = parse_host_list_query(
        request.query_params, default_per_page=hosts_page.DEFAULT_PER_PAGE, max_per_page=hosts_page.MAX_PER_PAGE
    )
    document = await state.reader.run(hosts_page.render, query, state.clock(), session.csrf_token)
    return response(document)


def _host_id(request: Request) -> int:
    raw = str(request.path_params.get("host_id", ""))
    try:
        value = parse_id(raw)
    except IdOutOfRange:
        value = None
    if value is None:
        raise _Refused(message_page(404, "No such host", "There is no host with this id."))
    return value


def _optional_id(text: str | None) -> int | None:
    if not text:
        return None
    try:
        value = parse_id(text)
    except IdOutOfRange:
        value = None
    if value is None:
        raise HostQueryError("query_id must be a whole number")
    return value


async def host(request: Request, state: StubState) -> Response:
    session = _session(request, state)
    host_id = _host_id(request)
    query_id = _optional_id(request.query_params.get("query_id"))
    document = await state.reader.run(host_page.render, host_id, state.clock(), session.csrf_token, query_id)
    if document is None:
        return message_page(404, "No such host", "There is no host with this id.", csrf_token=session.csrf_token)
    return response(document)


async def host_query(request: Request, state: StubState) -> Response:
    """The live-query form: ask the host through the REST API's live-query hub, then show its answer."""
    session, form = await _checked_form(request, state)
    host_id = _host_id(request)
    sql = form.get("query", "").strip()
    if not sql:
        return message_page(422, "No query", "Write a query first.", csrf_token=session.csrf_token)
    exists = await state.reader.run(
        lambda conn: conn.execute("SELECT 1 FROM hosts WHERE id = ?", (host_id,)).fetchone()
    )
    if exists is None:
        return message_page(404, "No such host", "There is no host with this id.", csrf_token=session.csrf_token)
    query_id = state.live.create(host_id, sql)
    await state.live.wait(query_id, state.settings.live_query_timeout)
    return _redirect(f"/console/hosts/{host_id}?query_id={query_id}#live-query")


async def versions(request: Request, state: StubState) -> Response:
    session = _session(request, state)
    document = await state.reader.run(versions_page.render, state.clock(), session.csrf_token)
    return response(document)


async def rollouts(request: Request, state: StubState) -> Response:
    session = _session(request, state)
    document = await state.reader.run(rollouts_page.render_list, state.clock(), session.csrf_token)
    return response(document)


def _rollout_id(request: Request) -> int:
    try:
        value = parse_id(str(request.path_params.get("rollout_id", "")))
    except IdOutOfRange:
        value = None
    if value is None:
        raise _Refused(message_page(404, "No such rollout", "There is no rollout with this id."))
    return value


async def rollout(request: Request, state: StubState) -> Response:
    session = _session(request, state)
    rollout_id = _rollout_id(request)
    document = await state.reader.run(rollouts_page.render_one, rollout_id, state.clock(), session.csrf_token)
    if document is None:
        return message_page(404, "No such rollout", "There is no rollout with this id.", csrf_token=session.csrf_token)
    return response(document)


async def rollout_action(request: Request, state: StubState) -> Response:
    """Pause, resume or abort: the same engine call as ``POST /api/latest/fleet/rollouts/{id}/{action}``."""
    session, _ = await _checked_form(request, state)
    rollout_id = _rollout_id(request)
    try:
        action = AdminAction(str(request.path_params.get("action", "")))
    except ValueError:
        return message_page(404, "Not found", "Rollouts can be paused, resumed or aborted.")
    try:
        state.rollouts.transition(rollout_id, action, state.clock())
    except RolloutRefused as exc:
        return message_page(exc.status, "Refused", str(exc), csrf_token=session.csrf_token)
    log.info("event=console_rollout_%s rollout_id=%d", action.value, rollout_id)
    return _redirect(f"/console/rollouts/{rollout_id}")


async def static_file(request: Request, state: StubState) -> Response:
    name = str(request.path_params.get("name", ""))
    if name not in STATIC:
        return message_page(404, "Not found", "No such file.")
    headers = {**CONSOLE_SECURITY_HEADERS, "Cache-Control": "no-cache"}
    return Response(STATIC[name], media_type=STATIC_TYPES[name], headers=headers)


def routes() -> list[Route]:
    def route(path: str, name: str, handler: ConsoleHandler, methods: list[str]) -> Route:
        return Route(path, _console(name, handler), methods=methods)

    return [
        route("/", "console_root", root, ["GET"]),
        route("/console", "console_root", root, ["GET"]),
        route("/console/", "console_root", root, ["GET"]),
        route(LOGIN, "console_login_form", login_form, ["GET"]),
        route(LOGIN, "console_login", login, ["POST"]),
        route("/console/logout", "console_logout", logout, ["POST"]),
        route(HOSTS, "console_hosts", hosts, ["GET"]),
        route("/console/hosts/{host_id}", "console_host", host, ["GET"]),
        route("/console/hosts/{host_id}/query", "console_host_query", host_query, ["POST"]),
        route("/console/versions", "console_versions", versions, ["GET"]),
        route("/console/rollouts", "console_rollouts", rollouts, ["GET"]),
        route("/console/rollouts/{rollout_id}", "console_rollout", rollout, ["GET"]),
        route("/console/rollouts/{rollout_id}/{action}", "console_rollout_action", rollout_action, ["POST"]),
        route("/console/static/{name}", "console_static", static_file, ["GET"]),
    ]
