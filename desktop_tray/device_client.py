"""Fleet's device API as Fleet Desktop uses it (docs/reference/fleet-api.md §5, orbit-behaviour.md §10.4).

``desktop_summary()`` re-reads the token file and asks ``GET /api/latest/fleet/device/{token}/desktop``:

* 401 → retried up to ``max_attempts`` in total, sleeping ``attempt × 1 s`` and re-reading the token file before
  each attempt (orbit may be rotating it right now);
* 402 → ``FleetFree``; 404 → the old ``…/policies`` route, counting entries whose ``response`` is not ``"pass"``;
* no HTTP answer → ``Unreachable``; anything else unexpected (5xx, malformed JSON) → ``ServerFailure``.

``capabilities()`` asks ``HEAD /api/fleet/device/ping`` (``X-Fleet-Capabilities``), ``reachability()`` uses the same
cheap route to notice a lost connection between summary polls; ``report_error`` posts to
``…/debug/errors``, which Desktop only does when the server advertises ``error_reporting``. The token travels only
in the URL path (percent-encoded) and is scrubbed from every reason string.
"""

from __future__ import annotations

import datetime
import json
import logging
import time
from collections.abc import Callable
from urllib.parse import quote

import httpx

from desktop_tray.desktop_summary import (
    DesktopSummary,
    SummaryFormatError,
    count_failing_policies,
    parse_desktop_summary,
)
from desktop_tray.server_answers import (
    FleetFree,
    ServerAnswer,
    ServerFailure,
    SummaryReceived,
    TokenUnavailable,
    Unauthorized,
    Unreachable,
)
from desktop_tray.token_file import TokenSource, TokenUnavailableError

log = logging.getLogger(__name__)

DEVICE_BASE = "/api/latest/fleet/device/{token}"
DESKTOP_PATH = DEVICE_BASE + "/desktop"
POLICIES_PATH = DEVICE_BASE + "/policies"
ERRORS_PATH = DEVICE_BASE + "/debug/errors"
PING_PATH = "/api/fleet/device/ping"
CAPABILITIES_HEADER = "X-Fleet-Capabilities"
ERROR_REPORTING = "error_reporting"
DEFAULT_ATTEMPTS = 4


def _scrub(text: str, token: str | None) -> str:
    return text.replace(token, "<token>") if token else text


def _describe_transport_error(exc: httpx.HTTPError, token: str | None) -> str:
    detail = str(exc) or exc.__class__.__name__
    return _scrub(f"{exc.__class__.__name__}: {detail}", token)


class DeviceClient:
    def __init__(
        self,
        http: httpx.Client,
        tokens: TokenSource,
        *,
        sleep: Callable[[float], object] = time.sleep,
        max_attempts: int = DEFAULT_ATTEMPTS,
        retry_step: float = 1.0,
    ) -> None:
        self._http = http
        self._tokens = tokens
        self._sleep = sleep
        self._max_attempts = max(1, max_attempts)
        self._retry_step = retry_step

    def close(self) -> None:
        self._http.close()

    def _get(self, template: str) -> httpx.Response | ServerAnswer:
        """GET a device route with Fleet's invalid-token retry; an answer object when no response is usable."""
        for attempt in range(1, self._max_attempts + 1):
            try:
                token = self._tokens.read()
            except TokenUnavailableError as exc:
                return TokenUnavailable(str(exc))
            try:
                response = self._http.get(template.format(token=quote(token, safe="")))
            except httpx.TransportError as exc:
                return Unreachable(_describe_transport_error(exc, token))
            except httpx.HTTPError as exc:  # e.g. an invalid URL built from the configuration
                return ServerFailure(_describe_transport_error(exc, token))
            if response.status_code != httpx.codes.UNAUTHORIZED or attempt == self._max_attempts:
                return response
            delay = attempt * self._retry_step
            log.info("event=token_rejected attempt=%d retry_in=%.0fs", attempt, delay)
            self._sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def desktop_summary(self) -> ServerAnswer:
        response = self._get(DESKTOP_PATH)
        if not isinstance(response, httpx.Response):
            return response
        status = response.status_code
        if status == httpx.codes.NOT_FOUND:
            return self._policies_fallback()
        return self._classify(response, parse_desktop_summary)

    def _policies_fallback(self) -> ServerAnswer:
        log.info("event=desktop_route_missing fallback=policies")
        response = self._get(POLICIES_PATH)
        if not isinstance(response, httpx.Response):
            return response
        return self._classify(response, _summary_from_policies)

    def _classify(self, response: httpx.Response, parse: Callable[[object], DesktopSummary]) -> ServerAnswer:
        status = response.status_code
        if status == httpx.codes.OK:
            try:
                return SummaryReceived(parse(response.json()))
            except (json.JSONDecodeError, UnicodeDecodeError):
                return ServerFailure("the answer is not JSON", status)
            except SummaryFormatError as exc:
                return ServerFailure(f"malformed answer: {exc}", status)
        if status == httpx.codes.UNAUTHORIZED:
            return Unauthorized()
        if status == httpx.codes.PAYMENT_REQUIRED:
            return FleetFree()
        return ServerFailure(f"unexpected HTTP status {status}", status)

    def reachability(self) -> Unreachable | None:
        """``HEAD /api/fleet/device/ping`` (no token, no body): ``Unreachable`` when no HTTP answer came back."""
        try:
            self._http.head(PING_PATH)
        except httpx.TransportError as exc:
            return Unreachable(_describe_transport_error(exc, None))
        except httpx.HTTPError:
            return None
        return None

    def capabilities(self) -> frozenset[str] | None:
        """The device capabilities the server advertises; empty for old servers (404), None when unknown."""
        try:
            response = self._http.head(PING_PATH)
        except httpx.HTTPError as exc:
            log.info("event=capabilities_unknown reason=%r", _describe_transport_error(exc, None))
            return None
        if response.status_code == httpx.codes.NOT_FOUND:
            return frozenset()
        if response.status_code != httpx.codes.OK:
            return None
        names = ",".join(response.headers.get_list(CAPABILITIES_HEADER))
        return frozenset(part.strip() for part in names.split(",") if part.strip())

    def report_error(self, message: str, *, version: str, info: dict[str, object] | None = None) -> bool:
        """Post one FleetdError (fleet-api.md §5.5); True when the server took it."""
        token = self._tokens.cached
        if not token:
            return False
        body = {
            "error_source": "fleet-desktop",
            "error_source_version": version,
            "error_timestamp": datetime.datetime.now(datetime.UTC).isoformat().replace("+00:00", "Z"),
            "error_message": message,
            "error_additional_info": info or {},
            "vital": False,
        }
        try:
            response = self._http.post(ERRORS_PATH.format(token=quote(token, safe="")), json=body)
        except httpx.HTTPError as exc:
            log.info("event=error_report_failed reason=%r", _describe_transport_error(exc, token))
            return False
        return response.is_success


def _summary_from_policies(payload: object) -> DesktopSummary:
    # servers without /desktop predate self-service: do not offer it
    return DesktopSummary(failing_policies_count=count_failing_policies(payload), self_service=False)
