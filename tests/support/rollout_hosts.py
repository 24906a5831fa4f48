"""Helpers for the rollout tests: a served TUF repository with exact-version channels, orbits speaking raw HTTP
(enroll, config polls, outcome reports, restart acknowledgements; no orbit code, ADR 0002), and the wave hash
re-derived independently from the ADR's definition."""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.support.agents import orbit_enroll
from tests.support.stub_server import GLOBAL_SECRET
from tests.support.tuf_builder import RepoBuilder

ORBIT_VERSIONS = ("1.2.0", "1.3.0", "1.4.0")


def publish_repository(directory: Path) -> Path:
    """orbit 1.2.0–1.4.0 (linux) and stable; osqueryd 5.11.0 (linux, windows) and 5.12.0 (linux only)."""
    builder = RepoBuilder(directory)
    for version in ORBIT_VERSIONS:
        builder.add_target(f"orbit/linux/{version}/orbit", f"orbit {version}".encode(), version=version)
    builder.add_target("orbit/linux/stable/orbit", b"orbit 1.3.0", version="1.3.0")
    builder.add_target("osqueryd/linux/5.11.0/osqueryd", b"osqueryd 5.11.0", version="5.11.0")
    builder.add_target("osqueryd/windows/5.11.0/osqueryd.exe", b"osqueryd.exe 5.11.0", version="5.11.0")
    builder.add_target("osqueryd/linux/5.12.0/osqueryd", b"osqueryd 5.12.0", version="5.12.0")
    builder.publish()
    return directory


def expected_wave(rollout_id: int, identity: str, waves: Sequence[float]) -> int:
    """ADR 0017: sha256("<rollout id>:<identity>"), first 8 bytes as a big-endian fraction of 100."""
    digest = hashlib.sha256(f"{rollout_id}:{identity}".encode()).digest()
    point = int.from_bytes(digest[:8], "big") * 100.0 / 2**64
    return next((i for i, p in enumerate(waves) if point < p), len(waves) - 1)


@dataclass
class FakeOrbit:
    """One enrolled host as orbit shows itself to the server."""

    hardware_uuid: str
    node_key: str

    def config(self, client: httpx.Client) -> dict[str, object]:
        response = client.post("/api/fleet/orbit/config", json={"orbit_node_key": self.node_key})
        assert response.status_code == 200, response.text
        body: dict[str, object] = response.json()
        return body

    def channels(self, client: httpx.Client) -> dict[str, str]:
        channels = self.config(client).get("update_channels") or {}
        assert isinstance(channels, dict)
        return {str(k): str(v) for k, v in channels.items()}

    def notifications(self, client: httpx.Client) -> dict[str, object]:
        notes = self.config(client)["notifications"]
        assert isinstance(notes, dict)
        return notes

    def report(self, client: httpx.Client, *outcomes: dict[str, object]) -> httpx.Response:
        return client.post(
            "/api/fleet/orbit/update_outcomes", json={"orbit_node_key": self.node_key, "outcomes": list(outcomes)}
        )


def enroll_orbits(client: httpx.Client, count: int, *, secret: str = GLOBAL_SECRET) -> list[FakeOrbit]:
    orbits = []
    for _ in range(count):
        hardware_uuid = str(uuid.uuid4()).upper()
        orbits.append(FakeOrbit(hardware_uuid, orbit_enroll(client, hardware_uuid, secret=secret)))
    return orbits


def outcome(
    outcome_kind: str, version: str = "1.4.0", *, target: str = "orbit", previous: str | None = "1.3.0"
) -> dict[str, object]:
    return {
        "id": str(uuid.uuid4()),
        "target": target,
        "version": version,
        "previous_version": previous,
        "channel": version,
        "outcome": outcome_kind,
        "reason": None if outcome_kind == "confirmed" else f"{outcome_kind} in a test",
        "at": "2026-12-05T10:00:00Z",
    }


def in_wave(orbits: Iterable[FakeOrbit], rollout_id: int, waves: Sequence[float], wave: int) -> list[FakeOrbit]:
    return [o for o in orbits if expected_wave(rollout_id, o.hardware_uuid, waves) == wave]


def wait_for(predicate: Callable[[], bool], timeout: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"{what} not reached within {timeout} s")


def rollout(admin: httpx.Client, rollout_id: int) -> dict[str, object]:
    response = admin.get(f"/api/latest/fleet/rollouts/{rollout_id}")
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()["rollout"]
    return body


def create_rollout(admin: httpx.Client, **body: object) -> dict[str, object]:
    response = admin.post("/api/latest/fleet/rollouts", json=body)
    assert response.status_code == 200, response.text
    created: dict[str, object] = response.json()["rollout"]
    return created
