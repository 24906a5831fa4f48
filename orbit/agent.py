"""The agent: wires the actors together (docs/design.md §2) and owns nothing else.

Start-up follows Fleet's order (docs/reference/orbit-behaviour.md §1.3) where it matters — early update check,
osqueryd's
host info, the first config fetch before osqueryd starts (so its flags are already right), the device token —
then every actor runs in one TaskGroup, each kept alive by ``keep_running``. Only a signal or orbit's own update
ends the run; ``run`` then returns an ``AgentExit`` telling ``__main__`` whether to exit or exec another orbit.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path

import httpx

from orbit.actors import STOP_GRACE_S, DaemonThreadExecutor, Stopped, keep_running, retry_until_done, until_stopped
from orbit.agent_state import AgentState
from orbit.child_probation import ChildProbation, RunningVersion
from orbit.children.desktop_child import desktop_child
from orbit.children.orphans import kill_orphans
from orbit.children.osqueryd_child import osqueryd_child, osqueryd_launch_spec
from orbit.children.restart_policy import RestartPolicy
from orbit.children.supervisor import ChildState, ChildStatus, StartReason, Supervisor
from orbit.extension import ExtensionServer, FleetdLogsTable, OrbitInfoTable, RingBufferLogHandler
from orbit.fleet.capabilities import CapabilitiesWatcher
from orbit.fleet.client import OrbitClient, OrbitConfig
from orbit.fleet.config_poller import ConfigPoller, Receiver
from orbit.fleet.device_token import DeviceTokenManager
from orbit.fleet.enroll_request import enroll_body
from orbit.fleet.enroll_secret import EnrollSecretError, default_keystore, resolve_enroll_secret
from orbit.fleet.identity_check import check_identity
from orbit.fleet.insecure_proxy import InsecureProxy
from orbit.fleet.node_key_store import NodeKeyStore
from orbit.fleet.osqueryd_restart import OsquerydRestartRequests
from orbit.fleet.outcome_sender import OutcomeSender
from orbit.fleet.scripts_receiver import ScriptsReceiver
from orbit.fleet.server_overrides import (
    Channels,
    channels_differ,
    effective_channels,
    load_overrides,
    pinned,
    save_overrides,
)
from orbit.fleet.system_configuration import (
    ConfigurationSource,
    Resolved,
    SystemConfigurationError,
    macos_sources,
    resolve_once,
    wait_for_configuration,
)
from orbit.options import Options, normalize_fleet_url
from orbit.outcome_queue import OutcomeKind, OutcomeQueue, new_outcome
from orbit.reactions import (
    InstalledAction,
    after_install,
    channel_switch,
    doubling_delays,
    first_update_delay,
    healthy_for,
)
from orbit.root_layout import RootLayout
from orbit.self_heal.install_healer import HealReport, HealState, InstallHealer
from orbit.self_heal.trusted_installs import TrustedInstalls
from orbit.self_update.self_updater import AgentExit, SelfUpdater
from orbit.self_update.setup import (
    TrustRootError,
    bootstrap_root,
    make_installer,
    make_update_client,
    tracked_targets,
    update_tls,
    user_agent,
)
from orbit.self_update.trial_boot import Quarantine
from orbit.timings import Timings
from orbit.version import orbit_version
from osquery_bin_manager.flagfile import FlagfileReceiver
from osquery_bin_manager.host_info import HostInfo, HostInfoError, read_host_info
from tuf_updates.errors import FailureKind
from tuf_updates.http_client import TlsOptions, build_async_http_client
from tuf_updates.targets import TargetName, TargetSpec
from tuf_updates.update_runner import CheckReport, Repository, TargetOutcome, TargetReport, UpdateRunner, UpdateSchedule

log = logging.getLogger(__name__)


DESKTOP_SUPERVISOR = "desktop supervisor"
# failures of an install that say something about the release (not about the network or this host's disk): reported
# to the server as ``install_failed``
RELEASE_FAILURES = frozenset({FailureKind.TARGET_MISMATCH, FailureKind.OVERSIZED, FailureKind.INSTALL})
RESTART_ON_REQUEST_TIMEOUT_S = 60.0
# actors that stop their children in order on the stop event and must not be cancelled half-way
SELF_STOPPING_ACTORS = frozenset({DESKTOP_SUPERVISOR})


class AgentStartError(RuntimeError):
    """Configuration that cannot work (exit 2 with the message; the service manager will not fix it)."""


class Agent:
    def __init__(
        self,
        options: Options,
        argv: Sequence[str],
        env: Mapping[str, str],
        *,
        platform: str,
        timings: Timings,
        log_ring: RingBufferLogHandler | None = None,
        configuration_sources: Sequence[ConfigurationSource] = (),
    ) -> None:
        self.options = options
        self.configuration_sources = tuple(configuration_sources)  # tests inject fixtures; macOS default otherwise
        self.log_ring = log_ring or RingBufferLogHandler()
        self.argv = tuple(argv)
        self.env = dict(env)
        self.platform = platform
        self.timings = timings
        self.layout = RootLayout(Path(options.root_dir))
        self.version = orbit_version()
        self.stop = asyncio.Event()
        self.state = AgentState(self.layout, self.version, time.time())
        self._exit: AgentExit | None = None
        self.overrides = load_overrides(self.layout.server_overrides)
        cli = Channels(options.orbit_channel, options.osqueryd_channel, options.desktop_channel)
        self.cli_channels = cli
        self.channels = effective_channels(cli, self.overrides)
        self.targets = tracked_targets(
            self.channels.orbit, self.channels.osqueryd, self.channels.desktop, options.fleet_desktop
        )
        self.installer = make_installer(self.layout)
        self.outcomes = OutcomeQueue(self.layout.update_outcomes)
        self.update_client: Repository | None = None
        self.healer = InstallHealer(self.installer, TrustedInstalls(self.layout.trusted_installs), self._repository)
        self.probation = ChildProbation(self.layout.child_probation, self.outcomes, timings.stable_reset)
        self._reported_failures: set[tuple[str, str]] = set()
        self.updater = SelfUpdater(
            self.layout,
            self.installer,
            self.state,
            timings,
            version=self.version,
            argv=self.argv,
            orbit_platform=self.targets.orbit.platform,
            exit_with=self._request_exit,
            outcomes=self.outcomes,
        )
        self.runner: UpdateRunner | None = None
        self.client: OrbitClient | None = None
        self.poller: ConfigPoller | None = None
        self.osqueryd: Supervisor | None = None
        self.host: HostInfo | None = None
        self.secret: str | None = None
        self.last_config: OrbitConfig | None = None
        self.token: DeviceTokenManager | None = None
        self.desktop: Supervisor | None = None
        self.insecure_proxy: InsecureProxy | None = None
        self.scripts: ScriptsReceiver | None = None
        self.outcome_sender: OutcomeSender | None = None
        self.restart_requests: OsquerydRestartRequests | None = None
        self._background: set[asyncio.Future[None]] = set()
        self._http: httpx.AsyncClient | None = None

    # -- start-up steps ------------------------------------------------------------------------------------

    def _resolve_secret(self) -> None:
        options = self.options
        keystore = default_keystore(self.platform, options.disable_keystore)
        try:
            source = resolve_enroll_secret(
                options.enroll_secret,
                Path(options.enroll_secret_path) if options.enroll_secret_path else None,
                keystore=keystore,
            )
        except EnrollSecretError as exc:
            raise AgentStartError(str(exc)) from None
        self.secret = source.secret
        self.state.secret_origin = source.origin
        if options.fleet_url and not self.secret:
            raise AgentStartError("enroll secret must be specified (--enroll-secret or --enroll-secret-path)")

    async def _await_system_configuration(self) -> bool:
        """macOS ``--use-system-configuration`` (Fleet's start-up step 5): the Fleet URL and secret from the MDM's
        configuration profile, flags or the persisted files, waiting for them every 30 s; False when stopped first.
        Elsewhere the flag means nothing (as in Fleet) and is only logged."""
        if self.platform != "macos":
            log.warning("event=use_system_configuration_ignored platform=%s", self.platform)
            return True
        options = self.options
        sources = self.configuration_sources or macos_sources()
        keystore = default_keystore(self.platform, options.disable_keystore)
        log.info("event=system_configuration_reading")

        def attempt() -> Resolved | None:
            return resolve_once(sources, self.layout.root, options.fleet_url, options.enroll_secret, keystore)

        waiting = wait_for_configuration(attempt, self.stop, interval=self.timings.system_configuration_retry)
        try:
            # until_stopped: a stop also ends an attempt still waiting for `profiles` in its thread
            found = await until_stopped(waiting, self.stop)
        except Stopped:
            return False
        except (SystemConfigurationError, EnrollSecretError) as exc:
            raise AgentStartError(str(exc)) from None
        if found is None:
            return False
        enable_scripts = found.enable_scripts if found.enable_scripts is not None else options.enable_scripts
        self.options = dataclasses.replace(
            options,
            fleet_url=normalize_fleet_url(found.fleet_url),
            enroll_secret=found.enroll_secret,
            enroll_secret_path=None,
            enable_scripts=enable_scripts,
        )
        self.state.extra["configuration_source"] = found.origin
        log.info("event=system_configuration_used source=%s fleet_url=%s", found.origin, self.options.fleet_url)
        return True

    def _setup_updates(self) -> None:
        options = self.options
        if options.disable_updates:
            self.state.updates = "disabled"
            return
        try:
            root = bootstrap_root(self.layout, options.update_roots)
        except TrustRootError as exc:
            self.state.updates = f"unavailable: {exc}"
            log.error("event=updates_unavailable error=%s", exc)
            return
        tls = update_tls(
            self.layout,
            Path(options.update_tls_certificate) if options.update_tls_certificate else None,
            options.insecure,
        )
        client = make_update_client(self.layout, options.update_url, root, tls, self.version)
        self.update_client = client
        include_orbit = not options.dev_mode
        self.runner = UpdateRunner(
            client,
            self.installer,
            self.targets.all(include_orbit=include_orbit),
            schedule=UpdateSchedule(options.update_interval),
            on_installed=self._on_installed,
            on_report=self._on_update_report,
            deferred=lambda spec: spec.name is TargetName.ORBIT,
            quarantined=self.updater.is_quarantined,
            paused=self.updater.is_paused,
        )
        self.state.updates = "enabled"

    def osqueryd_path(self) -> Path | None:
        spec = self.targets.osqueryd
        path = self.installer.executable_path(spec)
        if path.is_file():
            return path
        fallback = self.overrides.fallback_osqueryd_path
        if fallback and Path(fallback).is_file():
            return Path(fallback)
        return None

    def desktop_path(self) -> Path | None:
        spec = self.targets.desktop
        if spec is not None and (path := self.installer.executable_path(spec)).is_file():
            return path
        fallback = self.overrides.fallback_desktop_path
        return Path(fallback) if fallback and Path(fallback).is_file() else None

    async def _early_update_check(self) -> bool:
        """Fleet's synchronous check at start-up; True when orbit itself was staged (→ exec into it)."""
        if self.runner is None:
            return False
        report = await asyncio.to_thread(self.runner.check_once)
        self.runner.last_report = report
        self._on_update_report(report)
        for item in report.staged:
            if not self.options.dev_mode and await self.updater.start(item):
                return True
        return False

    async def _wait_for_osqueryd(self) -> Path | None:
        """The installed osqueryd (or the fallback); while there is none, check for updates between waits."""
        checked = False

        async def attempt() -> Path | None:
            nonlocal checked
            if checked and self.runner is not None:
                self._on_update_report(await asyncio.to_thread(self.runner.check_once))
            checked = True
            return self.osqueryd_path()

        def failed(delay: float) -> None:
            expected = self.installer.executable_path(self.targets.osqueryd)
            log.error("event=osqueryd_missing expected=%s retry_in=%.0f", expected, delay)

        return await retry_until_done(attempt, self._sleep, doubling_delays(5.0, 300.0), failed)

    async def _read_host_info(self, osqueryd: Path) -> HostInfo | None:
        await asyncio.to_thread(
            kill_orphans,
            record=self.layout.child_record("osqueryd"),
            pidfile=self.layout.osquery_pidfile,
            executables=[osqueryd],
        )
        error = ""

        async def attempt() -> HostInfo | None:
            nonlocal error
            try:
                return await asyncio.to_thread(read_host_info, osqueryd, Path(self.options.osquery_db))
            except HostInfoError as exc:
                error = str(exc)
                return None

        def failed(delay: float) -> None:
            log.error("event=host_info_failed error=%s retry_in=%.0f", error, delay)

        return await retry_until_done(attempt, self._sleep, doubling_delays(2.0, 300.0), failed)

    async def _token_rotation_enabled(self) -> None:
        if self.token is not None:
            await self.token.ensure(True)

    def _enroll_body(self) -> Mapping[str, str]:
        assert self.host is not None and self.secret is not None
        return enroll_body(self.host, self.secret, self.options.host_identifier)

    def _fleet_tls(self) -> TlsOptions:
        ca = self.options.fleet_certificate
        return TlsOptions.with_client_files(
            Path(ca) if ca else None,
            self.layout.fleet_client_cert,
            self.layout.fleet_client_key,
            insecure=self.options.insecure,
        )

    # -- receivers -----------------------------------------------------------------------------------------

    def _restart_osqueryd(self, reason: str) -> None:
        if self.osqueryd is not None:
            log.info("event=osqueryd_restart_requested reason=%r", reason)
            self.osqueryd.restart(reason)

    def _apply_channels(self, config: OrbitConfig) -> None:
        remote = config.update_channels
        if remote is None or self.runner is None:
            return
        if not channels_differ(self.channels, remote, desktop_enabled=self.options.fleet_desktop):
            return
        osqueryd_path = self.osqueryd_path()
        desktop_path = self.desktop_path()
        self.overrides = pinned(self.overrides, remote, str(osqueryd_path or ""), str(desktop_path or ""))
        save_overrides(self.layout.server_overrides, self.overrides)
        old = self.channels
        self.channels = effective_channels(self.cli_channels, self.overrides)
        self.targets = tracked_targets(
            self.channels.orbit, self.channels.osqueryd, self.channels.desktop, self.options.fleet_desktop
        )
        self.runner.set_targets(self.targets.all(include_orbit=not self.options.dev_mode))
        log.info("event=channels_pinned old=%s new=%s", old, self.channels)
        desktop_spec = self.targets.desktop
        switch = channel_switch(
            old,
            self.channels,
            osqueryd_installed=self.installer.is_installed(self.targets.osqueryd),
            desktop_installed=desktop_spec is not None and self.installer.is_installed(desktop_spec),
            desktop_supervised=self.desktop is not None,
        )
        if switch.restart_osqueryd:
            self._restart_osqueryd("osqueryd channel changed")
        if switch.restart_desktop and self.desktop is not None:
            self.desktop.restart("desktop channel changed")
        self.runner.check_soon()

    def _on_config(self, config: OrbitConfig) -> None:
        self.last_config = config
        self.state.config_digest = config.digest

    def _receivers(self) -> list[Receiver]:
        flags = FlagfileReceiver(self.layout.osquery_flags, self._restart_osqueryd)
        receivers = [
            Receiver("config", self._on_config),
            Receiver("flags", lambda config: flags.apply(config.startup_flags)),
        ]
        if self.runner is not None:
            receivers.append(Receiver("update channels", self._apply_channels))
        if self.client is not None:
            self.scripts = ScriptsReceiver(
                self.client,
                enabled=lambda: self.options.enable_scripts,
                timeout=lambda: self.last_config.script_execution_timeout if self.last_config else None,
                keep_tempdir=bool(self.env.get("FLEET_PREVENT_SCRIPT_TEMPDIR_DELETION")),
            )
            receivers.append(Receiver("scripts", self._start_scripts, on_change_only=False))
            self.outcome_sender = OutcomeSender(self.client, self.outcomes)
            receivers.append(Receiver("update outcomes", self.outcome_sender.on_config, on_change_only=False))
            self.restart_requests = OsquerydRestartRequests(
                self.client, self.layout.osqueryd_restart_request, self._restart_osqueryd_on_request, self._spawn
            )
            receivers.append(Receiver("osqueryd restart", self.restart_requests.on_config, on_change_only=False))
        return receivers

    def _spawn(self, job: Awaitable[None]) -> None:
        """A job that outlives the receiver that started it (cancelled when the agent stops)."""
        task = asyncio.ensure_future(job)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _restart_osqueryd_on_request(self, reason: str) -> str | None:
        """Restart osqueryd (only it) and wait until it runs again; None, or what went wrong."""
        supervisor = self.osqueryd
        if supervisor is None:
            return "osqueryd is not supervised by this orbit"
        before = supervisor.status().pid
        self._restart_osqueryd(reason)
        deadline = time.monotonic() + RESTART_ON_REQUEST_TIMEOUT_S
        while time.monotonic() < deadline:
            status = supervisor.status()
            if status.state is ChildState.RUNNING and status.pid is not None and status.pid != before:
                return None
            if await self._sleep(0.2):
                return "orbit is stopping"
        state = supervisor.status().state.value
        return f"osqueryd is not running again after {RESTART_ON_REQUEST_TIMEOUT_S:.0f}s (state {state})"

    def _start_scripts(self, config: OrbitConfig) -> None:
        """Scripts can run for minutes: a batch runs as its own task so config polling goes on meanwhile."""
        scripts = self.scripts
        if scripts is None or not config.pending_script_execution_ids or scripts.busy:
            return
        task = asyncio.ensure_future(scripts.handle(config.pending_script_execution_ids))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- updates -------------------------------------------------------------------------------------------

    def _repository(self) -> Repository | None:
        return self.update_client

    def _on_update_report(self, report: CheckReport) -> None:
        """Every update check: the status file, trust for what matched the signed targets, failed installs."""
        self.state.note_update_report(report)
        for item in report.targets:
            if item.outcome is TargetOutcome.UP_TO_DATE and item.digest is not None:
                algorithm = "sha512" if len(item.digest) == 128 else "sha256"
                try:
                    self.healer.note_signed_match(item.spec, item.version, algorithm, item.digest)
                except OSError as exc:
                    log.warning("event=trusted_install_not_recorded target=%s error=%s", item.spec.path, exc)
            elif item.outcome is TargetOutcome.FAILED and item.error_kind in RELEASE_FAILURES and item.digest:
                key = (item.spec.path, item.digest)
                if key in self._reported_failures:
                    continue
                self._reported_failures.add(key)
                running = self.healer.trusted_for(item.spec)
                self._record_outcome(
                    item.spec,
                    item.version,
                    running.version if running else None,
                    OutcomeKind.INSTALL_FAILED,
                    item.error,
                )

    def _record_outcome(
        self, spec: TargetSpec, version: str | None, previous: str | None, kind: OutcomeKind, reason: str | None
    ) -> None:
        try:
            self.outcomes.add(new_outcome(str(spec.name), version, previous, spec.channel, kind, reason))
        except OSError as exc:
            log.warning("event=update_outcome_not_recorded target=%s error=%s", spec.path, exc)

    def _heal_report(self, report: HealReport) -> None:
        if report.state is HealState.REPAIRED:
            reason = f"{report.problem} (reinstalled from the {report.source})"
            self._record_outcome(report.spec, report.version, report.version, OutcomeKind.REPAIRED, reason)

    async def _heal_at_start(self) -> None:
        """Every tracked executable fully checked (and repaired) before anything runs it."""
        specs = [self.targets.orbit, self.targets.osqueryd]
        if self.targets.desktop is not None:
            specs.append(self.targets.desktop)
        for spec in specs:
            self._heal_report(await asyncio.to_thread(self.healer.check, spec, full=True))

    def _child_spec(self, target: str) -> TargetSpec | None:
        return self.targets.osqueryd if target == "osqueryd" else self.targets.desktop

    async def _before_child_start(self, target: str, reason: StartReason) -> None:
        """The self-heal check before every start of a child (a full hash after a crash, else only when the file's
        fingerprint changed), then the version it will run goes to the probation watch."""
        spec = self._child_spec(target)
        if spec is None:
            return
        report = await asyncio.to_thread(self.healer.check, spec, full=reason is StartReason.AFTER_CRASH)
        self._heal_report(report)
        installed = self.installer.is_installed(spec)
        launched = (
            RunningVersion(report.version, report.digest, spec.channel)
            if installed and report.digest is not None and report.usable
            else None
        )
        self.probation.launching(target, launched)

    def _child_statuses(self) -> dict[str, ChildStatus | None]:
        return {
            "osqueryd": self.osqueryd.status() if self.osqueryd is not None else None,
            "desktop": self.desktop.status() if self.desktop is not None else None,
        }

    async def _on_installed(self, name: str, report: TargetReport) -> None:
        action = after_install(
            name, report.outcome, dev_mode=self.options.dev_mode, desktop_supervised=self.desktop is not None
        )
        if action is InstalledAction.START_TRIAL:
            await self.updater.start(report)
        elif action is InstalledAction.RESTART_OSQUERYD:
            self._restart_osqueryd(f"osqueryd updated to {report.version}")
        elif action is InstalledAction.RESTART_DESKTOP and self.desktop is not None:
            self.desktop.restart(f"fleet-desktop updated to {report.version}")

    def _healthy_for(self) -> float:
        status = self.osqueryd.status() if self.osqueryd is not None else None
        return healthy_for(
            fleet_configured=bool(self.options.fleet_url),
            enrolled=self.client is not None and self.client.enrolled,
            osqueryd_state=status.state if status is not None else None,
            osqueryd_uptime=status.uptime if status is not None else None,
        )

    # -- run -----------------------------------------------------------------------------------------------

    def request_stop(self, reason: str) -> None:
        self._request_exit(AgentExit(0, reason=reason))

    def _request_exit(self, result: AgentExit) -> None:
        if self._exit is None:
            self._exit = result
        self.stop.set()
        for task in self._background:  # a running script is killed now, not after the children have stopped
            task.cancel()

    async def _sleep(self, seconds: float) -> bool:
        """Sleep unless stopped; True when the agent is stopping."""
        try:
            await asyncio.wait_for(self.stop.wait(), timeout=seconds)
        except TimeoutError:
            return False
        return True

    def _install_signals(self) -> None:
        if sys.platform == "win32":
            return  # the service control manager's stop arrives through request_stop
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop_signal, sig.name)
        loop.add_signal_handler(signal.SIGHUP, self._reload)

    def _stop_signal(self, name: str) -> None:
        log.info("event=stop_requested signal=%s", name)
        if self._exit is None:
            self.updater.note_stop_signal()
        self._request_exit(AgentExit(0, reason=f"signal {name}"))

    def _reload(self) -> None:
        log.info("event=reload reason=SIGHUP")
        if self.runner is not None:
            self.runner.check_soon()
        if self.poller is not None:
            self.poller.poll_soon()

    async def run(self) -> AgentExit:
        asyncio.get_running_loop().set_default_executor(DaemonThreadExecutor())
        self._install_signals()
        self.layout.ensure()
        self.layout.remove_old_files()
        if (problem := self.layout.socket_path_problem()) is not None:
            log.error("event=extension_socket_path_too_long detail=%r", problem)
        if self.options.use_system_configuration and not await self._await_system_configuration():
            log.info("event=stopped_waiting_for_system_configuration")
            return self._result()
        self._resolve_secret()
        self.updater.check_at_start(self.env)
        self._setup_updates()
        log.info(
            "event=starting version=%s root=%s channels=%s/%s/%s updates=%s",
            self.version,
            self.layout.root,
            self.channels.orbit,
            self.channels.osqueryd,
            self.channels.desktop,
            self.state.updates,
        )
        try:
            # every start-up step (an early update's download, enrollment backoff, the first config poll) ends
            # at once on SIGTERM; the actors then stop themselves (keep_running), children last
            reachable = await until_stopped(self._start_up(), self.stop)
            if reachable is not None:
                await self._run_group(reachable)
        except Stopped:
            log.info("event=stopped_during_start_up")
        finally:
            await self._close()
            await self.state.write_now(self)
        return self._result()

    async def _start_up(self) -> bool | None:
        """Fleet's start-up order up to the actors; None when the agent must not go on (an update to exec into, or
        a stop); else whether the server answered the first ping."""
        await self._heal_at_start()
        if await self._early_update_check():
            log.info("event=exiting_for_early_update")
            return None
        osqueryd = await self._wait_for_osqueryd()
        if osqueryd is None:
            return None
        self.host = await self._read_host_info(osqueryd)
        if self.host is None:
            return None
        self.state.host_uuid = self.host.hardware_uuid
        changed = await asyncio.to_thread(
            check_identity, self.layout, Path(self.options.osquery_db), self.host.hardware_uuid
        )
        if changed is not None:
            self.state.extra["identity_changed"] = changed
        await self._prepare_actors()
        return await self._first_contact()

    async def _close(self) -> None:
        """Whatever start-up opened: background script runs, the insecure proxy, the Fleet HTTP client."""
        for task in list(self._background):
            task.cancel()
        if self._background:
            await asyncio.wait(self._background, timeout=STOP_GRACE_S + 1.0)
        if self.insecure_proxy is not None:
            await self.insecure_proxy.close()
        if self._http is not None:
            await self._http.aclose()

    def _result(self) -> AgentExit:
        return self._exit or AgentExit(0, reason="stopped")

    async def _prepare_actors(self) -> None:
        options = self.options
        timings = self.timings
        if options.fleet_url:
            self._http = build_async_http_client(self._fleet_tls(), user_agent=user_agent(self.version))
            self.client = OrbitClient(
                self._http,
                options.fleet_url,
                NodeKeyStore(self.layout.node_key),
                self._enroll_body,
                enroll_retry_interval=timings.enroll_retry_interval,
                enroll_attempts=timings.enroll_attempts,
                reenroll_debounce=timings.reenroll_debounce,
                config_cache_ttl=timings.config_cache_ttl,
            )
            self.poller = ConfigPoller(
                self.client.get_config,
                self._receivers(),
                interval=timings.config_interval,
                max_backoff=timings.config_max_backoff,
            )
        policy = RestartPolicy(first_delay=0.25, stable_after=timings.stable_reset)
        if options.insecure and options.fleet_url:
            self.insecure_proxy = InsecureProxy(options.fleet_url, self.layout.root / "proxy")
            await self.insecure_proxy.start()
        self.osqueryd = Supervisor(
            osqueryd_child(
                self.layout,
                self.osqueryd_path,
                lambda: osqueryd_launch_spec(
                    self.layout,
                    platform=self.platform,
                    fleet_url=options.fleet_url,
                    fleet_certificate=Path(options.fleet_certificate) if options.fleet_certificate else None,
                    debug=options.debug,
                    host_identifier=options.host_identifier,
                    database_path=Path(options.osquery_db),
                    passthrough=options.osquery_args,
                    insecure_proxy=(
                        (self.insecure_proxy.port, self.insecure_proxy.cert_path)
                        if self.insecure_proxy is not None and self.insecure_proxy.port is not None
                        else None
                    ),
                ),
                self.secret,
                platform=self.platform,
                policy=policy,
                # with --log-file, osqueryd's output joins orbit's size-capped rotating log (Fleet: same file)
                output=logging.getLogger("osqueryd").info if options.log_file else None,
                prepare=lambda reason: self._before_child_start("osqueryd", reason),
            )
        )

    async def _first_contact(self) -> bool:
        """Ping, the first config poll (so osqueryd starts with the server's flags) and the device token, each
        bounded to a minute; True when the server answered the ping."""
        reachable = False
        if self.client is not None and self.poller is not None:
            reachable = await self.client.ping()
            self.state.server_reachable = reachable
            if reachable:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.poller.poll_once(), timeout=60.0)
            if self.options.fleet_desktop:
                self.token = DeviceTokenManager(self.layout.device_token, self.client)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.token.ensure(reachable), timeout=60.0)
        return reachable

    async def _run_group(self, reachable: bool) -> None:
        stop = self.stop
        async with asyncio.TaskGroup() as group:
            assert self.osqueryd is not None
            osqueryd = self.osqueryd
            group.create_task(keep_running("osqueryd supervisor", lambda: osqueryd.run(stop), stop, stops_itself=True))
            if self.poller is not None:
                poller = self.poller
                group.create_task(keep_running("config receivers", lambda: poller.run(stop, first_delay=None), stop))
            if self.runner is not None:
                runner = self.runner
                group.create_task(
                    keep_running(
                        "update runner", lambda: runner.run(stop, initial_delay=runner_first_delay(self)), stop
                    )
                )
            if self.updater.trial is not None:
                group.create_task(
                    keep_running(
                        "trial boot", lambda: self.updater.monitor(self._healthy_for, self._sleep), stop, finite=True
                    )
                )
            group.create_task(
                keep_running("status", lambda: self.state.run(self, stop, self.timings.status_interval), stop)
            )
            group.create_task(
                keep_running("child probation", lambda: self.probation.run(self._child_statuses, stop), stop)
            )
            for name, factory in self.extra_actors(reachable):
                group.create_task(keep_running(name, factory, stop, stops_itself=name in SELF_STOPPING_ACTORS))

    def extra_actors(self, reachable: bool) -> list[tuple[str, Callable[[], Awaitable[object]]]]:
        """Actors of optional features (device token, desktop, osquery extension)."""
        actors: list[tuple[str, Callable[[], Awaitable[object]]]] = []
        if self.token is not None:
            token = self.token
            actors.append(("device token", lambda: token.run(self.stop)))
        if self.client is not None:
            watcher = CapabilitiesWatcher(self.client, self._token_rotation_enabled, self.timings.capabilities_interval)
            actors.append(("capabilities checker", lambda: watcher.run(self.stop)))
        if self.insecure_proxy is not None:
            proxy = self.insecure_proxy
            actors.append(("insecure proxy", lambda: proxy.run(self.stop)))
        if self.platform != "windows":  # Windows: a named pipe transport, not written yet
            extension = ExtensionServer(
                self.layout.extension_socket,
                (OrbitInfoTable(self.orbit_info), FleetdLogsTable(self.log_ring)),
                version=self.version,
            )
            actors.append(("osquery extension", lambda: extension.run(self.stop)))
        if self.options.fleet_desktop and self.options.fleet_url:
            _launcher, spec = desktop_child(
                self.layout,
                self.desktop_path,
                platform=self.platform,
                environ=self.env,
                fleet_url=self.options.fleet_url,
                fleet_certificate=Path(self.options.fleet_certificate) if self.options.fleet_certificate else None,
                insecure=self.options.insecure,
                alternative_browser_host=self.options.fleet_desktop_alternative_browser_host,
                retry_interval=self.timings.desktop_session_retry,
                policy=RestartPolicy(stable_after=self.timings.stable_reset),
            )
            spec = dataclasses.replace(spec, prepare=lambda reason: self._before_child_start("desktop", reason))
            desktop = self.desktop = Supervisor(spec)
            actors.append((DESKTOP_SUPERVISOR, lambda: desktop.run(self.stop)))
        return actors

    @property
    def quarantine(self) -> Quarantine:
        return self.updater.quarantine

    def orbit_info(self) -> dict[str, str]:
        """The ``orbit_info`` row Fleet reads through osquery (its version, token, channels, script status)."""
        client = self.client
        return {
            "version": self.version,
            "device_auth_token": (self.token.token or "") if self.token is not None else "",
            "enrolled": "true" if client is not None and client.enrolled else "false",
            "last_recorded_error": (client.last_error or "") if client is not None else "",
            "orbit_channel": self.channels.orbit,
            "osqueryd_channel": self.channels.osqueryd,
            "desktop_channel": self.channels.desktop,
            "desktop_version": "",
            "uptime": str(int(time.time() - self.state.started_at)),
            "scripts_enabled": "1" if self.options.enable_scripts else "0",
            "update_url": "" if self.options.disable_updates else self.options.update_url,
        }

    def extra_children(self) -> dict[str, ChildStatus]:
        return {"fleet-desktop": self.desktop.status()} if self.desktop is not None else {}

    def extra_status(self) -> dict[str, object]:
        """Issue 18's parts of the status file: the outcome queue, versions on probation, self-heal checks."""
        sender = self.outcome_sender
        return {
            "update_outcomes": {
                "queued": len(self.outcomes),
                "sent": sender.sent if sender is not None else 0,
                "server_accepts": sender.enabled if sender is not None else False,
            },
            "child_versions": {
                target: {
                    "confirmed": state.confirmed.version if state.confirmed is not None else None,
                    "probation": state.probation.version if state.probation is not None else None,
                }
                for target in ("osqueryd", "desktop")
                if (state := self.probation.state(target)).confirmed is not None or state.probation is not None
            },
            "self_heal": {"full_checks": self.healer.full_checks},
            "osqueryd_restarts_on_request": self.restart_requests.restarts if self.restart_requests else 0,
        }


def runner_first_delay(agent: Agent) -> float:
    return first_update_delay(agent.options.update_interval, poller_rng)


poller_rng = random.Random()  # noqa: S311 - jitter


__all__ = ["Agent", "AgentExit", "AgentStartError"]
