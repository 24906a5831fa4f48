"""osqueryd as a supervised child: where its binary is, its argv (osquery_bin_manager's builder, Fleet's order) and
its explicit environment, all re-evaluated at every start so new flags or a new binary apply on restart.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

from orbit.children.restart_policy import RestartPolicy
from orbit.children.supervisor import ChildSpec, StartReason
from orbit.root_layout import RootLayout
from osquery_bin_manager.launch_args import FleetConnection, LaunchSpec, build_args, child_environment

log = logging.getLogger(__name__)


class OsquerydMissingError(FileNotFoundError):
    pass


def _non_empty(path: Path) -> bool:
    try:
        return path.stat().st_size > 0
    except OSError:
        return False


def osqueryd_launch_spec(
    layout: RootLayout,
    *,
    platform: str,
    fleet_url: str | None,
    fleet_certificate: Path | None,
    debug: bool,
    host_identifier: str,
    database_path: Path,
    passthrough: tuple[str, ...],
    insecure_proxy: tuple[int, Path] | None = None,
) -> LaunchSpec:
    fleet = None
    if fleet_url:
        has_client = layout.fleet_client_cert.is_file() and layout.fleet_client_key.is_file()
        fleet = FleetConnection(
            url=fleet_url,
            certificate=fleet_certificate,
            client_cert=layout.fleet_client_cert if has_client else None,
            client_key=layout.fleet_client_key if has_client else None,
            insecure_proxy_port=insecure_proxy[0] if insecure_proxy is not None else None,
        )
    return LaunchSpec(
        root_dir=layout.root,
        platform=platform,
        fleet=fleet,
        certs_bundle=layout.certs_bundle if _non_empty(layout.certs_bundle) else None,
        proxy_certificate=insecure_proxy[1] if insecure_proxy is not None else None,
        debug=debug,
        flagfile=layout.osquery_flags if layout.osquery_flags.is_file() else None,
        host_identifier=host_identifier,
        database_path=database_path,
        extensions_autoload=layout.extensions_load if _non_empty(layout.extensions_load) else None,
        passthrough=passthrough,
    )


def osqueryd_child(
    layout: RootLayout,
    executable: Callable[[], Path | None],
    launch_spec: Callable[[], LaunchSpec],
    enroll_secret: str | None,
    *,
    platform: str,
    policy: RestartPolicy,
    log_path: Path | None = None,
    output: Callable[[str], None] | None = None,
    prepare: Callable[[StartReason], Awaitable[None]] | None = None,
) -> ChildSpec:
    def argv() -> list[str]:
        path = executable()
        if path is None or not path.is_file():
            raise OsquerydMissingError(f"osqueryd does not exist at {path or 'any known path'}")
        layout.osquery_log_dir.mkdir(parents=True, exist_ok=True)
        if sys.platform != "win32":
            layout.extension_socket.unlink(missing_ok=True)  # a stale socket would block osqueryd's extension manager
        args = [str(path), *build_args(launch_spec())]
        log.info("event=osqueryd_argv argv=%r", args)
        return args

    def env() -> dict[str, str]:
        return child_environment(enroll_secret, platform)

    return ChildSpec(
        name="osqueryd",
        argv=argv,
        env=env,
        cwd=layout.root,
        pidfile=layout.osquery_pidfile,
        record=layout.child_record("osqueryd"),
        orphan_executables=lambda: [path] if (path := executable()) is not None else [],
        log_path=log_path,
        policy=policy,
        output=output,
        prepare=prepare,
    )
