"""The flags osqueryd-sim accepts: osquery's own, their aliases, gflags/glog built-ins, and the sim's ``--sim_*``.

osquery's flags come from the packaged copy of the table extracted from osquery's source
(``data/osquery-flags.tsv``, ``data/osquery-flag-aliases.tsv``), so the sim accepts exactly what osqueryd accepts
and starts from the same defaults. Each default is the C++ expression evaluated for this platform by
:mod:`osquery_sim.cpp_defaults` (e.g. ``database_path`` = ``/var/osquery/osquery.db`` and ``tls_server_certs`` =
``/opt/osquery/share/osquery/certs/certs.pem`` on Linux, ``logger_syslog_facility`` = 19).

Symbolic defaults that cannot be evaluated fall back to "" / 0 / false and are listed by
:func:`unresolved_defaults`. With the table as of August 2026 there are none: every symbolic expression
(``OSQUERY_*`` path macros, ``fs::path(OSQUERY_HOME) / "osquery.conf"``, ``LOG_LOCAL3 >> 3``, ``kEventTrace*``)
has a known value.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from importlib import resources
from types import MappingProxyType

from osquery_sim.cpp_defaults import FlagValue, platform_key, resolve_default

FLAGS_TSV = "osquery-flags.tsv"
ALIASES_TSV = "osquery-flag-aliases.tsv"


class FlagType(StrEnum):
    """gflags value types; the value is the name gflags prints in its error messages."""

    BOOL = "bool"
    INT32 = "int32"
    UINT32 = "uint32"
    INT64 = "int64"
    UINT64 = "uint64"
    DOUBLE = "double"
    STRING = "string"

    @property
    def is_integer(self) -> bool:
        return self in {FlagType.INT32, FlagType.UINT32, FlagType.INT64, FlagType.UINT64}


class FlagKind(StrEnum):
    """Where a flag comes from: osquery's macro that defines it, or who else registers it with gflags."""

    FLAG = "FLAG"  # osquery: command line, flagfile, or config `options`
    CLI_FLAG = "CLI_FLAG"  # osquery: command line / flagfile only
    HIDDEN_FLAG = "HIDDEN_FLAG"
    SHELL_FLAG = "SHELL_FLAG"  # osqueryi options; the same binary accepts them as osqueryd
    EXTENSION_FLAG = "EXTENSION_FLAG"
    GFLAGS = "GFLAGS"  # gflags' own: --flagfile, --undefok, --help, --version
    GLOG = "GLOG"  # glog's, documented by osquery's --help
    SIM = "SIM"  # osqueryd-sim only: identity overrides and fault knobs


@dataclass(frozen=True)
class FlagSpec:
    name: str
    type: FlagType
    default: FlagValue
    kind: FlagKind
    description: str


@dataclass(frozen=True)
class FlagTable:
    """All flags by canonical name, and alias → canonical name."""

    flags: Mapping[str, FlagSpec]
    aliases: Mapping[str, str]

    def lookup(self, name: str) -> tuple[str, FlagSpec] | None:
        """Find a flag as gflags does: exact registered name (aliases are registered names), then with '-' → '_'.

        Returns the registered name (which gflags uses in its messages) and the canonical flag's spec.
        """
        if name in self.flags:
            return name, self.flags[name]
        if name in self.aliases:
            return name, self.flags[self.aliases[name]]
        if "-" in name:
            return self.lookup(name.replace("-", "_"))
        return None

    def canonical(self, name: str) -> str:
        found = self.lookup(name)
        if found is None:
            raise KeyError(name)
        return found[1].name


def _sim_string(name: str, description: str) -> FlagSpec:
    return FlagSpec(name, FlagType.STRING, "", FlagKind.SIM, description)


def _sim_double(name: str, description: str) -> FlagSpec:
    return FlagSpec(name, FlagType.DOUBLE, 0.0, FlagKind.SIM, description)


SIM_FLAGS: tuple[FlagSpec, ...] = (
    _sim_string("sim_uuid", "Simulated identity: system_info.uuid (default: DMI product UUID or a stable machine id)"),
    _sim_string("sim_hostname", "Simulated identity: hostname"),
    _sim_string("sim_computer_name", "Simulated identity: system_info.computer_name"),
    _sim_string("sim_hardware_serial", "Simulated identity: system_info.hardware_serial"),
    _sim_string("sim_hardware_model", "Simulated identity: system_info.hardware_model"),
    _sim_string("sim_hardware_vendor", "Simulated identity: system_info.hardware_vendor"),
    _sim_string("sim_os_platform", "Simulated identity: os_version.platform (e.g. ubuntu)"),
    _sim_string("sim_os_name", "Simulated identity: os_version.name"),
    _sim_string("sim_os_version", "Simulated identity: os_version.version"),
    _sim_string("sim_instance_id", "Simulated identity: osquery_info.instance_id"),
    _sim_double("sim_crash_after", "Fault: exit abruptly with --sim_exit_code after this many seconds (0 = never)"),
    FlagSpec("sim_exit_code", FlagType.INT32, 1, FlagKind.SIM, "Fault: exit code used by --sim_crash_after"),
    FlagSpec("sim_ignore_sigterm", FlagType.BOOL, False, FlagKind.SIM, "Fault: ignore SIGTERM"),
    _sim_double("sim_slow_start", "Fault: sleep this many seconds before starting"),
    _sim_double("sim_hang_after", "Fault: stop responding, signals included, after this many seconds (0 = never)"),
    _sim_double("sim_memory_growth_mb_per_min", "Fault: grow resident memory by this many MB per minute"),
)

# gflags' own flags that matter to osqueryd: --flagfile and --undefok take effect while parsing; --version makes
# gflags print "<program> version <version>" and exit 0; --help is intercepted by osquery before gflags (exit 0).
# glog's logtostderr and stderrthreshold are the two glog flags osquery's --help documents.
BUILTIN_FLAGS: tuple[FlagSpec, ...] = (
    FlagSpec("flagfile", FlagType.STRING, "", FlagKind.GFLAGS, "load flags from file"),
    FlagSpec(
        "undefok",
        FlagType.STRING,
        "",
        FlagKind.GFLAGS,
        "comma-separated list of flag names that it is okay to specify on the command line even if the program "
        "does not define a flag with that name",
    ),
    FlagSpec("help", FlagType.BOOL, False, FlagKind.GFLAGS, "show help on all flags"),
    FlagSpec("version", FlagType.BOOL, False, FlagKind.GFLAGS, "show version and build info and exit"),
    FlagSpec(
        "logtostderr", FlagType.BOOL, False, FlagKind.GLOG, "Log messages to stderr in addition to the logger plugin(s)"
    ),
    FlagSpec("stderrthreshold", FlagType.INT32, 2, FlagKind.GLOG, "Stderr log level threshold"),
)


def _data_rows(file_name: str) -> Iterator[dict[str, str]]:
    """Rows of a packaged TSV: '#' lines are comments, the first other line is the header."""
    text = resources.files("osquery_sim").joinpath("data").joinpath(file_name).read_text(encoding="utf-8")
    header: list[str] | None = None
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        cells = line.split("\t")
        if header is None:
            header = cells
            continue
        yield dict(zip(header, cells, strict=True))


@dataclass(frozen=True)
class _Loaded:
    table: FlagTable
    unresolved: tuple[str, ...]


@functools.cache
def _load() -> _Loaded:
    platform = platform_key(sys.platform)
    flags: dict[str, FlagSpec] = {}
    unresolved: list[str] = []
    for row in _data_rows(FLAGS_TSV):
        flag_type = FlagType(row["type"])
        resolved = resolve_default(row["default"], flag_type.value, platform)
        if not resolved.exact:
            unresolved.append(row["flag"])
        flags[row["flag"]] = FlagSpec(row["flag"], flag_type, resolved.value, FlagKind(row["kind"]), row["description"])
    for spec in (*BUILTIN_FLAGS, *SIM_FLAGS):
        if spec.name in flags:
            raise ValueError(f"flag {spec.name!r} is defined twice")
        flags[spec.name] = spec
    aliases = {row["alias"]: row["flag"] for row in _data_rows(ALIASES_TSV)}
    for alias, target in aliases.items():
        if target not in flags or alias in flags:
            raise ValueError(f"bad flag alias {alias!r} -> {target!r}")
    table = FlagTable(MappingProxyType(flags), MappingProxyType(aliases))
    return _Loaded(table, tuple(unresolved))


def flag_table() -> FlagTable:
    """The sim's flag table (loaded once)."""
    return _load().table


def known_flags() -> Mapping[str, FlagSpec]:
    """Every flag the sim accepts, by canonical name (aliases not included)."""
    return _load().table.flags


def aliases() -> Mapping[str, str]:
    """Deprecated names osquery still accepts → canonical flag name."""
    return _load().table.aliases


def canonical_name(name: str) -> str:
    """The canonical flag for a name, alias or ``dashed-spelling``; KeyError if osqueryd would not know it."""
    return _load().table.canonical(name)


def unresolved_defaults() -> tuple[str, ...]:
    """Flags whose C++ default expression could not be evaluated (their default is "" / 0 / false instead)."""
    return _load().unresolved
