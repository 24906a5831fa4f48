"""How fleet-desktop is started in the logged-in user's graphical session (docs/reference/orbit-behaviour.md §10.2).

``desktop_environment`` builds exactly Fleet's ``FLEET_DESKTOP_*`` variables (plus orbit's proxy variables: one
proxy setting for every component). ``plan_linux`` / ``plan_macos`` / ``plan_windows`` turn a ``GuiSession`` into a
``LaunchPlan`` (pure). ``DesktopLauncher`` ties a session finder, the installed executable and the environment to
the generic ``Supervisor``: its ``launch`` returns None while nobody is logged in (the supervisor asks again every
30 s, Fleet's start retry, without counting a crash) and kills, once, a stale fleet-desktop that we can attribute
(the pid in our pidfile, or a process of the exact executable path — never one found by name alone).

Where we differ from Fleet: on Linux no ``sudo -i``: the supervisor drops to the user itself (setgid, setgroups to the
user's groups, setuid) with an explicit environment; on macOS secrets (the token URL, the TLS client key) are never
put in ``open --env`` arguments, which every local user can read with ``ps``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

import psutil

from orbit.children.gui_session import SESSION_ENV_KEYS, GuiSession, GuiSessionFinder
from orbit.children.restart_policy import RestartPolicy
from orbit.children.supervisor import CHILD_STOP_TIMEOUT_S, ChildLaunch, ChildSpec

log = logging.getLogger(__name__)

Platform = Literal["linux", "macos", "windows"]

DESKTOP_START_RETRY = 30.0  # Fleet's "Loop A" interval: no GUI session / no binary → look again
DESKTOP_PIDFILE_NAME = "fleet-desktop.pid"
LINUX_PATH = "/usr/local/bin:/usr/bin:/bin"
MACOS_PATH = "/usr/bin:/bin:/usr/sbin:/sbin"
WINDOWS_DESKTOP = "winsta0\\default"
PROXY_KEYS = ("HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY", "https_proxy", "http_proxy", "no_proxy")

ENV_FLEET_URL = "FLEET_DESKTOP_FLEET_URL"
ENV_IDENTIFIER_PATH = "FLEET_DESKTOP_DEVICE_IDENTIFIER_PATH"
ENV_DEVICE_URL = "FLEET_DESKTOP_DEVICE_URL"
ENV_CLIENT_CERT = "FLEET_DESKTOP_FLEET_TLS_CLIENT_CERTIFICATE"
ENV_CLIENT_KEY = "FLEET_DESKTOP_FLEET_TLS_CLIENT_KEY"
ENV_BROWSER_HOST = "FLEET_DESKTOP_ALTERNATIVE_BROWSER_HOST"
ENV_TUF_ROOT = "FLEET_DESKTOP_TUF_UPDATE_ROOT"
ENV_ROOT_CA = "FLEET_DESKTOP_FLEET_ROOT_CA"
ENV_INSECURE = "FLEET_DESKTOP_INSECURE"
# Never placed in a command line (``open --env`` on macOS): the token URL and the client certificate pair.
ARGV_FORBIDDEN_KEYS = frozenset({ENV_DEVICE_URL, ENV_CLIENT_KEY, ENV_CLIENT_CERT})


_PLATFORMS: dict[str, Platform] = {"win32": "windows", "darwin": "macos"}


def current_platform() -> Platform:
    return _PLATFORMS.get(sys.platform, "linux")


def proxy_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The proxy variables set (non-empty) in ``environ``, both spellings, as orbit itself uses them."""
    return {key: environ[key] for key in PROXY_KEYS if environ.get(key)}


def desktop_environment(
    *,
    fleet_url: str,
    identifier_path: Path,
    root_dir: Path,
    fleet_root_ca: Path | None,
    insecure: bool,
    client_cert_pem: str,
    client_key_pem: str,
    alternative_browser_host: str | None,
    token_at_launch: str | None,
    orbit_environ: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Fleet Desktop's variables as Fleet's orbit sets them, plus orbit's proxy variables (``orbit_environ``,
    default ``os.environ``). The certificate and key are PEM *contents* (empty when none)."""
    env = proxy_environment(os.environ if orbit_environ is None else orbit_environ)
    fleet_url = fleet_url.rstrip("/")
    env[ENV_FLEET_URL] = fleet_url
    env[ENV_IDENTIFIER_PATH] = str(identifier_path)
    if token_at_launch:
        env[ENV_DEVICE_URL] = f"{fleet_url}/device/{token_at_launch}"  # legacy: Desktop reads the identifier file
    env[ENV_CLIENT_CERT] = client_cert_pem
    env[ENV_CLIENT_KEY] = client_key_pem
    env[ENV_BROWSER_HOST] = alternative_browser_host or ""
    env[ENV_TUF_ROOT] = str(root_dir)
    if fleet_root_ca is not None:
        env[ENV_ROOT_CA] = str(fleet_root_ca)
    if insecure:
        env[ENV_INSECURE] = "1"
    return env


@dataclass(frozen=True)
class LaunchPlan:
    """One start of fleet-desktop. ``uid``/``gid``/``extra_groups`` are set only when the launcher itself must
    switch identity (Linux, orbit as root); ``session_id``/``desktop`` only on Windows, where ``env`` is laid over
    the user's own environment block."""

    argv: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict, hash=False)
    cwd: str | None = None
    user: str | None = None
    uid: int | None = None
    gid: int | None = None
    extra_groups: tuple[int, ...] | None = None
    session_id: str | None = None
    desktop: str | None = None

    def to_child_launch(self) -> ChildLaunch:
        return ChildLaunch(
            argv=list(self.argv),
            env=dict(self.env),
            cwd=Path(self.cwd) if self.cwd else None,
            user=self.uid,
            group=self.gid,
            extra_groups=self.extra_groups,
        )

    def __repr__(self) -> str:  # the environment holds the client key: never print it
        return f"LaunchPlan(argv={self.argv!r}, user={self.user!r}, uid={self.uid!r}, cwd={self.cwd!r})"


def user_groups(user: str, gid: int) -> tuple[int, ...]:
    """The user's supplementary groups (what ``initgroups`` would set)."""
    getgrouplist = getattr(os, "getgrouplist", None)
    if getgrouplist is None:
        return (gid,)
    try:
        return tuple(getgrouplist(user, gid))
    except OSError:
        return (gid,)


def linux_refusal(session: GuiSession, *, running_as_root: bool, current_uid: int | None) -> str | None:
    """Why Desktop cannot be started in ``session`` from here (None: it can)."""
    if running_as_root or session.uid == current_uid:
        return None
    return (
        f"the GUI session belongs to {session.user} (uid {session.uid}); orbit runs unprivileged as uid "
        f"{current_uid} and cannot switch users"
    )


def plan_linux(
    session: GuiSession,
    executable: Path,
    env: Mapping[str, str],
    *,
    running_as_root: bool,
    current_uid: int | None = None,
    groups_of: Callable[[str, int], tuple[int, ...]] = user_groups,
    is_dir: Callable[[str], bool] = os.path.isdir,
) -> LaunchPlan | None:
    """Desktop as the session's user with an explicit environment; no ``sudo``. None when that is impossible."""
    if current_uid is None:
        current_uid = os.getuid() if hasattr(os, "getuid") else None
    if linux_refusal(session, running_as_root=running_as_root, current_uid=current_uid) is not None:
        return None
    child_env = {"HOME": session.home, "USER": session.user, "LOGNAME": session.user, "PATH": LINUX_PATH}
    child_env.update({key: session.env[key] for key in SESSION_ENV_KEYS if session.env.get(key)})
    child_env["LD_LIBRARY_PATH"] = str(executable.parent)
    child_env.update(env)
    switch = running_as_root and session.uid != current_uid
    return LaunchPlan(
        argv=(str(executable),),
        env=child_env,
        cwd=session.home if session.home and is_dir(session.home) else "/",
        user=session.user if switch else None,
        uid=session.uid if switch else None,
        gid=session.gid if switch else None,
        extra_groups=groups_of(session.user, session.gid) if switch else None,
    )


def _argv_safe(key: str, value: str) -> bool:
    if key in ARGV_FORBIDDEN_KEYS:
        return False
    return not (key in PROXY_KEYS and "@" in value)  # a proxy URL with user:password@


def plan_macos(
    session: GuiSession,
    app_bundle: Path,
    env: Mapping[str, str],
    *,
    running_as_root: bool,
    current_uid: int | None = None,
) -> LaunchPlan | None:
    """``open -W --env K=V … <Fleet Desktop.app>`` in the console user's GUI context.

    As root: ``launchctl asuser <uid>`` (the user's bootstrap namespace, so the app reaches WindowServer) and
    ``sudo -u <user>`` (so LaunchServices starts it as that user). ``-W`` keeps ``open`` alive while the app runs,
    so the supervisor sees the app's lifetime. Variables whose values are secrets stay out of the command line.
    """
    if current_uid is None:
        current_uid = os.getuid() if hasattr(os, "getuid") else None
    env_args: list[str] = []
    for key in sorted(env):
        if _argv_safe(key, env[key]):
            env_args += ["--env", f"{key}={env[key]}"]
    open_argv = ["/usr/bin/open", "-W", *env_args, str(app_bundle)]
    if running_as_root and session.uid != current_uid:
        argv = ["/bin/launchctl", "asuser", str(session.uid), "/usr/bin/sudo", "-u", session.user, "--", *open_argv]
    elif session.uid == current_uid:
        argv = open_argv
    else:
        return None
    return LaunchPlan(argv=tuple(argv), env={"PATH": MACOS_PATH}, cwd="/", user=session.user)


def plan_windows(session: GuiSession, executable: Path, env: Mapping[str, str]) -> LaunchPlan | None:
    """``CreateProcessAsUser`` in the session's interactive desktop; ``env`` goes over the user's environment."""
    if not session.session_id:
        return None
    return LaunchPlan(
        argv=(str(executable),),
        env=dict(env),
        cwd=str(executable.parent),
        user=session.user,
        session_id=session.session_id,
        desktop=WINDOWS_DESKTOP,
    )


class WindowsProcessStarter(Protocol):
    """Starts a ``plan_windows`` plan in another logon session; returns the new process id."""

    def start(self, plan: LaunchPlan) -> int: ...


def merge_environment_block(user_env: Iterable[str], overlay: Mapping[str, str]) -> str:
    """A Windows environment block (``K=V\\0…\\0\\0``): the user's variables with ``overlay`` on top, sorted."""
    merged: dict[str, tuple[str, str]] = {}
    for entry in user_env:
        key, sep, value = entry.partition("=")
        if sep and key:
            merged[key.upper()] = (key, value)
    for key, value in overlay.items():
        merged[key.upper()] = (key, value)
    return "".join(f"{key}={value}\0" for _, (key, value) in sorted(merged.items())) + "\0"


if sys.platform == "win32":  # pragma: no cover - exercised by the Windows CI runner only
    import ctypes
    from ctypes import wintypes

    class _StartupInfo(ctypes.Structure):
        _fields_ = (
            ("cb", wintypes.DWORD),
            ("lpReserved", wintypes.LPWSTR),
            ("lpDesktop", wintypes.LPWSTR),
            ("lpTitle", wintypes.LPWSTR),
            ("dwX", wintypes.DWORD),
            ("dwY", wintypes.DWORD),
            ("dwXSize", wintypes.DWORD),
            ("dwYSize", wintypes.DWORD),
            ("dwXCountChars", wintypes.DWORD),
            ("dwYCountChars", wintypes.DWORD),
            ("dwFillAttribute", wintypes.DWORD),
            ("dwFlags", wintypes.DWORD),
            ("wShowWindow", wintypes.WORD),
            ("cbReserved2", wintypes.WORD),
            ("lpReserved2", ctypes.c_void_p),
            ("hStdInput", wintypes.HANDLE),
            ("hStdOutput", wintypes.HANDLE),
            ("hStdError", wintypes.HANDLE),
        )

    class _ProcessInformation(ctypes.Structure):
        _fields_ = (
            ("hProcess", wintypes.HANDLE),
            ("hThread", wintypes.HANDLE),
            ("dwProcessId", wintypes.DWORD),
            ("dwThreadId", wintypes.DWORD),
        )

    _MAXIMUM_ALLOWED = 0x02000000
    _SECURITY_IDENTIFICATION = 1
    _TOKEN_PRIMARY = 1
    _CREATE_UNICODE_ENVIRONMENT = 0x00000400
    _CREATE_NEW_PROCESS_GROUP = 0x00000200

    def _read_environment_block(address: int) -> list[str]:
        entries: list[str] = []
        while True:
            entry = ctypes.wstring_at(address)
            if not entry:
                return entries
            entries.append(entry)
            address += (len(entry) + 1) * ctypes.sizeof(ctypes.c_wchar)

    class CreateProcessAsUserStarter:
        """WTSQueryUserToken → DuplicateTokenEx (primary) → CreateEnvironmentBlock → CreateProcessAsUserW."""

        def start(self, plan: LaunchPlan) -> int:
            wtsapi32 = ctypes.WinDLL("wtsapi32", use_last_error=True)
            advapi32 = ctypes.WinDLL("advapi32", use_last_error=True)
            userenv = ctypes.WinDLL("userenv", use_last_error=True)
            kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
            kernel32.CloseHandle.argtypes = (wintypes.HANDLE,)
            if plan.session_id is None:
                raise OSError("no session to start fleet-desktop in")
            token = wintypes.HANDLE()
            if not wtsapi32.WTSQueryUserToken(int(plan.session_id), ctypes.byref(token)):
                raise ctypes.WinError(ctypes.get_last_error())
            primary = wintypes.HANDLE()
            block = ctypes.c_void_p()
            try:
                if not advapi32.DuplicateTokenEx(
                    token, _MAXIMUM_ALLOWED, None, _SECURITY_IDENTIFICATION, _TOKEN_PRIMARY, ctypes.byref(primary)
                ):
                    raise ctypes.WinError(ctypes.get_last_error())
                if not userenv.CreateEnvironmentBlock(ctypes.byref(block), primary, False):
                    raise ctypes.WinError(ctypes.get_last_error())
                try:
                    user_env = _read_environment_block(block.value or 0)
                finally:
                    userenv.DestroyEnvironmentBlock(block)
                environment = ctypes.create_unicode_buffer(merge_environment_block(user_env, plan.env))
                startup = _StartupInfo()
                startup.cb = ctypes.sizeof(_StartupInfo)
                startup.lpDesktop = plan.desktop or WINDOWS_DESKTOP
                info = _ProcessInformation()
                command_line = ctypes.create_unicode_buffer(subprocess.list2cmdline(list(plan.argv)))
                if not advapi32.CreateProcessAsUserW(
                    primary,
                    plan.argv[0],
                    command_line,
                    None,
                    None,
                    False,
                    _CREATE_UNICODE_ENVIRONMENT | _CREATE_NEW_PROCESS_GROUP,
                    environment,
                    plan.cwd,
                    ctypes.byref(startup),
                    ctypes.byref(info),
                ):
                    raise ctypes.WinError(ctypes.get_last_error())
                kernel32.CloseHandle(info.hThread)
                kernel32.CloseHandle(info.hProcess)
                return int(info.dwProcessId)
            finally:
                if primary:
                    kernel32.CloseHandle(primary)
                kernel32.CloseHandle(token)


def _same_path(candidate: str, executable: Path) -> bool:
    with contextlib.suppress(OSError):
        return bool(candidate) and os.path.samefile(candidate, executable)
    return False


def _is_desktop_process(cmdline: list[str], exe: str, executable: Path) -> bool:
    """The process runs ``executable``: as its binary, or as the script its interpreter was given."""
    return _same_path(exe, executable) or any(_same_path(arg, executable) for arg in cmdline[:2])


def kill_stale_desktop(pidfile: Path | None, executable: Path | None, *, timeout: float = 5.0) -> list[int]:
    """Terminate (then kill) fleet-desktop processes we can attribute: the pid in our pidfile when it still runs our
    executable (or is named fleet-desktop), and any process of the exact executable path. Returns their pids."""
    victims: dict[int, psutil.Process] = {}
    own = os.getpid()
    if pidfile is not None:
        with contextlib.suppress(OSError, UnicodeDecodeError, ValueError, psutil.Error):
            pid = int(pidfile.read_text(encoding="ascii").strip())
            process = psutil.Process(pid)
            named = "fleet-desktop" in process.name()
            if pid != own and (named or (executable is not None and _process_runs(process, executable))):
                victims[pid] = process
    if executable is not None and executable.exists():
        for process in psutil.process_iter():
            if process.pid != own and process.pid not in victims and _process_runs(process, executable):
                victims[process.pid] = process
    for process in victims.values():
        with contextlib.suppress(psutil.Error):
            process.terminate()
    _, alive = psutil.wait_procs(list(victims.values()), timeout=timeout)
    for process in alive:
        with contextlib.suppress(psutil.Error):
            process.kill()
    psutil.wait_procs(alive, timeout=timeout)
    for pid in victims:
        log.warning("event=stale_desktop_killed pid=%d", pid)
    return sorted(victims)


def _process_runs(process: psutil.Process, executable: Path) -> bool:
    try:
        return _is_desktop_process(process.cmdline(), process.exe(), executable)
    except psutil.Error:
        return False


class DesktopLauncher:
    """Feeds fleet-desktop to the generic ``Supervisor``: one ``LaunchPlan`` per start, or None (wait and retry)."""

    def __init__(
        self,
        finder: GuiSessionFinder,
        executable: Callable[[], Path | None],
        env_builder: Callable[[], dict[str, str]],
        platform: Platform | None = None,
        *,
        running_as_root: bool | None = None,
        current_uid: int | None = None,
        pidfile: Path | None = None,
        groups_of: Callable[[str, int], tuple[int, ...]] = user_groups,
        stale_killer: Callable[[Path | None, Path | None], list[int]] = kill_stale_desktop,
    ) -> None:
        self._finder = finder
        self._executable = executable
        self._env_builder = env_builder
        self.platform: Platform = platform or current_platform()
        if current_uid is None and hasattr(os, "getuid"):
            current_uid = os.getuid()
        self._current_uid = current_uid
        if running_as_root is None:
            running_as_root = hasattr(os, "geteuid") and os.geteuid() == 0
        self._running_as_root = running_as_root
        self.pidfile = pidfile
        self._groups_of = groups_of
        self._stale_killer = stale_killer
        self._stale_checked = False
        self.last_reason: str | None = None

    def _waiting(self, reason: str) -> None:
        if reason != self.last_reason:
            log.info("event=desktop_not_started reason=%r retry_in=%s", reason, DESKTOP_START_RETRY)
            self.last_reason = reason

    def plan(self) -> LaunchPlan | None:
        executable = self._executable()
        if executable is None or not executable.exists():
            self._waiting("fleet-desktop is not installed yet")
            return None
        try:
            session = self._finder.find()
        except Exception as exc:  # a broken finder must not stop the supervisor: look again later
            self._waiting(f"finding the GUI session failed: {exc}")
            return None
        if session is None:
            self._waiting("no user is logged in to a graphical session")
            return None
        env = self._env_builder()
        plan: LaunchPlan | None
        if self.platform == "windows":
            plan = plan_windows(session, executable, env)
        elif self.platform == "macos":
            plan = plan_macos(
                session, executable, env, running_as_root=self._running_as_root, current_uid=self._current_uid
            )
        else:
            plan = plan_linux(
                session,
                executable,
                env,
                running_as_root=self._running_as_root,
                current_uid=self._current_uid,
                groups_of=self._groups_of,
            )
        if plan is None:
            reason = linux_refusal(session, running_as_root=self._running_as_root, current_uid=self._current_uid)
            self._waiting(reason or f"cannot start fleet-desktop in the session of {session.user}")
            return None
        if self.last_reason is not None or not self._stale_checked:
            log.info("event=desktop_plan user=%s session=%s argv0=%s", session.user, session.session_id, plan.argv[0])
        self.last_reason = None
        return plan

    def launch(self) -> ChildLaunch | None:
        """``ChildSpec.launch``: the next start, or None to wait (runs in a worker thread)."""
        if not self._stale_checked:
            self._stale_killer(self.pidfile, self._executable())
        plan = self.plan()
        self._stale_checked = True
        if plan is None:
            return None
        if self.platform == "windows":
            self._waiting("on Windows fleet-desktop is started by a WindowsProcessStarter, not the supervisor")
            return None
        return plan.to_child_launch()

    def child_spec(
        self,
        *,
        name: str = "fleet-desktop",
        log_path: Path | None = None,
        policy: RestartPolicy | None = None,
        retry_interval: float = DESKTOP_START_RETRY,
        stop_timeout: float = CHILD_STOP_TIMEOUT_S,
    ) -> ChildSpec:
        """The supervisor spec: our ``launch``, the pidfile written by the supervisor, Fleet's 30 s start retry."""
        return ChildSpec(
            name=name,
            launch=self.launch,
            not_ready_retry=retry_interval,
            pidfile=self.pidfile,
            write_pidfile=self.pidfile is not None,
            log_path=log_path,
            stop_timeout=stop_timeout,
            policy=policy or RestartPolicy(),
        )
