"""``osqueryd-sim`` command line: like ``osqueryd`` (daemon, ``-S`` shell, ``--version``, ``--help``) plus
``osqueryd-sim load …`` for many simulated hosts in one process.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Sequence

from osquery_sim.flag_specs import FlagKind
from osquery_sim.gflags import FlagError, Flags, parse_command_line
from osquery_sim.version import SIM_VERSION

HELP_KINDS = (FlagKind.CLI_FLAG, FlagKind.FLAG, FlagKind.SIM)


def print_help(flags: Flags, program: str) -> None:
    print(f"osquery {SIM_VERSION} (simulator), your OS as a high-performance relational database")
    print(f"Usage: {program} [OPTION]... [SQL STATEMENT]\n")
    table = flags.table.flags
    for kind in HELP_KINDS:
        specs = sorted((s for s in table.values() if s.kind is kind), key=lambda s: s.name)
        if not specs:
            continue
        print(
            {
                FlagKind.CLI_FLAG: "osquery command line flags:",
                FlagKind.FLAG: "osquery configuration options (set by config or CLI flags):",
                FlagKind.SIM: "simulator flags:",
            }.get(kind, f"{kind}:")
        )
        for spec in specs:
            print(f"    --{spec.name:<40} {spec.description}")
        print()


def configure_logging(flags: Flags) -> None:
    level = logging.DEBUG if flags.boolean("verbose") else logging.INFO
    logging.basicConfig(
        level=level,
        stream=sys.stderr,
        format="%(levelname).1s%(asctime)s.%(msecs)03d %(process)d %(name)s] %(message)s",
        datefmt="%m%d %H:%M:%S",
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    return _quiet_broken_pipe(lambda: _main(argv))


def _main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    program = os.path.basename(sys.argv[0]) if argv is None else "osqueryd-sim"
    if program in ("__main__.py", "-c", ""):
        program = "osqueryd-sim"
    if args and args[0] == "load":
        from osquery_sim.load import load_main  # noqa: PLC0415 - only load mode needs it

        return load_main(args[1:])
    try:
        flags = parse_command_line(args, program=program)
    except FlagError as exc:
        print(exc.message, file=sys.stderr)
        return exc.exit_code
    if flags.boolean("help"):
        print_help(flags, program)
        return 0
    if flags.boolean("version"):
        print(f"osqueryd version {SIM_VERSION}")
        return 0
    configure_logging(flags)
    for warning in flags.warnings:
        logging.getLogger("osquery_sim").warning("%s", warning)
    if flags.shell:
        from osquery_sim.shell_mode import run_shell_mode  # noqa: PLC0415

        return run_shell_mode(flags)
    from osquery_sim.daemon import run_daemon  # noqa: PLC0415

    return run_daemon(flags, dict(os.environ), SIM_VERSION)


def _quiet_broken_pipe(run: Callable[[], int]) -> int:
    """A reader that stopped early (``osqueryd-sim --help | head``): not our error, no traceback, the shell's 141."""
    try:
        code = run()
        sys.stdout.flush()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # the exit-time flush must not fail again
        return 128 + 13  # SIGPIPE
    return code
