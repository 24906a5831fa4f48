"""``fleet-stub rollouts create|list|status|pause|resume|abort`` and ``fleet-stub restart-osqueryd``: admin commands
that talk to the running server through its admin API (routes_rollouts), like ``fleet-stub hosts``."""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Sequence

from server_stub.admin_client import AdminClient
from server_stub.json_fields import JsonObject

TARGETS = ("orbit", "osqueryd", "desktop")
_DURATION_PART = re.compile(r"(\d+)([smhd])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> int:
    """``3600``, ``90s``, ``15m``, ``1h30m``, ``2d`` → seconds."""
    value = text.strip().lower()
    if value.isascii() and value.isdigit():
        return int(value)
    parts = _DURATION_PART.findall(value)
    if not value or "".join(n + u for n, u in parts) != value:
        raise argparse.ArgumentTypeError(f"invalid duration {text!r}: use seconds or e.g. 90s, 15m, 1h30m, 2d")
    return sum(int(n) * _UNIT_SECONDS[u] for n, u in parts)


def parse_waves(text: str) -> list[float | int]:
    """``1,10,50,100`` → ``[1, 10, 50, 100]`` (the server checks the values)."""
    waves: list[float | int] = []
    for item in text.split(","):
        try:
            number = float(item.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid waves {text!r}: comma-separated percentages") from None
        waves.append(int(number) if number.is_integer() else number)
    return waves


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    rollouts = sub.add_parser("rollouts", help="staged rollouts of orbit, osqueryd or desktop versions")
    actions = rollouts.add_subparsers(dest="rollouts_command", required=True)

    def action(name: str, help_text: str, *, with_id: bool = True) -> argparse.ArgumentParser:
        parser = actions.add_parser(name, help=help_text)
        parser.add_argument("--data-dir", required=True, help="the running server's data directory")
        parser.add_argument("--json", action="store_true", help="print the API's JSON answer")
        if with_id:
            parser.add_argument("rollout_id", type=int)
        return parser

    create = action("create", "start a rollout", with_id=False)
    create.add_argument("--target", required=True, choices=TARGETS)
    create.add_argument("--version", required=True, help="exact version published in the served TUF repository")
    create.add_argument("--from-version", help="the version to return to (default: what most hosts run)")
    create.add_argument("--team", type=int, action="append", help="team id (repeat; default: every host)")
    create.add_argument("--waves", type=parse_waves, help="cumulative percentages (default 1,10,50,100)")
    create.add_argument("--soak", type=parse_duration, help="minimum time per wave, e.g. 30m (default 1h)")
    create.add_argument("--max-failed-percent", type=float, help="halt above this share of failures (default 5)")
    create.add_argument("--min-healthy-percent", type=float, help="halt below this share healthy (default 80)")
    create.add_argument("--name", help="default: <target>-<version>")
    action("list", "list rollouts", with_id=False)
    action("status", "a rollout's progress, wave by wave")
    action("pause", "stop advancing (halt rules still apply)")
    action("resume", "continue a paused or halted rollout (the current wave soaks afresh)")
    action("abort", "send every host of the rollout back to its from_version, for good")

    restart = sub.add_parser("restart-osqueryd", help="ask orbit to restart osqueryd on a host or a team")
    restart.add_argument("--data-dir", required=True, help="the running server's data directory")
    which = restart.add_mutually_exclusive_group(required=True)
    which.add_argument("--host", type=int, help="host id")
    which.add_argument("--team", type=int, help="team id (0: the hosts without a team)")


def _create_body(args: argparse.Namespace) -> JsonObject:
    body: JsonObject = {"target": args.target, "version": args.version}
    optional = {
        "from_version": args.from_version,
        "team_ids": args.team,
        "waves": args.waves,
        "soak_seconds": args.soak,
        "name": args.name,
    }
    body.update({k: v for k, v in optional.items() if v is not None})
    rules = {"max_failed_percent": args.max_failed_percent, "min_healthy_percent": args.min_healthy_percent}
    if any(v is not None for v in rules.values()):
        body["halt_rules"] = {k: v for k, v in rules.items() if v is not None}
    return body


def _table(columns: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    cells = [[("" if v is None else str(v)) for v in row] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    return lines


def _dict(value: object) -> JsonObject:
    return {str(k): v for k, v in value.items()} if isinstance(value, dict) else {}


def _list(value: object) -> list[JsonObject]:
    return [_dict(v) for v in value] if isinstance(value, list) else []


def _population(rollout: JsonObject) -> str:
    teams = rollout.get("team_ids")
    if not isinstance(teams, list):
        return "every host"
    return "team" + ("s " if len(teams) > 1 else " ") + ", ".join(str(t) for t in teams)


def render_status(rollout: JsonObject) -> list[str]:
    rules = _dict(rollout.get("halt_rules"))
    lines = [
        f"rollout {rollout.get('id')} {rollout.get('name')}: {rollout.get('target')} {rollout.get('from_version')} → "
        f"{rollout.get('version')}, {_population(rollout)}: {rollout.get('state')}, wave {rollout.get('current_wave')} "
        f"of {rollout.get('wave_count')}",
        f"  soak {rollout.get('soak_seconds')} s per wave"
        + (f", next wave at {rollout['next_wave_at']}" if rollout.get("next_wave_at") else ""),
        f"  halts above {rules.get('max_failed_percent')} % failed in a reached wave, or below "
        f"{rules.get('min_healthy_percent')} % healthy after a soak",
    ]
    if rollout.get("halt_reason"):
        lines.append(f"  halt reason: {rollout['halt_reason']}")
    keys = ("targeted", "updated", "healthy", "rolled_back", "offline", "on_from_version")
    rows: list[list[object]] = [
        [w.get("wave"), w.get("percent"), "yes" if w.get("reached") else "no", *(w.get(k) for k in keys)]
        for w in _list(rollout.get("wave_status"))
    ]
    totals = _dict(rollout.get("totals"))
    rows.append(["total", "", "", *(totals.get(k) for k in keys)])
    lines += ["", *_table(("wave", "percent", "reached", *keys), rows)]
    events = _list(rollout.get("events"))
    if events:
        lines += ["", "events:"]
        lines += [f"  {e.get('at')}  {e.get('event')}  {e.get('detail') or ''}".rstrip() for e in events]
    return lines


def render_list(rollouts: list[JsonObject]) -> list[str]:
    rows = []
    for r in rollouts:
        totals = _dict(r.get("totals"))
        rows.append(
            [
                r.get("id"),
                r.get("name"),
                r.get("target"),
                r.get("from_version"),
                r.get("version"),
                r.get("state"),
                f"{r.get('current_wave')}/{r.get('wave_count')}",
                totals.get("targeted"),
                totals.get("updated"),
                totals.get("healthy"),
                totals.get("rolled_back"),
            ]
        )
    columns = ("id", "name", "target", "from", "to", "state", "wave", "targeted", "updated", "healthy", "rolled_back")
    return _table(columns, rows)


def _print_json(value: object) -> None:
    print(json.dumps(value, indent=2, sort_keys=True, allow_nan=False))


def run(args: argparse.Namespace, client: AdminClient) -> int:
    if args.command == "restart-osqueryd":
        which = f"/hosts/{args.host}" if args.host is not None else f"/teams/{args.team}"
        path = f"{which}/restart_osqueryd"
        _print_json(client.call("POST", path))
        return 0
    command = args.rollouts_command
    if command == "list":
        answer = client.call("GET", "/rollouts")
        if args.json:
            _print_json(answer)
        else:
            print("\n".join(render_list(_list(answer.get("rollouts")))))
        return 0
    if command == "create":
        answer = client.call("POST", "/rollouts", _create_body(args))
    elif command == "status":
        answer = client.call("GET", f"/rollouts/{args.rollout_id}")
    else:
        answer = client.call("POST", f"/rollouts/{args.rollout_id}/{command}")
    if args.json:
        _print_json(answer)
    else:
        print("\n".join(render_status(_dict(answer.get("rollout")))))
    return 0
