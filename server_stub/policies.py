"""Policies: yes/no SQL checks run on hosts through distributed queries; failing ones feed Fleet Desktop.

A policy passes on a host when its query ran without error and returned at least one row, fails when it returned
no rows, and has no result (null) when the query errored. ``platform`` is Fleet's comma-separated list
(``darwin``, ``windows``, ``linux``, ``chrome``; empty = all).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from server_stub.int_ranges import parse_id_or_none
from server_stub.transactions import write_transaction

QUERY_PREFIX = "fleet_policy_query_"
LINUX_FAMILY_EXCEPTIONS = {"darwin": "darwin", "windows": "windows", "chrome": "chrome"}


@dataclass(frozen=True)
class Policy:
    id: int
    name: str
    query: str
    description: str
    resolution: str
    platform: str
    team_id: int | None
    updated_at: float

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "name": self.name,
            "query": self.query,
            "description": self.description,
            "resolution": self.resolution,
            "platform": self.platform,
            "team_id": self.team_id,
        }


def platform_family(host_platform: str) -> str:
    """Fleet's platform family of an osquery ``os_version.platform`` value."""
    return LINUX_FAMILY_EXCEPTIONS.get(host_platform, "linux" if host_platform else "")


def platform_applies(policy_platform: str, host_platform: str) -> bool:
    """Whether a policy with ``platform`` (Fleet's comma-separated families, empty = all) applies to a host."""
    if not policy_platform.strip():
        return True
    wanted = {p.strip() for p in policy_platform.split(",") if p.strip()}
    return platform_family(host_platform) in wanted


def applies_to(policy: Policy, host_platform: str) -> bool:
    return platform_applies(policy.platform, host_platform)


def query_name(policy_id: int) -> str:
    return f"{QUERY_PREFIX}{policy_id}"


def policy_id_from_name(name: str) -> int | None:
    if not name.startswith(QUERY_PREFIX):
        return None
    suffix = name[len(QUERY_PREFIX) :]
    return parse_id_or_none(suffix)


def _policy(row: sqlite3.Row) -> Policy:
    return Policy(
        id=int(row["id"]),
        name=str(row["name"]),
        query=str(row["query"]),
        description=str(row["description"]),
        resolution=str(row["resolution"]),
        platform=str(row["platform"]),
        team_id=None if row["team_id"] is None else int(row["team_id"]),
        updated_at=float(row["updated_at"]),
    )


def list_policies(conn: sqlite3.Connection) -> list[Policy]:
    return [_policy(r) for r in conn.execute("SELECT * FROM policies ORDER BY id")]


def get_policy(conn: sqlite3.Connection, policy_id: int) -> Policy | None:
    row = conn.execute("SELECT * FROM policies WHERE id = ?", (policy_id,)).fetchone()
    return _policy(row) if row else None


def policies_for_host(conn: sqlite3.Connection, team_id: int | None, host_platform: str) -> list[Policy]:
    """Global policies plus the host's team's, restricted to its platform."""
    rows = conn.execute(
        "SELECT * FROM policies WHERE team_id IS NULL OR team_id = ? ORDER BY id", (team_id,)
    ).fetchall()
    return [p for p in (_policy(r) for r in rows) if applies_to(p, host_platform)]


class PolicyNameTaken(ValueError):
    pass


def upsert_policy(
    conn: sqlite3.Connection,
    *,
    name: str,
    query: str,
    description: str,
    resolution: str,
    platform: str,
    team_id: int | None,
    source: str,
    now: float,
    policy_id: int | None = None,
) -> Policy:
    """Create a policy, or update the one with ``policy_id`` (or, for config files, the one with this name)."""
    with write_transaction(conn):
        if policy_id is None and source == "config":
            row = conn.execute("SELECT id FROM policies WHERE name = ?", (name,)).fetchone()
            policy_id = None if row is None else int(row["id"])
        if policy_id is None:
            if conn.execute("SELECT 1 FROM policies WHERE name = ?", (name,)).fetchone():
                raise PolicyNameTaken(f"a policy named {name!r} already exists")
            cur = conn.execute(
                """INSERT INTO policies (name, query, description, resolution, platform, team_id, source, updated_at)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?)""",
                (name, query, description, resolution, platform, team_id, source, now),
            )
            policy_id = int(cur.lastrowid or 0)
        else:
            clash = conn.execute("SELECT id FROM policies WHERE name = ? AND id != ?", (name, policy_id)).fetchone()
            if clash:
                raise PolicyNameTaken(f"a policy named {name!r} already exists")
            old = conn.execute("SELECT query, platform, updated_at FROM policies WHERE id = ?", (policy_id,)).fetchone()
            changed = old is None or old["query"] != query or old["platform"] != platform
            conn.execute(
                """UPDATE policies SET name = ?, query = ?, description = ?, resolution = ?, platform = ?,
                   team_id = ?, source = ?, updated_at = ? WHERE id = ?""",
                (
                    name,
                    query,
                    description,
                    resolution,
                    platform,
                    team_id,
                    source,
                    now if changed else (old["updated_at"] if old else now),
                    policy_id,
                ),
            )
            if changed:
                conn.execute("DELETE FROM policy_results WHERE policy_id = ?", (policy_id,))
    policy = get_policy(conn, policy_id)
    assert policy is not None
    return policy


def delete_policies(conn: sqlite3.Connection, ids: list[int]) -> int:
    with write_transaction(conn):
        deleted = 0
        for policy_id in ids:
            deleted += conn.execute("DELETE FROM policies WHERE id = ?", (policy_id,)).rowcount
    return deleted


def delete_config_policies_except(conn: sqlite3.Connection, keep_names: set[str]) -> int:
    rows = conn.execute("SELECT id, name FROM policies WHERE source = 'config'").fetchall()
    return delete_policies(conn, [int(r["id"]) for r in rows if r["name"] not in keep_names])


def record_result(conn: sqlite3.Connection, host_id: int, policy_id: int, passes: bool | None, now: float) -> None:
    with write_transaction(conn):
        if conn.execute("SELECT 1 FROM policies WHERE id = ?", (policy_id,)).fetchone() is None:
            return
        conn.execute(
            """INSERT INTO policy_results (host_id, policy_id, passes, updated_at) VALUES (?, ?, ?, ?)
               ON CONFLICT(host_id, policy_id) DO UPDATE SET passes = excluded.passes,
               updated_at = excluded.updated_at""",
            (host_id, policy_id, None if passes is None else int(passes), now),
        )


@dataclass(frozen=True)
class PolicyResult:
    policy: Policy
    passes: bool | None

    @property
    def response(self) -> str:
        """Fleet's ``response`` field: "pass", "fail" or "" (no result yet / error)."""
        if self.passes is None:
            return ""
        return "pass" if self.passes else "fail"


def results_for_host(
    conn: sqlite3.Connection, host_id: int, team_id: int | None, host_platform: str
) -> list[PolicyResult]:
    answers = {
        int(r["policy_id"]): (None if r["passes"] is None else bool(r["passes"]))
        for r in conn.execute("SELECT policy_id, passes FROM policy_results WHERE host_id = ?", (host_id,))
    }
    return [PolicyResult(p, answers.get(p.id)) for p in policies_for_host(conn, team_id, host_platform)]


def failing_count(results: list[PolicyResult]) -> int:
    return sum(1 for r in results if r.passes is False)


def newest_change(policies: list[Policy]) -> float:
    return max((p.updated_at for p in policies), default=0.0)
