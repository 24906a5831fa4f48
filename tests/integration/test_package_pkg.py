"""``packager.formats.pkg``: a macOS flat package built from a staged tree, checked only by independent readers —
7-Zip (TOC and member SHA-1s), bsdtar/libarchive and GNU cpio (xar, Payload, Scripts), pyapplebom (the BOM),
apple-platform-py/rcodesign (Distribution, PackageInfo, the TOC checksum), plistlib and ``sh``."""

from __future__ import annotations

import hashlib
import os
import plistlib
import shutil
import stat
import struct
import subprocess
import sys
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from xml.etree import ElementTree

import libarchive
import pyapplebom
import pytest
from apple_platform import packaging, reading

from packager.formats import pkg
from packager.package.staged import StagedFile, StagedPackage
from tests.support.staged_package import EPOCH, SECRET, make_staged

MEMBERS = ["Distribution", "base.pkg/Bom", "base.pkg/PackageInfo", "base.pkg/Payload", "base.pkg/Scripts"]
PLIST = "./Library/LaunchDaemons/com.fleetdm.orbit.plist"
UNINSTALL = "./opt/orbit/bin/uninstall"


@dataclass(frozen=True)
class Built:
    staged: StagedPackage
    path: Path
    extracted: Path  # the xar's members, extracted by bsdtar
    payload_root: Path  # the Payload, extracted by bsdtar


def _run(*argv: str | Path, cwd: Path | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(arg) for arg in argv], capture_output=True, text=True, cwd=cwd, check=check, timeout=60)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Built]:
    base = tmp_path_factory.mktemp("pkg")
    staged = make_staged(base / "stage", "macos", version="4.5.6", payload_bytes=100_000)
    result = pkg.build(staged, base / "fleet-osquery.pkg")
    assert result.path == base / "fleet-osquery.pkg"
    assert result.size == result.path.stat().st_size
    assert result.sha256 == hashlib.sha256(result.path.read_bytes()).hexdigest()
    extracted = base / "xar"
    extracted.mkdir()
    _run("bsdtar", "-xf", result.path, "-C", extracted)
    payload_root = base / "payload"
    payload_root.mkdir()
    _run("bsdtar", "-xpf", extracted / "base.pkg/Payload", "-C", payload_root)
    yield Built(staged, result.path, extracted, payload_root)


def _expected_payload(staged: StagedPackage) -> dict[str, tuple[int, bytes | str | None]]:
    """path → (st_mode, content | link target | None for directories), from the staged description alone."""
    expected: dict[str, tuple[int, bytes | str | None]] = {}
    root = PurePosixPath("opt/orbit")
    for item in staged.files:
        expected[f"./{root / item.path}"] = (stat.S_IFREG | item.mode, item.source.read_bytes())
    for link in staged.symlinks:
        expected[f"./{root / link.path}"] = (stat.S_IFLNK | 0o777, link.target)
    expected[PLIST] = (stat.S_IFREG | 0o644, None)  # content checked on its own
    expected[UNINSTALL] = (stat.S_IFREG | 0o755, None)  # run in its own tests below
    for path in list(expected):
        parts = path.split("/")
        for depth in range(1, len(parts)):
            expected.setdefault("/".join(parts[:depth]), (stat.S_IFDIR | 0o755, None))
    return expected


# --- the archive as a whole ------------------------------------------------------------------------------------


def test_7z_tests_and_lists_the_archive(built: Built) -> None:
    tested = _run("7z", "t", built.path)
    assert "Everything is Ok" in tested.stdout
    assert "WARNING" not in tested.stdout.upper() and "ERROR" not in tested.stdout.upper()
    listing = _run("7z", "l", built.path).stdout
    assert "Type = Xar" in listing and "Method = SHA1" in listing
    assert "Created = 2023-11-14T22:13:20" in listing
    names = [line.split()[-1] for line in listing.splitlines() if line[:4].isdigit()]
    assert [name for name in names if name.startswith(("Distribution", "base.pkg/"))] == MEMBERS


def test_bsdtar_lists_distribution_and_component(built: Built) -> None:
    lines = _run("bsdtar", "-tvf", built.path).stdout.splitlines()
    names = [line.split()[-1] for line in lines]
    assert names == ["Distribution", "base.pkg", *MEMBERS[1:]]
    assert all(" root " in line and " admin " in line for line in lines)
    assert lines[1].startswith("drwxr-xr-x")


def test_rcodesign_reads_distribution_package_info_and_toc_checksum(built: Built) -> None:
    info = packaging.pkg_info(built.path)
    assert info["flavor"] == "Product"
    assert info["files"] == ["Distribution", "base.pkg", *MEMBERS[1:]]
    (component,) = info["components"]
    assert component["has_bom"] is True
    package_info = component["package_info"]
    assert package_info["identifier"] == "com.fleetdm.orbit.base.pkg"
    assert package_info["version"] == "4.5.6"
    assert package_info["install-location"] == "/"
    assert package_info["auth"] == "root"
    assert package_info["format-version"] == 2
    payload_paths = pyapplebom.parse_bom_file(built.extracted / "base.pkg/Bom")["paths"]
    assert package_info["payload"]["numberOfFiles"] == len(payload_paths)
    file_bytes = sum(item.source.stat().st_size for item in built.staged.files)
    file_bytes += (built.payload_root / PLIST).stat().st_size
    file_bytes += (built.payload_root / UNINSTALL).stat().st_size
    assert package_info["payload"]["installKBytes"] == -(-file_bytes // 1024)
    assert package_info["scripts"]["$value"] == [{"postinstall": {"component_id": None, "file": "./postinstall"}}]
    distribution = info["distribution"]
    assert distribution["minSpecVersion"] == 2
    assert distribution["title"]["$value"] == "Fleet osquery"
    options = distribution["options"]
    assert options["hostArchitectures"] == "arm64,x86_64"
    assert options["customize"] == "never" and options["require-scripts"] is False
    assert distribution["domains"]["enable_localSystem"] is True
    assert distribution["choices-outline"]["line"][0]["choice"] == "choiceBase"
    (choice,) = distribution["choice"]
    assert [ref["id"] for ref in choice["pkg-ref"]] == ["com.fleetdm.orbit.base.pkg"]
    versioned = [ref for ref in distribution["pkg-ref"] if ref["version"]]
    assert versioned == [
        {**versioned[0], "id": "com.fleetdm.orbit.base.pkg", "version": "4.5.6", "auth": "root"},
    ]
    assert versioned[0]["installKBytes"] == package_info["payload"]["installKBytes"]
    # the pkg-ref points at the xar directory "#base.pkg"
    distribution_xml = ElementTree.fromstring((built.extracted / "Distribution").read_bytes())
    assert [ref.text.strip() for ref in distribution_xml.findall("pkg-ref") if ref.text and ref.text.strip()] == [
        "#base.pkg"
    ]

    (toc,) = reading.find_entities(reading.read_signature(built.path), "xar_table_of_contents")
    assert toc["checksum_type"] == "SHA-1"
    assert toc["checksum_verifies"] is True
    assert toc["creation_time"] == "2023-11-14T22:13:20"
    assert packaging.pkg_extract_member(built.path, "base.pkg/Bom") == (built.extracted / "base.pkg/Bom").read_bytes()


# --- the payload -------------------------------------------------------------------------------------------------


def test_payload_is_the_staged_tree(built: Built) -> None:
    expected = _expected_payload(built.staged)
    seen: dict[str, tuple[int, bytes | str | None]] = {}
    with libarchive.file_reader(str(built.extracted / "base.pkg/Payload")) as archive:
        for entry in archive:
            assert (entry.uid, entry.gid) == (0, 80), entry.pathname
            assert entry.mtime == EPOCH
            if entry.issym:
                seen[entry.pathname] = (entry.mode, entry.linkpath)
            elif entry.isdir:
                seen[entry.pathname] = (entry.mode, None)
            else:
                content = b"".join(entry.get_blocks())
                seen[entry.pathname] = (entry.mode, None if entry.pathname in (PLIST, UNINSTALL) else content)
    assert seen == expected
    # the same tree on disk, extracted by bsdtar
    for path, (mode, content) in expected.items():
        on_disk = built.payload_root / path
        info = on_disk.lstat()
        assert info.st_mode == mode or stat.S_ISLNK(mode), path  # link modes are not settable on Linux
        assert (info.st_uid, info.st_gid) == (0, 80), path
        if isinstance(content, bytes):
            assert on_disk.read_bytes() == content, path
        elif isinstance(content, str):
            assert os.readlink(on_disk) == content, path
    assert (built.payload_root / "opt/orbit/secret.txt").read_text() == SECRET


def test_gnu_cpio_lists_the_payload_with_owner_0_80(built: Built) -> None:
    raw = zlib.decompress((built.extracted / "base.pkg/Payload").read_bytes(), wbits=31)
    listing = subprocess.run(["cpio", "-itv"], input=raw, capture_output=True, check=True).stdout.decode()
    lines = listing.splitlines()
    assert len(lines) == len(_expected_payload(built.staged))
    assert lines[0].endswith(" .")
    assert all(line.split()[2:4] in (["root", "80"], ["0", "80"]) for line in lines), listing
    assert any(line.endswith("./opt/orbit/bin/orbit/orbit -> macos/stable/orbit") for line in lines)
    gzip_header = (built.extracted / "base.pkg/Payload").read_bytes()[:10]
    assert gzip_header[:3] == b"\x1f\x8b\x08" and gzip_header[4:8] == bytes(4)  # gzip, mtime 0, no file name


def test_bom_describes_the_payload(built: Built) -> None:
    parsed = pyapplebom.parse_bom_file(built.extracted / "base.pkg/Bom")
    assert parsed["parse_errors"] is None
    assert parsed["header"]["magic"] == "BOMStore"
    expected = _expected_payload(built.staged)
    records = {record["path"]: record for record in parsed["paths"]}
    assert set(records) == set(expected)
    for path, (mode, content) in expected.items():
        record = records[path]
        assert record["file_mode"] == mode, path
        assert (record["user_id"], record["group_id"]) == (0, 80), path
        assert record["mtime"] == EPOCH
        if stat.S_ISDIR(mode):
            assert record["size"] == 0
            continue
        on_disk = built.payload_root / path
        if stat.S_ISLNK(mode):
            assert record["link_name"] == content
            data = str(content).encode()
        else:
            data = on_disk.read_bytes()
        assert record["size"] == len(data), path
        # the checksum bomutils stores is POSIX cksum: compare with coreutils' cksum of the installed bytes
        cksum = subprocess.run(["cksum"], input=data, capture_output=True, check=True).stdout.split()
        assert record["crc32"] == int(cksum[0]), path


def test_launch_daemon_plist(built: Built) -> None:
    document = plistlib.loads((built.payload_root / PLIST).read_bytes())
    assert document["Label"] == "com.fleetdm.orbit"
    assert document["ProgramArguments"] == ["/opt/orbit/bin/orbit/orbit"]
    assert document["RunAtLoad"] is True and document["KeepAlive"] is True
    assert document["ThrottleInterval"] == 10
    assert document["StandardOutPath"] == "/var/log/orbit/orbit.stdout.log"
    assert document["StandardErrorPath"] == "/var/log/orbit/orbit.stderr.log"
    environment = document["EnvironmentVariables"]
    assert environment == dict(built.staged.orbit_env)
    assert environment["ORBIT_ENROLL_SECRET_PATH"] == "/opt/orbit/secret.txt"
    assert SECRET not in (built.payload_root / PLIST).read_text()  # the secret lives only in secret.txt


# --- the postinstall script --------------------------------------------------------------------------------------

STUB = """#!/bin/sh
echo "$(basename "$0") $*" >> "$STUB_LOG"
if [ "$(basename "$0")" = launchctl ] && [ "$1" = bootstrap ]; then
    n=0
    [ -f "$STUB_LOG.count" ] && read -r n < "$STUB_LOG.count"
    n=$((n + 1))
    echo "$n" > "$STUB_LOG.count"
    [ "$n" -gt "$BOOTSTRAP_FAILURES" ] || exit 5
fi
exit 0
"""


def _postinstall(built: Built, tmp_path: Path) -> Path:
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    _run("bsdtar", "-xpf", built.extracted / "base.pkg/Scripts", "-C", scripts)
    return scripts / "postinstall"


def _run_postinstall(script: Path, tmp_path: Path, failures: int) -> tuple[int, list[str]]:
    """Runs the script with every external command it calls replaced by a logging stub (nothing touches /)."""
    stubs = tmp_path / "bin"
    stubs.mkdir()
    for command in ("ln", "mkdir", "rm", "sleep", "pkill", "launchctl", "basename"):
        stub = stubs / command
        stub.write_text(STUB if command != "basename" else '#!/bin/sh\necho "${1##*/}"\n')
        stub.chmod(0o755)
    log = tmp_path / "calls.log"
    env = {"PATH": str(stubs), "STUB_LOG": str(log), "BOOTSTRAP_FAILURES": str(failures)}
    completed = subprocess.run(
        ["/bin/sh", str(script)], check=False, env=env, capture_output=True, text=True, timeout=30
    )
    return completed.returncode, log.read_text().splitlines()


def test_postinstall_is_valid_sh_and_executable(built: Built, tmp_path: Path) -> None:
    script = _postinstall(built, tmp_path)
    assert stat.S_IMODE(script.stat().st_mode) == 0o755
    assert script.read_text().startswith("#!/bin/sh\n")
    _run("sh", "-n", script)
    if shutil.which("bash"):
        _run("bash", "-n", script)
    text = script.read_text()
    assert "/opt/orbit/.inband_upgrade" in text and "sleep 30" in text


def test_postinstall_links_orbit_and_restarts_the_daemon_with_retries(built: Built, tmp_path: Path) -> None:
    code, calls = _run_postinstall(_postinstall(built, tmp_path), tmp_path, failures=2)
    assert code == 0
    assert calls[:2] == ["ln -sfn macos/stable/orbit /opt/orbit/bin/orbit/orbit", "mkdir -p /usr/local/bin"]
    assert "ln -sfn /opt/orbit/bin/orbit/orbit /usr/local/bin/orbit" in calls
    service = [call for call in calls if call.split()[0] in ("pkill", "launchctl", "sleep")]
    plist = "/Library/LaunchDaemons/com.fleetdm.orbit.plist"
    assert service == [
        "pkill fleet-desktop",
        "launchctl bootout system/com.fleetdm.orbit",
        "launchctl enable system/com.fleetdm.orbit",
        f"launchctl bootstrap system {plist}",
        "sleep 1",
        f"launchctl bootstrap system {plist}",
        "sleep 1",
        f"launchctl bootstrap system {plist}",
        "launchctl kickstart system/com.fleetdm.orbit",
    ]


def test_postinstall_gives_up_after_30_bootstrap_attempts(built: Built, tmp_path: Path) -> None:
    code, calls = _run_postinstall(_postinstall(built, tmp_path), tmp_path, failures=1000)
    assert code == 1
    assert sum(call.startswith("launchctl bootstrap") for call in calls) == 30
    assert not any(call.startswith("launchctl kickstart") for call in calls)


# --- the uninstall script an MDM pushes -------------------------------------------------------------------------

RECORDER = """#!/bin/sh
echo "$(basename "$0") $*" >> "$STUB_LOG"
exit 0
"""


def _uninstall_env(tmp_path: Path, uid: int, real: tuple[str, ...] = ()) -> dict[str, str]:
    """A PATH of recording stubs for every command the script runs (``real`` ones are the host's: only ``rm``, and
    only for a fake root), with ``id -u`` answering ``uid``."""
    stubs = tmp_path / "bin"
    stubs.mkdir(exist_ok=True)
    for command in ("launchctl", "pkill", "security", "pkgutil", "rm"):
        stub = stubs / command
        if command in real:
            host = shutil.which(command)
            assert host is not None
            stub.symlink_to(host)
        else:
            stub.write_text(RECORDER)
            stub.chmod(0o755)
    (stubs / "id").write_text(f'#!/bin/sh\necho "id $*" >> "$STUB_LOG"\necho {uid}\n')
    (stubs / "basename").write_text('#!/bin/sh\necho "${1##*/}"\n')
    for name in ("id", "basename"):
        (stubs / name).chmod(0o755)
    return {"PATH": str(stubs), "STUB_LOG": str(tmp_path / "calls.log")}


def _uninstall(built: Built, env: dict[str, str], *argv: str | Path) -> subprocess.CompletedProcess[str]:
    script = built.payload_root / UNINSTALL.removeprefix("./")
    return subprocess.run(
        ["/bin/sh", str(script), *map(str, argv)], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def _calls(env: dict[str, str]) -> list[str]:
    log = Path(env["STUB_LOG"])
    return log.read_text().splitlines() if log.exists() else []


def test_the_uninstall_script_ships_executable_and_is_valid_sh(built: Built) -> None:
    script = built.payload_root / UNINSTALL.removeprefix("./")
    info = script.lstat()
    assert stat.S_IMODE(info.st_mode) == 0o755 and (info.st_uid, info.st_gid) == (0, 80)
    _run("sh", "-n", script)
    if shutil.which("bash"):
        _run("bash", "-n", script)


def test_orbitctl_prints_the_same_uninstall_script_for_mdms_that_push_scripts(built: Built) -> None:
    printed = subprocess.run(
        [str(Path(sys.executable).with_name("orbitctl")), "mdm", "uninstall-script"],
        capture_output=True,
        timeout=60,
        check=True,
    ).stdout
    assert printed == (built.payload_root / UNINSTALL.removeprefix("./")).read_bytes()


def test_uninstall_on_the_running_system_stops_the_daemon_then_removes_everything(built: Built, tmp_path: Path) -> None:
    env = _uninstall_env(tmp_path, uid=0)  # rm is a recorder too: nothing on this host is touched
    done = _uninstall(built, env)
    assert done.returncode == 0, done.stderr
    assert "Fleet agent removed" in done.stdout
    assert _calls(env) == [
        "id -u",
        "launchctl bootout system/com.fleetdm.orbit",
        "pkill fleet-desktop",
        "security delete-generic-password -s com.fleetdm.fleetd.enroll.secret",
        "rm -f /Library/LaunchDaemons/com.fleetdm.orbit.plist",
        "rm -rf /opt/orbit /var/lib/orbit /var/log/orbit",
        "rm -f /usr/local/bin/orbit",
        "pkgutil --volume / --forget com.fleetdm.orbit.base.pkg",
    ]


def test_uninstall_from_a_volume_removes_what_the_package_installed_and_nothing_else(
    built: Built, tmp_path: Path
) -> None:
    volume = tmp_path / "volume"
    shutil.copytree(built.payload_root, volume, symlinks=True)  # the installed payload, as Installer lays it down
    (volume / "var/log/orbit").mkdir(parents=True)
    (volume / "var/log/orbit/orbit.stderr.log").write_text("log\n")
    (volume / "usr/local/bin").mkdir(parents=True)
    (volume / "usr/local/bin/orbit").symlink_to("/opt/orbit/bin/orbit/orbit")
    (volume / "usr/local/bin/other-tool").write_text("keep me\n")
    (volume / "Library/LaunchDaemons/com.example.other.plist").write_text("keep me\n")
    (volume / "opt/other").mkdir()
    env = _uninstall_env(tmp_path, uid=0, real=("rm",))
    for attempt in (1, 2):  # a second run finds nothing to do and still succeeds
        done = _uninstall(built, env, "--target", volume)
        assert done.returncode == 0, (attempt, done.stderr)
    left = sorted(str(path.relative_to(volume)) for path in volume.rglob("*"))
    assert left == [
        "Library",
        "Library/LaunchDaemons",
        "Library/LaunchDaemons/com.example.other.plist",
        "opt",
        "opt/other",
        "usr",
        "usr/local",
        "usr/local/bin",
        "usr/local/bin/other-tool",
        "var",
        "var/log",
    ]
    calls = _calls(env)
    assert not any(call.split()[0] in ("launchctl", "pkill", "security") for call in calls)  # not the live system
    assert calls.count(f"pkgutil --volume {volume} --forget com.fleetdm.orbit.base.pkg") == 2


@pytest.mark.parametrize(
    ("uid", "argv", "code", "message"),
    [
        (501, [], 1, "run as root"),
        (0, ["--target", "/"], 2, "must be a mounted volume"),
        (0, ["--target", "/no/such/volume"], 2, "must be a mounted volume"),
        (0, ["--everything"], 2, "usage"),
    ],
)
def test_uninstall_refuses_without_root_or_with_a_bad_target_and_touches_nothing(
    built: Built, tmp_path: Path, uid: int, argv: list[str], code: int, message: str
) -> None:
    env = _uninstall_env(tmp_path, uid=uid)
    done = _uninstall(built, env, *argv)
    assert done.returncode == code and message in done.stderr, done
    assert [call for call in _calls(env) if not call.startswith("id ")] == []


# --- reproducibility, corruption, limits -----------------------------------------------------------------------


def test_two_builds_are_byte_identical(built: Built, tmp_path: Path) -> None:
    again = make_staged(tmp_path / "other-stage", "macos", version="4.5.6", payload_bytes=100_000)
    for item in again.files:  # source timestamps must not matter
        os.utime(item.source, (1, 1))
    second = pkg.build(again, tmp_path / "second.pkg")
    assert second.path.read_bytes() == built.path.read_bytes()
    assert second.sha256 == hashlib.sha256(built.path.read_bytes()).hexdigest()
    later = pkg.build(replace(again, source_date_epoch=EPOCH + 60), tmp_path / "later.pkg")
    assert later.sha256 != second.sha256


def _heap_offset(data: bytes, member: str) -> tuple[int, int]:
    """Absolute offset and length of a member's bytes, from the TOC (parsed here, not by the writer)."""
    toc_length = struct.unpack_from(">Q", data, 8)[0]
    toc = ElementTree.fromstring(zlib.decompress(data[28 : 28 + toc_length]))
    parts = member.split("/")
    node = toc.find("toc")
    for part in parts:
        assert node is not None
        node = next(item for item in node.findall("file") if item.findtext("name") == part)
    assert node is not None
    offset = int(node.findtext("data/offset") or "")
    length = int(node.findtext("data/length") or "")
    return 28 + toc_length + offset, length


@pytest.mark.parametrize("member", ["base.pkg/Scripts", "base.pkg/Payload", "Distribution"])
def test_a_flipped_byte_is_detected(built: Built, tmp_path: Path, member: str) -> None:
    data = bytearray(built.path.read_bytes())
    offset, length = _heap_offset(bytes(data), member)
    data[offset + length // 2] ^= 0x01
    broken = tmp_path / "broken.pkg"
    broken.write_bytes(bytes(data))
    tested = _run("7z", "t", broken, check=False)
    assert tested.returncode != 0
    assert f"CRC Failed : {member}" in tested.stdout + tested.stderr
    extracted = _run("bsdtar", "-xf", broken, "-C", tmp_path, check=False)
    assert extracted.returncode != 0


def test_a_corrupted_toc_checksum_is_detected(built: Built, tmp_path: Path) -> None:
    data = bytearray(built.path.read_bytes())
    toc_length = struct.unpack_from(">Q", data, 8)[0]
    data[28 + toc_length] ^= 0xFF  # the stored SHA-1 of the TOC (heap offset 0)
    broken = tmp_path / "broken.pkg"
    broken.write_bytes(bytes(data))
    (toc,) = reading.find_entities(reading.read_signature(broken), "xar_table_of_contents")
    assert toc["checksum_verifies"] is False
    tested = _run("7z", "t", broken, check=False)
    assert "CRC Error" in tested.stdout + tested.stderr or tested.returncode != 0


def test_output_holding_the_secret_is_private(built: Built) -> None:
    assert stat.S_IMODE(built.path.stat().st_mode) == 0o600


def test_without_service_there_is_no_daemon(tmp_path: Path) -> None:
    staged = replace(make_staged(tmp_path / "stage", "macos", secret=None), service=False)
    result = pkg.build(staged, tmp_path / "no-service.pkg")
    assert stat.S_IMODE(result.path.stat().st_mode) == 0o644  # no secret inside
    bom_bytes = packaging.pkg_extract_member(result.path, "base.pkg/Bom")
    paths = {record["path"] for record in pyapplebom.parse_bom(bom_bytes)["paths"]}
    assert not any(path.startswith("./Library") for path in paths)
    assert "./opt/orbit/secret.txt" not in paths
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    (scripts / "Scripts").write_bytes(packaging.pkg_extract_member(result.path, "base.pkg/Scripts"))
    _run("bsdtar", "-xf", scripts / "Scripts", "-C", scripts)
    text = (scripts / "postinstall").read_text()
    assert "launchctl" not in text and "ln -sfn macos/stable/orbit /opt/orbit/bin/orbit/orbit" in text


def _leftovers(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir())


def test_a_file_over_the_bom_limit_is_refused_before_writing(tmp_path: Path) -> None:
    staged = make_staged(tmp_path / "stage", "macos")
    huge = tmp_path / "huge.bin"
    with huge.open("wb") as handle:  # sparse: 4 GiB without using the disk
        handle.truncate(2**32)
    staged = replace(staged, files=(*staged.files, StagedFile(PurePosixPath("huge.bin"), huge, 0o644)))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with pytest.raises(pkg.PkgLimitError, match="below 4 GiB"):
        pkg.build(staged, out_dir / "fleet-osquery.pkg")
    assert _leftovers(out_dir) == []


def test_invalid_input_is_refused(tmp_path: Path) -> None:
    staged = make_staged(tmp_path / "stage", "macos")
    out = tmp_path / "out.pkg"
    with pytest.raises(pkg.PkgLimitError, match="macOS"):
        pkg.build(replace(staged, platform="linux"), out)
    with pytest.raises(pkg.PkgLimitError, match="identifier"):
        pkg.build(replace(staged, identifier="com.example/../x"), out)
    with pytest.raises(pkg.PkgLimitError, match="source_date_epoch"):
        pkg.build(replace(staged, source_date_epoch=2**32), out)
    escaping = StagedFile(PurePosixPath("../etc/passwd"), staged.files[0].source, 0o644)
    with pytest.raises(pkg.PkgLimitError, match="invalid file path"):
        pkg.build(replace(staged, files=(*staged.files, escaping)), out)
    readable_secret = tuple(
        replace(item, mode=0o644) if item.path.name == "secret.txt" else item for item in staged.files
    )
    with pytest.raises(pkg.PkgLimitError, match=r"secret\.txt"):
        pkg.build(replace(staged, files=readable_secret), out)
    assert not out.exists()


def test_a_failed_build_keeps_the_previous_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    staged = make_staged(tmp_path / "stage", "macos")
    out = tmp_path / "out" / "fleet-osquery.pkg"
    out.parent.mkdir()
    out.write_bytes(b"previous")
    source = staged.files[0].source

    # the source shrinks between sizing and copying: the build fails and the old package stays untouched
    original = pkg._source_size

    def lying_size(path: Path) -> int:
        size = original(path)
        return size + 10 if path == source else size

    monkeypatch.setattr(pkg, "_source_size", lying_size)
    with pytest.raises(ValueError, match="early"):
        pkg.build(staged, out)
    assert out.read_bytes() == b"previous"
    assert _leftovers(out.parent) == ["fleet-osquery.pkg"]
