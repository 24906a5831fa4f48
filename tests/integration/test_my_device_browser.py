"""The "My device" page in a real browser: headless Chromium loads ``/device/{token}`` from a running fleet-stub.

Trust: the browser trusts the stub's CA (``tls/ca.pem``) the way Chromium on Linux trusts a local CA, through an
NSS certificate database (``$HOME/.pki/nssdb``, made with ``certutil`` in a private ``HOME``). The certificate is
therefore verified for real, chain and host name included; nothing ignores certificate errors. A control test
shows that without that trust Chromium refuses the page.

The page is read from Chromium's ``--dump-dom`` (the DOM after parsing) and photographed with ``--screenshot``;
screenshots are kept under ``<tmp_path>/artifacts/`` and their paths printed.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image

from tests.support.fleet_desktop import HOSTNAME, enroll_device
from tests.support.stub_server import RunningStub
from tests.support.x_session import require_tools

CHROMIUM = "chromium"
CERTUTIL = "certutil"
BROWSER_TIMEOUT = 90.0

pytestmark = pytest.mark.timeout(240)


@dataclass(frozen=True)
class Browser:
    """Headless Chromium with a private HOME whose NSS database trusts ``ca`` (or nothing)."""

    home: Path

    def run(self, url: str, *args: str) -> subprocess.CompletedProcess[str]:
        profile = self.home / f"profile-{uuid.uuid4().hex[:8]}"
        env = {
            k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "DBUS_SESSION_BUS_ADDRESS")
        }
        env.update(HOME=str(self.home), NO_PROXY="127.0.0.1,localhost,::1")
        argv = [
            CHROMIUM,
            "--headless=new",
            "--no-sandbox",  # root in CI; the sandbox needs an unprivileged user
            "--disable-gpu",
            "--no-first-run",
            "--no-proxy-server",
            f"--user-data-dir={profile}",
            *args,
            url,
        ]
        return subprocess.run(
            argv,
            env=env,
            capture_output=True,
            text=True,
            timeout=BROWSER_TIMEOUT,
            check=False,
            stdin=subprocess.DEVNULL,
        )

    def dump_dom(self, url: str) -> subprocess.CompletedProcess[str]:
        return self.run(url, "--dump-dom")

    def screenshot(self, url: str, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        result = self.run(url, f"--screenshot={path}", "--window-size=1000,900", "--hide-scrollbars")
        assert result.returncode == 0 and path.is_file(), result.stderr[-2000:]
        print(f"screenshot: {path}")
        return path


def _browser(home: Path, trusted_ca: Path | None) -> Browser:
    require_tools(CHROMIUM, CERTUTIL)
    nssdb = home / ".pki" / "nssdb"
    nssdb.mkdir(parents=True)
    certutil = [CERTUTIL, "-d", f"sql:{nssdb}"]
    subprocess.run([*certutil, "-N", "--empty-password"], check=True, timeout=30, capture_output=True)
    if trusted_ca is not None:
        # "C,,": a trusted CA for TLS server certificates, nothing else
        add = [*certutil, "-A", "-t", "C,,", "-n", "fleet-stub local CA", "-i", str(trusted_ca)]
        subprocess.run(add, check=True, timeout=30, capture_output=True)
    return Browser(home)


@pytest.fixture
def browser(tmp_path: Path, stub: RunningStub) -> Browser:
    return _browser(tmp_path / "browser-home", stub.ca_path)


@pytest.fixture
def artifacts(tmp_path: Path) -> Path:
    path = tmp_path / "artifacts"
    path.mkdir()
    return path


class _Text(HTMLParser):
    """The visible text of a DOM dump, one string per text node, and the text of each <li>."""

    def __init__(self) -> None:
        super().__init__()
        self.chunks: list[str] = []
        self.items: list[str] = []
        self._skip = 0
        self._li: list[list[str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("style", "script", "title"):
            self._skip += 1
        if tag == "li":
            self._li.append([])

    def handle_endtag(self, tag: str) -> None:
        if tag in ("style", "script", "title"):
            self._skip -= 1
        if tag == "li" and self._li:
            self.items.append(" ".join(" ".join(self._li.pop()).split()))

    def handle_data(self, data: str) -> None:
        if self._skip or not data.strip():
            return
        self.chunks.append(data.strip())
        for item in self._li:
            item.append(data.strip())

    @property
    def text(self) -> str:
        return " ".join(self.chunks)


def _parse(dom: str) -> _Text:
    parser = _Text()
    parser.feed(dom)
    parser.close()
    return parser


def _device_with_policies(stub: RunningStub) -> str:
    """A host enrolled as orbit + osqueryd do it, one passing and one failing policy; returns its Desktop token."""
    return enroll_device(stub, hostname=HOSTNAME).token


def _assert_screenshot_shows_a_page(path: Path) -> None:
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.size == (1000, 900)
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 50, "the screenshot is (nearly) blank"


def test_my_device_page_shows_host_and_failing_policy(stub: RunningStub, browser: Browser, artifacts: Path) -> None:
    token = _device_with_policies(stub)
    url = f"{stub.url}/device/{token}"

    result = browser.dump_dom(url)

    assert result.returncode == 0, result.stderr[-2000:]
    page = _parse(result.stdout)
    assert HOSTNAME in page.text, page.text
    assert "1 failing of 2" in page.text, page.text
    failing = [item for item in page.items if "Firewall on" in item]
    passing = [item for item in page.items if "Disk encrypted" in item]
    assert len(failing) == 1 and len(passing) == 1, page.items
    assert "Fail" in failing[0] and "Pass" not in failing[0], failing
    assert "Run ufw enable as root." in failing[0], failing
    assert "Pass" in passing[0] and "Enable full-disk encryption." not in passing[0], passing
    _assert_screenshot_shows_a_page(browser.screenshot(url, artifacts / "my-device.png"))


def test_policies_tab_in_the_browser(stub: RunningStub, browser: Browser) -> None:
    token = _device_with_policies(stub)

    result = browser.dump_dom(f"{stub.url}/device/{token}/policies")

    page = _parse(result.stdout)
    assert "1 failing of 2" in page.text, page.text
    assert any("Firewall on" in item and "Run ufw enable as root." in item for item in page.items), page.items
    assert HOSTNAME not in page.text  # the policies tab has no host details


def test_invalid_token_page_says_so(stub: RunningStub, browser: Browser, artifacts: Path) -> None:
    _device_with_policies(stub)  # a real host exists; a made-up token must not reach it
    url = f"{stub.url}/device/{uuid.uuid4()}"

    result = browser.dump_dom(url)

    assert result.returncode == 0, result.stderr[-2000:]
    page = _parse(result.stdout)
    assert "This link is invalid or has expired" in page.text, page.text
    assert "My device" in page.text  # tells the user where to get a fresh link
    assert HOSTNAME not in page.text and "Firewall on" not in page.text
    _assert_screenshot_shows_a_page(browser.screenshot(url, artifacts / "invalid-link.png"))


def test_expired_token_page_says_so(stub: RunningStub, browser: Browser) -> None:
    assert stub.clock is not None
    token = _device_with_policies(stub)
    stub.clock.advance(3601)  # Desktop tokens are valid for one hour

    page = _parse(browser.dump_dom(f"{stub.url}/device/{token}").stdout)

    assert "This link is invalid or has expired" in page.text, page.text
    assert HOSTNAME not in page.text


def test_without_trusting_the_stub_ca_chromium_refuses_the_page(stub: RunningStub, tmp_path: Path) -> None:
    """Control: the trust above comes from the NSS database, not from anything that ignores certificate errors."""
    token = _device_with_policies(stub)
    untrusting = _browser(tmp_path / "untrusting-home", trusted_ca=None)

    result = untrusting.dump_dom(f"{stub.url}/device/{token}")

    assert HOSTNAME not in result.stdout
    assert "ERR_CERT_AUTHORITY_INVALID" in result.stderr, result.stderr[-2000:]
