"""osqueryd-sim's tables and shell: identity from a fake root, osquery's schemas, read-only SQL, `-S --json` output."""

from __future__ import annotations

import io
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from osquery_sim.identity import SimIdentity, machine_identity, parse_os_release
from osquery_sim.shell import render_pretty, run_shell
from osquery_sim.table_values import parse_c_integer, render_value
from osquery_sim.tables import OsqueryFlag, QueryError, SimDatabase, SimRuntime, split_statements

PACKAGED_SCHEMAS = Path(__file__).resolve().parents[2] / "osquery_sim" / "data" / "osquery-tables.json"

UBUNTU = """PRETTY_NAME="Ubuntu 22.04.3 LTS"
NAME="Ubuntu"
VERSION_ID="22.04"
VERSION="22.04.3 LTS (Jammy Jellyfish)"
VERSION_CODENAME=jammy
ID=ubuntu
ID_LIKE=debian
UBUNTU_CODENAME=jammy
"""
DEBIAN = """PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"
NAME="Debian GNU/Linux"
VERSION_ID="12"
VERSION="12 (bookworm)"
VERSION_CODENAME=bookworm
ID=debian
"""
RHEL = """NAME="Red Hat Enterprise Linux"
VERSION="9.3 (Plow)"
ID="rhel"
ID_LIKE="fedora"
VERSION_ID="9.3"
"""
SQL_HOST_INFO = (
    "SELECT si.uuid, si.hardware_serial, si.hostname, si.computer_name, si.hardware_model, os.platform, "
    "os.platform_like, os.version AS os_version, oi.instance_id, oi.version AS osquery_version "
    "FROM system_info si, os_version os, osquery_info oi"
)
FLEET_DISCOVERY = "SELECT 1 FROM osquery_registry WHERE active = true AND registry = 'table' AND name = '{}'"


def fake_root(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "root"
    root.mkdir(parents=True, exist_ok=True)
    for relative, content in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content, encoding="utf-8")
    return root


def names() -> tuple[str, str]:
    return "host1.example.com", "host1"


def identity_of(root: Path, overrides: dict[str, str] | None = None) -> SimIdentity:
    return machine_identity(overrides or {}, root=root, hostnames=names)


IDENTITY = SimIdentity(
    uuid="4c4c4544-0042-3510-8052-b2c04f564d32",
    hostname="laptop.example.com",
    computer_name="laptop",
    local_hostname="laptop.example.com",
    hardware_serial="C02XYZ",
    hardware_model="XPS 13 9310",
    hardware_vendor="Dell Inc.",
    cpu_type="x86_64",
    cpu_brand="Intel(R) Core(TM) i7",
    cpu_physical_cores=4,
    cpu_logical_cores=8,
    cpu_sockets=1,
    physical_memory=16_000_000_000,
    os_platform="ubuntu",
    os_platform_like="debian",
    os_name="Ubuntu",
    os_version="22.04.3 LTS (Jammy Jellyfish)",
    os_major="22",
    os_minor="04",
    os_patch="0",
    os_codename="jammy",
    os_arch="x86_64",
)
RUNTIME = SimRuntime(version="5.14.1+sim", instance_id="inst-1", pid=4242, start_time=1_700_000_000)


@pytest.fixture
def db(tmp_path: Path) -> Iterator[SimDatabase]:
    passwd = "root:x:0:0:root:/root:/bin/bash\nalice:x:1000:1000:Alice:/home/a:/bin/zsh\n"
    root = fake_root(tmp_path, {"etc/passwd": passwd})
    flags = [
        OsqueryFlag("distributed_interval", "int32", "Seconds between polls", "60", "10"),
        OsqueryFlag("S", "bool", "Run as a shell", "false", "true", shell_only=True),
    ]
    database = SimDatabase(IDENTITY, RUNTIME, flags=flags, root=root, clock=lambda: 1_700_000_123.0)
    yield database
    database.close()


# --- identity ------------------------------------------------------------------------------------------------------


def test_identity_from_dmi_and_ubuntu(tmp_path: Path) -> None:
    root = fake_root(
        tmp_path,
        {
            "sys/class/dmi/id/product_uuid": "4C4C4544-0042-3510-8052-B2C04F564D32\n",
            "sys/class/dmi/id/product_serial": "5CG1234\n",
            "sys/class/dmi/id/sys_vendor": "HP\n",
            "sys/class/dmi/id/product_name": "HP EliteBook 840 G8\n",
            "sys/class/dmi/id/bios_vendor": "HP\n",
            "sys/class/dmi/id/bios_version": "T37 Ver. 01.10.00\n",
            "etc/machine-id": "0123456789abcdef0123456789abcdef\n",
            "etc/os-release": UBUNTU,
            "proc/cpuinfo": "processor\t: 0\nmodel\t\t: 140\nmodel name\t: 11th Gen Intel(R) Core(TM) i5\n"
            "microcode\t: 0xa4\nsiblings\t: 8\n",
            "proc/version": "Linux version 6.5.0-14-generic (buildd@lcy02) #14-Ubuntu SMP\n",
            "proc/cmdline": "BOOT_IMAGE=/boot/vmlinuz-6.5.0 root=UUID=abcd ro quiet splash\n",
        },
    )
    identity = identity_of(root)
    assert identity.uuid == "4C4C4544-0042-3510-8052-B2C04F564D32"  # as the kernel gives it, machine-id unused
    assert (identity.hostname, identity.computer_name, identity.local_hostname) == (
        "host1.example.com",
        "host1",
        "host1.example.com",
    )
    assert (identity.hardware_serial, identity.hardware_vendor, identity.hardware_model) == (
        "5CG1234",
        "HP",
        "HP EliteBook 840 G8",
    )
    assert (identity.os_platform, identity.os_platform_like, identity.os_name) == ("ubuntu", "debian", "Ubuntu")
    assert identity.os_version == "22.04.3 LTS (Jammy Jellyfish)"
    assert (identity.os_major, identity.os_minor, identity.os_patch, identity.os_codename) == ("22", "04", "0", "jammy")
    assert (identity.cpu_subtype, identity.cpu_microcode) == ("140", "0xa4")
    assert identity.cpu_brand == "11th Gen Intel(R) Core(TM) i5"
    assert (identity.kernel_version, identity.kernel_path, identity.kernel_device) == (
        "6.5.0-14-generic",
        "/boot/vmlinuz-6.5.0",
        "UUID=abcd",
    )
    assert identity.kernel_arguments == "ro quiet splash"
    assert identity.bios_readable and identity.bios_vendor == "HP"


def test_identity_without_dmi_uses_a_stable_id_from_machine_id(tmp_path: Path) -> None:
    root = fake_root(tmp_path, {"etc/machine-id": "0123456789abcdef0123456789abcdef\n"})
    first, second = identity_of(root), identity_of(root)
    assert first.uuid == second.uuid
    assert str(uuid.UUID(first.uuid)) == first.uuid  # a canonical (lower-case) UUID like osquery generates
    assert first.uuid.replace("-", "") != "0123456789abcdef0123456789abcdef"  # the machine id itself never leaks
    (root / "etc/machine-id").write_text("fedcba9876543210fedcba9876543210\n", encoding="utf-8")
    assert identity_of(root).uuid != first.uuid
    assert (first.hardware_serial, first.hardware_model, first.bios_readable) == ("", "", False)


@pytest.mark.parametrize("product_uuid", ["directory", "00000000-0000-0000-0000-000000000000\n", "\n"])
def test_identity_ignores_unreadable_or_placeholder_dmi_uuid(tmp_path: Path, product_uuid: str) -> None:
    root = fake_root(tmp_path, {"etc/machine-id": "0123456789abcdef0123456789abcdef\n"})
    without_dmi = identity_of(root).uuid
    dmi = root / "sys/class/dmi/id/product_uuid"
    dmi.parent.mkdir(parents=True)
    if product_uuid == "directory":
        dmi.mkdir()  # reading it fails like an unreadable file
    else:
        dmi.write_text(product_uuid, encoding="utf-8")
    assert identity_of(root).uuid == without_dmi


def test_identity_with_nothing_readable_does_not_crash(tmp_path: Path) -> None:
    identity = identity_of(tmp_path / "empty")
    assert (identity.os_name, identity.os_platform, identity.os_version) == ("Unknown", "posix", "")
    assert (identity.os_major, identity.os_minor, identity.os_patch) == ("0", "0", "0")
    assert uuid.UUID(identity.uuid)  # derived from the hostname as a last resort
    assert identity.cpu_sockets is None and identity.kernel_version == ""


def test_os_release_debian_rhel_and_quirks(tmp_path: Path) -> None:
    debian = identity_of(fake_root(tmp_path, {"etc/os-release": DEBIAN}))
    assert (debian.os_platform, debian.os_platform_like, debian.os_version) == ("debian", "", "12 (bookworm)")
    assert (debian.os_major, debian.os_minor, debian.os_codename) == ("12", "0", "bookworm")

    redhat_release = "Red Hat Enterprise Linux release 9.3 (Plow)\n"
    rhel_root = fake_root(tmp_path / "rhel", {"etc/os-release": RHEL, "etc/redhat-release": redhat_release})
    rhel = identity_of(rhel_root)
    # osquery lets /etc/redhat-release win: platform and platform_like become "rhel", version is its text.
    assert (rhel.os_platform, rhel.os_platform_like) == ("rhel", "rhel")
    assert (rhel.os_name, rhel.os_version) == ("Red Hat Enterprise Linux", redhat_release.strip())
    assert (rhel.os_major, rhel.os_minor, rhel.os_patch, rhel.os_build) == ("9", "3", "0", "")

    parsed = parse_os_release('EMPTY=\nNAME="A=B"\nID=arch\nVERSION_ID=1.2.3.4\nFOO_CODENAME=odd\nNOISE=1\n')
    assert parsed == {"name": "A=B", "platform": "arch", "major": "1", "minor": "2", "patch": "3.4", "codename": "odd"}


def test_overrides_win_and_are_checked(tmp_path: Path) -> None:
    root = fake_root(tmp_path, {"etc/os-release": UBUNTU, "sys/class/dmi/id/product_serial": "REAL\n"})
    identity = identity_of(
        root,
        {
            "uuid": "11111111-2222-3333-4444-555555555555",
            "hostname": "sim-0001",
            "hardware_serial": "SIM0001",
            "hardware_model": "Simulated",
            "hardware_vendor": "Sim Inc.",
            "os_platform": "rhel",
            "os_name": "Rocky Linux",
            "os_version": "9.4.1 (Blue Onyx)",
            "computer_name": "",  # empty values are ignored
        },
    )
    assert identity.uuid == "11111111-2222-3333-4444-555555555555"
    assert (identity.hostname, identity.local_hostname, identity.computer_name) == ("sim-0001", "sim-0001", "sim-0001")
    assert (identity.hardware_serial, identity.hardware_model, identity.hardware_vendor) == (
        "SIM0001",
        "Simulated",
        "Sim Inc.",
    )
    assert (identity.os_platform, identity.os_platform_like, identity.os_codename) == ("rhel", "", "")
    assert (identity.os_name, identity.os_version) == ("Rocky Linux", "9.4.1 (Blue Onyx)")
    assert (identity.os_major, identity.os_minor, identity.os_patch) == ("9", "4", "1")
    assert identity_of(root, {"computer_name": "Alice's laptop"}).computer_name == "Alice's laptop"
    with pytest.raises(ValueError, match="sim_bogus"):
        identity_of(root, {"sim_bogus": "x"})


# --- tables --------------------------------------------------------------------------------------------------------


def test_every_table_has_osquerys_columns_and_types(db: SimDatabase) -> None:
    schemas = json.loads(PACKAGED_SCHEMAS.read_text(encoding="utf-8"))
    declared = {"UNSIGNED_BIGINT": "UNSIGNED BIGINT", "DATETIME": "TEXT"}
    required = {"system_info", "os_version", "osquery_info", "uptime", "processes", "osquery_registry", "osquery_flags"}
    assert required | {"time", "kernel_info", "platform_info", "interface_addresses", "users"} <= set(db.tables())
    for table in db.tables():
        expected = schemas[table]["columns"]
        info = db.query_typed(f"PRAGMA table_info({table})")
        assert [row["name"] for row in info] == [column["name"] for column in expected], table
        assert [row["type"] for row in info] == [declared.get(c["type"], c["type"]) for c in expected], table
        outcome = db.execute(f"SELECT * FROM {table}")
        assert outcome.error is None
        assert list(outcome.results[0].columns) == [column["name"] for column in expected], table


def test_system_info_os_version_and_osquery_info_values(db: SimDatabase) -> None:
    [system] = db.query("SELECT * FROM system_info")
    assert system["uuid"] == IDENTITY.uuid
    assert (system["hostname"], system["computer_name"], system["local_hostname"]) == (
        "laptop.example.com",
        "laptop",
        "laptop.example.com",
    )
    assert (system["hardware_serial"], system["hardware_vendor"], system["hardware_model"]) == (
        "C02XYZ",
        "Dell Inc.",
        "XPS 13 9310",
    )
    assert (system["cpu_logical_cores"], system["physical_memory"], system["cpu_microcode"]) == ("8", "16000000000", "")
    assert all(isinstance(value, str) for value in system.values())

    [os_row] = db.query("SELECT * FROM os_version")
    assert (os_row["platform"], os_row["platform_like"], os_row["version"]) == (
        "ubuntu",
        "debian",
        "22.04.3 LTS (Jammy Jellyfish)",
    )
    assert (os_row["major"], os_row["minor"], os_row["codename"]) == ("22", "4", "jammy")  # "04" is an INTEGER column
    assert db.query_typed("SELECT major, minor, build FROM os_version") == [{"major": 22, "minor": 4, "build": None}]

    [info] = db.query("SELECT * FROM osquery_info")
    assert info["version"].endswith("+sim")
    assert (info["pid"], info["instance_id"], info["uuid"], info["watcher"], info["platform_mask"]) == (
        "4242",
        "inst-1",
        IDENTITY.uuid,
        "-1",
        str(RUNTIME.platform_mask),
    )
    db.update_runtime(SimRuntime("5.14.1+sim", "inst-1", 4242, 1, config_hash="abc", config_valid=True))
    assert db.query("SELECT config_hash, config_valid FROM osquery_info") == [
        {"config_hash": "abc", "config_valid": "1"}
    ]


def test_orbit_host_info_query_gives_one_row(db: SimDatabase) -> None:
    assert db.query(SQL_HOST_INFO) == [
        {
            "uuid": IDENTITY.uuid,
            "hardware_serial": "C02XYZ",
            "hostname": "laptop.example.com",
            "computer_name": "laptop",
            "hardware_model": "XPS 13 9310",
            "platform": "ubuntu",
            "platform_like": "debian",
            "os_version": "22.04.3 LTS (Jammy Jellyfish)",
            "instance_id": "inst-1",
            "osquery_version": "5.14.1+sim",
        }
    ]


def test_processes_are_live_and_contain_this_process(db: SimDatabase) -> None:
    rows = db.query(f"SELECT pid, parent, name, cmdline, state, uid, on_disk FROM processes WHERE pid = {os.getpid()}")
    assert len(rows) == 1
    row = rows[0]
    assert row["parent"] == str(os.getppid())
    assert row["name"] and row["state"] in {"R", "S", "D"}
    assert row["uid"] == str(os.getuid()) and row["on_disk"] in {"1", "0"}
    assert "pytest" in row["cmdline"] or "python" in row["cmdline"]
    assert int(db.query("SELECT count(*) AS n FROM processes")[0]["n"]) > 1


def test_live_clock_tables_users_flags(db: SimDatabase) -> None:
    assert db.query("SELECT unix_time, timezone, iso_8601, timestamp FROM time") == [
        {
            "unix_time": "1700000123",
            "timezone": "UTC",
            "iso_8601": "2023-11-14T22:15:23Z",
            "timestamp": "Tue Nov 14 22:15:23 2023 UTC",
        }
    ]
    [uptime] = db.query("SELECT * FROM uptime")
    total = int(uptime["total_seconds"])
    assert total == int(uptime["days"]) * 86400 + int(uptime["hours"]) * 3600 + int(uptime["minutes"]) * 60 + int(
        uptime["seconds"]
    )
    assert db.query("SELECT username, uid, directory, shell FROM users ORDER BY uid") == [
        {"username": "root", "uid": "0", "directory": "/root", "shell": "/bin/bash"},
        {"username": "alice", "uid": "1000", "directory": "/home/a", "shell": "/bin/zsh"},
    ]
    assert db.query("SELECT name, value, default_value, shell_only FROM osquery_flags") == [
        {"name": "distributed_interval", "value": "10", "default_value": "60", "shell_only": "0"}
    ]


def test_unknown_tables_and_columns_fail_like_osquery(db: SimDatabase) -> None:
    with pytest.raises(QueryError) as table_error:
        db.query("SELECT * FROM orbit_info")
    assert (str(table_error.value), table_error.value.code) == ("no such table: orbit_info", 1)
    with pytest.raises(QueryError, match=r"^no such column: nope$"):
        db.query("SELECT nope FROM processes")
    with pytest.raises(QueryError, match=r'^near "SELEC": syntax error$'):
        db.query("SELEC 1")


@pytest.mark.parametrize(
    ("sql", "message", "code"),
    [
        ("DELETE FROM processes", "table processes may not be modified", 1),
        ("UPDATE system_info SET hostname = 'evil'", "table system_info may not be modified", 1),
        ("INSERT INTO users (username) VALUES ('mallory')", "table users may not be modified", 1),
        ("CREATE TABLE t (a)", "not authorized", 23),
        ("CREATE TEMP VIEW v AS SELECT 1", "not authorized", 23),
        ("DROP TABLE system_info", "not authorized", 23),
        ("ATTACH DATABASE ':memory:' AS other", "not authorized", 23),
        ("PRAGMA writable_schema = 1", "not authorized", 23),
        ("BEGIN", "not authorized", 23),
    ],
)
def test_writes_are_refused(db: SimDatabase, sql: str, message: str, code: int) -> None:
    before = db.query("SELECT * FROM system_info")
    with pytest.raises(QueryError) as error:
        db.query(sql)
    assert (error.value.message, error.value.code) == (message, code)
    assert db.query("SELECT * FROM system_info") == before
    assert db.query("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name") == [
        {"name": name} for name in db.tables()
    ]


def test_a_refused_write_cannot_reuse_the_sims_own_statements(db: SimDatabase) -> None:
    db.query("SELECT * FROM users")  # the sim refills users with its own DELETE/INSERT
    with pytest.raises(QueryError):
        db.query('DELETE FROM "users"')
    assert len(db.query("SELECT * FROM users")) == 2


def test_fleet_discovery_query_runs(db: SimDatabase) -> None:
    assert db.query(FLEET_DISCOVERY.format("orbit_info")) == []
    assert db.query(FLEET_DISCOVERY.format("processes")) == [{"1": "1"}]
    registered = {row["name"] for row in db.query("SELECT name FROM osquery_registry WHERE registry = 'table'")}
    assert registered == set(db.tables())


def test_multiple_statements_values_and_splitting(db: SimDatabase) -> None:
    assert db.query("SELECT 1 AS a; SELECT 'x;y' AS b; -- done;") == [{"a": "1"}, {"b": "x;y"}]
    assert db.query("SELECT NULL AS n, 2.0 AS d, x'41' AS b") == [{"n": "", "d": "2.0", "b": "A"}]
    assert split_statements("SELECT ';'; /* ; */ SELECT 2") == ["SELECT ';';", " /* ; */ SELECT 2"]
    with pytest.raises(QueryError, match="no such table: nope"):
        db.query("SELECT 1; SELECT * FROM nope")


def test_value_casting_and_rendering_follow_osquery() -> None:
    assert [parse_c_integer(text) for text in ("42", " -7", "04", "08", "0x1f", "", "1.5", "9" * 20)] == [
        42,
        -7,
        4,
        None,
        31,
        None,
        None,
        None,
    ]
    rendered = [render_value(value) for value in (None, 3, 2.0, 0.1, 1e20, b"ab")]
    assert rendered == ["", "3", "2.0", "0.1", "1e+20.0", "ab"]


# --- shell ---------------------------------------------------------------------------------------------------------


def shell(db: SimDatabase, sql: str, *, json_output: bool = True) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = run_shell(sql, db, json_output=json_output, out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def test_shell_json_matches_query_rows_in_osquerys_layout(db: SimDatabase) -> None:
    code, out, err = shell(db, SQL_HOST_INFO)
    assert (code, err) == (0, "")
    assert json.loads(out) == db.query(SQL_HOST_INFO)
    lines = out.split("\n")
    assert lines[0] == "[" and lines[-2:] == ["]", ""]
    assert lines[1].startswith('  {"computer_name":"laptop","hardware_model":')  # compact, keys sorted

    code, out, _ = shell(db, "SELECT 1 AS b, 'two' AS a; SELECT 2.0 AS c, NULL AS d, 'q\"\\\t' AS e")
    assert code == 0
    assert out == '[\n  {"a":"two","b":"1"},\n  {"c":"2.0","d":"","e":"q\\"\\\\\\t"}\n]\n'
    assert shell(db, "SELECT 1 WHERE 0") == (0, "[\n\n]\n", "")


def test_shell_errors_go_to_stderr_with_sqlites_code(db: SimDatabase) -> None:
    assert shell(db, "SELECT * FROM nope") == (1, "[\n\n]\n", "Error: no such table: nope\n")
    code, out, err = shell(db, "SELECT 7 AS x; SELECT y FROM uptime")
    assert (code, json.loads(out), err) == (1, [{"x": "7"}], "Error: no such column: y\n")
    assert shell(db, "ATTACH ':memory:' AS m") == (23, "[\n\n]\n", "Error: not authorized\n")
    assert shell(db, "SELECT * FROM nope", json_output=False) == (1, "", "Error: no such table: nope\n")


def test_shell_pretty_table(db: SimDatabase) -> None:
    code, out, _ = shell(db, "SELECT 'ubuntu' AS platform, 22 AS major", json_output=False)
    assert code == 0
    assert out.splitlines() == [
        "+----------+-------+",
        "| platform | major |",
        "+----------+-------+",
        "| ubuntu   | 22    |",
        "+----------+-------+",
    ]
    assert out.endswith("+\n")
    assert render_pretty([], ["a"]) == ""


def test_the_simulator_reports_the_version_it_was_published_as() -> None:
    from osquery_sim.version import sim_version  # noqa: PLC0415

    assert sim_version({}) == "5.14.1+sim"
    assert sim_version({"ORBIT_BUILD_VERSION": "5.15.0"}) == "5.15.0+sim"
    assert sim_version({"ORBIT_BUILD_VERSION": "5.15.0+build7"}) == "5.15.0+build7.sim"
    assert sim_version({"ORBIT_BUILD_VERSION": "5.15.0+sim"}) == "5.15.0+sim"
