"""Headless Chromium driven over the DevTools protocol, for tests that click: log in, submit forms, read the DOM.

The approach of ``tests/integration/test_my_device_browser.py`` (headless Chromium, a private ``HOME`` whose NSS
database trusts the stub's CA, so TLS is verified for real), plus a way to act in the page: Chromium is started
with ``--remote-debugging-pipe`` and this module speaks the DevTools protocol over that pipe (JSON messages ended
by a NUL byte; Chromium reads commands on its fd 3 and writes answers and events on its fd 4). No WebDriver, no
extra Python package: ``os.posix_spawn`` puts the two pipe ends on fds 3 and 4.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.x_session import require_tools

CHROMIUM = "chromium"
CERTUTIL = "certutil"
COMMAND_TIMEOUT = 60.0
LOAD_TIMEOUT = 60.0
VIEWPORT = (1280, 900)


def trusting_home(home: Path, trusted_ca: Path | None) -> Path:
    """A HOME whose NSS database (``.pki/nssdb``, where Chromium on Linux looks) trusts ``trusted_ca`` for TLS."""
    require_tools(CHROMIUM, CERTUTIL)
    nssdb = home / ".pki" / "nssdb"
    nssdb.mkdir(parents=True)
    certutil = [CERTUTIL, "-d", f"sql:{nssdb}"]
    subprocess.run([*certutil, "-N", "--empty-password"], check=True, timeout=30, capture_output=True)
    if trusted_ca is not None:
        # "C,,": a trusted CA for TLS server certificates, nothing else
        add = [*certutil, "-A", "-t", "C,,", "-n", "fleet-stub local CA", "-i", str(trusted_ca)]
        subprocess.run(add, check=True, timeout=30, capture_output=True)
    return home


class CdpError(AssertionError):
    pass


@dataclass
class _Inbox:
    condition: threading.Condition = field(default_factory=threading.Condition)
    answers: dict[int, dict[str, Any]] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    closed: bool = False


class Page:
    """One tab, attached with a flat session."""

    def __init__(self, browser: CdpBrowser, session_id: str) -> None:
        self.browser = browser
        self.session_id = session_id

    def send(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return self.browser.send(method, params, session_id=self.session_id)

    def events(self, method: str, since: int = 0) -> list[dict[str, Any]]:
        return [
            e["params"]
            for e in self.browser.events_since(since)
            if e.get("method") == method and e.get("sessionId") == self.session_id
        ]

    def _navigation(self, act: Callable[[], object], timeout: float = LOAD_TIMEOUT) -> None:
        """Do ``act`` (which navigates) and wait for the page that results to have loaded."""
        mark = self.browser.event_count()
        act()
        self.browser.wait_event(
            lambda e: e.get("method") == "Page.loadEventFired" and e.get("sessionId") == self.session_id,
            since=mark,
            timeout=timeout,
            what="the page to load",
        )

    def goto(self, url: str) -> None:
        def navigate() -> None:
            answer = self.send("Page.navigate", {"url": url})
            if answer.get("errorText"):
                raise CdpError(f"navigation to {url} failed: {answer['errorText']}")

        self._navigation(navigate)

    def evaluate(self, expression: str) -> Any:
        answer = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in answer:
            raise CdpError(f"{expression!r} threw: {answer['exceptionDetails']}")
        return answer.get("result", {}).get("value")

    def submit(self, form_selector: str, fields: dict[str, str], timeout: float = LOAD_TIMEOUT) -> None:
        """Fill ``fields`` (by name) of the form and submit it as a person pressing its button would."""
        script = (
            f"(() => {{ const form = document.querySelector({json.dumps(form_selector)});"
            " if (!form) throw new Error('no form');"
            f" for (const [name, value] of Object.entries({json.dumps(fields)}))"
            " { form.elements.namedItem(name).value = value; }"
            " form.requestSubmit(); })()"
        )
        self._navigation(lambda: self.evaluate(script), timeout)

    def click(self, selector: str) -> None:
        script = f"document.querySelector({json.dumps(selector)}).click()"
        self._navigation(lambda: self.evaluate(script))

    @property
    def url(self) -> str:
        return str(self.evaluate("location.href"))

    def text(self, selector: str = "body") -> str:
        value = self.evaluate(f"(document.querySelector({json.dumps(selector)}) || {{innerText: ''}}).innerText")
        return str(value or "")

    def count(self, selector: str) -> int:
        return int(self.evaluate(f"document.querySelectorAll({json.dumps(selector)}).length"))

    def cookies(self) -> list[dict[str, Any]]:
        cookies: list[dict[str, Any]] = self.send("Network.getCookies", {"urls": [self.url]})["cookies"]
        return cookies

    def screenshot(self, path: Path) -> Path:
        data = self.send("Page.captureScreenshot", {"format": "png"})["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        print(f"screenshot: {path}")
        return path

    def disable_javascript(self) -> None:
        self.send("Emulation.setScriptExecutionDisabled", {"value": True})


class CdpBrowser:
    """A headless Chromium with a private profile; ``close()`` (or the context manager) ends it."""

    def __init__(self, home: Path, log_path: Path) -> None:
        executable = shutil.which(CHROMIUM)
        if executable is None:
            raise CdpError("chromium is not installed")
        profile = home / f"profile-{uuid.uuid4().hex[:8]}"
        env = {
            k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "DBUS_SESSION_BUS_ADDRESS")
        }
        env.update(HOME=str(home), NO_PROXY="127.0.0.1,localhost,::1")
        argv = [
            executable,
            "--headless=new",
            "--no-sandbox",  # root in CI; the sandbox needs an unprivileged user
            "--disable-gpu",
            "--no-first-run",
            "--no-default-browser-check",
            "--no-proxy-server",
            "--disable-background-networking",
            "--disable-component-update",
            "--remote-debugging-pipe",
            f"--user-data-dir={profile}",
            f"--window-size={VIEWPORT[0]},{VIEWPORT[1]}",
            "--hide-scrollbars",
            "about:blank",
        ]
        commands_in, self._commands = os.pipe()  # we write commands; Chromium reads fd 3
        self._replies, replies_out = os.pipe()  # Chromium writes fd 4; we read
        stdin_read, stdin_write = os.pipe()
        log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            self.pid = os.posix_spawn(
                executable,
                argv,
                env,
                file_actions=[
                    (os.POSIX_SPAWN_DUP2, stdin_read, 0),
                    (os.POSIX_SPAWN_DUP2, log_fd, 1),
                    (os.POSIX_SPAWN_DUP2, log_fd, 2),
                    (os.POSIX_SPAWN_DUP2, commands_in, 3),
                    (os.POSIX_SPAWN_DUP2, replies_out, 4),
                ],
                setsid=True,
            )
        finally:
            for fd in (commands_in, replies_out, stdin_read, stdin_write, log_fd):
                os.close(fd)
        self._inbox = _Inbox()
        self._next_id = 0
        self._send_lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, name="cdp-reader", daemon=True)
        self._reader.start()
        self._exit_code: int | None = None

    def _read(self) -> None:
        buffer = b""
        while True:
            try:
                chunk = os.read(self._replies, 1 << 16)
            except OSError:
                chunk = b""
            if not chunk:
                break
            buffer += chunk
            *messages, buffer = buffer.split(b"\0")
            with self._inbox.condition:
                for raw in messages:
                    message = json.loads(raw)
                    if "id" in message:
                        self._inbox.answers[int(message["id"])] = message
                    else:
                        self._inbox.events.append(message)
                self._inbox.condition.notify_all()
        with self._inbox.condition:
            self._inbox.closed = True
            self._inbox.condition.notify_all()

    def send(
        self, method: str, params: dict[str, Any] | None = None, *, session_id: str | None = None
    ) -> dict[str, Any]:
        with self._send_lock:
            self._next_id += 1
            message_id = self._next_id
            message: dict[str, Any] = {"id": message_id, "method": method, "params": params or {}}
            if session_id is not None:
                message["sessionId"] = session_id
            data = json.dumps(message).encode() + b"\0"
            while data:
                data = data[os.write(self._commands, data) :]
        deadline = time.monotonic() + COMMAND_TIMEOUT
        with self._inbox.condition:
            while message_id not in self._inbox.answers:
                left = deadline - time.monotonic()
                if left <= 0 or self._inbox.closed:
                    raise CdpError(f"no answer to {method} ({'browser gone' if self._inbox.closed else 'timeout'})")
                self._inbox.condition.wait(left)
            answer = self._inbox.answers.pop(message_id)
        if "error" in answer:
            raise CdpError(f"{method}: {answer['error']}")
        result: dict[str, Any] = answer.get("result", {})
        return result

    def event_count(self) -> int:
        with self._inbox.condition:
            return len(self._inbox.events)

    def events_since(self, since: int) -> list[dict[str, Any]]:
        with self._inbox.condition:
            return list(self._inbox.events[since:])

    def wait_event(
        self, matches: Callable[[dict[str, Any]], bool], *, since: int, timeout: float, what: str
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self._inbox.condition:
            while True:
                for event in self._inbox.events[since:]:
                    if matches(event):
                        return event
                since = len(self._inbox.events)
                left = deadline - time.monotonic()
                if left <= 0 or self._inbox.closed:
                    raise CdpError(f"timed out after {timeout:g} s waiting for {what}")
                self._inbox.condition.wait(left)

    def new_page(self) -> Page:
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session_id = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        page = Page(self, str(session_id))
        for domain in ("Page", "Runtime", "Log", "Network"):
            page.send(f"{domain}.enable")
        page.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": VIEWPORT[0], "height": VIEWPORT[1], "deviceScaleFactor": 1, "mobile": False},
        )
        return page

    def close(self) -> int:
        if self._exit_code is not None:
            return self._exit_code
        with contextlib.suppress(CdpError):
            self.send("Browser.close")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self._exit_code = os.waitstatus_to_exitcode(status)
                break
            time.sleep(0.05)
        else:
            os.killpg(self.pid, signal.SIGKILL)  # its own session (setsid): Chromium's helpers go with it
            _, status = os.waitpid(self.pid, 0)
            self._exit_code = os.waitstatus_to_exitcode(status)
        os.close(self._commands)
        self._reader.join(10)
        os.close(self._replies)
        return self._exit_code

    def __enter__(self) -> CdpBrowser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
