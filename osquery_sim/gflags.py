"""osqueryd's command line, parsed the way osquery + gflags parse it (pure; the flagfile reader is injected).

What it reproduces (gflags.cc ``ParseNewCommandLineFlags`` / ``ProcessOptionsFromStringLocked``, osquery's
``Initializer`` in osquery/core/init.cpp):

- ``--flag=value``, ``--flag value`` (not for booleans), one or two dashes alike; ``host-identifier`` finds
  ``host_identifier``; deprecated aliases (``--config_tls_refresh``) set their flag.
- Booleans: ``--flag``, ``--noflag``, ``--flag=true|false|1|0|yes|no|t|f|y|n`` (any case).
- Arguments that are not flags (and ``-``) are positional, wherever they are; ``--`` ends the flags and everything
  after it is positional too (listed first, as gflags leaves argv).
- ``--flagfile=a[,b]`` is processed where it appears, so a later flag (on the command line or in a later file)
  overrides an earlier one. In a file: one flag per line, leading blanks skipped, ``#`` lines and blank lines
  ignored, values taken verbatim to the end of the line; a line that is not a flag starts a section for the
  program names (globs) it lists. As in gflags, an unknown flag or a value-less non-boolean flag *in a file* is
  skipped silently (here it is also listed in ``Flags.warnings``), while a bad value is an error.
  Nested flagfiles work; a file that includes itself is refused (gflags would recurse until it crashes).
- Errors are collected and reported together, sorted by flag name, in gflags' words (``ERROR: unknown command line
  flag 'foo'``); ``--undefok=a,b`` forgives unknown names. An unreadable flagfile is fatal at once, with
  ``perror``'s text (``<path>: No such file or directory``).
- ``--version`` wins over bad flags (gflags handles it before reporting errors); ``--help``/``-help``/``--h``/``-h``
  anywhere wins over everything (osquery looks for it before gflags runs). ``-S``/``--S`` select the shell and
  ``-D``/``--D`` the daemon, the last one winning; otherwise a program name containing "osqueryd" is the daemon.

Not reproduced: ``--fromenv``/``--tryfromenv`` (environment variables are never flags here) and gflags' other help
flags (``--helpfull``, ``--helpxml``, ...), which are therefore unknown flags.
"""

from __future__ import annotations

import fnmatch
import os
import posixpath
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NoReturn

from osquery_sim.cpp_defaults import FlagValue
from osquery_sim.flag_specs import FlagSpec, FlagTable, FlagType, flag_table
from osquery_sim.flag_validators import validate
from osquery_sim.gflags_values import parse_value

FileReader = Callable[[str], str]

ERROR = "ERROR: "
HELP_ARGUMENTS = frozenset({"--help", "-help", "--h", "-h"})
MAX_FLAGFILE_DEPTH = 32
_C_SPACE = " \t\n\v\f\r"


class FlagError(Exception):
    """osqueryd would print ``message`` to stderr and exit with ``exit_code``."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


def read_flagfile(path: str) -> str:
    """The default reader: the file's bytes as text (undecodable bytes kept as surrogates)."""
    with open(path, "rb") as handle:
        return handle.read().decode("utf-8", errors="surrogateescape")


@dataclass(frozen=True)
class Flags:
    """Every flag's value after parsing, by canonical name, plus what was explicitly given."""

    values: Mapping[str, FlagValue]
    explicit: frozenset[str]
    positional: tuple[str, ...] = ()
    shell: bool = False
    warnings: tuple[str, ...] = ()
    table: FlagTable = field(default_factory=flag_table, repr=False, compare=False)

    def spec(self, name: str) -> FlagSpec:
        """The flag's spec; ``name`` may be an alias or dashed; KeyError for names osqueryd does not know."""
        return self.table.flags[self.table.canonical(name)]

    def string(self, name: str) -> str:
        spec = self.spec(name)
        value = self.values[spec.name]
        if spec.type is not FlagType.STRING or not isinstance(value, str):
            raise TypeError(f"flag '{spec.name}' is a {spec.type} flag, not a string")
        return value

    def integer(self, name: str) -> int:
        spec = self.spec(name)
        value = self.values[spec.name]
        if not spec.type.is_integer or isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"flag '{spec.name}' is a {spec.type} flag, not an integer")
        return value

    def number(self, name: str) -> float:
        """A double flag, or an integer flag as a float."""
        spec = self.spec(name)
        value = self.values[spec.name]
        if not (spec.type is FlagType.DOUBLE or spec.type.is_integer) or isinstance(value, bool | str):
            raise TypeError(f"flag '{spec.name}' is a {spec.type} flag, not a number")
        return float(value)

    def boolean(self, name: str) -> bool:
        spec = self.spec(name)
        value = self.values[spec.name]
        if spec.type is not FlagType.BOOL or not isinstance(value, bool):
            raise TypeError(f"flag '{spec.name}' is a {spec.type} flag, not a bool")
        return value

    def is_set(self, name: str) -> bool:
        """Whether the flag (or an alias of it) was given on the command line or in a flagfile."""
        return self.spec(name).name in self.explicit

    def as_dict(self) -> dict[str, FlagValue]:
        return dict(self.values)


def parse_command_line(
    args: Sequence[str],
    *,
    program: str = "osqueryd",
    read_file: FileReader = read_flagfile,
    default_flagfile: str | None = None,
    table: FlagTable | None = None,
) -> Flags:
    """Parse osqueryd's arguments (``args`` excludes argv[0], which is ``program``).

    ``default_flagfile`` is osquery's ``/etc/osquery/osquery.flags.default`` behaviour: read first when no argument
    starts with ``--flagfile`` and the file is readable. Raises FlagError where osqueryd would exit at start-up.
    """
    table = flag_table() if table is None else table
    shell = "osqueryd" not in posixpath.basename(program.replace("\\", "/"))
    for arg in args:
        if arg in {"-S", "--S"}:
            shell = True
        elif arg in {"-D", "--D"}:
            shell = False
        elif arg in HELP_ARGUMENTS:
            values = {name: spec.default for name, spec in table.flags.items()}
            values["help"] = True
            return Flags(values, frozenset({"help"}), shell=shell, table=table)
    parser = _Parser(table, read_file, program)
    if default_flagfile and not any(arg.startswith("--flagfile") for arg in args) and parser.readable(default_flagfile):
        parser.values["flagfile"] = default_flagfile
        parser.process_flagfiles(default_flagfile)
    positional = parser.parse_args(args)
    if parser.values.get("version") is True:
        return parser.result(positional, shell)
    parser.forgive_undefok()
    parser.raise_errors()
    return parser.result(positional, shell)


@dataclass(frozen=True)
class _Split:
    """``SplitArgumentLocked``: the flag an argument names and its value text (None: the value must follow)."""

    key: str
    found: tuple[str, FlagSpec] | None
    value: str | None
    error: str = ""


class _Parser:
    """The mutable state of one parse (gflags' CommandLineFlagParser)."""

    def __init__(self, table: FlagTable, read_file: FileReader, program: str) -> None:
        self.table = table
        self.read_file = read_file
        self.program = program
        self.values: dict[str, FlagValue] = {name: spec.default for name, spec in table.flags.items()}
        self.explicit: set[str] = set()
        self.errors: dict[str, str] = {}
        self.undefined: set[str] = set()
        self.stderr_notes: list[str] = []
        self.warnings: list[str] = []
        self.flagfile_stack: list[str] = []

    def readable(self, path: str) -> bool:
        try:
            self.read_file(path)
        except OSError:
            return False
        return True

    def result(self, positional: tuple[str, ...], shell: bool) -> Flags:
        return Flags(
            dict(self.values), frozenset(self.explicit), positional, shell, tuple(self.warnings), table=self.table
        )

    def split(self, argument: str) -> _Split:
        key, equals, text = argument.partition("=")
        value = text if equals else None
        found = self.table.lookup(key)
        if found is None:
            unknown = f"{ERROR}unknown command line flag '{key}'"
            if not key.startswith("no"):
                return _Split(key, None, value, unknown)
            negated = self.table.lookup(key[2:])
            if negated is None:
                return _Split(key, None, value, unknown)
            if negated[1].type is not FlagType.BOOL:
                message = f"{ERROR}boolean value ({key}) specified for {negated[1].type} command line flag"
                return _Split(key, None, value, message)
            return _Split(key[2:], negated, "0")
        if value is None and found[1].type is FlagType.BOOL:
            value = "1"
        return _Split(key, found, value)

    def help_text(self, registered: str, spec: FlagSpec) -> str:
        # An alias is a gflags flag of its own whose help text is its name (OSQUERY_FLAG_ALIAS).
        return registered if registered in self.table.aliases else spec.description

    def parse_args(self, args: Sequence[str]) -> tuple[str, ...]:
        permuted: list[str] = []
        index = 0
        while index < len(args):
            arg = args[index]
            if not arg.startswith("-") or arg == "-":
                permuted.append(arg)
                index += 1
                continue
            body = arg[2:] if arg.startswith("--") else arg[1:]
            if body == "":
                return (*args[index + 1 :], *permuted)
            split = self.split(body)
            if split.found is None:
                self.undefined.add(split.key)
                self.errors[split.key] = split.error
                index += 1
                continue
            registered, spec = split.found
            value = split.value
            if value is None:
                if index + 1 >= len(args):
                    message = f"{ERROR}flag '{arg}' is missing its argument"
                    description = self.help_text(registered, spec)
                    if description and description[0] > "\x01":
                        message += f"; flag description: {description}"
                    self.errors[split.key] = message
                    break
                index += 1
                value = args[index]
                self.warn_string_as_bool(registered, spec, value)
            self.set_flag(registered, spec, value)
            index += 1
        return tuple(permuted)

    def warn_string_as_bool(self, registered: str, spec: FlagSpec, value: str) -> None:
        description = self.help_text(registered, spec)
        if value.startswith("-") and spec.type is FlagType.STRING and ("true" in description or "false" in description):
            self.warnings.append(f"Did you really mean to set flag '{registered}' to the value '{value}'?")

    def set_flag(self, registered: str, spec: FlagSpec, text: str) -> None:
        value = parse_value(spec.type, text)
        if value is None:
            self.errors[registered] = f"{ERROR}illegal value '{text}' specified for {spec.type} flag '{registered}'"
            return
        complaint = validate(spec.name, value)
        if complaint is not None:
            self.stderr_notes.append(complaint)
            self.errors[registered] = (
                f"{ERROR}failed validation of new value '{_gflags_text(value)}' for flag '{registered}'"
            )
            return
        self.values[spec.name] = value
        self.explicit.add(spec.name)
        if spec.name == "flagfile" and isinstance(value, str):
            self.process_flagfiles(value)

    def process_flagfiles(self, names: str) -> None:
        for path in self.flag_list(names):
            guard = posixpath.normpath(path)
            if guard in self.flagfile_stack or len(self.flagfile_stack) >= MAX_FLAGFILE_DEPTH:
                chain = " -> ".join([*self.flagfile_stack, guard])
                self.fatal(f"{ERROR}flagfile '{path}' includes itself ({chain})")
            try:
                contents = self.read_file(path)
            except OSError as exc:
                reason = os.strerror(exc.errno) if exc.errno else str(exc)
                self.fatal(f"{path}: {reason}")
            self.flagfile_stack.append(guard)
            try:
                self.process_flagfile_contents(contents, path)
            finally:
                self.flagfile_stack.pop()

    def process_flagfile_contents(self, contents: str, origin: str) -> None:
        relevant = True
        in_program_section = False
        for line in _flagfile_lines(contents):
            if not line or line.startswith("#"):
                continue
            if not line.startswith("-"):
                if not in_program_section:
                    in_program_section, relevant = True, False
                relevant = relevant or any(self.program_matches(glob) for glob in line.split(" "))
                continue
            in_program_section = False
            if not relevant:
                self.warnings.append(f"{origin}: '{line}' skipped: it follows a section for other programs")
                continue
            body = line[2:] if line.startswith("--") else line[1:]
            split = self.split(body)
            if split.found is None:
                self.warnings.append(f"{origin}: flagname '{split.key}' not found (line ignored, as gflags does)")
            elif split.value is None:
                self.warnings.append(f"{origin}: flagname '{split.key}' missing a value (line ignored, as gflags does)")
            else:
                self.set_flag(*split.found, split.value)

    def program_matches(self, glob: str) -> bool:
        """gflags matches a flagfile's program globs against argv[0] and its basename (fnmatch, FNM_PATHNAME)."""
        names = (self.program, posixpath.basename(self.program))
        return any(glob == name or _fnmatch_pathname(name, glob) for name in names)

    def flag_list(self, names: str) -> list[str]:
        """gflags' ParseFlagList: a comma-separated list; an empty entry or one starting with '-' is fatal."""
        if not names:
            return []
        entries: list[str] = []
        rest = names
        while rest:
            entry, comma, after = rest.partition(",")
            if not entry:
                self.fatal(f"{ERROR}empty flaglist entry")
            if entry.startswith("-"):
                self.fatal(f"{ERROR}flag \"{rest}\" begins with '-'")  # gflags prints the rest of the list
            entries.append(entry)
            rest = after if comma else ""
        return entries

    def forgive_undefok(self) -> None:
        undefok = self.values.get("undefok", "")
        for name in self.flag_list(undefok if isinstance(undefok, str) else ""):
            if name in self.undefined:
                self.errors[name] = ""
            elif f"no{name}" in self.undefined:
                self.errors[f"no{name}"] = ""

    def raise_errors(self) -> None:
        reported = [self.errors[key] for key in sorted(self.errors) if self.errors[key]]
        if reported:
            raise FlagError("\n".join([*self.stderr_notes, *reported]))

    def fatal(self, message: str) -> NoReturn:
        raise FlagError("\n".join([*self.stderr_notes, message]))


def _flagfile_lines(contents: str) -> Iterator[str]:
    """Lines as gflags cuts them: blanks skipped first, each line ends at the next '\\r' if any is left, else '\\n'."""
    contents = contents.split("\0", 1)[0]  # gflags works on a C string
    position = 0
    while True:
        while position < len(contents) and contents[position] in _C_SPACE:
            position += 1
        end = contents.find("\r", position)
        if end == -1:
            end = contents.find("\n", position)
        if end == -1:
            yield contents[position:]
            return
        yield contents[position:end]
        position = end + 1


def _fnmatch_pathname(name: str, glob: str) -> bool:
    """fnmatch(3) with FNM_PATHNAME: wildcards never match '/'."""
    glob_parts, name_parts = glob.split("/"), name.split("/")
    return len(glob_parts) == len(name_parts) and all(
        fnmatch.fnmatchcase(part, pattern) for part, pattern in zip(name_parts, glob_parts, strict=True)
    )


def _gflags_text(value: FlagValue) -> str:
    """gflags' FlagValue::ToString."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.17g}"
    return str(value)
