"""Concurrent enrollment of many hosts, and the TLS properties osqueryd and orbit rely on."""

from __future__ import annotations

import asyncio
import socket
import ssl

import httpx
import pytest
from cryptography import x509

from tests.support.agents import host_details
from tests.support.stub_server import GLOBAL_SECRET, RunningStub


def test_200_hosts_enroll_concurrently(stub: RunningStub) -> None:
    async def enroll_all() -> list[str]:
        limits = httpx.Limits(max_connections=50)
        async with httpx.AsyncClient(
            base_url=stub.url, verify=stub.ssl_context(), trust_env=False, timeout=60, limits=limits
        ) as client:

            async def one(n: int) -> str:
                hardware_uuid = f"00000000-0000-0000-0000-{n:012d}"
                response = await client.post(
                    "/api/v1/osquery/enroll",
                    json={
                        "enroll_secret": GLOBAL_SECRET,
                        "host_identifier": hardware_uuid,
                        "host_details": host_details(hardware_uuid, f"host-{n}"),
                    },
                )
                key: str = response.json()["node_key"]
                config = await client.post("/api/v1/osquery/config", json={"node_key": key})
                assert config.status_code == 200
                return key

            return await asyncio.gather(*(one(n) for n in range(200)))

    keys = asyncio.run(enroll_all())
    assert len(set(keys)) == 200
    with stub.admin() as admin:
        hosts = admin.get("/api/latest/fleet/hosts").json()["hosts"]
    assert len(hosts) == 200
    assert len({h["uuid"] for h in hosts}) == 200


def _handshake(stub: RunningStub, context: ssl.SSLContext, server_name: str = "localhost") -> ssl.SSLSocket:
    port = int(stub.url.rsplit(":", 1)[1])
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    return context.wrap_socket(raw, server_hostname=server_name)


def test_tls12_with_osquery_cipher_suites_is_offered(stub: RunningStub) -> None:
    for cipher in ("ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384"):
        context = stub.ssl_context()
        context.maximum_version = ssl.TLSVersion.TLSv1_2
        context.set_ciphers(cipher)
        with _handshake(stub, context) as tls:
            assert tls.version() == "TLSv1.2"
            negotiated = tls.cipher()
            assert negotiated is not None and negotiated[0] == cipher


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_old_protocols_and_weak_ciphers_are_refused(stub: RunningStub) -> None:
    old = stub.ssl_context()
    old.minimum_version = ssl.TLSVersion.TLSv1
    old.maximum_version = ssl.TLSVersion.TLSv1_1
    old.set_ciphers("ALL:@SECLEVEL=0")
    with pytest.raises((ssl.SSLError, OSError)):
        _handshake(stub, old).close()
    cbc = stub.ssl_context()
    cbc.maximum_version = ssl.TLSVersion.TLSv1_2
    cbc.set_ciphers("ECDHE-ECDSA-AES128-SHA")
    with pytest.raises(ssl.SSLError):
        _handshake(stub, cbc).close()


def test_no_tls13_session_tickets_are_sent(stub: RunningStub) -> None:
    """No agent resumes a session (server_ssl_context): the stub spends nothing on tickets. A client reading a
    whole response has taken in every ticket a TLS 1.3 server sends after the handshake."""
    context = stub.ssl_context()
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    with _handshake(stub, context) as tls:
        tls.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        answer = b""
        while chunk := tls.recv(65536):
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 ")
        assert tls.version() == "TLSv1.3"
        session = tls.session
        assert session is not None and not session.has_ticket


@pytest.mark.parametrize("name", ["localhost", "127.0.0.1"])
def test_certificate_matches_the_documented_names(stub: RunningStub, name: str) -> None:
    with _handshake(stub, stub.ssl_context(), name) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    cert = x509.load_der_x509_certificate(der)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in sans.get_values_for_type(x509.DNSName)
    assert {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)} == {"127.0.0.1", "::1"}


def test_wrong_name_and_untrusted_ca_fail_verification(stub: RunningStub) -> None:
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(stub, stub.ssl_context(), "fleet.example.com").close()
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(stub, ssl.create_default_context()).close()


def test_plain_http_is_not_served(stub: RunningStub) -> None:
    plain = stub.url.replace("https://", "http://")
    with httpx.Client(trust_env=False, timeout=10) as client, pytest.raises(httpx.HTTPError):
        response = client.head(plain + "/api/fleet/orbit/ping")
        response.raise_for_status()
