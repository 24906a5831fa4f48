"""The HTTP client fleet-desktop talks to Fleet with: TLS ≥ 1.2, orbit's trust settings, optional mTLS.

Trust is the ``FLEET_DESKTOP_FLEET_ROOT_CA`` file when given (instead of the system roots, as Fleet does),
``FLEET_DESKTOP_INSECURE`` skips verification. The client certificate arrives as PEM *contents* in the environment;
``ssl`` can only load it from a file, so it is written to a private temporary file (directory 0700, file 0600),
loaded into the context and deleted at once — it never outlives ``build_ssl_context``. Proxy variables
(``HTTPS_PROXY``, ``NO_PROXY`` …) apply through httpx's ``trust_env``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import ssl
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx

from desktop_tray.config import DesktopConfig

REQUEST_TIMEOUT = httpx.Timeout(20.0, connect=10.0)


class TlsSetupError(Exception):
    """The CA file or the client certificate cannot be loaded."""


@contextlib.contextmanager
def private_pem_file(contents: str, directory: Path | None = None) -> Iterator[Path]:
    """A file only the current user can read, holding ``contents``; removed (with its directory) on exit."""
    folder = Path(tempfile.mkdtemp(prefix="fleet-desktop-", dir=directory))  # mkdtemp: mode 0700
    path = folder / "client.pem"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(contents)
        yield path
    finally:
        with contextlib.suppress(OSError):
            path.unlink()
        shutil.rmtree(folder, ignore_errors=True)


def build_ssl_context(config: DesktopConfig) -> ssl.SSLContext:
    try:
        ctx = ssl.create_default_context(cafile=str(config.root_ca) if config.root_ca else None)
    except (OSError, ssl.SSLError) as exc:
        raise TlsSetupError(f"cannot load the CA file {config.root_ca}: {exc}") from None
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if config.insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if config.client_cert_pem and config.client_key_pem:
        pem = config.client_cert_pem.rstrip("\n") + "\n" + config.client_key_pem.rstrip("\n") + "\n"
        try:
            with private_pem_file(pem) as path:
                ctx.load_cert_chain(str(path))
        except (OSError, ssl.SSLError) as exc:
            raise TlsSetupError(f"cannot load the TLS client certificate and key: {exc.__class__.__name__}") from None
    return ctx


def build_http_client(config: DesktopConfig, version: str) -> httpx.Client:
    return httpx.Client(
        base_url=config.fleet_url,
        verify=build_ssl_context(config),
        timeout=REQUEST_TIMEOUT,
        trust_env=True,
        follow_redirects=False,
        headers={"User-Agent": f"fleet-desktop/{version}"},
    )
