"""orbit.fleet.script_runner: real /bin/sh subprocesses on this host (POSIX only), plus the pure helpers."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import stat
import sys
import time
import tracemalloc
from pathlib import Path

import psutil
import pytest

from orbit.fleet.script_runner import (
    OUTPUT_TAIL_BYTES,
    TIMEOUT_EXIT_CODE,
    OutputTail,
    ScriptOutcome,
    UnsupportedInterpreterError,
    finish_output,
    parse_shebang,
    run_script,
    script_command,
    script_file_name,
    windows_exit_code,
)

posix_only = pytest.mark.skipif(sys.platform.startswith("win"), reason="runs real /bin/sh scripts")


def run(
    contents: str, tmp_root: Path, *, timeout: float = 10, keep_tempdir: bool = False, eid: str = "e1"
) -> ScriptOutcome:
    return asyncio.run(run_script(contents, eid, timeout=timeout, keep_tempdir=keep_tempdir, tmp_root=tmp_root))


def run_dirs(tmp_root: Path) -> list[Path]:
    return sorted(p for p in tmp_root.iterdir() if p.name.startswith("fleet-"))


def wait_until_dead(pid: int, deadline: float = 5.0) -> bool:
    """True once ``pid`` is gone or a zombie (our container's PID 1 may never reap re-parented orphans)."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.02)
    return False


def kill_if_alive(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


# --- pure helpers -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("contents", "interpreter"),
    [
        ("echo hi", None),
        ("", None),
        ("# comment\n#!/usr/bin/python3\n", None),  # only the first line counts
        ("#!/bin/sh\necho", "/bin/sh"),
        ("#!/bin/zsh\necho", "/bin/zsh"),
        ("#!/usr/bin/sh\n", "/usr/bin/sh"),
        ("#!/usr/bin/zsh", "/usr/bin/zsh"),
        ("#! /bin/sh\n", "/bin/sh"),
        ("#!/bin/sh -e\n", "/bin/sh"),
        ("#!/bin/zsh\t-f\n", "/bin/zsh"),
        ("#!/bin/sh   \n", "/bin/sh"),
    ],
)
def test_allowed_shebangs(contents: str, interpreter: str | None) -> None:
    assert parse_shebang(contents) == interpreter


@pytest.mark.parametrize(
    "contents",
    [
        "#!/usr/bin/env python3\nprint(1)",
        "#!/bin/bash\n",
        "#!/usr/bin/env sh\n",
        "#!/bin/shell\n",
        "#!/bin/sh2\n",
        "#!/usr/local/bin/zsh\n",
        "#!:/usr/bin/sh\n",  # Fleet's regex accepts this by accident (`(:?/usr)?`); we do not
        "#!sh\n",
        "#!\n",
    ],
)
def test_rejected_shebangs_name_the_line_and_the_rule(contents: str) -> None:
    with pytest.raises(UnsupportedInterpreterError) as excinfo:
        parse_shebang(contents)
    message = str(excinfo.value)
    assert "Interpreter not supported" in message
    assert contents.split("\n", maxsplit=1)[0] in message
    assert '"#!/bin/sh"' in message


def test_crlf_shebang_is_rejected_with_a_line_ending_hint() -> None:
    with pytest.raises(UnsupportedInterpreterError, match="CRLF"):
        parse_shebang("#!/bin/sh\r\necho hi\r\n")


def test_commands_per_platform() -> None:
    path = Path("/tmp/fleet-x/script")
    assert script_command(path, platform="linux", direct_execute=False) == ["/bin/sh", str(path)]
    assert script_command(path, platform="darwin", direct_execute=True) == [str(path)]
    win = Path("C:/Temp/fleet-x/script.ps1")
    assert script_command(win, platform="windows", direct_execute=False) == [
        "powershell",
        "-MTA",
        "-ExecutionPolicy",
        "Bypass",
        "-File",
        str(win),
    ]
    assert script_file_name("windows") == "script.ps1"
    assert script_file_name("linux") == script_file_name("darwin") == "script"


@pytest.mark.parametrize(
    ("raw", "signed"), [(0, 0), (1, 1), (0xFFFFFFFF, -1), (0xC0000005, -1073741819), (0x7FFFFFFF, 0x7FFFFFFF)]
)
def test_windows_exit_code_is_signed_32_bit(raw: int, signed: int) -> None:
    assert windows_exit_code(raw) == signed


def test_output_tail_keeps_exactly_the_last_bytes() -> None:
    data = bytes(range(256)) * 1000
    tail = OutputTail(limit=1000)
    for start in range(0, len(data), 777):
        tail.feed(data[start : start + 777])
    assert tail.value() == data[-1000:]
    assert tail.total_bytes == len(data)


def test_error_suffix_survives_the_cut_like_fleet() -> None:
    body = b"a" * OUTPUT_TAIL_BYTES
    suffix = "\nscript execution error: boom"
    out = finish_output(body, "boom", truncated=True)
    assert out == "a" * (OUTPUT_TAIL_BYTES - len(suffix)) + suffix
    assert finish_output(b"", "boom") == suffix


def test_cut_inside_a_multibyte_character_drops_the_fragment() -> None:
    euro = "€".encode()  # 3 bytes
    out = finish_output(euro[1:] + b"ok", None, truncated=True)
    assert out == "ok"


# --- real execution -----------------------------------------------------------------------------------------------


@posix_only
def test_plain_script_runs_with_sh_from_a_private_dir_as_0600_file(tmp_path: Path) -> None:
    outcome = run('echo "hello"\nstat -c %a "$0"\nstat -c %a .\nbasename "$(pwd)"\n', tmp_path, eid="abc-123")
    lines = outcome.output.splitlines()
    assert lines[0] == "hello"
    assert lines[1] == "600"  # not executable: run as `/bin/sh script`
    assert lines[2] == "700"  # the run directory is private
    assert lines[3].startswith("fleet-abc-123-")
    assert outcome.exit_code == 0
    assert not outcome.timed_out


@posix_only
def test_sh_shebang_is_executed_directly_after_chmod_0700(tmp_path: Path) -> None:
    outcome = run('#!/bin/sh\nstat -c %a "$0"\necho "$0"\n', tmp_path)
    mode, argv0 = outcome.output.splitlines()
    assert mode == "700"
    assert argv0.endswith("/script")
    assert outcome.exit_code == 0


@posix_only
def test_env_python_shebang_is_rejected_and_not_run(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    outcome = run(f"#!/usr/bin/env python3\nopen({str(marker)!r}, 'w').close()\n", tmp_path)
    assert outcome.exit_code == TIMEOUT_EXIT_CODE
    assert not outcome.timed_out
    assert outcome.output.startswith("\nscript execution error: Interpreter not supported")
    assert "#!/usr/bin/env python3" in outcome.output
    assert not marker.exists()
    assert run_dirs(tmp_path) == []


@posix_only
@pytest.mark.skipif(shutil.which("zsh") is not None or os.path.exists("/bin/zsh"), reason="zsh is installed")
def test_missing_zsh_is_reported_plainly(tmp_path: Path) -> None:
    outcome = run("#!/bin/zsh\necho hi\n", tmp_path)
    assert outcome.exit_code == TIMEOUT_EXIT_CODE
    assert "the interpreter /bin/zsh named in the shebang line is not installed" in outcome.output


@posix_only
def test_exit_code_is_propagated_and_reported_like_go(tmp_path: Path) -> None:
    outcome = run("echo out\nexit 3\n", tmp_path)
    assert outcome.exit_code == 3
    assert outcome.output == "out\n\nscript execution error: exit status 3"


@posix_only
def test_stdout_and_stderr_are_combined_in_order(tmp_path: Path) -> None:
    outcome = run("echo one\necho two >&2\necho three\n", tmp_path)
    assert outcome.output == "one\ntwo\nthree\n"


@posix_only
def test_stdin_is_empty(tmp_path: Path) -> None:
    outcome = run("cat; echo done\n", tmp_path, timeout=5)
    assert outcome.output == "done\n"


@posix_only
def test_killed_by_a_signal_reports_128_plus_signal(tmp_path: Path) -> None:
    outcome = run("echo before\nkill -TERM $$\n", tmp_path)
    assert outcome.exit_code == 128 + signal.SIGTERM
    assert outcome.output == "before\n\nscript execution error: signal: terminated"


@posix_only
@pytest.mark.timeout(30)
def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    script = f'echo started\nsleep 1000 &\necho "$$ $!" > {pids}\nsleep 1000\n'
    try:
        outcome = run(script, tmp_path, timeout=1)
        assert outcome.exit_code == TIMEOUT_EXIT_CODE
        assert outcome.timed_out
        assert outcome.runtime >= 1
        assert outcome.output.startswith("started\n\nscript execution error: timed out after 1 s")
        shell_pid, background_pid = (int(p) for p in pids.read_text().split())
        assert wait_until_dead(shell_pid)
        assert wait_until_dead(background_pid)
        assert run_dirs(tmp_path) == []
    finally:
        if pids.exists():
            for pid in pids.read_text().split():
                kill_if_alive(int(pid))


@posix_only
@pytest.mark.timeout(30)
def test_background_process_holding_the_output_does_not_hang_the_run(tmp_path: Path) -> None:
    pid_file = tmp_path / "bg.pid"
    try:
        outcome = run(f"sleep 1000 &\necho $! > {pid_file}\necho done\n", tmp_path, timeout=60)
        assert outcome.exit_code == 0
        assert not outcome.timed_out
        assert outcome.output.startswith("done\n\nscript execution error: output still held open")
    finally:
        if pid_file.exists():
            kill_if_alive(int(pid_file.read_text()))


@posix_only
def test_output_keeps_exactly_the_last_40000_bytes(tmp_path: Path) -> None:
    data = b"".join(b"%07d\n" % i for i in range(25_000))  # 200 000 bytes, every line distinct
    assert len(data) == 200_000
    source = tmp_path / "data.txt"
    source.write_bytes(data)
    outcome = run(f"cat {source}\n", tmp_path)
    assert outcome.exit_code == 0
    assert outcome.output.encode() == data[-OUTPUT_TAIL_BYTES:]


@posix_only
@pytest.mark.timeout(60)
def test_huge_output_is_streamed_in_bounded_memory(tmp_path: Path) -> None:
    tracemalloc.start()
    try:
        outcome = run("head -c 50000000 /dev/zero | tr '\\0' x\necho end\n", tmp_path, timeout=50)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert outcome.exit_code == 0
    assert len(outcome.output) == OUTPUT_TAIL_BYTES
    assert outcome.output == "x" * (OUTPUT_TAIL_BYTES - 4) + "end\n"
    assert peak < 5_000_000  # 50 MB went through; only a small window was ever held


@posix_only
def test_invalid_utf8_output_is_replaced_not_fatal(tmp_path: Path) -> None:
    outcome = run("printf '\\377\\376abc\\n'\n", tmp_path)
    assert outcome.exit_code == 0
    assert outcome.output == "\ufffd\ufffdabc\n"


@posix_only
def test_temp_dir_removed_by_default(tmp_path: Path) -> None:
    outcome = run("touch extra-file\necho ok\n", tmp_path)
    assert outcome.output == "ok\n"
    assert run_dirs(tmp_path) == []


@posix_only
def test_keep_tempdir_leaves_the_private_dir_and_0600_script(tmp_path: Path) -> None:
    contents = "echo kept\n"
    run(contents, tmp_path, keep_tempdir=True, eid="keep-me")
    (run_dir,) = run_dirs(tmp_path)
    assert run_dir.name.startswith("fleet-keep-me-")
    assert stat.S_IMODE(run_dir.stat().st_mode) == 0o700
    script = run_dir / "script"
    assert script.read_text() == contents
    assert stat.S_IMODE(script.stat().st_mode) == 0o600


@posix_only
def test_hostile_execution_id_cannot_escape_the_temp_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    run("echo ok\n", root, keep_tempdir=True, eid="../../evil/x")
    (run_dir,) = run_dirs(root)
    assert run_dir.parent == root
    assert "/" not in run_dir.name.removeprefix("fleet-")
    assert not (tmp_path / "evil").exists()


@posix_only
@pytest.mark.timeout(30)
def test_cancelling_the_run_kills_the_script_and_cleans_up(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"

    async def scenario() -> None:
        task = asyncio.create_task(
            run_script(
                f"echo $$ > {pid_file}.tmp && mv {pid_file}.tmp {pid_file}\nsleep 1000\n",
                "c",
                timeout=60,
                tmp_root=tmp_path,
            )
        )
        end = time.monotonic() + 10
        while not pid_file.exists() and time.monotonic() < end:
            await asyncio.sleep(0.02)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    try:
        asyncio.run(scenario())
        assert wait_until_dead(int(pid_file.read_text()))
        assert run_dirs(tmp_path) == []
    finally:
        if pid_file.exists():
            kill_if_alive(int(pid_file.read_text()))


def test_non_positive_timeout_is_a_programming_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="timeout"):
        run("echo", tmp_path, timeout=0)
