"""``fleet-desktop`` command line (docs/contracts.md, docs/reference/orbit-behaviour.md §10.1).

* ``fleet-desktop`` — run the tray app (configuration from the ``FLEET_DESKTOP_*`` environment);
* ``fleet-desktop --version`` — ``fleet-desktop <version>``;
* ``fleet-desktop --help`` — a one-line description (plus usage), exit 0;
* ``fleet-desktop status [--json]`` — one round of checks (token file → ``/desktop``), then the menu it would show.

Exit status: 0 success (``status`` also when offline: it is a report), 1 another instance is running, 2 bad
usage or configuration.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TextIO

from desktop_tray.app import DesktopApp
from desktop_tray.config import ConfigError, DesktopConfig, load_config
from desktop_tray.controller import DesktopController
from desktop_tray.device_client import DeviceClient
from desktop_tray.instance_lock import LOCK_FILE_NAME, AlreadyRunningError, InstanceLock
from desktop_tray.log_setup import configure_file_logging, configure_stderr_logging
from desktop_tray.menu_state import MenuItemView, TrayState, badge_count, status_document
from desktop_tray.tls_setup import TlsSetupError, build_http_client
from desktop_tray.token_file import NoToken, StaticToken, TokenFile, TokenSource
from desktop_tray.user_paths import STATUS_FILE_NAME, desktop_dir
from desktop_tray.version import desktop_version

PROG = "fleet-desktop"
DESCRIPTION = (
    "Fleet Desktop application executable: the per-user tray app that shows this device's Fleet status "
    "(configured by the FLEET_DESKTOP_* environment orbit sets)."
)
USAGE = f"usage: {PROG} [--version | --help | status [--json]]"

EXIT_OK = 0
EXIT_ALREADY_RUNNING = 1
EXIT_USAGE = 2


def _error(message: str, stream: TextIO | None = None) -> None:
    print(f"{PROG}: error: {message}", file=stream or sys.stderr)


def token_source(config: DesktopConfig) -> TokenSource:
    if config.identifier_path is not None:
        return TokenFile(config.identifier_path)
    if config.legacy_token:
        return StaticToken(config.legacy_token)
    return NoToken()


def render_text(state: TrayState, items: tuple[MenuItemView, ...]) -> str:
    lines = [f"state: {state.connection.value}", f"failing policies: {badge_count(state)}", "menu:"]
    for item in items:
        if item.visible:
            lines.append(f"  {item.title}" + ("" if item.enabled else "  (disabled)"))
    return "\n".join(lines) + "\n"


def status_command(environ: Mapping[str, str], *, as_json: bool) -> int:
    configure_stderr_logging()
    try:
        config = load_config(environ)
    except ConfigError as exc:
        _error(str(exc))
        return EXIT_USAGE
    version = desktop_version(environ)
    tokens = token_source(config)
    try:
        http = build_http_client(config, version)
    except TlsSetupError as exc:
        _error(str(exc))
        return EXIT_USAGE
    # one round: a 401 is reported as Connecting at once instead of being retried for 6 s
    client = DeviceClient(http, tokens, max_attempts=1)
    try:
        controller = DesktopController(
            client,
            tokens,
            clock=time.monotonic,
            version=version,
            platform=config.platform,
            fleet_url=config.fleet_url,
            env_browser_host=config.alternative_browser_host,
            permanent_error=config.permanent_error,
        )
        controller.step()
    finally:
        client.close()
    state, items = controller.state, controller.items
    if as_json:
        text = json.dumps(status_document(state, items), ensure_ascii=False) + "\n"
    else:
        text = render_text(state, items)
    sys.stdout.flush()
    sys.stdout.buffer.write(text.encode("utf-8"))
    sys.stdout.flush()
    return EXIT_OK


def run_command(environ: Mapping[str, str]) -> int:
    try:
        config = load_config(environ)
    except ConfigError as exc:
        _error(str(exc))
        return EXIT_USAGE
    version = desktop_version(environ)
    directory = desktop_dir(config.platform)
    try:
        log_path: Path | None = configure_file_logging(directory)
    except OSError as exc:
        configure_stderr_logging()
        _error(f"cannot write logs under {directory}: {exc.strerror}; logging to stderr only")
        log_path = None
    log = logging.getLogger("desktop_tray")
    log.info("event=starting version=%s log=%s", version, log_path)
    lock = InstanceLock(directory / LOCK_FILE_NAME)
    try:
        lock.acquire()
    except AlreadyRunningError as exc:
        log.error("event=refused reason=%r", str(exc))
        _error(str(exc))
        return EXIT_ALREADY_RUNNING
    except OSError as exc:
        _error(f"cannot take the single-instance lock {lock.path}: {exc.strerror}")
        return EXIT_USAGE
    try:
        stop = threading.Event()
        tokens = token_source(config)
        try:
            http = build_http_client(config, version)
        except TlsSetupError as exc:
            log.error("event=tls_setup_failed reason=%r", str(exc))
            _error(str(exc))
            return EXIT_USAGE
        client = DeviceClient(http, tokens, sleep=stop.wait)
        try:
            app = DesktopApp(
                config,
                client,
                tokens,
                version=version,
                environ=environ,
                status_path=config.status_file or directory / STATUS_FILE_NAME,
                stop_event=stop,
            )
            return app.run()
        finally:
            client.close()
    finally:
        lock.release()


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    env = os.environ if environ is None else environ
    if args in (["--version"], ["version"]):
        print(f"{PROG} {desktop_version(env)}")
        return EXIT_OK
    if args and args[0] in ("--help", "-h", "help"):
        print(DESCRIPTION)
        print(USAGE)
        return EXIT_OK
    if args and args[0] == "status":
        options = args[1:]
        if options not in ([], ["--json"]):
            print(USAGE, file=sys.stderr)
            _error(f"unknown status option(s): {' '.join(options)}")
            return EXIT_USAGE
        return status_command(env, as_json=options == ["--json"])
    if args:
        print(USAGE, file=sys.stderr)
        _error(f"unknown argument(s): {' '.join(args)}")
        return EXIT_USAGE
    return run_command(env)
