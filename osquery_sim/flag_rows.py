"""What ``osquery_flags`` shows: every osquery flag this process knows, its default and its effective value.

osquery lists the flags registered through its own ``Flag`` class (``FLAG``, ``CLI_FLAG``, ``HIDDEN_FLAG``,
``SHELL_FLAG``, ``EXTENSION_FLAG``), not gflags' and glog's own; the simulator's ``sim_*`` knobs are listed too, so a
live query can confirm a fault knob (they say "sim" in their name). Booleans read ``true``/``false``, numbers in
their decimal form, strings as given.
"""

from __future__ import annotations

from osquery_sim.cpp_defaults import FlagValue
from osquery_sim.flag_specs import FlagKind
from osquery_sim.gflags import Flags
from osquery_sim.table_rows import OsqueryFlag

LISTED_KINDS = frozenset(
    {
        FlagKind.FLAG,
        FlagKind.CLI_FLAG,
        FlagKind.HIDDEN_FLAG,
        FlagKind.SHELL_FLAG,
        FlagKind.EXTENSION_FLAG,
        FlagKind.SIM,
    }
)


def flag_text(value: FlagValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value) if value != int(value) else str(int(value))
    return str(value)


def effective_flags(flags: Flags) -> list[OsqueryFlag]:
    rows = []
    for name, spec in sorted(flags.table.flags.items()):
        if spec.kind not in LISTED_KINDS:
            continue
        rows.append(
            OsqueryFlag(
                name=name,
                type=str(spec.type),
                description=spec.description,
                default_value=flag_text(spec.default),
                value=flag_text(flags.values.get(name, spec.default)),
                shell_only=spec.kind is FlagKind.SHELL_FLAG,
            )
        )
    return rows
