"""``fleet-stub`` command line (docs/contracts.md): ``serve`` plus admin commands that talk to a running server."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from server_stub import __version__, rollouts_cli
from server_stub.admin_client import AdminClient, AdminClientError, read_server_info
from server_stub.declarative_config import ConfigFileError
from server_stub.json_fields import JsonObject
from server_stub.settings import SettingsError, admin_token_from, build_settings, secret_lines

EXIT_USAGE = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fleet-stub", description="A minimal conformant Fleet server.")
    parser.add_argument("--version", action="version", version=f"fleet-stub {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the server (HTTPS)")
    serve.add_argument("--data-dir", help="state directory (env FLEET_STUB_DATA_DIR)")
    serve.add_argument("--listen", help="HOST:PORT, port 0 picks a free one (default 127.0.0.1:8412)")
    serve.add_argument("--enroll-secret", action="append", metavar="SECRET[:TEAM]", help="may be repeated")
    serve.add_argument(
        "--enroll-secret-file", action="append", metavar="FILE", help="SECRET[:TEAM] per line (keeps them out of argv)"
    )
    serve.add_argument("--tuf-repo", help="published TUF repository directory to serve under /tuf/")
    serve.add_argument("--admin-token", help="admin API token (default: generated and kept in DIR)")
    serve.add_argument("--admin-token-file", metavar="FILE", help="a file holding the admin token")
    serve.add_argument("--tls-cert", help="server certificate (PEM); default: self-signed under DIR/tls")
    serve.add_argument("--tls-key", help="server key (PEM)")
    serve.add_argument("--config", help="declarative configuration file (TOML or JSON), re-read on SIGHUP")
    serve.add_argument("--live-query-timeout", help="seconds an admin live query waits (default 25)")
    serve.add_argument(
        "--max-connections",
        metavar="N",
        help="open connections at most (env FLEET_STUB_MAX_CONNECTIONS; default: what the open-files limit leaves "
        "room for); other connection limits: FLEET_STUB_* variables, docs/architecture.md",
    )

    serve.add_argument(
        "--workers",
        metavar="N",
        help="worker processes serving the port (env FLEET_STUB_WORKERS; default 1; auto: one per CPU). More than "
        "one when the connections outgrow one process's open-files limit or its core: docs/adr/0019",
    )

    def admin(name: str, help_text: str) -> argparse.ArgumentParser:
        cmd = sub.add_parser(name, help=help_text)
        cmd.add_argument("--data-dir", required=True, help="the running server's data directory")
        return cmd

    hosts = admin("hosts", "list hosts")
    hosts.add_argument("--json", action="store_true")
    query = admin("query", "run a live query on hosts")
    query.add_argument("--host", action="append", type=int, default=[], help="host id (default: all hosts)")
    query.add_argument("sql")
    delete = admin("delete-host", "delete a host (its keys stop working)")
    delete.add_argument("host_id", type=int)
    teams = admin("teams", "list teams")
    teams.add_argument("--json", action="store_true")
    team_create = admin("team-create", "create a team")
    team_create.add_argument("name")
    options = admin("agent-options", "set agent options (osquery config, orbit flags, update channels)")
    options.add_argument("--team", type=int, help="team id (default: global)")
    options.add_argument("file", help="JSON file with the agent options document, or - for stdin")
    notes = admin("notifications", "set extra orbit notifications")
    notes.add_argument("--team", type=int, help="team id (default: global)")
    notes.add_argument("json_text", help='JSON object, e.g. {"renew_enrollment_profile": true}')
    policy = admin("policy-add", "define a policy")
    policy.add_argument("--name", required=True)
    policy.add_argument("--query", required=True)
    policy.add_argument("--team", type=int)
    policy.add_argument("--description", default="")
    policy.add_argument("--resolution", default="")
    policy.add_argument("--platform", default="")
    admin("policies", "list policies (global)")
    script = admin("script-run", "queue a script for a host")
    script.add_argument("--host", type=int, required=True)
    script.add_argument("--timeout", type=int)
    script.add_argument("file", help="script file, or - for stdin")
    result = admin("script-result", "show a script execution's result")
    result.add_argument("execution_id")
    rollouts_cli.add_parsers(sub)
    return parser


def _read_text(name: str) -> str:
    if name == "-":
        return sys.stdin.read()
    try:
        return Path(name).read_text(encoding="utf-8")
    except OSError as exc:
        raise AdminClientError(f"cannot read {name}: {exc.strerror}") from None


def _json_arg(text: str, what: str) -> JsonObject:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise AdminClientError(f"{what} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise AdminClientError(f"{what} must be a JSON object")
    return value


def _print(value: object) -> None:
    print(json.dumps(value, indent=2, sort_keys=True, allow_nan=False))


def _hosts_table(hosts: list[JsonObject]) -> None:
    columns = (
        "id",
        "hostname",
        "platform",
        "osquery_version",
        "orbit_version",
        "status",
        "team_id",
        "seen_time",
    )
    rows = [[str(h.get(c) if h.get(c) is not None else "") for c in columns] for h in hosts]
    widths = [max(len(c), *(len(r[i]) for r in rows)) if rows else len(c) for i, c in enumerate(columns)]
    print("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)))
    for row in rows:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))


def _run_admin(args: argparse.Namespace) -> int:
    info = read_server_info(Path(args.data_dir))
    with AdminClient(info) as client:
        command = args.command
        if command in ("rollouts", "restart-osqueryd"):
            return rollouts_cli.run(args, client)
        if command == "hosts":
            found = client.call("GET", "/hosts").get("hosts", [])
            hosts = [h for h in found if isinstance(h, dict)] if isinstance(found, list) else []
            if args.json:
                _print({"hosts": hosts})
            else:
                _hosts_table(hosts)
        elif command == "query":
            ids = args.host
            if not ids:
                listed = client.call("GET", "/hosts").get("hosts", [])
                ids = [int(h["id"]) for h in listed if isinstance(h, dict)] if isinstance(listed, list) else []
            with ThreadPoolExecutor(max_workers=max(1, min(16, len(ids)))) as pool:
                answers = list(pool.map(lambda i: client.call("POST", f"/hosts/{i}/query", {"query": args.sql}), ids))
            _print({"results": answers})
            return 0 if all(a.get("status") == "online" and not a.get("error") for a in answers) else 1
        elif command == "delete-host":
            client.call("DELETE", f"/hosts/{args.host_id}")
            print(f"deleted host {args.host_id}")
        elif command == "teams":
            _print(client.call("GET", "/teams"))
        elif command == "team-create":
            _print(client.call("POST", "/teams", {"name": args.name}))
        elif command == "agent-options":
            document = _json_arg(_read_text(args.file), "agent options")
            if args.team is None:
                _print(client.call("PATCH", "/config", {"agent_options": document}))
            else:
                _print(client.call("POST", f"/teams/{args.team}/agent_options", document))
        elif command == "notifications":
            document = _json_arg(args.json_text, "notifications")
            path = "/config" if args.team is None else f"/teams/{args.team}"
            _print(client.call("PATCH", path, {"orbit_notifications": document}))
        elif command == "policy-add":
            body = {
                "name": args.name,
                "query": args.query,
                "description": args.description,
                "resolution": args.resolution,
                "platform": args.platform,
            }
            path = "/global/policies" if args.team is None else f"/teams/{args.team}/policies"
            _print(client.call("POST", path, body))
        elif command == "policies":
            _print(client.call("GET", "/global/policies"))
        elif command == "script-run":
            script: JsonObject = {"host_id": args.host, "script_contents": _read_text(args.file)}
            if args.timeout is not None:
                script["timeout"] = args.timeout
            _print(client.call("POST", "/scripts/run", script))
        elif command == "script-result":
            _print(client.call("GET", f"/scripts/results/{args.execution_id}"))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return _quiet_broken_pipe(lambda: _main(argv))


def _main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "serve":
        from server_stub.server import StartupError, serve  # noqa: PLC0415 - keeps admin commands light

        try:
            secrets = [*(args.enroll_secret or []), *secret_lines(args.enroll_secret_file or [])]
            if args.enroll_secret or args.admin_token:
                print(
                    "fleet-stub: warning: a secret on the command line is visible to every local user (ps); use "
                    "--enroll-secret-file / --admin-token-file or FLEET_STUB_ENROLL_SECRET / FLEET_STUB_ADMIN_TOKEN",
                    file=sys.stderr,
                )
            settings = build_settings(
                data_dir=args.data_dir,
                listen=args.listen,
                enroll_secrets=secrets or None,
                tuf_repo=args.tuf_repo,
                admin_token=admin_token_from(args.admin_token, args.admin_token_file),
                tls_cert=args.tls_cert,
                tls_key=args.tls_key,
                config_file=args.config,
                live_query_timeout=args.live_query_timeout,
                max_connections=args.max_connections,
                workers=args.workers,
                env=os.environ,
            )
            if settings.workers > 1:
                from server_stub.multi_worker import serve_with_workers  # noqa: PLC0415 - POSIX only (fork)

                return serve_with_workers(settings)
            return serve(settings)
        except (SettingsError, ConfigFileError, StartupError) as exc:
            print(f"fleet-stub: error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        except OSError as exc:  # the data dir cannot be written, the port is taken …
            print(f"fleet-stub: error: cannot start: {exc}", file=sys.stderr)
            return 1
    try:
        return _run_admin(args)
    except AdminClientError as exc:
        print(f"fleet-stub: error: {exc}", file=sys.stderr)
        return 1


def _quiet_broken_pipe(run: Callable[[], int]) -> int:
    """A reader that stopped early (``fleet-stub hosts … | head``) is not our error: no traceback, the shell's 141."""
    try:
        code = run()
        sys.stdout.flush()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # the exit-time flush must not fail again
        return 128 + 13  # SIGPIPE
    return code
