"""``orbit`` (run, the default), ``orbit version``, ``orbit doctor [--json]``, ``orbit flare [--output FILE]``;
``orbit update-helper`` is orbit's own short-lived TUF worker (stdin/stdout, ADR 0020), never run by hand.

Exit codes: 0 after a graceful stop, 1 when the agent cannot start here (another instance running, unusable root
dir), 2 for a configuration that cannot work (invalid options, no or malformed Fleet URL, no enroll secret, an
unreadable certificate) — each said in one line on stderr and in the log. A self-update (or its rollback) replaces
this process with the other orbit (``execve``), keeping the pid that systemd or launchd supervises.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from orbit.options import Options, OptionsError, parse_options
from orbit.root_layout import InstanceLock, InstanceLockError, RootLayout
from orbit.timings import timings_from_env
from orbit.version import version_text
from tuf_updates.helper_protocol import UPDATE_HELPER_COMMAND

if TYPE_CHECKING:
    from orbit.agent import Agent, AgentExit

log = logging.getLogger("orbit")


def host_os() -> str:
    if sys.platform == "win32":
        return "windows"
    if sys.platform == "darwin":
        return "macos"
    return "linux"


def _run(options: Options, argv: Sequence[str]) -> int:
    from orbit.agent import Agent, AgentStartError  # noqa: PLC0415 - the daemon's imports, not the helper's
    from orbit.logging_setup import configure_logging  # noqa: PLC0415

    layout = RootLayout(Path(options.root_dir))
    try:
        layout.root.mkdir(parents=True, exist_ok=True, mode=0o755)
        lock = InstanceLock(layout.instance_lock)
        lock.acquire()
    except (OSError, InstanceLockError) as exc:
        print(f"orbit: {exc}", file=sys.stderr)
        return 1
    from orbit.extension import RingBufferLogHandler  # noqa: PLC0415

    log_ring = RingBufferLogHandler()
    configure_logging(
        extra_handlers=(log_ring,),
        debug=options.debug,
        log_file=Path(options.log_file) if options.log_file else None,
        stderr=sys.platform != "win32" or options.log_file is None,  # a Windows service has no usable stderr
    )
    agent = Agent(
        options, argv, os.environ, platform=host_os(), timings=timings_from_env(os.environ), log_ring=log_ring
    )
    try:
        result = _run_under_scm(agent) if sys.platform == "win32" else asyncio.run(agent.run())
    except AgentStartError as exc:
        log.error("event=start_failed error=%s", exc)
        print(f"orbit: {exc}", file=sys.stderr)
        return 2
    finally:
        reap_helpers()
        lock.release()
    return _finish(result)


def reap_helpers() -> int:
    """Kill what is left of orbit's own helper processes (``osqueryd -S``, an exec check of a download) when the
    agent has stopped: the supervised children are already gone, and a helper a stop cut short must neither outlive
    orbit nor survive an ``execve`` into another orbit. Returns how many were killed."""
    import psutil  # noqa: PLC0415 - only on the way out

    try:
        helpers = psutil.Process().children(recursive=True)
    except psutil.Error:
        return 0
    for helper in helpers:
        with contextlib.suppress(psutil.Error):
            helper.kill()
    # our own children are reaped here; a killed grandchild may stay a zombie until init reaps it: dead all the same
    ours = []
    for helper in helpers:
        with contextlib.suppress(psutil.Error):
            if helper.ppid() == os.getpid():
                ours.append(helper)
    _gone, alive = psutil.wait_procs(ours, timeout=1.0)
    if alive:
        log.warning("event=helpers_not_stopped pids=%s", ",".join(str(p.pid) for p in alive))
    if helpers:
        log.info("event=helpers_killed count=%d", len(helpers))
    return len(helpers)


def _run_under_scm(agent: Agent) -> AgentExit:
    """Windows: answer the Service Control Manager's start/stop handshake; from a console, just run."""
    from orbit.windows_service import (  # noqa: PLC0415 - Windows only
        ERROR_FAILED_SERVICE_CONTROLLER_CONNECT,
        ServiceHost,
        windows_service_control,
    )

    results: list[AgentExit] = []

    async def service_main(stop: asyncio.Event) -> None:
        watcher = asyncio.ensure_future(stop.wait())
        watcher.add_done_callback(lambda _: agent.request_stop("service control manager stop"))
        try:
            results.append(await agent.run())
        finally:
            watcher.cancel()

    from orbit.agent import AgentExit  # noqa: PLC0415

    host = ServiceHost(windows_service_control(), service_main)
    try:
        host.run()
    except OSError as exc:
        if getattr(exc, "winerror", None) != ERROR_FAILED_SERVICE_CONTROLLER_CONNECT:
            raise
        return asyncio.run(agent.run())  # started from a console, not by SCM
    return results[0] if results else AgentExit(1, reason="the service ended without a result")


def _finish(result: AgentExit) -> int:
    logging.getLogger("orbit").info("event=exiting reason=%r", result.reason)
    if result.exec_argv:
        logging.shutdown()
        try:
            os.execve(result.exec_argv[0], list(result.exec_argv), dict(result.exec_env or os.environ))  # noqa: S606
        except OSError as exc:
            print(f"orbit: cannot start {result.exec_argv[0]}: {exc}", file=sys.stderr)
            return 1
    return result.code


def main(argv: Sequence[str] | None = None) -> int:
    try:
        code = _main(argv)
        sys.stdout.flush()
    except BrokenPipeError:  # `orbit doctor --json | head`: the reader stopped early, not our error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + 13  # SIGPIPE, as the shell reports it
    return code


def _main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args == [UPDATE_HELPER_COMMAND]:
        return _update_helper()
    try:
        options = parse_options(args, os.environ, platform=host_os())
    except OptionsError as exc:
        print(f"orbit: {exc}", file=sys.stderr)
        return 2
    if options.command == "version":
        sys.stdout.write(version_text())
        return 0
    if options.command == "doctor":
        from orbit.doctor import run_doctor  # noqa: PLC0415

        return run_doctor(options, os.environ)
    if options.command == "flare":
        from orbit.flare import run_flare  # noqa: PLC0415

        return run_flare(options, os.environ)
    if (problem := run_configuration_problem(options)) is not None:
        print(f"orbit: {problem}", file=sys.stderr)
        return 2
    return _run(options, args)


def _update_helper() -> int:
    """Serve one update check for the agent that started this process (tuf_updates.repository_service). The
    protocol owns stdout: anything else printing there would corrupt it, so fd 1 becomes stderr and the answers
    go to a private copy of the original."""
    from tuf_updates.repository_service import serve  # noqa: PLC0415 - the TUF stack lives only in the helper

    answers = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    with answers:
        return serve(sys.stdin.buffer, answers)


def run_configuration_problem(options: Options) -> str | None:
    """What makes ``orbit run`` pointless, in one line: a daemon that can never reach its server must not start
    and log ``osqueryd_missing`` forever."""
    if options.fleet_url is None and not options.dev_mode:
        return "--fleet-url (ORBIT_FLEET_URL) is required: the address of your Fleet server, e.g. https://fleet.example.com"
    for flag, path in (
        ("--fleet-certificate", options.fleet_certificate),
        ("--update-tls-certificate", options.update_tls_certificate),
    ):
        if path is not None and (problem := certificate_problem(Path(path))) is not None:
            return f"{flag} {path}: {problem}"
    return None


def certificate_problem(path: Path) -> str | None:
    """Why ``path`` cannot serve as a CA bundle, or None."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        return f"cannot read it ({exc.strerror or exc})"
    if b"-----BEGIN CERTIFICATE-----" not in data:
        return "not a PEM certificate bundle (no BEGIN CERTIFICATE block)"
    try:
        ssl.create_default_context(cafile=str(path))
    except (ssl.SSLError, ValueError) as exc:
        return f"not a usable certificate bundle ({exc})"
    return None


if __name__ == "__main__":
    sys.exit(main())
