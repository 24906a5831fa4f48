"""fleet-desktop's device-API client against an ``httpx.MockTransport`` server (docs/reference/fleet-api.md §5)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from desktop_tray.desktop_summary import DesktopSummary, OrgInfo, SummaryFormatError, parse_desktop_summary
from desktop_tray.device_client import DeviceClient
from desktop_tray.server_answers import (
    FleetFree,
    ServerFailure,
    SummaryReceived,
    TokenUnavailable,
    Unauthorized,
    Unreachable,
)
from desktop_tray.token_file import TokenFile

URL = "https://fleet.example.test"
OLD = "11111111-1111-4111-8111-111111111111"
NEW = "22222222-2222-4222-8222-222222222222"

Handler = Callable[[httpx.Request], httpx.Response]

FULL_SUMMARY = {
    "failing_policies_count": 3,
    "self_service": True,
    "notifications": {"needs_mdm_migration": True, "renew_enrollment_profile": False},
    "config": {
        "org_info": {
            "org_name": "Acme",
            "org_logo_url": "https://acme.test/logo.png",
            "org_logo_url_light_background": "",
            "contact_url": "https://acme.test/help",
        },
        "mdm": {"macos_migration": {"mode": "forced"}},
    },
    "alternative_browser_host": "fleet-browser.acme.test",
}


class Server:
    """Records (method, path) of every request; answers through a swappable handler."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[tuple[str, str]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append((request.method, request.url.raw_path.decode()))
        return self.handler(request)

    def tokens_used(self) -> list[str]:
        return [path.split("/")[5] for method, path in self.requests if path.startswith("/api/latest/fleet/device/")]


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "identifier"
    path.write_text(OLD)
    return path


def make_client(server: Server, token_file: Path, sleeps: list[float] | None = None, **kwargs: object) -> DeviceClient:
    recorded = sleeps if sleeps is not None else []
    http = httpx.Client(base_url=URL, transport=httpx.MockTransport(server))
    return DeviceClient(http, TokenFile(token_file), sleep=recorded.append, **kwargs)  # type: ignore[arg-type]


def test_summary_is_parsed_into_typed_values(token_file: Path) -> None:
    server = Server(lambda r: httpx.Response(200, json=FULL_SUMMARY))
    answer = make_client(server, token_file).desktop_summary()
    assert answer == SummaryReceived(
        DesktopSummary(
            failing_policies_count=3,
            self_service=True,
            needs_mdm_migration=True,
            renew_enrollment_profile=False,
            org_info=OrgInfo("Acme", "https://acme.test/logo.png", "", "https://acme.test/help"),
            macos_migration_mode="forced",
            alternative_browser_host="fleet-browser.acme.test",
        )
    )
    assert server.requests == [("GET", f"/api/latest/fleet/device/{OLD}/desktop")]


def test_401_retries_re_read_the_token_file_each_attempt(token_file: Path) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        token = request.url.path.split("/")[5]
        return httpx.Response(200, json={"failing_policies_count": 1}) if token == NEW else httpx.Response(401)

    sleeps: list[float] = []

    def sleep_and_rotate(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 2:  # orbit finishes its rotation during the second wait
            token_file.write_text(NEW)

    server = Server(handler)
    http = httpx.Client(base_url=URL, transport=httpx.MockTransport(server))
    client = DeviceClient(http, TokenFile(token_file), sleep=sleep_and_rotate)
    answer = client.desktop_summary()
    assert answer == SummaryReceived(DesktopSummary(failing_policies_count=1))
    assert server.tokens_used() == [OLD, OLD, NEW]
    assert sleeps == [1.0, 2.0]


def test_401_gives_up_after_4_attempts(token_file: Path) -> None:
    server = Server(lambda r: httpx.Response(401, json={"message": "Authentication required"}))
    sleeps: list[float] = []
    answer = make_client(server, token_file, sleeps).desktop_summary()
    assert answer == Unauthorized()
    assert len(server.requests) == 4
    assert sleeps == [1.0, 2.0, 3.0]


def test_attempts_are_configurable(token_file: Path) -> None:
    server = Server(lambda r: httpx.Response(401))
    sleeps: list[float] = []
    assert make_client(server, token_file, sleeps, max_attempts=1).desktop_summary() == Unauthorized()
    assert len(server.requests) == 1
    assert sleeps == []


def test_402_is_fleet_free(token_file: Path) -> None:
    server = Server(lambda r: httpx.Response(402, json={"message": "missing or invalid license"}))
    assert make_client(server, token_file).desktop_summary() == FleetFree()
    assert len(server.requests) == 1


def test_404_falls_back_to_policies(token_file: Path) -> None:
    policies = [
        {"id": 1, "name": "a", "response": "pass"},
        {"id": 2, "name": "b", "response": "fail"},
        {"id": 3, "name": "c", "response": ""},
        {"id": 4, "name": "d"},
    ]

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/desktop"):
            return httpx.Response(404, json={"message": "Resource Not Found"})
        return httpx.Response(200, json={"policies": policies})

    server = Server(handler)
    answer = make_client(server, token_file).desktop_summary()
    assert answer == SummaryReceived(DesktopSummary(failing_policies_count=3, self_service=False))
    assert server.requests == [
        ("GET", f"/api/latest/fleet/device/{OLD}/desktop"),
        ("GET", f"/api/latest/fleet/device/{OLD}/policies"),
    ]


def test_404_fallback_on_fleet_free_and_without_policies_route(token_file: Path) -> None:
    def free(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404 if request.url.path.endswith("/desktop") else 402)

    assert make_client(Server(free), token_file).desktop_summary() == FleetFree()
    answer = make_client(Server(lambda r: httpx.Response(404)), token_file).desktop_summary()
    assert isinstance(answer, ServerFailure) and answer.status == 404


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(200, text="{not json"),
        httpx.Response(200, content=b"\xff\xfe\x00"),
        httpx.Response(200, json=[1, 2]),
        httpx.Response(200, json={"failing_policies_count": "3"}),
        httpx.Response(200, json={"failing_policies_count": -1}),
        httpx.Response(200, json={"failing_policies_count": True}),
        httpx.Response(200, json={"failing_policies_count": 1.5}),
        httpx.Response(200, json={"self_service": "yes"}),
        httpx.Response(200, json={"notifications": []}),
        httpx.Response(200, json={"config": {"org_info": {"org_name": 7}}}),
        httpx.Response(200, json={"config": {"mdm": {"macos_migration": "forced"}}}),
        httpx.Response(200, json={"alternative_browser_host": 1}),
    ],
)
def test_malformed_answers_are_server_failures(token_file: Path, response: httpx.Response) -> None:
    answer = make_client(Server(lambda r: response), token_file).desktop_summary()
    assert isinstance(answer, ServerFailure)
    assert answer.status == 200
    assert OLD not in answer.reason


def test_malformed_policies_fallback(token_file: Path) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/desktop"):
            return httpx.Response(404)
        return httpx.Response(200, json={"policies": {"id": 1}})

    assert isinstance(make_client(Server(handler), token_file).desktop_summary(), ServerFailure)


def test_every_field_may_be_missing_or_null(token_file: Path) -> None:
    nulls = {key: None for key in FULL_SUMMARY}
    for body in ({}, nulls, {"config": {"org_info": None, "mdm": None}}):
        answer = make_client(Server(lambda r, b=body: httpx.Response(200, json=b)), token_file).desktop_summary()
        assert answer == SummaryReceived(DesktopSummary())


@pytest.mark.parametrize("code", [500, 502, 503, 400, 403, 429])
def test_other_statuses_are_server_failures(token_file: Path, code: int) -> None:
    answer = make_client(Server(lambda r: httpx.Response(code)), token_file).desktop_summary()
    assert answer == ServerFailure(f"unexpected HTTP status {code}", code)


@pytest.mark.parametrize(
    "error",
    [httpx.ConnectError("[Errno 111] Connection refused"), httpx.ReadTimeout("timed out"), httpx.ProxyError("bad")],
)
def test_no_answer_is_unreachable(token_file: Path, error: httpx.TransportError) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise error

    answer = make_client(Server(handler), token_file).desktop_summary()
    assert isinstance(answer, Unreachable)
    assert type(error).__name__ in answer.reason


def test_token_never_appears_in_reasons(token_file: Path) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(f"cannot reach {request.url}")

    answer = make_client(Server(handler), token_file).desktop_summary()
    assert isinstance(answer, Unreachable)
    assert OLD not in answer.reason and "<token>" in answer.reason


@pytest.mark.parametrize("content", ["", "   \n", "a/b", "x" * 300, "tok en"])
def test_unusable_token_file_asks_nothing(token_file: Path, content: str) -> None:
    token_file.write_text(content)
    server = Server(lambda r: httpx.Response(200, json={}))
    answer = make_client(server, token_file).desktop_summary()
    assert isinstance(answer, TokenUnavailable)
    assert server.requests == []


def test_missing_token_file(tmp_path: Path) -> None:
    server = Server(lambda r: httpx.Response(200, json={}))
    answer = make_client(server, tmp_path / "absent").desktop_summary()
    assert isinstance(answer, TokenUnavailable) and "absent" in answer.reason


def test_token_with_trailing_newline_is_trimmed(token_file: Path) -> None:
    token_file.write_text(OLD + "\n")
    server = Server(lambda r: httpx.Response(200, json={}))
    make_client(server, token_file).desktop_summary()
    assert server.tokens_used() == [OLD]


def test_capabilities_from_the_ping(token_file: Path) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert (request.method, request.url.path) == ("HEAD", "/api/fleet/device/ping")
        return httpx.Response(200, headers={"X-Fleet-Capabilities": "error_reporting, other"})

    assert make_client(Server(handler), token_file).capabilities() == frozenset({"error_reporting", "other"})
    assert make_client(Server(lambda r: httpx.Response(200)), token_file).capabilities() == frozenset()
    assert make_client(Server(lambda r: httpx.Response(404)), token_file).capabilities() == frozenset()
    assert make_client(Server(lambda r: httpx.Response(500)), token_file).capabilities() is None


def test_report_error_posts_a_fleetd_error(token_file: Path) -> None:
    bodies: list[dict[str, object]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            bodies.append(json.loads(request.content))
            assert request.url.path == f"/api/latest/fleet/device/{OLD}/debug/errors"
            return httpx.Response(200, json={})
        return httpx.Response(200, json={})

    client = make_client(Server(handler), token_file)
    assert not client.report_error("tray gone", version="1.0.0")  # no token read yet
    client.desktop_summary()
    assert client.report_error("tray gone", version="1.0.0", info={"backend": "xorg"})
    (body,) = bodies
    assert body["error_source"] == "fleet-desktop"
    assert body["error_source_version"] == "1.0.0"
    assert body["error_message"] == "tray gone"
    assert body["error_additional_info"] == {"backend": "xorg"}
    assert isinstance(body["error_timestamp"], str) and body["error_timestamp"].endswith("Z")


@pytest.mark.parametrize("payload", [None, [], "x", 3])
def test_parse_rejects_non_objects(payload: object) -> None:
    with pytest.raises(SummaryFormatError):
        parse_desktop_summary(payload)
