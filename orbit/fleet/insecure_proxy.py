"""``--insecure``: a local TLS relay so that osqueryd, which always verifies, can reach a server nobody verifies
(docs/reference/orbit-behaviour.md §6.2, §11.7).

orbit listens on ``localhost:<random port>`` with a self-signed certificate for ``localhost`` (written to
``<root>/proxy/fleet.crt`` 0644, its key 0600 beside it) and relays each connection, byte for byte, to the Fleet
server over a TLS connection *without* verification. osqueryd gets ``--tls_hostname=localhost:<port>`` and
``--tls_server_certs <root>/proxy/fleet.crt``. Only loopback clients can connect.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import logging
import ssl
from pathlib import Path
from urllib.parse import urlsplit

from safe_fs.atomic_write import PUBLIC_MODE, SECRET_MODE, write_atomic

log = logging.getLogger(__name__)

CERT_VALIDITY = datetime.timedelta(days=3650)


def ensure_certificate(directory: Path) -> tuple[Path, Path]:
    """The proxy's self-signed ``localhost`` certificate and key (made once, reused)."""
    cert_path, key_path = directory / "fleet.crt", directory / "fleet.key"
    if cert_path.is_file() and key_path.is_file():
        return cert_path, key_path
    # cryptography only here, once, with --insecure: ≈ 10 MiB resident an agent without it never pays (ADR 0020)
    from cryptography import x509  # noqa: PLC0415
    from cryptography.hazmat.primitives import hashes, serialization  # noqa: PLC0415
    from cryptography.hazmat.primitives.asymmetric import ec  # noqa: PLC0415
    from cryptography.x509.oid import NameOID  # noqa: PLC0415

    directory.mkdir(parents=True, exist_ok=True, mode=0o755)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + CERT_VALIDITY)
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    write_atomic(key_path, key_pem, SECRET_MODE)
    write_atomic(cert_path, cert.public_bytes(serialization.Encoding.PEM), PUBLIC_MODE)
    return cert_path, key_path


class InsecureProxy:
    def __init__(self, fleet_url: str, directory: Path) -> None:
        parts = urlsplit(fleet_url)
        if not parts.hostname:
            raise ValueError(f"invalid Fleet URL {fleet_url!r}")
        self._host = parts.hostname
        self._port = parts.port or 443
        self.cert_path, key_path = ensure_certificate(directory)
        self._server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._server_context.minimum_version = ssl.TLSVersion.TLSv1_2
        self._server_context.load_cert_chain(self.cert_path, key_path)
        self._upstream_context = ssl.create_default_context()
        self._upstream_context.check_hostname = False
        self._upstream_context.verify_mode = ssl.CERT_NONE  # --insecure: the point of this proxy
        self._server: asyncio.Server | None = None
        self.port: int | None = None

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0, ssl=self._server_context)
        self.port = int(self._server.sockets[0].getsockname()[1])
        log.warning(
            "event=insecure_proxy_started port=%d upstream=%s:%d verification=off", self.port, self._host, self._port
        )
        return self.port

    async def run(self, stop: asyncio.Event) -> None:
        if self._server is None:
            await self.start()
        assert self._server is not None
        async with self._server:
            await stop.wait()

    async def close(self) -> None:
        """Stop listening (``run`` does it on stop; this covers a start-up cut short before ``run``)."""
        if self._server is not None:
            self._server.close()

    async def _relay(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.wait_for(
                asyncio.open_connection(self._host, self._port, ssl=self._upstream_context, server_hostname=self._host),
                timeout=30,
            )
        except (OSError, TimeoutError) as exc:
            log.warning("event=insecure_proxy_upstream_failed error=%s", exc)
            client_writer.close()
            return
        await asyncio.gather(_pipe(client_reader, upstream_writer), _pipe(upstream_reader, client_writer))


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (OSError, ssl.SSLError, asyncio.IncompleteReadError):
        pass
    finally:
        with contextlib.suppress(OSError, ssl.SSLError, RuntimeError):
            writer.close()
