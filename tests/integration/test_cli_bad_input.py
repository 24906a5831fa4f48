"""Every CLI answers a user's mistake with a clear line and a non-zero exit, never a traceback.

One row per mistake a new user or an operator makes; each runs the real console entry point as a process
(``python -m <package>``), as a shell or a service manager would.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.stub_process import clean_env

GARBAGE_PEM = "this is not a certificate\n"


def _run(argv: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *argv],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
        check=False,
    )


# (id, argv with {tmp} for the test's directory, extra env, expected exit code, a phrase the message must hold)
CASES: list[tuple[str, list[str], dict[str, str], int, str]] = [
    # orbit
    ("orbit-no-fleet-url", ["orbit", "--root-dir", "{tmp}/root"], {}, 2, "--fleet-url"),
    ("orbit-bad-fleet-url", ["orbit", "--root-dir", "{tmp}/root", "--fleet-url", "notaurl"], {}, 2, "not a URL"),
    ("orbit-bad-port", ["orbit", "--fleet-url", "https://fleet.example.com:0x1"], {}, 2, "invalid port"),
    (
        "orbit-missing-certificate",
        ["orbit", "--root-dir", "{tmp}/root", "--fleet-url", "https://f.example", "--fleet-certificate", "{tmp}/none"],
        {"ORBIT_ENROLL_SECRET": "s"},
        2,
        "cannot read it",
    ),
    (
        "orbit-garbage-certificate",
        [
            "orbit",
            "--root-dir",
            "{tmp}/root",
            "--fleet-url",
            "https://f.example",
            "--fleet-certificate",
            "{tmp}/bad.pem",
        ],
        {"ORBIT_ENROLL_SECRET": "s"},
        2,
        "not a PEM certificate",
    ),
    (
        "orbit-garbage-update-certificate",
        ["orbit", "--fleet-url", "https://f.example", "--update-tls-certificate", "{tmp}/bad.pem"],
        {},
        2,
        "--update-tls-certificate",
    ),
    (
        "orbit-no-secret",
        ["orbit", "--root-dir", "{tmp}/root", "--fleet-url", "https://f.example", "--disable-updates"],
        {},
        2,
        "enroll secret must be specified",
    ),
    (
        "orbit-secret-file-missing",
        ["orbit", "--root-dir", "{tmp}/root", "--fleet-url", "https://f.example", "--enroll-secret-path", "{tmp}/nope"],
        {},
        2,
        "enroll secret",
    ),
    ("orbit-relative-root", ["orbit", "--root-dir", "relative"], {}, 2, "absolute"),
    ("orbit-unknown-flag", ["orbit", "--no-such-flag"], {}, 2, "invalid command line"),
    ("orbit-bad-interval", ["orbit", "--update-interval", "soon"], {}, 2, "--update-interval"),
    # fleet-stub
    ("stub-data-dir-is-a-file", ["server_stub", "serve", "--data-dir", "{tmp}/a-file"], {}, 2, "not a directory"),
    (
        "stub-garbage-tls",
        ["server_stub", "serve", "--data-dir", "{tmp}/d", "--tls-cert", "{tmp}/bad.pem", "--tls-key", "{tmp}/bad.pem"],
        {},
        2,
        "cannot load the TLS certificate",
    ),
    (
        "stub-tls-cert-alone",
        ["server_stub", "serve", "--data-dir", "{tmp}/d", "--tls-cert", "{tmp}/bad.pem"],
        {},
        2,
        "together",
    ),
    (
        "stub-missing-tuf-repo",
        ["server_stub", "serve", "--data-dir", "{tmp}/d", "--tuf-repo", "{tmp}/no"],
        {},
        2,
        "--tuf-repo",
    ),
    ("stub-bad-listen", ["server_stub", "serve", "--data-dir", "{tmp}/d", "--listen", "localhost"], {}, 2, "HOST:PORT"),
    ("stub-bad-config", ["server_stub", "serve", "--data-dir", "{tmp}/d", "--config", "{tmp}/a-file"], {}, 2, "a-file"),
    ("stub-short-admin-token", ["server_stub", "serve", "--data-dir", "{tmp}/d", "--admin-token=-short"], {}, 2, "8"),
    ("stub-hosts-not-running", ["server_stub", "hosts", "--data-dir", "{tmp}/d"], {}, 1, "no running fleet-stub"),
    ("stub-unknown-command", ["server_stub", "nosuch"], {}, 2, "invalid choice"),
    # osqueryd-sim
    ("sim-unknown-flag", ["osquery_sim", "--nosuchflag"], {}, 1, "unknown command line flag"),
    ("sim-bad-sql", ["osquery_sim", "-S", "--json", "SELEC"], {}, 1, "syntax error"),
    ("sim-load-without-hosts", ["osquery_sim", "load", "--tls_hostname", "127.0.0.1:1"], {}, 2, "--hosts"),
    # orbitctl
    ("orbitctl-package-no-roots", ["packager", "package", "--type", "deb"], {}, 2, "--update-roots"),
    ("orbitctl-package-bad-type", ["packager", "package", "--type", "zip"], {}, 2, "invalid choice"),
    ("orbitctl-roots-no-repo", ["packager", "updates", "roots", "--path", "{tmp}/none"], {}, 1, "no root metadata"),
    (
        "orbitctl-add-no-passphrase",
        [
            "packager",
            "updates",
            "add",
            "--path",
            "{tmp}/r",
            "--target",
            "{tmp}/a-file",
            "--name",
            "orbit",
            "--platform",
            "linux",
            "--version",
            "1.0.0",
        ],
        {},
        1,
        "passphrase",
    ),
    # fleet-desktop
    ("desktop-unknown-argument", ["desktop_tray", "--nosuch"], {}, 2, "unknown argument"),
    ("desktop-no-environment", ["desktop_tray", "status", "--json"], {}, 2, "FLEET_DESKTOP_FLEET_URL"),
]


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "bad.pem").write_text(GARBAGE_PEM)
    (tmp_path / "a-file").write_text("not a directory\n")
    return tmp_path


@pytest.mark.parametrize(("argv", "env", "code", "phrase"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_user_error_is_one_clear_line_and_no_traceback(
    workdir: Path, argv: list[str], env: dict[str, str], code: int, phrase: str
) -> None:
    args = [part.replace("{tmp}", str(workdir)) for part in argv]
    result = _run(args, clean_env(**env), workdir)
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output
    assert result.returncode == code, output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines and phrase in lines[-1], output  # the last line says what is wrong (a usage may come before it)


@pytest.mark.parametrize(
    "argv",
    [["osquery_sim", "--help"], ["server_stub", "--help"], ["packager", "updates", "--help"], ["orbit", "--help"]],
    ids=["osqueryd-sim", "fleet-stub", "orbitctl", "orbit"],
)
def test_a_reader_that_stops_early_is_no_traceback(tmp_path: Path, argv: list[str]) -> None:
    """``osqueryd-sim --help | head -1``: the reader closes the pipe after one line."""
    proc = subprocess.Popen(
        [sys.executable, "-m", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=clean_env(), cwd=tmp_path
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.readline()
    proc.stdout.close()
    stderr = proc.stderr.read().decode(errors="replace")
    code = proc.wait(timeout=60)
    assert "Traceback" not in stderr and "BrokenPipe" not in stderr, stderr
    assert code in (0, 141), (code, stderr)
