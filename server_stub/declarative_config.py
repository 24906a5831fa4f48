"""The declarative configuration file (``--config FILE``): teams, enroll secrets, agent options, policies, rollouts.

TOML (``.toml``) or JSON (anything else). Applied idempotently at start and on SIGHUP: what the file declares is
created or updated; config-managed secrets and policies that disappeared from the file are removed; objects
created through the admin API are left alone. A file with an error changes nothing.

```toml
[global]
enroll_secrets = ["global-secret"]
agent_options = { config = { options = { distributed_interval = 10 } } }
orbit_notifications = {}

[[teams]]
name = "Workstations"
enroll_secrets = ["ws-secret"]
agent_options = { update_channels = { osqueryd = "edge" } }

[[policies]]
name = "Firewall enabled"
query = "SELECT 1 FROM system_info"
team = "Workstations"           # omit for a global policy
platform = "linux"              # darwin, windows, linux, chrome (comma-separated); omit for all
description = "…"
resolution = "…"

[[rollouts]]                    # created once, then left to run (docs/adr/0017)
name = "orbit-1.4.0"            # the key: a started rollout is never redefined, give a new one a new name
target = "orbit"                # orbit, osqueryd, desktop
version = "1.4.0"               # exact-version channels of the served TUF repository
from_version = "1.3.0"          # required here (the API can derive it)
teams = ["Workstations"]        # omit for every host
waves = [1, 10, 50, 100]
soak_seconds = 3600
halt_rules = { max_failed_percent = 5, min_healthy_percent = 80 }
```

Rollouts are the exception to "the file is the truth": a rollout left out of the file keeps running (removing a
line must not send a fleet back or forward); pause, resume and abort it through the API or ``fleet-stub rollouts``.
"""

from __future__ import annotations

import sqlite3
import tomllib
from dataclasses import dataclass
from pathlib import Path

from server_stub import policies, teams
from server_stub.agent_options import InvalidAgentOptions, validate_agent_options, validate_notifications
from server_stub.json_fields import JsonObject
from server_stub.json_text import decode_json
from server_stub.rollout_spec import InvalidRollout, parse_request, parse_team_names
from server_stub.rollouts import DeclaredRollout

SOURCE = "config"


class ConfigFileError(ValueError):
    pass


@dataclass(frozen=True)
class DeclaredTeam:
    name: str
    enroll_secrets: tuple[str, ...]
    agent_options: JsonObject | None
    orbit_notifications: JsonObject | None


@dataclass(frozen=True)
class DeclaredPolicy:
    name: str
    query: str
    description: str
    resolution: str
    platform: str
    team: str | None


@dataclass(frozen=True)
class DeclaredConfig:
    global_secrets: tuple[str, ...]
    global_agent_options: JsonObject | None
    global_notifications: JsonObject | None
    teams: tuple[DeclaredTeam, ...]
    policies: tuple[DeclaredPolicy, ...]
    rollouts: tuple[DeclaredRollout, ...] = ()


def _secrets(value: object, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(s, str) and s.strip() for s in value):
        raise ConfigFileError(f"{where}.enroll_secrets must be a list of non-empty strings")
    return tuple(s.strip() for s in value)


def _options(value: object, where: str) -> JsonObject | None:
    if value is None:
        return None
    try:
        return validate_agent_options(value)
    except InvalidAgentOptions as exc:
        raise ConfigFileError(f"{where}.agent_options: {exc}") from None


def _notifications(value: object, where: str) -> JsonObject | None:
    if value is None:
        return None
    try:
        return validate_notifications(value)
    except InvalidAgentOptions as exc:
        raise ConfigFileError(f"{where}.orbit_notifications: {exc}") from None


def _text(table: dict[str, object], key: str, where: str, *, required: bool = False) -> str:
    value = table.get(key, "")
    if not isinstance(value, str) or (required and not value.strip()):
        raise ConfigFileError(f"{where}.{key} must be a {'non-empty ' if required else ''}string")
    return value.strip()


def _named_tables(document: dict[str, object], key: str) -> list[tuple[str, str, dict[str, object]]]:
    """``[[key]]`` tables as (location, unique name, table)."""
    raw = document.get(key, [])
    if not isinstance(raw, list) or not all(isinstance(t, dict) for t in raw):
        raise ConfigFileError(f"{key} must be a list of tables ([[{key}]])")
    found: list[tuple[str, str, dict[str, object]]] = []
    names: set[str] = set()
    for index, table in enumerate(raw):
        where = f"{key}[{index}]"
        name = _text(table, "name", where, required=True)
        if name in names:
            raise ConfigFileError(f"{where}: {name!r} is declared twice")
        names.add(name)
        found.append((where, name, table))
    return found


def parse_config(document: object) -> DeclaredConfig:
    """Check a decoded document and turn it into typed values (pure)."""
    if not isinstance(document, dict):
        raise ConfigFileError("the configuration must be a table/object at top level")
    unknown = sorted(set(document) - {"global", "teams", "policies", "rollouts"})
    if unknown:
        raise ConfigFileError(f"unknown top-level key(s): {', '.join(unknown)}")
    glob = document.get("global", {})
    if not isinstance(glob, dict):
        raise ConfigFileError("[global] must be a table")
    declared_teams: list[DeclaredTeam] = []
    for where, name, table in _named_tables(document, "teams"):
        declared_teams.append(
            DeclaredTeam(
                name=name,
                enroll_secrets=_secrets(table.get("enroll_secrets"), where),
                agent_options=_options(table.get("agent_options"), where),
                orbit_notifications=_notifications(table.get("orbit_notifications"), where),
            )
        )
    seen_names = {team.name for team in declared_teams}
    declared_policies: list[DeclaredPolicy] = []
    for where, name, policy in _named_tables(document, "policies"):
        team_name = policy.get("team")
        if team_name is not None and (not isinstance(team_name, str) or team_name not in seen_names):
            raise ConfigFileError(f"{where}.team must name a team declared in this file")
        declared_policies.append(
            DeclaredPolicy(
                name=name,
                query=_text(policy, "query", where, required=True),
                description=_text(policy, "description", where),
                resolution=_text(policy, "resolution", where),
                platform=_text(policy, "platform", where),
                team=team_name,
            )
        )
    all_secrets = list(_secrets(glob.get("enroll_secrets"), "global"))
    for team in declared_teams:
        all_secrets += team.enroll_secrets
    if len(all_secrets) != len(set(all_secrets)):
        raise ConfigFileError("an enroll secret is declared more than once")
    return DeclaredConfig(
        global_secrets=_secrets(glob.get("enroll_secrets"), "global"),
        global_agent_options=_options(glob.get("agent_options"), "global"),
        global_notifications=_notifications(glob.get("orbit_notifications"), "global"),
        teams=tuple(declared_teams),
        policies=tuple(declared_policies),
        rollouts=tuple(_rollouts(document)),
    )


def _rollouts(document: dict[str, object]) -> list[DeclaredRollout]:
    found = []
    for where, _name, table in _named_tables(document, "rollouts"):
        try:
            request = parse_request(table, frozenset({"teams"}), f"{where}.")
            if request.from_version is None:
                raise InvalidRollout(f"{where}.from_version is required in the configuration file")
            found.append(DeclaredRollout(request, parse_team_names(table.get("teams"), f"{where}.")))
        except InvalidRollout as exc:
            raise ConfigFileError(str(exc)) from None
    return found


def load_config_file(path: Path) -> DeclaredConfig:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigFileError(f"cannot read {path}: {exc.strerror}") from None
    try:
        document: object = tomllib.loads(raw.decode("utf-8")) if path.suffix == ".toml" else decode_json(raw).value
    except (tomllib.TOMLDecodeError, ValueError, RecursionError) as exc:
        raise ConfigFileError(f"{path}: {exc}") from None
    return parse_config(document)


def apply_config(conn: sqlite3.Connection, declared: DeclaredConfig, now: float) -> None:
    """Bring the database in line with ``declared``; running it twice changes nothing the second time."""
    for secret in [*declared.global_secrets, *(s for t in declared.teams for s in t.enroll_secrets)]:
        row = conn.execute("SELECT source FROM enroll_secrets WHERE secret = ?", (secret,)).fetchone()
        if row is not None and row["source"] != SOURCE:
            raise ConfigFileError(f"an enroll secret in the file is already defined elsewhere ({row['source']})")
    team_ids: dict[str, int] = {}
    for team in declared.teams:
        team_ids[team.name] = teams.ensure_team(conn, team.name, source=SOURCE).id
    desired: dict[str, int | None] = dict.fromkeys(declared.global_secrets)
    for team in declared.teams:
        desired.update(dict.fromkeys(team.enroll_secrets, team_ids[team.name]))
    try:
        teams.sync_secrets(conn, SOURCE, desired, now)
    except teams.SecretConflict as exc:
        raise ConfigFileError(str(exc)) from None
    for team in declared.teams:
        if team.agent_options is not None:
            teams.set_team_agent_options(conn, team_ids[team.name], team.agent_options)
        if team.orbit_notifications is not None:
            teams.set_team_notifications(conn, team_ids[team.name], team.orbit_notifications)
    if declared.global_agent_options is not None:
        teams.set_global_agent_options(conn, declared.global_agent_options)
    if declared.global_notifications is not None:
        teams.set_global_notifications(conn, declared.global_notifications)
    for policy in declared.policies:
        policies.upsert_policy(
            conn,
            name=policy.name,
            query=policy.query,
            description=policy.description,
            resolution=policy.resolution,
            platform=policy.platform,
            team_id=team_ids[policy.team] if policy.team else None,
            source=SOURCE,
            now=now,
        )
    policies.delete_config_policies_except(conn, {p.name for p in declared.policies})
