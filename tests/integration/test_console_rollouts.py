"""The console's Rollouts pages and the update outcomes on the host pages (issues 18 and 20): what the rollout REST
API says, shown per wave; pause / resume / abort as CSRF-checked forms that do what the REST calls do; orbit's
outcome reports (rollbacks with their reason) in the Hosts table and on the host's page, escaped.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest

from tests.support.rollout_hosts import (
    FakeOrbit,
    create_rollout,
    enroll_orbits,
    in_wave,
    outcome,
    publish_repository,
    rollout,
    wait_for,
)
from tests.support.stub_server import FakeClock, RunningStub, running_stub

pytestmark = pytest.mark.timeout(180)

WAVES = [50, 100]
HOSTILE_REASON = "<script>alert(1)</script> exit status 3"


@pytest.fixture(scope="module")
def tuf_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return publish_repository(tmp_path_factory.mktemp("tuf") / "repository")


@pytest.fixture
def stub(tmp_path: Path, clock: FakeClock, tuf_repo: Path) -> Iterator[RunningStub]:
    with running_stub(tmp_path / "stub", clock=clock, tuf_repo=tuf_repo, rollout_tick=0.05) as running:
        yield running


@pytest.fixture
def console(stub: RunningStub) -> Iterator[httpx.Client]:
    with stub.client(follow_redirects=False) as client:
        assert client.post("/console/login", data={"token": stub.admin_token}).status_code == 303
        yield client


def _csrf(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found
    return found.group(1)


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.texts: list[str] = []
        self.tags: list[str] = []
        self.forms: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        if tag == "form":
            self.forms.append(dict(attrs).get("action") or "")

    def handle_data(self, data: str) -> None:
        if data.strip():
            self.texts.append(data.strip())


def _parse(page: str) -> _Text:
    parser = _Text()
    parser.feed(page)
    return parser


def _halted_rollout(stub: RunningStub) -> tuple[int, list[FakeOrbit]]:
    """20 orbits on a rollout of orbit 1.3.0 → 1.4.0; three of the first wave report failures: halted."""
    with stub.client() as client, stub.admin() as admin:
        orbits = enroll_orbits(client, 20)
        first = in_wave(orbits, 1, WAVES, 0)
        assert len(first) >= 4
        created = create_rollout(
            admin,
            name="orbit 1.4.0 to everyone",
            target="orbit",
            version="1.4.0",
            from_version="1.3.0",
            waves=WAVES,
            soak_seconds=3600,
            halt_rules={"max_failed_percent": 100 * 2.5 / len(first), "min_healthy_percent": 80},
        )
        rollout_id = int(str(created["id"]))
        hostile = outcome("rolled_back")
        hostile["reason"] = HOSTILE_REASON
        assert first[0].report(client, hostile).status_code == 200
        first[1].report(client, outcome("crash_loop"))
        first[2].report(client, outcome("install_failed"))
        first[3].report(client, outcome("confirmed"))
        wait_for(lambda: rollout(admin, rollout_id)["state"] == "halted", what="the rollout to halt")
    return rollout_id, orbits


def test_rollouts_page_shows_the_waves_the_api_reports(stub: RunningStub, console: httpx.Client) -> None:
    rollout_id, _ = _halted_rollout(stub)
    with stub.admin() as admin:
        api = rollout(admin, rollout_id)
    page = console.get("/console/rollouts").text
    text = " ".join(_parse(page).texts)
    assert "orbit 1.4.0 to everyone" in text and "halted" in text
    assert str(api["halt_reason"]) in text
    rows = re.findall(
        r'<tr class="(\w+)"><th scope="row">(\d)</th><td>[\d.]+ %</td><td>\w+</td>((?:<td>.*?</td>){6})', page
    )
    assert [int(r[1]) for r in rows] == [1, 2]
    for (_, _, cells), wave in zip(rows, api["wave_status"], strict=True):  # type: ignore[call-overload]
        numbers = [int(n) for n in re.sub(r"<[^>]+>", " ", cells).split()]
        expected = [wave[k] for k in ("targeted", "updated", "healthy", "rolled_back", "offline", "on_from_version")]
        assert numbers == expected, (cells, wave)
    actions = _parse(page).forms
    assert f"/console/rollouts/{rollout_id}/resume" in actions and f"/console/rollouts/{rollout_id}/abort" in actions
    assert f"/console/rollouts/{rollout_id}/pause" not in actions  # halted: resume or abort only
    detail = console.get(f"/console/rollouts/{rollout_id}").text
    assert "Events" in detail and "halted" in " ".join(_parse(detail).texts)


def test_buttons_act_like_the_rest_api_and_need_the_csrf_token(stub: RunningStub, console: httpx.Client) -> None:
    rollout_id, _ = _halted_rollout(stub)
    csrf = _csrf(console.get("/console/rollouts").text)
    with stub.admin() as admin:
        for form in ({}, {"csrf": "forged"}):
            assert console.post(f"/console/rollouts/{rollout_id}/abort", data=form).status_code == 403
        assert (
            console.post(
                f"/console/rollouts/{rollout_id}/abort", data={"csrf": csrf}, headers={"Origin": "https://evil.example"}
            ).status_code
            == 403
        )
        assert rollout(admin, rollout_id)["state"] == "halted"

        resumed = console.post(f"/console/rollouts/{rollout_id}/resume", data={"csrf": csrf})
        assert resumed.status_code == 303 and resumed.headers["location"] == f"/console/rollouts/{rollout_id}"
        # the failures are still there: as with POST /rollouts/{id}/resume, the rule fires again
        wait_for(lambda: rollout(admin, rollout_id)["state"] == "halted", what="the rollout to halt again")

        aborted = console.post(f"/console/rollouts/{rollout_id}/abort", data={"csrf": csrf})
        assert aborted.status_code == 303 and rollout(admin, rollout_id)["state"] == "aborted"
        page = console.get(f"/console/rollouts/{rollout_id}").text
        assert not [f for f in _parse(page).forms if "/console/rollouts/" in f]  # final: no buttons
        refused = console.post(f"/console/rollouts/{rollout_id}/resume", data={"csrf": csrf})
        assert refused.status_code == 409 and "Refused" in refused.text
        assert console.post(f"/console/rollouts/{rollout_id}/explode", data={"csrf": csrf}).status_code == 404
        assert console.post("/console/rollouts/999/pause", data={"csrf": csrf}).status_code == 404
        assert console.get("/console/rollouts/999").status_code == 404
        assert console.get("/console/rollouts/x").status_code == 404


def test_pause_and_resume_from_the_console(stub: RunningStub, console: httpx.Client) -> None:
    with stub.client() as client, stub.admin() as admin:
        enroll_orbits(client, 4)
        created = create_rollout(admin, target="orbit", version="1.4.0", from_version="1.3.0", waves=WAVES)
        rollout_id = int(str(created["id"]))
        csrf = _csrf(console.get("/console/rollouts").text)
        assert console.post(f"/console/rollouts/{rollout_id}/pause", data={"csrf": csrf}).status_code == 303
        assert rollout(admin, rollout_id)["state"] == "paused"
        forms = _parse(console.get("/console/rollouts").text).forms
        assert (
            f"/console/rollouts/{rollout_id}/resume" in forms and f"/console/rollouts/{rollout_id}/pause" not in forms
        )
        assert console.post(f"/console/rollouts/{rollout_id}/resume", data={"csrf": csrf}).status_code == 303
        assert rollout(admin, rollout_id)["state"] == "running"


def test_outcomes_show_on_the_hosts_table_and_the_host_page(stub: RunningStub, console: httpx.Client) -> None:
    _halted_rollout(stub)
    with stub.admin() as admin:
        rows = admin.get("/api/latest/fleet/hosts", params={"per_page": "100"}).json()["hosts"]
        reported = [h for h in rows if h["last_update_outcome"]]
        assert len(reported) == 4
        hostile = next(h for h in reported if h["last_update_outcome"]["reason"] == HOSTILE_REASON)
        assert hostile["last_update_outcome"]["outcome"] == "rolled_back"
        versions = admin.get(f"/api/latest/fleet/hosts/{hostile['id']}/versions").json()
        assert versions["outcomes"][0]["reason"] == HOSTILE_REASON
    table = console.get("/console/hosts", params={"per_page": "100"}).text
    assert table.count('class="outcome bad"') == 3 and table.count('class="outcome good"') == 1
    assert "rolled back" in table and "crash loop" in table and "install failed" in table
    assert "<script>alert(1)" not in table and 'title="&lt;script&gt;alert(1)&lt;/script&gt; exit status 3"' in table
    host = console.get(f"/console/hosts/{hostile['id']}").text
    parsed = _parse(host)
    assert HOSTILE_REASON in parsed.texts and parsed.tags.count("script") == 1  # ours only
    outcomes = host[host.index('id="update-outcomes"') :]
    assert "<code>1.3.0</code> → <code>1.4.0</code>" in outcomes and 'class="outcome bad">rolled back<' in outcomes


def test_no_rollouts_yet(console: httpx.Client) -> None:
    page = console.get("/console/rollouts")
    assert page.status_code == 200 and "No rollouts yet." in page.text
