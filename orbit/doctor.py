"""``orbit doctor [--json]``: pass/warn/fail checks of everything a support engineer asks about first.

Configuration and secret source, root-dir files and their modes, whether the agent runs (instance lock) and what
its status file says (enrolled, osqueryd running and restarts, crash-loop breaker, self-update rollbacks), the
osqueryd binary and its version, the Fleet server's reachability and TLS, clock skew against the server's
``Date`` header, TUF metadata state and expiries, disk space, the device token and whether scripts are enabled.
Exit status 1 when any check fails. Nothing secret is printed.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path

import httpx

from orbit.fleet.enroll_secret import EnrollSecretError, default_keystore, resolve_enroll_secret
from orbit.fleet.server_overrides import Channels, effective_channels, load_overrides
from orbit.options import Options
from orbit.root_layout import InstanceLock, RootLayout
from orbit.self_update.setup import tracked_targets
from tuf_updates.fetcher import parse_http_date
from tuf_updates.http_client import TlsOptions, build_http_client
from tuf_updates.installer import TargetInstaller

STATUS_STALE_AFTER = 60.0
SKEW_WARN = 60.0
SKEW_FAIL = 300.0
EXPIRY_WARN_DAYS = 7
DISK_WARN_BYTES = 1024**3
DISK_FAIL_BYTES = 100 * 1024**2


class Verdict(StrEnum):
    PASS = "pass"  # noqa: S105 - a verdict, not a password
    WARN = "warn"
    FAIL = "fail"
    SKIP = "skip"


@dataclass(frozen=True)
class Check:
    name: str
    status: Verdict
    detail: str


def _status_file(layout: RootLayout) -> dict[str, object] | None:
    try:
        data = json.loads(layout.status_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _mode(path: Path) -> int | None:
    try:
        return path.stat().st_mode & 0o777
    except OSError:
        return None


class Doctor:
    def __init__(self, options: Options, env: Mapping[str, str], platform: str) -> None:
        self.options = options
        self.env = env
        self.platform = platform
        self.layout = RootLayout(Path(options.root_dir))
        self.checks: list[Check] = []
        self.status = _status_file(self.layout)

    def add(self, name: str, status: Verdict, detail: str) -> None:
        self.checks.append(Check(name, status, detail))

    # -- checks --------------------------------------------------------------------------------------------

    def check_config(self) -> None:
        options = self.options
        if not options.fleet_url:
            self.add("config", Verdict.WARN, "no --fleet-url: osqueryd runs without a Fleet server")
        else:
            self.add("config", Verdict.PASS, f"fleet url {options.fleet_url}, root {self.layout.root}")
        try:
            source = resolve_enroll_secret_readonly(options, self.platform)
        except EnrollSecretError as exc:
            self.add("enroll secret", Verdict.FAIL, str(exc))
            return
        if options.fleet_url and source == "none":
            self.add("enroll secret", Verdict.FAIL, "no enroll secret (flag, env, file or keystore)")
        else:
            self.add("enroll secret", Verdict.PASS, f"from {source}")

    def check_files(self) -> None:
        if not self.layout.root.is_dir():
            self.add("root dir", Verdict.FAIL, f"{self.layout.root} does not exist")
            return
        problems = []
        key_mode = _mode(self.layout.node_key)
        if key_mode is not None and key_mode & 0o077:
            problems.append(f"{self.layout.node_key.name} is {key_mode:o}, must be 600")
        token_mode = _mode(self.layout.device_token)
        if token_mode is not None and token_mode != 0o644:
            problems.append(f"{self.layout.device_token.name} is {token_mode:o}, must be 644")
        socket_problem = self.layout.socket_path_problem()
        if socket_problem:
            self.add("extension socket", Verdict.WARN, socket_problem)
        if problems:
            self.add("root dir", Verdict.FAIL, "; ".join(problems))
        else:
            self.add("root dir", Verdict.PASS, str(self.layout.root))

    def check_agent(self) -> None:
        holder = InstanceLock(self.layout.instance_lock).holder_pid()
        if holder is None:
            self.add("agent", Verdict.FAIL, "orbit is not running for this root dir")
            return
        status = self.status
        if status is None:
            self.add("agent", Verdict.WARN, f"running (pid {holder}) but no status file yet")
            return
        written = status.get("written_at")
        age = _age(written)
        if age is not None and age > STATUS_STALE_AFTER:
            self.add("agent", Verdict.WARN, f"running (pid {holder}); status is {age:.0f}s old (agent stuck?)")
        else:
            self.add("agent", Verdict.PASS, f"running (pid {holder}), version {status.get('version')}")
        enrolled = status.get("enrolled")
        if self.options.fleet_url:
            if enrolled is True:
                self.add("enrolled", Verdict.PASS, "orbit's last authenticated request succeeded")
            else:
                self.add("enrolled", Verdict.FAIL, f"not enrolled; last error: {status.get('last_error') or 'none'}")
        self._check_config_polls(status)
        self._check_children(status)
        self._check_rollbacks(status)
        self._check_identity(status)

    def _check_config_polls(self, status: Mapping[str, object]) -> None:
        """A persistent failure to reach the server, named with its cause (a refused connection, a TLS error)."""
        config = status.get("config")
        if not self.options.fleet_url or not isinstance(config, Mapping):
            return
        failures = config.get("failures") or 0
        if not failures:
            self.add("config polls", Verdict.PASS, f"{config.get('polls') or 0} polls, the last one succeeded")
            return
        since = config.get("seconds_since_success")
        when = "never succeeded" if since is None else f"last success {float(str(since)):.0f}s ago"
        verdict = Verdict.FAIL if since is None or float(str(since)) > 600 else Verdict.WARN
        self.add("config polls", verdict, f"{failures} failing in a row ({when}): {config.get('last_error')}")

    def _check_children(self, status: Mapping[str, object]) -> None:
        children = status.get("children")
        if not isinstance(children, dict):
            return
        for name, child in children.items():
            if not isinstance(child, dict):
                continue
            state, restarts, breaker = child.get("state"), child.get("restarts"), child.get("breaker")
            detail = f"{state}, pid {child.get('pid')}, {restarts} restarts, last exit {child.get('last_exit_code')}"
            if breaker == "open":
                self.add(name, Verdict.FAIL, f"crash loop (breaker open): {detail}")
            elif state != "running":
                self.add(name, Verdict.WARN if state == "backing_off" else Verdict.FAIL, detail)
            else:
                self.add(name, Verdict.PASS, detail)

    def _check_identity(self, status: Mapping[str, object]) -> None:
        changed = status.get("identity_changed")
        if isinstance(changed, dict):
            detail = (
                f"hardware UUID changed from {changed.get('from')} to {changed.get('to')}: re-enrolled as a new host"
            )
            self.add("host identity", Verdict.WARN, detail + " (a cloned or restored machine? see --host-identifier)")

    def _check_rollbacks(self, status: Mapping[str, object]) -> None:
        quarantined = status.get("quarantined")
        if isinstance(quarantined, list) and quarantined:
            last = quarantined[-1]
            detail = (
                f"{len(quarantined)} orbit version(s) rolled back; last {last.get('version')}: {last.get('reason')}"
            )
            self.add("self-update", Verdict.WARN, detail)
        else:
            self.add("self-update", Verdict.PASS, f"start: {status.get('start_kind')}")

    def check_osqueryd(self) -> None:
        overrides = load_overrides(self.layout.server_overrides)
        channels = effective_channels(
            Channels(self.options.orbit_channel, self.options.osqueryd_channel, self.options.desktop_channel), overrides
        )
        spec = tracked_targets(channels.orbit, channels.osqueryd, channels.desktop, False).osqueryd
        path = TargetInstaller(self.layout.root).executable_path(spec)
        if not path.is_file():
            self.add("osqueryd binary", Verdict.FAIL, f"missing at {path}")
            return
        try:
            result = subprocess.run([str(path), "--version"], capture_output=True, text=True, timeout=20, check=False)
            version = result.stdout.strip().splitlines()[0] if result.stdout.strip() else f"exit {result.returncode}"
        except (OSError, subprocess.TimeoutExpired) as exc:
            self.add("osqueryd binary", Verdict.FAIL, f"{path}: {exc}")
            return
        self.add("osqueryd binary", Verdict.PASS, f"{path}: {version}")

    def check_server(self) -> None:
        url = self.options.fleet_url
        if not url:
            self.add("server", Verdict.SKIP, "no Fleet URL")
            return
        ca = self.options.fleet_certificate
        tls = TlsOptions(root_ca=Path(ca) if ca else None, insecure=self.options.insecure)
        try:
            with build_http_client(tls, user_agent="orbit-doctor", timeout=10.0) as http:
                began = time.time()
                response = http.head(f"{url}/api/fleet/orbit/ping")
                ended = time.time()
        except (httpx.HTTPError, OSError, ValueError) as exc:
            self.add("server", Verdict.FAIL, f"{url}: {exc}")
            return
        caps = response.headers.get("X-Fleet-Capabilities", "")
        verdict = Verdict.PASS if response.status_code < 500 else Verdict.FAIL
        self.add("server", verdict, f"{url}: HTTP {response.status_code}, TLS ok, capabilities [{caps}]")
        date = parse_http_date(response.headers.get("Date"))
        if date is None:
            self.add("clock skew", Verdict.SKIP, "the server sent no Date header")
            return
        skew = (began + ended) / 2 - date.timestamp()
        verdict = Verdict.FAIL if abs(skew) > SKEW_FAIL else Verdict.WARN if abs(skew) > SKEW_WARN else Verdict.PASS
        self.add("clock skew", verdict, f"local clock {skew:+.1f}s against the server")

    def check_tuf(self) -> None:
        if self.options.disable_updates:
            self.add("updates", Verdict.PASS, "disabled (--disable-updates)")
            return
        directory = self.layout.tuf_dir
        now = datetime.now(UTC)
        found = False
        for role in ("root", "timestamp", "snapshot", "targets"):
            try:
                signed = json.loads((directory / f"{role}.json").read_text(encoding="utf-8"))["signed"]
                expires = datetime.fromisoformat(str(signed["expires"]).replace("Z", "+00:00"))
            except FileNotFoundError:
                continue
            except (OSError, ValueError, KeyError, TypeError) as exc:
                self.add(f"tuf {role}", Verdict.FAIL, f"unreadable: {exc}")
                continue
            found = True
            days = (expires - now).total_seconds() / 86400
            if days < 0:
                verdict = Verdict.WARN if role == "timestamp" else Verdict.FAIL
                detail = (
                    f"version {signed.get('version')} EXPIRED {-days:.1f} days ago (installed binaries keep running)"
                )
            elif days < EXPIRY_WARN_DAYS and role != "timestamp":
                verdict, detail = Verdict.WARN, f"version {signed.get('version')} expires in {days:.1f} days"
            else:
                verdict, detail = Verdict.PASS, f"version {signed.get('version')}, expires {expires:%Y-%m-%d}"
            self.add(f"tuf {role}", verdict, detail)
        if not found:
            self.add("updates", Verdict.WARN, f"no TUF metadata in {directory} yet")
        last = self.status.get("updates") if self.status else None
        if isinstance(last, dict) and isinstance(last.get("last_check"), dict):
            check = last["last_check"]
            verdict = Verdict.PASS if check.get("ok") else Verdict.WARN
            self.add("last update check", verdict, f"at {check.get('at')}, error: {check.get('error') or 'none'}")

    def check_disk(self) -> None:
        try:
            usage = shutil.disk_usage(self.layout.root if self.layout.root.exists() else self.layout.root.parent)
        except OSError as exc:
            self.add("disk space", Verdict.FAIL, str(exc))
            return
        free = usage.free
        verdict = Verdict.FAIL if free < DISK_FAIL_BYTES else Verdict.WARN if free < DISK_WARN_BYTES else Verdict.PASS
        self.add("disk space", verdict, f"{free / 1024**3:.1f} GiB free")

    def check_token(self) -> None:
        if not self.options.fleet_desktop:
            self.add("device token", Verdict.SKIP, "Fleet Desktop is off")
            return
        try:
            age = time.time() - self.layout.device_token.stat().st_mtime
        except OSError:
            self.add("device token", Verdict.FAIL, f"{self.layout.device_token} missing")
            return
        verdict = Verdict.PASS if age < 3600 else Verdict.FAIL
        self.add("device token", verdict, f"{age / 60:.0f} min old (rotated hourly)")

    def check_scripts(self) -> None:
        if self.options.enable_scripts:
            self.add("scripts", Verdict.PASS, "enabled (--enable-scripts)")
        else:
            self.add("scripts", Verdict.PASS, "disabled: scripts queued in Fleet report exit -2 (use --enable-scripts)")

    def run(self) -> list[Check]:
        for step in (
            self.check_config,
            self.check_files,
            self.check_agent,
            self.check_osqueryd,
            self.check_server,
            self.check_tuf,
            self.check_disk,
            self.check_token,
            self.check_scripts,
        ):
            step()
        return self.checks


def resolve_enroll_secret_readonly(options: Options, platform: str) -> str:
    """Where the secret would come from — without moving a file into the keystore (doctor changes nothing)."""
    if options.enroll_secret:
        return "flag-or-env"
    path = Path(options.enroll_secret_path) if options.enroll_secret_path else None
    if path is not None and path.is_file():
        return "file"
    keystore = default_keystore(platform, options.disable_keystore)
    if keystore is None:
        return "none"
    return resolve_enroll_secret(None, None, keystore=keystore).origin


def _age(iso: object) -> float | None:
    if not isinstance(iso, str):
        return None
    try:
        return time.time() - datetime.fromisoformat(iso).timestamp()
    except ValueError:
        return None


def doctor_report(options: Options, env: Mapping[str, str]) -> tuple[bool, list[Check], dict[str, object]]:
    """The checks, whether any failed, and the ``--json`` document (also what ``orbit flare`` bundles)."""
    platform = "windows" if sys.platform == "win32" else "macos" if sys.platform == "darwin" else "linux"
    checks = Doctor(options, env, platform).run()
    failed = any(check.status is Verdict.FAIL for check in checks)
    payload: dict[str, object] = {
        "ok": not failed,
        "checks": [{**asdict(check), "status": check.status.value} for check in checks],
    }
    return failed, checks, payload


def run_doctor(options: Options, env: Mapping[str, str]) -> int:
    failed, checks, payload = doctor_report(options, env)
    if options.json:
        sys.stdout.write(json.dumps(payload, indent=1) + "\n")
    else:
        for check in checks:
            sys.stdout.write(f"{check.status.value.upper():4}  {check.name}: {check.detail}\n")
        sys.stdout.write("orbit doctor: " + ("problems found\n" if failed else "all checks passed\n"))
    return 1 if failed else 0


__all__ = ["Check", "Doctor", "Verdict", "doctor_report", "run_doctor"]
