"""A private, headless desktop for tests of real GUI processes: Xvfb, a D-Bus session bus, dunst, trayer.

``x_session(workdir)`` starts, in order and each only once the previous one is ready:

1. **Xvfb** on a free display number (``-displayfd``: the server picks the number and writes it once it accepts
   connections, so there is no race on ``:99`` between parallel runs);
2. a private **session bus** (``dbus-daemon --nofork`` with our own config: no service activation, so nothing
   starts behind the test's back, e.g. a second dunst), like ``dbus-run-session``;
3. **dunst** (the notification daemon) with ``-print``: every notification it receives is written to its log,
   which ``XSession.notifications()`` parses; ready once it owns ``org.freedesktop.Notifications``;
4. **trayer**, an XEmbed system tray (``_NET_SYSTEM_TRAY_S0``), ready once it owns that selection.

Steps 2–4 can be left out (``bus=False``, ``notifications=False``, ``tray=False``) to test what an app does
without them. Every process runs in its own process group with its output in ``workdir/logs/``; leaving the
block stops them all (SIGTERM to the group, SIGKILL after a timeout), the app processes started with
``XSession.spawn`` first. Children get an environment with this session's ``DISPLAY`` and
``DBUS_SESSION_BUS_ADDRESS`` and ``XDG_*`` directories under ``workdir`` (so per-user files, locks and logs of the
app under test land there, not in the real home).

Helpers: ``screenshot`` (ImageMagick ``import``, PNG), ``windows``/``find_windows``/``wait_for_window``
(``xwininfo -root -tree``), ``tray_icons`` (windows embedded in trayer's panel), ``click``/``key`` (xdotool).

A missing binary skips the test with the reason, except under CI (``CI`` set), where bootstrap
(``build_scripts/apt-packages.txt``) installs them all, so a missing one fails instead of hiding a broken install.
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import pytest
from PIL import Image, ImageChops

T = TypeVar("T")

XVFB, DBUS_DAEMON, DBUS_SEND, DUNST, TRAYER, XDOTOOL, XWININFO, IMPORT = (
    "Xvfb",
    "dbus-daemon",
    "dbus-send",
    "dunst",
    "trayer",
    "xdotool",
    "xwininfo",
    "import",
)
ALL_TOOLS = (XVFB, DBUS_DAEMON, DBUS_SEND, DUNST, TRAYER, XDOTOOL, XWININFO, IMPORT)
TOOL_TIMEOUT = 20.0  # any single xdotool/xwininfo/import/dbus-send call
START_TIMEOUT = 30.0  # any daemon becoming ready
STOP_TIMEOUT = 10.0  # SIGTERM → SIGKILL

# Variables of the developer's own desktop that must not leak into the private session.
_SESSION_VARIABLES = (
    "DISPLAY",
    "WAYLAND_DISPLAY",
    "DBUS_SESSION_BUS_ADDRESS",
    "XAUTHORITY",
    "XDG_RUNTIME_DIR",
    "XDG_SESSION_TYPE",
    "XDG_CURRENT_DESKTOP",
    "XDG_CONFIG_HOME",
    "XDG_CACHE_HOME",
    "XDG_DATA_HOME",
    "XDG_STATE_HOME",
    "PYSTRAY_BACKEND",
    "BROWSER",
)

_BUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <keep_umask/>
  <listen>unix:tmpdir=/tmp</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"""

_DUNST_CONFIG = """[global]
    font = DejaVu Sans 10
    origin = top-left
    offset = 10x60
    width = 360
[urgency_low]
    timeout = 120
[urgency_normal]
    timeout = 120
[urgency_critical]
    timeout = 120
"""


def require_tools(*tools: str) -> None:
    """Skip (fail under CI) unless every tool is on PATH."""
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if not missing:
        return
    reason = f"missing {', '.join(missing)} (installed by build_scripts/bootstrap.sh from apt-packages.txt)"
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


def wait_until(predicate: Callable[[], T | None], timeout: float, what: str, interval: float = 0.05) -> T:
    """Poll ``predicate`` until it returns a truthy value; AssertionError naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


# --- processes ------------------------------------------------------------------------------------------------


@dataclass
class ManagedProcess:
    """A child in its own process group, with stdout+stderr in ``log``."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout)

    def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """SIGTERM to the group, SIGKILL to whatever of it is left after ``timeout``; returns the leader's exit code.

        The leader is waited for without being reaped (``WNOWAIT``) so that its pid, which is the group id, cannot be
        reused before stragglers of the group are killed.
        """
        if self.proc.returncode is None:
            _killpg(self.proc.pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and not _exited(self.proc.pid):
                time.sleep(0.02)
            _killpg(self.proc.pid, signal.SIGKILL)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None


def _exited(pid: int) -> bool:
    try:
        info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return True
    return info is not None


def _killpg(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def start_process(
    name: str,
    argv: Sequence[str],
    env: Mapping[str, str],
    log_dir: Path,
    *,
    pass_fds: Sequence[int] = (),
    cwd: Path | None = None,
) -> ManagedProcess:
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"{name}.log"
    with log.open("ab") as sink:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=dict(env),
            pass_fds=tuple(pass_fds),
            start_new_session=True,
            cwd=cwd,
        )
    return ManagedProcess(name, proc, log)


def _read_line_from_fd(fd: int, timeout: float, process: ManagedProcess) -> str:
    """One line written by ``process`` to the pipe ``fd`` (e.g. Xvfb's -displayfd, dbus-daemon's --print-address)."""
    data = b""
    deadline = time.monotonic() + timeout
    while b"\n" not in data:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"{process.name} did not report readiness in {timeout:g} s: {process.output()}")
        ready, _, _ = select.select([fd], [], [], min(remaining, 0.2))
        if ready:
            chunk = os.read(fd, 4096)
            if not chunk:
                raise AssertionError(f"{process.name} exited before it was ready: {process.output()}")
            data += chunk
        elif not process.alive():
            raise AssertionError(f"{process.name} exited ({process.proc.returncode}): {process.output()}")
    return data.split(b"\n", 1)[0].decode().strip()


# --- windows --------------------------------------------------------------------------------------------------

_TREE_LINE = re.compile(
    r"^(?P<indent>\s+)(?P<id>0x[0-9a-f]+) (?:\"(?P<name>.*)\"|\(has no name\)): "
    r"\((?:\"(?P<res_name>.*?)\" \"(?P<res_class>.*?)\")?\)\s+"
    r"(?P<w>\d+)x(?P<h>\d+)\+-?\d+\+-?\d+\s+\+(?P<x>-?\d+)\+(?P<y>-?\d+)"
)


@dataclass(frozen=True)
class Window:
    """A window as ``xwininfo -root -tree`` lists it; ``x``/``y`` are absolute (root) coordinates."""

    id: int
    name: str | None
    res_name: str | None
    res_class: str | None
    x: int
    y: int
    width: int
    height: int
    depth: int  # 1 = child of the root window
    parent: int | None

    @property
    def center(self) -> tuple[int, int]:
        return self.x + self.width // 2, self.y + self.height // 2

    @property
    def box(self) -> tuple[int, int, int, int]:
        return self.x, self.y, self.x + self.width, self.y + self.height


def parse_tree(text: str) -> list[Window]:
    windows: list[Window] = []
    stack: list[tuple[int, int]] = []  # (indent, window id) of the current ancestors
    for line in text.splitlines():
        match = _TREE_LINE.match(line)
        if match is None:
            continue
        indent = len(match["indent"])
        while stack and stack[-1][0] >= indent:
            stack.pop()
        wid = int(match["id"], 16)
        windows.append(
            Window(
                id=wid,
                name=match["name"],
                res_name=match["res_name"],
                res_class=match["res_class"],
                x=int(match["x"]),
                y=int(match["y"]),
                width=int(match["w"]),
                height=int(match["h"]),
                depth=len(stack) + 1,
                parent=stack[-1][1] if stack else None,
            )
        )
        stack.append((indent, wid))
    return windows


# --- the session ----------------------------------------------------------------------------------------------


@dataclass
class XSession:
    display: str
    workdir: Path
    env: dict[str, str]
    processes: dict[str, ManagedProcess] = field(default_factory=dict)
    stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)

    @property
    def log_dir(self) -> Path:
        return self.workdir / "logs"

    def run_tool(self, *argv: str, timeout: float = TOOL_TIMEOUT, check: bool = True) -> str:
        result = subprocess.run(
            argv,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} exited {result.returncode}: {result.stderr.strip()}")
        return result.stdout

    def spawn(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        unset: Sequence[str] = (),
        cwd: Path | None = None,
    ) -> ManagedProcess:
        """Start a process in this session (stopped when the session ends, before the session's daemons).

        ``env`` is added to the session's environment, ``unset`` removed from it (e.g. ``DISPLAY``)."""
        full_env = dict(self.env)
        full_env.update(env or {})
        for key in unset:
            full_env.pop(key, None)
        process = start_process(name, argv, full_env, self.log_dir, cwd=cwd)
        self.processes[name] = process
        self.stack.callback(process.stop)
        return process

    # looking

    def screenshot(self, path: Path, window: int | None = None) -> Path:
        """A PNG of the whole screen (or of one window)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        target = "root" if window is None else hex(window)
        self.run_tool(IMPORT, "-display", self.display, "-window", target, f"png:{path}")
        return path

    def windows(self) -> list[Window]:
        return parse_tree(self.run_tool(XWININFO, "-display", self.display, "-root", "-tree"))

    def is_viewable(self, window: int) -> bool:
        out = self.run_tool(XWININFO, "-display", self.display, "-id", hex(window), check=False)
        return "Map State: IsViewable" in out

    def find_windows(
        self, *, name: str | None = None, res_class: str | None = None, res_name: str | None = None
    ) -> list[Window]:
        """Windows whose name / WM_CLASS class / WM_CLASS instance match the given regular expressions."""

        def matches(pattern: str | None, value: str | None) -> bool:
            return pattern is None or (value is not None and re.search(pattern, value) is not None)

        return [
            w
            for w in self.windows()
            if matches(name, w.name) and matches(res_class, w.res_class) and matches(res_name, w.res_name)
        ]

    def wait_for_window(
        self,
        *,
        name: str | None = None,
        res_class: str | None = None,
        res_name: str | None = None,
        timeout: float = START_TIMEOUT,
    ) -> Window:
        found = wait_until(
            lambda: self.find_windows(name=name, res_class=res_class, res_name=res_name),
            timeout,
            f"a window name={name!r} class={res_class!r} instance={res_name!r}",
            interval=0.1,
        )
        return found[0]

    def tray_panel(self) -> Window | None:
        panels = [w for w in self.windows() if w.res_class == "trayer" and w.res_name == "panel"]
        return panels[0] if panels else None

    def tray_icons(self) -> list[Window]:
        """Client windows docked in trayer: grandchildren of its panel (panel → XEmbed socket → icon), not 1×1."""
        windows = self.windows()
        panels = {w.id for w in windows if w.res_class == "trayer" and w.res_name == "panel"}
        sockets = {w.id for w in windows if w.parent in panels}
        return [w for w in windows if w.parent in sockets and w.width > 1 and w.height > 1]

    def wait_for_tray_icon(self, timeout: float = START_TIMEOUT) -> Window:
        try:
            icons = wait_until(self.tray_icons, timeout, "an icon docked in the tray", interval=0.1)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.describe()}") from None
        return icons[0]

    def describe(self) -> str:
        """The window tree and the tail of every process's log, for a failure message."""
        parts = [
            "xwininfo -root -tree:",
            self.run_tool(XWININFO, "-display", self.display, "-root", "-tree", check=False),
        ]
        for name, process in self.processes.items():
            parts += [
                f"--- {name} ({'running' if process.alive() else process.proc.returncode}):",
                process.output()[-3000:],
            ]
        return "\n".join(parts)

    def new_popup(self, before: set[int], timeout: float = 10.0) -> Window:
        """A viewable top-level window, larger than 1×1, that did not exist in ``before`` (a menu, a dialog)."""

        def popup() -> Window | None:
            for window in self.windows():
                fresh = window.depth == 1 and window.id not in before and window.width > 1 and window.height > 1
                if fresh and self.is_viewable(window.id):
                    return window
            return None

        return wait_until(popup, timeout, "a new viewable top-level window (a popup menu)", interval=0.1)

    # acting

    def click(self, x: int, y: int, button: int = 1) -> None:
        self.run_tool(XDOTOOL, "mousemove", "--sync", str(x), str(y), "click", str(button))

    def key(self, *keys: str) -> None:
        self.run_tool(XDOTOOL, "key", *keys)

    # notifications (dunst -print)

    def notifications(self) -> list[dict[str, str]]:
        """What dunst has received so far: ``{"appname", "summary", "body"}`` per notification."""
        process = self.processes.get("dunst")
        if process is None:
            raise AssertionError("this session has no notification daemon (notifications=False)")
        return parse_dunst_print(process.output())

    def wait_for_notification(
        self, predicate: Callable[[dict[str, str]], bool], timeout: float = START_TIMEOUT
    ) -> dict[str, str]:
        def find() -> dict[str, str] | None:
            return next((n for n in self.notifications() if predicate(n)), None)

        return wait_until(find, timeout, "a desktop notification", interval=0.1)

    # readiness checks

    def name_has_owner(self, bus_name: str) -> bool:
        out = self.run_tool(
            DBUS_SEND,
            "--session",
            "--print-reply",
            "--dest=org.freedesktop.DBus",
            "/org/freedesktop/DBus",
            "org.freedesktop.DBus.NameHasOwner",
            f"string:{bus_name}",
            check=False,
        )
        return "boolean true" in out

    def selection_owner(self, selection: str) -> int:
        """The window owning an X selection (0 = none), e.g. ``_NET_SYSTEM_TRAY_S0`` once a tray host runs."""
        from Xlib import display as xdisplay  # type: ignore[import-untyped]  # noqa: PLC0415 - pystray's dependency

        connection = xdisplay.Display(self.display)
        try:
            owner = connection.get_selection_owner(connection.intern_atom(selection))
            return int(owner.id) if owner else 0
        finally:
            connection.close()


Box = tuple[int, int, int, int]  # left, top, right, bottom (right and bottom exclusive)


def changed_box(before: Path, after: Path, within: Box | None = None) -> Box | None:
    """The bounding box of the pixels that differ between two same-size PNGs (optionally only inside ``within``),
    in the PNGs' coordinates; None when nothing changed."""
    with Image.open(before) as first, Image.open(after) as second:
        if first.size != second.size:
            raise AssertionError(f"{before} is {first.size}, {after} is {second.size}")
        region = within or (0, 0, first.size[0], first.size[1])
        difference = ImageChops.difference(first.convert("RGB").crop(region), second.convert("RGB").crop(region))
        box = difference.getbbox()
    if box is None:
        return None
    return (region[0] + box[0], region[1] + box[1], region[0] + box[2], region[1] + box[3])


_DUNST_BLOCK = re.compile(
    r"appname: '(?P<appname>.*?)'\n\s*summary: '(?P<summary>.*?)'\n\s*body: '(?P<body>.*?)'\n\s*icon:", re.DOTALL
)


def parse_dunst_print(text: str) -> list[dict[str, str]]:
    return [match.groupdict() for match in _DUNST_BLOCK.finditer(text)]


def session_env(workdir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _SESSION_VARIABLES}
    for key, sub in (
        ("XDG_RUNTIME_DIR", "run"),
        ("XDG_CONFIG_HOME", "config"),
        ("XDG_CACHE_HOME", "cache"),
        ("XDG_DATA_HOME", "data"),
        ("XDG_STATE_HOME", "state"),
    ):
        path = workdir / sub
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        env[key] = str(path)
    env["NO_AT_BRIDGE"] = "1"  # GTK: no accessibility bus to look for
    env["GDK_BACKEND"] = "x11"
    return env


@contextlib.contextmanager
def x_session(
    workdir: Path,
    *,
    screen: str = "800x480x24",
    bus: bool = True,
    notifications: bool = True,
    tray: bool = True,
    tray_height: int = 48,
) -> Iterator[XSession]:
    if notifications and not bus:
        raise ValueError("a notification daemon needs the session bus")
    tools = [XVFB, XDOTOOL, XWININFO, IMPORT]
    tools += [DBUS_DAEMON, DBUS_SEND] if bus else []
    tools += [DUNST] if notifications else []
    tools += [TRAYER] if tray else []
    require_tools(*tools)
    workdir.mkdir(parents=True, exist_ok=True)
    env = session_env(workdir)
    with contextlib.ExitStack() as daemons:
        read_fd, write_fd = os.pipe()
        try:
            xvfb = start_process(
                "xvfb",
                [XVFB, "-displayfd", str(write_fd), "-screen", "0", screen, "-nolisten", "tcp", "-noreset"],
                env,
                workdir / "logs",
                pass_fds=(write_fd,),
            )
            daemons.callback(xvfb.stop)
            os.close(write_fd)
            write_fd = -1
            display = ":" + _read_line_from_fd(read_fd, START_TIMEOUT, xvfb)
        finally:
            os.close(read_fd)
            if write_fd >= 0:
                os.close(write_fd)
        env["DISPLAY"] = display
        session = XSession(display, workdir, env)
        session.processes["xvfb"] = xvfb

        if bus:
            config = workdir / "session-bus.conf"
            config.write_text(_BUS_CONFIG)
            read_fd, write_fd = os.pipe()
            try:
                bus_daemon = start_process(
                    "dbus-daemon",
                    [DBUS_DAEMON, "--nofork", f"--config-file={config}", f"--print-address={write_fd}"],
                    env,
                    workdir / "logs",
                    pass_fds=(write_fd,),
                )
                daemons.callback(bus_daemon.stop)
                os.close(write_fd)
                write_fd = -1
                env["DBUS_SESSION_BUS_ADDRESS"] = _read_line_from_fd(read_fd, START_TIMEOUT, bus_daemon)
            finally:
                os.close(read_fd)
                if write_fd >= 0:
                    os.close(write_fd)
            session.processes["dbus-daemon"] = bus_daemon

        if notifications:
            config = workdir / "dunstrc"
            config.write_text(_DUNST_CONFIG)
            dunst = start_process("dunst", [DUNST, "-print", "-config", str(config)], env, workdir / "logs")
            daemons.callback(dunst.stop)
            session.processes["dunst"] = dunst
            wait_until(
                lambda: session.name_has_owner("org.freedesktop.Notifications") or _dead(dunst),
                START_TIMEOUT,
                "dunst to own org.freedesktop.Notifications",
            )
            _assert_alive(dunst)

        if tray:
            trayer = start_process(
                "trayer",
                [
                    TRAYER,
                    "--edge",
                    "top",
                    "--align",
                    "right",
                    "--widthtype",
                    "request",
                    "--height",
                    str(tray_height),
                    "--SetDockType",
                    "true",
                ],
                env,
                workdir / "logs",
            )
            daemons.callback(trayer.stop)
            session.processes["trayer"] = trayer
            wait_until(
                lambda: session.selection_owner("_NET_SYSTEM_TRAY_S0") or _dead(trayer),
                START_TIMEOUT,
                "trayer to own _NET_SYSTEM_TRAY_S0",
            )
            _assert_alive(trayer)

        with session.stack:  # app processes first, then the daemons in reverse order
            yield session


def _dead(process: ManagedProcess) -> bool:
    return not process.alive()


def _assert_alive(process: ManagedProcess) -> None:
    if not process.alive():
        raise AssertionError(f"{process.name} exited ({process.proc.returncode}): {process.output()}")
