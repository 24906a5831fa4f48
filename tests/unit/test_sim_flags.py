"""osqueryd-sim's command line: gflags syntax, flagfiles, errors in gflags' words, osquery's flags and defaults."""

from __future__ import annotations

import errno
import math
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from osquery_sim.cpp_defaults import resolve_default
from osquery_sim.flag_specs import (
    FlagKind,
    FlagSpec,
    FlagTable,
    FlagType,
    aliases,
    canonical_name,
    known_flags,
    unresolved_defaults,
)
from osquery_sim.gflags import FlagError, Flags, parse_command_line
from osquery_sim.gflags_values import parse_value


def files(contents: Mapping[str, str]) -> Callable[[str], str]:
    """An injected flagfile reader over a dict; missing paths fail like open(2)."""

    def read(path: str) -> str:
        if path not in contents:
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", path)
        return contents[path]

    return read


def parse(
    *args: str,
    flagfiles: Mapping[str, str] | None = None,
    program: str = "osqueryd",
    default_flagfile: str | None = None,
    table: FlagTable | None = None,
) -> Flags:
    return parse_command_line(
        list(args), read_file=files(flagfiles or {}), program=program, default_flagfile=default_flagfile, table=table
    )


def error_of(*args: str, flagfiles: Mapping[str, str] | None = None) -> str:
    with pytest.raises(FlagError) as raised:
        parse(*args, flagfiles=flagfiles)
    assert raised.value.exit_code == 1
    return raised.value.message


# --- syntax forms -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "name", "expected"),
    [
        (["--tls_hostname=fleet.local:8080"], "tls_hostname", "fleet.local:8080"),
        (["--tls_hostname", "fleet.local"], "tls_hostname", "fleet.local"),
        (["-tls_hostname=fleet.local"], "tls_hostname", "fleet.local"),
        (["-tls_hostname", "fleet.local"], "tls_hostname", "fleet.local"),
        (["--tls_hostname="], "tls_hostname", ""),
        (["--tls_hostname=a=b"], "tls_hostname", "a=b"),
        (["--distributed_interval=10"], "distributed_interval", 10),
        (["--distributed_interval", "10"], "distributed_interval", 10),
        (["--distributed_interval=0x10"], "distributed_interval", 16),
        (["--distributed_interval=010"], "distributed_interval", 10),  # a leading 0 is not octal in gflags
        (["--distributed_interval= 7"], "distributed_interval", 7),
        (["--logger_min_status=-1"], "logger_min_status", -1),
        (["--sim_crash_after=2.5"], "sim_crash_after", 2.5),
        (["--sim_crash_after", "1e1"], "sim_crash_after", 10.0),
        (["--host-identifier", "uuid"], "host_identifier", "uuid"),  # dashes are read as underscores
        (["--host_identifier=a", "--host_identifier=b"], "host_identifier", "b"),  # the last one wins
        (["--tls_hostname", "--force"], "tls_hostname", "--force"),  # a non-bool flag takes the next arg, whatever
    ],
)
def test_value_forms(args: list[str], name: str, expected: object) -> None:
    flags = parse(*args)
    assert flags.as_dict()[canonical_name(name)] == expected
    assert flags.is_set(name)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--force"], True),
        (["-force"], True),
        (["--noforce"], False),
        (["-noforce"], False),
        (["--force", "--noforce"], False),
        (["--noforce", "--force"], True),
        (["--force=true"], True),
        (["--force=false"], False),
        (["--force=1"], True),
        (["--force=0"], False),
        (["--force=yes"], True),
        (["--force=no"], False),
        (["--force=t"], True),
        (["--force=f"], False),
        (["--force=y"], True),
        (["--force=n"], False),
        (["--force=TRUE"], True),
        (["--force=No"], False),
        (["--noforce=true"], False),  # gflags drops the value of --noflag=...
        ([], False),
    ],
)
def test_boolean_forms(args: list[str], expected: bool) -> None:
    assert parse(*args).boolean("force") is expected


def test_boolean_flag_does_not_consume_the_next_argument() -> None:
    flags = parse("--force", "true", "--verbose", "SELECT 1")
    assert flags.boolean("force") and flags.boolean("verbose")
    assert flags.positional == ("true", "SELECT 1")


def test_value_flag_consumes_the_next_argument_even_if_it_looks_like_a_flag() -> None:
    flags = parse("--enroll_secret_env", "ENROLL_SECRET", "--pidfile", "-")
    assert flags.string("enroll_secret_env") == "ENROLL_SECRET"
    assert flags.string("pidfile") == "-"
    assert flags.positional == ()


def test_shell_mode_keeps_the_sql_as_positional() -> None:
    flags = parse("-S", "--json", "SELECT 1")
    assert flags.shell
    assert flags.boolean("S") and flags.boolean("json")
    assert flags.positional == ("SELECT 1",)
    assert parse("--S", "--json", "select * from uptime").positional == ("select * from uptime",)


@pytest.mark.parametrize(
    ("args", "program", "shell"),
    [
        ([], "osqueryd", False),
        ([], "/opt/orbit/bin/osqueryd/linux/stable/osqueryd", False),
        ([], "osqueryd-sim", False),
        ([], "osqueryi", True),
        (["-S"], "osqueryd", True),
        (["--S"], "osqueryd", True),
        (["-S", "-D"], "osqueryd", False),
        (["-D"], "osqueryi", False),
    ],
)
def test_shell_or_daemon_like_osquery(args: list[str], program: str, shell: bool) -> None:
    assert parse(*args, program=program).shell is shell


def test_positional_arguments_anywhere_and_after_double_dash() -> None:
    flags = parse("first", "--force", "-", "--", "--verbose", "last")
    assert not flags.boolean("verbose")  # after "--" nothing is a flag
    assert flags.positional == ("--verbose", "last", "first", "-")  # gflags' final argv order


def test_aliases_set_the_canonical_flag() -> None:
    flags = parse("--config_tls_refresh=30", "--db_path=/tmp/db", "--logger_tls_max=10", "--osquery_log_dir", "/l")
    assert flags.integer("config_refresh") == 30
    assert flags.is_set("config_refresh") and flags.is_set("config_tls_refresh")
    assert flags.string("database_path") == "/tmp/db"
    assert flags.integer("logger_tls_max_linesize") == 10
    assert flags.string("logger_path") == "/l"
    assert flags.integer("config_tls_refresh") == 30  # getters accept aliases too
    assert parse("--config_tls_accelerated_refresh=9").integer("config_accelerated_refresh") == 9
    assert parse("--log_numerics_as_numbers").boolean("logger_numerics")


# --- flagfiles ----------------------------------------------------------------------------------------------------


def test_flagfile_then_later_command_line_overrides() -> None:
    flags = parse("--flagfile=/f", "--distributed_interval=5", flagfiles={"/f": "--distributed_interval=30\n"})
    assert flags.integer("distributed_interval") == 5


def test_command_line_then_later_flagfile_overrides() -> None:
    flagfiles = {"/f": "--distributed_interval=30\n--host_identifier=instance\n"}
    flags = parse("--distributed_interval=5", "--host_identifier=uuid", "--flagfile", "/f", flagfiles=flagfiles)
    assert flags.integer("distributed_interval") == 30
    assert flags.string("host_identifier") == "instance"
    assert flags.is_set("flagfile") and flags.string("flagfile") == "/f"


def test_orbit_order_flagfile_in_the_middle() -> None:
    """orbit puts --host-identifier after the flagfile so that users cannot override it (orbit-behaviour §6.3)."""
    flagfiles = {"/opt/orbit/osquery.flags": "--host_identifier=hostname\n--logger_tls_period=10\n"}
    flags = parse(
        "--host_identifier=uuid",
        "--flagfile",
        "/opt/orbit/osquery.flags",
        "--host-identifier",
        "instance",
        flagfiles=flagfiles,
    )
    assert flags.string("host_identifier") == "instance"
    assert flags.integer("logger_tls_period") == 10


def test_flagfile_syntax_comments_blanks_and_verbatim_values() -> None:
    contents = (
        "# Fleet command_line_flags\n"
        "\n"
        "   --tls_hostname=fleet.example.com\n"
        "\t-verbose\n"
        "--noforce\n"
        "--enroll_secret_env=SECRET  # not a comment\n"
        "#--distributed_interval=1\n"
        "--logger_tls_period=7"
    )
    flags = parse("--force", "--flagfile=/f", flagfiles={"/f": contents})
    assert flags.string("tls_hostname") == "fleet.example.com"
    assert flags.boolean("verbose")
    assert not flags.boolean("force")
    assert flags.string("enroll_secret_env") == "SECRET  # not a comment"
    assert flags.integer("distributed_interval") == 60
    assert flags.integer("logger_tls_period") == 7


def test_flagfile_with_windows_line_endings() -> None:
    flags = parse("--flagfile=/f", flagfiles={"/f": "--tls_hostname=a\r\n--logger_tls_period=9\r\n"})
    assert flags.string("tls_hostname") == "a"
    assert flags.integer("logger_tls_period") == 9


def test_flagfile_lines_gflags_ignores_are_ignored_and_reported_as_warnings() -> None:
    contents = "--no_such_flag=1\n--tls_hostname fleet.local\n--config_refresh\n--verbose\n"
    flags = parse("--flagfile=/f", flagfiles={"/f": contents})
    assert flags.boolean("verbose")
    assert flags.string("tls_hostname") == ""
    assert not flags.is_set("config_refresh")
    assert len(flags.warnings) == 3
    assert "flagname 'no_such_flag' not found" in flags.warnings[0]


def test_flagfile_program_sections() -> None:
    contents = "--verbose\nosqueryi\n--tls_hostname=shell.only\nosqueryd osq*\n--logger_tls_period=8\n"
    flags = parse("--flagfile=/f", flagfiles={"/f": contents}, program="/usr/bin/osqueryd")
    assert flags.boolean("verbose")
    assert flags.string("tls_hostname") == ""
    assert flags.integer("logger_tls_period") == 8


def test_a_flag_without_dashes_in_a_flagfile_silences_the_rest() -> None:
    flags = parse("--flagfile=/f", flagfiles={"/f": "tls_hostname=fleet.local\n--verbose\n"})
    assert flags.string("tls_hostname") == "" and not flags.boolean("verbose")


def test_nested_flagfiles_apply_in_place() -> None:
    flagfiles = {
        "/outer": "--distributed_interval=1\n--flagfile=/inner\n--logger_tls_period=3\n",
        "/inner": "--distributed_interval=2\n--logger_tls_period=2\n--config_refresh=2\n",
    }
    flags = parse("--flagfile=/outer", flagfiles=flagfiles)
    assert flags.integer("distributed_interval") == 2
    assert flags.integer("logger_tls_period") == 3
    assert flags.integer("config_refresh") == 2


def test_flagfile_list_is_read_in_order() -> None:
    flagfiles = {"/a": "--distributed_interval=1\n--verbose\n", "/b": "--distributed_interval=2\n"}
    flags = parse("--flagfile=/a,/b", flagfiles=flagfiles)
    assert flags.integer("distributed_interval") == 2 and flags.boolean("verbose")


@pytest.mark.parametrize(
    "flagfiles",
    [
        {"/a": "--flagfile=/a\n"},
        {"/a": "--flagfile=/b\n", "/b": "--verbose\n--flagfile=/a\n"},
        {"/a": "--flagfile=./b\n", "./b": "--flagfile=/x/../a\n"},
    ],
)
def test_flagfile_recursion_is_refused(flagfiles: dict[str, str]) -> None:
    message = error_of("--flagfile=/a", flagfiles=flagfiles)
    assert message.startswith("ERROR: flagfile '")
    assert "includes itself" in message


def test_the_same_flagfile_twice_in_a_row_is_not_recursion() -> None:
    flags = parse("--flagfile=/a", "--flagfile=/a", flagfiles={"/a": "--verbose\n"})
    assert flags.boolean("verbose")


def test_missing_flagfile_is_fatal_with_perror_text() -> None:
    assert (
        error_of("--flagfile", "/etc/osquery/osquery.flags") == "/etc/osquery/osquery.flags: No such file or directory"
    )
    assert error_of("--flagfile=/a", flagfiles={"/a": "--flagfile=/gone\n"}) == "/gone: No such file or directory"


def test_missing_flagfile_with_the_real_reader(tmp_path: Path) -> None:
    path = tmp_path / "missing.flags"
    with pytest.raises(FlagError) as raised:
        parse_command_line([f"--flagfile={path}"])
    assert raised.value.message == f"{path}: No such file or directory"
    (tmp_path / "osquery.flags").write_text("--tls_hostname=real.file\n", encoding="utf-8")
    flags = parse_command_line(["--flagfile", str(tmp_path / "osquery.flags")])
    assert flags.string("tls_hostname") == "real.file"


@pytest.mark.parametrize(
    ("value", "expected"),
    [("a,,b", "ERROR: empty flaglist entry"), ("/a,-b", "ERROR: flag \"-b\" begins with '-'")],
)
def test_bad_flagfile_lists(value: str, expected: str) -> None:
    assert error_of(f"--flagfile={value}", flagfiles={"/a": ""}) == expected


def test_default_flagfile_only_without_a_flagfile_argument() -> None:
    flagfiles = {"/etc/osquery/osquery.flags.default": "--verbose\n", "/f": "--force\n"}
    flags = parse(default_flagfile="/etc/osquery/osquery.flags.default", flagfiles=flagfiles)
    assert flags.boolean("verbose")
    flags = parse("--flagfile=/f", default_flagfile="/etc/osquery/osquery.flags.default", flagfiles=flagfiles)
    assert not flags.boolean("verbose") and flags.boolean("force")
    assert not parse(default_flagfile="/absent", flagfiles=flagfiles).boolean("verbose")


# --- errors -------------------------------------------------------------------------------------------------------


ILLEGAL = "ERROR: illegal value "
FAILED = "ERROR: failed validation of new value "


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--foo"], "ERROR: unknown command line flag 'foo'"),
        (["-foo=1"], "ERROR: unknown command line flag 'foo'"),
        (["--nofoo"], "ERROR: unknown command line flag 'nofoo'"),
        (["--no-force"], "ERROR: unknown command line flag 'no-force'"),
        (["--helpfull"], "ERROR: unknown command line flag 'helpfull'"),
        (["--fromenv=tls_hostname"], "ERROR: unknown command line flag 'fromenv'"),
        (["--distributed_interval=x"], ILLEGAL + "'x' specified for uint64 flag 'distributed_interval'"),
        (["--distributed_interval=-1"], ILLEGAL + "'-1' specified for uint64 flag 'distributed_interval'"),
        (["--distributed_interval=60 "], ILLEGAL + "'60 ' specified for uint64 flag 'distributed_interval'"),
        (["--distributed_interval="], ILLEGAL + "'' specified for uint64 flag 'distributed_interval'"),
        (["--distributed_interval=1.5"], ILLEGAL + "'1.5' specified for uint64 flag 'distributed_interval'"),
        (["--logger_min_status=2147483648"], ILLEGAL + "'2147483648' specified for int32 flag 'logger_min_status'"),
        (["--sim_exit_code=abc"], ILLEGAL + "'abc' specified for int32 flag 'sim_exit_code'"),
        (["--carver_block_size=4294967296"], ILLEGAL + "'4294967296' specified for uint32 flag 'carver_block_size'"),
        (["--sim_crash_after=soon"], ILLEGAL + "'soon' specified for double flag 'sim_crash_after'"),
        (["--sim_crash_after=1e999"], ILLEGAL + "'1e999' specified for double flag 'sim_crash_after'"),
        (["--force=maybe"], ILLEGAL + "'maybe' specified for bool flag 'force'"),
        (["--force="], ILLEGAL + "'' specified for bool flag 'force'"),
        (["--config_tls_refresh=x"], ILLEGAL + "'x' specified for uint64 flag 'config_tls_refresh'"),
        (
            ["--host-identifier"],
            "ERROR: flag '--host-identifier' is missing its argument; flag description: "
            "Field used to identify the host running osquery (hostname, uuid, instance, ephemeral, specified)",
        ),
        (
            ["--config_tls_refresh"],
            "ERROR: flag '--config_tls_refresh' is missing its argument; flag description: config_tls_refresh",
        ),
        (["--noconfig_refresh"], "ERROR: boolean value (noconfig_refresh) specified for uint64 command line flag"),
        (
            ["--alarm_timeout=5"],
            "Alarm timeout cannot be lower than 10 seconds\n" + FAILED + "'5' for flag 'alarm_timeout'",
        ),
        (
            ["--logger_mode=rw-r"],
            "Failed to convert logger_mode string to octal\n" + FAILED + "'rw-r' for flag 'logger_mode'",
        ),
        (
            ["--logger_mode=0999"],
            "The logger_mode flag does not contain a valid UNIX permission\n"
            + FAILED
            + "'0999' for flag 'logger_mode'",
        ),
        (
            ["--logger_mode=010000"],
            "The logger_mode flag does not contain a valid UNIX permission\n"
            + FAILED
            + "'010000' for flag 'logger_mode'",
        ),
        (
            ["--aws_imdsv2_request_attempts=0"],
            "Only values higher than 0 are supported for aws_imdsv2_request_attempts\n"
            + FAILED
            + "'0' for flag 'aws_imdsv2_request_attempts'",
        ),
    ],
)
def test_errors_in_gflags_words(args: list[str], message: str) -> None:
    assert error_of(*args) == message


def test_all_errors_are_reported_sorted_by_flag_name() -> None:
    message = error_of("--zzz", "--distributed_interval=x", "--aaa", "--verbose")
    assert message.splitlines() == [
        "ERROR: unknown command line flag 'aaa'",
        "ERROR: illegal value 'x' specified for uint64 flag 'distributed_interval'",
        "ERROR: unknown command line flag 'zzz'",
    ]


def test_a_missing_argument_stops_parsing() -> None:
    # gflags treats it as unrecoverable: nothing after it is parsed, and earlier errors are still reported.
    assert error_of("--bogus", "--pidfile").splitlines() == [
        "ERROR: unknown command line flag 'bogus'",
        "ERROR: flag '--pidfile' is missing its argument; flag description: Path to the daemon pidfile mutex",
    ]


def test_bad_values_in_a_flagfile_are_errors() -> None:
    message = error_of("--flagfile=/f", flagfiles={"/f": "--distributed_interval=ten\n"})
    assert message == "ERROR: illegal value 'ten' specified for uint64 flag 'distributed_interval'"
    trailing_blank = error_of("--flagfile=/f", flagfiles={"/f": "--config_refresh=60 \n"})
    assert trailing_blank == "ERROR: illegal value '60 ' specified for uint64 flag 'config_refresh'"


def test_a_later_good_value_does_not_erase_an_error() -> None:
    assert "illegal value 'x'" in error_of("--distributed_interval=x", "--distributed_interval=5")


def test_undefok_forgives_unknown_names() -> None:
    flags = parse("--undefok=future_flag,other", "--future_flag=1", "--noother", "--verbose")
    assert flags.boolean("verbose")
    assert error_of("--undefok=future_flag", "--future_flag=1", "--bogus") == "ERROR: unknown command line flag 'bogus'"


def test_version_wins_over_bad_flags_and_help_wins_over_everything() -> None:
    flags = parse("--bogus", "--version")
    assert flags.boolean("version") and not flags.boolean("help")
    for spelling in ("--help", "-help", "--h", "-h"):
        flags = parse("--bogus", "--flagfile=/missing", spelling)
        assert flags.boolean("help") and flags.is_set("help")
    assert parse("-S", "--help").shell


def test_string_flag_given_a_dash_value_warns_when_its_help_talks_about_booleans() -> None:
    flags = parse("--separator", "-x")
    assert flags.string("separator") == "-x"
    assert flags.warnings == ()
    switch = FlagSpec("mode", FlagType.STRING, "", FlagKind.FLAG, "Either true or false")
    table = FlagTable({"mode": switch}, {})
    flags = parse("--mode", "--other=1", table=table)
    assert flags.string("mode") == "--other=1"
    assert flags.warnings == ("Did you really mean to set flag 'mode' to the value '--other=1'?",)


# --- getters ------------------------------------------------------------------------------------------------------


def test_getters_check_names_and_types() -> None:
    flags = parse("--distributed_interval=10", "--sim_slow_start=0.5")
    assert flags.number("distributed_interval") == 10.0
    assert flags.number("sim_slow_start") == 0.5
    with pytest.raises(KeyError):
        flags.string("no_such_flag")
    with pytest.raises(KeyError):
        flags.is_set("no_such_flag")
    with pytest.raises(TypeError):
        flags.integer("tls_hostname")
    with pytest.raises(TypeError):
        flags.boolean("distributed_interval")
    with pytest.raises(TypeError):
        flags.string("force")
    with pytest.raises(TypeError):
        flags.number("force")
    with pytest.raises(TypeError):
        flags.integer("sim_slow_start")


def test_is_set_only_for_explicit_flags() -> None:
    flags = parse("--distributed_interval=60")
    assert flags.is_set("distributed_interval")
    assert not flags.is_set("config_refresh")
    assert flags.integer("config_refresh") == 0


def test_as_dict_has_every_canonical_flag() -> None:
    values = parse("--verbose").as_dict()
    assert set(values) == set(known_flags())
    assert values["verbose"] is True
    assert "config_tls_refresh" not in values


# --- the flags orbit passes (docs/reference/orbit-behaviour.md §6) ----------------------------------------------------

ORBIT_COMMAND_LINE = [
    "--pidfile=/opt/orbit/osquery.pid",
    "--database_path=/opt/orbit/osquery.db",
    "--extensions_socket=/opt/orbit/orbit-osquery.em",
    "--logger_path=/opt/orbit/osquery_log",
    "--enroll_secret_env",
    "ENROLL_SECRET",
    "--host_identifier=uuid",
    "--tls_hostname=fleet.example.com:8080",
    "--enroll_tls_endpoint=/api/v1/osquery/enroll",
    "--config_plugin=tls",
    "--config_tls_endpoint=/api/v1/osquery/config",
    "--config_refresh=60",
    "--disable_distributed=false",
    "--distributed_plugin=tls",
    "--distributed_tls_max_attempts=10",
    "--distributed_tls_read_endpoint=/api/v1/osquery/distributed/read",
    "--distributed_tls_write_endpoint=/api/v1/osquery/distributed/write",
    "--logger_plugin=tls,filesystem",
    "--logger_tls_endpoint=/api/v1/osquery/log",
    "--disable_carver=false",
    "--carver_disable_function=false",
    "--carver_start_endpoint=/api/v1/osquery/carve/begin",
    "--carver_continue_endpoint=/api/v1/osquery/carve/block",
    "--carver_block_size=2000000",
    "--tls_server_certs",
    "/opt/orbit/certs.pem",
    "--tls_client_cert",
    "/opt/orbit/fleet_client.crt",
    "--tls_client_key",
    "/opt/orbit/fleet_client.key",
    "--augeas_lenses",
    "/opt/orbit/lenses",
    "--force",
    "--verbose",
    "--tls_dump",
    "--flagfile",
    "/opt/orbit/osquery.flags",
    "--host-identifier",
    "instance",
    "--database_path",
    "/opt/orbit/osquery.db",
    "--extensions_autoload",
    "/opt/orbit/extensions.load",
]


def test_every_flag_orbit_passes_parses() -> None:
    flags = parse(*ORBIT_COMMAND_LINE, flagfiles={"/opt/orbit/osquery.flags": ""}, program="/opt/orbit/osqueryd")
    expected: dict[str, object] = {
        "pidfile": "/opt/orbit/osquery.pid",
        "database_path": "/opt/orbit/osquery.db",
        "extensions_socket": "/opt/orbit/orbit-osquery.em",
        "logger_path": "/opt/orbit/osquery_log",
        "enroll_secret_env": "ENROLL_SECRET",
        "host_identifier": "instance",
        "tls_hostname": "fleet.example.com:8080",
        "enroll_tls_endpoint": "/api/v1/osquery/enroll",
        "config_plugin": "tls",
        "config_tls_endpoint": "/api/v1/osquery/config",
        "config_refresh": 60,
        "disable_distributed": False,
        "distributed_plugin": "tls",
        "distributed_tls_max_attempts": 10,
        "distributed_tls_read_endpoint": "/api/v1/osquery/distributed/read",
        "distributed_tls_write_endpoint": "/api/v1/osquery/distributed/write",
        "logger_plugin": "tls,filesystem",
        "logger_tls_endpoint": "/api/v1/osquery/log",
        "disable_carver": False,
        "carver_disable_function": False,
        "carver_start_endpoint": "/api/v1/osquery/carve/begin",
        "carver_continue_endpoint": "/api/v1/osquery/carve/block",
        "carver_block_size": 2000000,
        "tls_server_certs": "/opt/orbit/certs.pem",
        "tls_client_cert": "/opt/orbit/fleet_client.crt",
        "tls_client_key": "/opt/orbit/fleet_client.key",
        "augeas_lenses": "/opt/orbit/lenses",
        "force": True,
        "verbose": True,
        "tls_dump": True,
        "flagfile": "/opt/orbit/osquery.flags",
        "extensions_autoload": "/opt/orbit/extensions.load",
    }
    values = flags.as_dict()
    assert {name: values[name] for name in expected} == expected
    assert all(flags.is_set(name) for name in expected)
    assert not flags.shell and flags.positional == () and flags.warnings == ()


def test_orbit_user_flags_after_double_dash_of_orbit_are_plain_flags_here() -> None:
    flags = parse(
        *ORBIT_COMMAND_LINE, "--verbose", "--distributed_interval=10", flagfiles={"/opt/orbit/osquery.flags": ""}
    )
    assert flags.integer("distributed_interval") == 10


# --- defaults and the flag table ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "default"),
    [
        ("distributed_interval", 60),
        ("config_refresh", 0),
        ("logger_tls_period", 4),
        ("logger_tls_max_lines", 1024),
        ("tls_enroll_max_attempts", 12),
        ("tls_enroll_max_interval", 600),
        ("config_tls_max_attempts", 3),
        ("distributed_tls_max_attempts", 3),
        ("buffered_log_max", 1000000),
        ("host_identifier", "hostname"),
        ("config_accelerated_refresh", 300),
        ("logger_tls_max_linesize", 1024 * 1024),
        ("logger_tls_backoff_max", 3600),
        ("distributed_denylist_duration", 86400),
        ("tls_enroll_override", "enroll_secret"),
        ("pack_delimiter", "_"),
        ("disable_distributed", True),
        ("logger_plugin", "filesystem"),
        ("config_plugin", "filesystem"),
        ("tls_session_reuse", True),
        ("logger_syslog_facility", 19),
        ("sim_exit_code", 1),
        ("sim_crash_after", 0.0),
        ("sim_uuid", ""),
        ("stderrthreshold", 2),
    ],
)
def test_defaults_match_osquery(name: str, default: object) -> None:
    assert known_flags()[name].default == default
    assert parse().as_dict()[name] == default


def test_symbolic_path_defaults_are_linux_osquery_paths() -> None:
    assert resolve_default('OSQUERY_DB_HOME "osquery.db"', "string").value == "/var/osquery/osquery.db"
    assert resolve_default('OSQUERY_PIDFILE "osqueryd.pidfile"', "string").value == "/var/run/osqueryd.pidfile"
    assert (
        resolve_default('OSQUERY_CERTS_HOME "certs.pem"', "string").value
        == "/opt/osquery/share/osquery/certs/certs.pem"
    )
    expression = '(fs::path(OSQUERY_HOME) / "osquery.conf").make_preferred().string()'
    assert resolve_default(expression, "string").value == "/etc/osquery/osquery.conf"
    assert resolve_default(expression, "string", "windows").value == "\\Program Files\\osquery\\osquery.conf"
    assert resolve_default('OSQUERY_SOCKET "osquery.em"', "string", "windows").value == "\\\\.\\pipe\\osquery.em"


@pytest.mark.parametrize(
    ("expression", "type_name", "value", "exact"),
    [
        ("60 * 60 * 24 * 30", "uint64", 2592000, True),
        ("1 * 1024 * 1024", "uint64", 1048576, True),
        ("LOG_LOCAL3 >> 3", "int32", 19, True),
        ("kEventTraceBufferSize", "uint32", 256, True),
        ("100UL", "uint64", 100, True),
        ('"3"', "string", "3", True),
        ("true", "bool", True, True),
        ("kSomethingUnknown", "uint64", 0, False),
        ("getDefault()", "string", "", False),
        ("maybe", "bool", False, False),
    ],
)
def test_cpp_default_expressions(expression: str, type_name: str, value: object, exact: bool) -> None:
    resolved = resolve_default(expression, type_name)
    assert (resolved.value, resolved.exact) == (value, exact)


def test_every_osquery_default_is_resolved_and_round_trips_through_the_parser() -> None:
    assert unresolved_defaults() == ()
    for name, spec in known_flags().items():
        if spec.type is FlagType.BOOL:
            text = "true" if spec.default else "false"
        elif spec.type is FlagType.DOUBLE:
            text = repr(spec.default)
        else:
            text = str(spec.default)
        flags = parse(f"--{name}={text}")
        assert flags.as_dict()[name] == spec.default, name


def test_table_covers_osquery_builtins_and_sim_flags() -> None:
    flags = known_flags()
    assert (
        len([spec for spec in flags.values() if spec.kind not in {FlagKind.SIM, FlagKind.GFLAGS, FlagKind.GLOG}]) == 272
    )
    assert flags["S"].type is FlagType.BOOL and flags["S"].kind is FlagKind.CLI_FLAG
    assert flags["json"].kind is FlagKind.SHELL_FLAG
    assert {"flagfile", "version", "help", "undefok"} <= {n for n, s in flags.items() if s.kind is FlagKind.GFLAGS}
    sim = {name: spec.type for name, spec in flags.items() if spec.kind is FlagKind.SIM}
    assert all(name.startswith("sim_") for name in sim)
    assert sim["sim_crash_after"] is FlagType.DOUBLE and sim["sim_exit_code"] is FlagType.INT32
    assert sim["sim_ignore_sigterm"] is FlagType.BOOL and sim["sim_os_platform"] is FlagType.STRING
    assert aliases()["config_tls_refresh"] == "config_refresh"
    assert canonical_name("host-identifier") == "host_identifier"
    with pytest.raises(KeyError):
        canonical_name("bogus")


# --- gflags' value grammar ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flag_type", "text", "value"),
    [
        (FlagType.INT32, "+5", 5),
        (FlagType.INT32, "-0x10", None),
        (FlagType.INT32, "0x", None),
        (FlagType.INT32, "2147483647", 2147483647),
        (FlagType.INT32, "-2147483648", -2147483648),
        (FlagType.UINT64, "18446744073709551615", 2**64 - 1),
        (FlagType.UINT64, "18446744073709551616", None),
        (FlagType.UINT64, "  7", 7),
        (FlagType.UINT64, " -7", None),
        (FlagType.INT64, "9223372036854775808", None),
        (FlagType.DOUBLE, "inf", math.inf),
        (FlagType.DOUBLE, "-Infinity", -math.inf),
        (FlagType.DOUBLE, "0x1p4", 16.0),
        (FlagType.DOUBLE, ".5", 0.5),
        (FlagType.DOUBLE, "5.", 5.0),
        (FlagType.DOUBLE, "1_000", None),
        (FlagType.DOUBLE, "1e-400", None),
        (FlagType.DOUBLE, "0", 0.0),
        (FlagType.BOOL, "on", None),
        (FlagType.STRING, " padded ", " padded "),
    ],
)
def test_gflags_value_grammar(flag_type: FlagType, text: str, value: object) -> None:
    assert parse_value(flag_type, text) == value


def test_osquery_flags_lists_osquerys_flags_with_defaults_and_effective_values(tmp_path: Path) -> None:
    from osquery_sim.flag_rows import effective_flags  # noqa: PLC0415
    from osquery_sim.identity import machine_identity  # noqa: PLC0415
    from osquery_sim.table_rows import SimRuntime  # noqa: PLC0415
    from osquery_sim.tables import SimDatabase  # noqa: PLC0415

    flags = parse("--config_refresh=42", "--host_identifier", "uuid", "--nodisable_distributed", "--sim_hostname=h")
    rows = {row.name: row for row in effective_flags(flags)}
    assert rows["config_refresh"].value == "42" and rows["config_refresh"].default_value == "0"
    assert rows["host_identifier"].value == "uuid" and rows["host_identifier"].default_value == "hostname"
    assert rows["disable_distributed"].value == "false" and rows["disable_distributed"].default_value == "true"
    assert rows["sim_hostname"].value == "h"  # the simulator's own knobs are visible to a live query
    assert "flagfile" not in rows and "v" not in rows  # gflags' and glog's own flags are not osquery's
    database = SimDatabase(machine_identity({}), SimRuntime("5.14.1+sim", "i", 1, 1), flags=effective_flags(flags))
    try:
        answer = database.query("SELECT value FROM osquery_flags WHERE name = 'config_refresh'")
    finally:
        database.close()
    assert answer == [{"value": "42"}]
