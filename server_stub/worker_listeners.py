"""The listening sockets of a fleet-stub with several workers (ADR 0019), one port for all of them.

``reuseport`` (the default, Linux): one listening socket per worker, all bound to the port with ``SO_REUSEPORT``;
the kernel spreads new connections over them by a hash of the addresses, so each worker gets its share without
any of them competing. The parent creates and keeps every socket: a worker that is replaced takes over the same
socket, and connections that arrived meanwhile wait in its queue instead of being reset.

``shared``: one listening socket inherited by every worker, which accept from it as they are ready (the classic
pre-fork server). Whoever wakes first takes what is queued, so the share follows how busy each worker is, not a hash.

``benchmarks/stub_workers.py`` measured both on the 2-core machine (ADR 0019 has the figures).
"""

from __future__ import annotations

import enum
import socket
import sys

BACKLOG = 2048


class Balance(enum.Enum):
    REUSEPORT = "reuseport"
    SHARED = "shared"


def reuseport_available() -> bool:
    """``SO_REUSEPORT`` that spreads connections over the sockets (Linux ≥ 3.9; elsewhere it does not balance)."""
    return sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")


class ListenError(OSError):
    pass


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _bound(host: str, port: int, *, reuseport: bool) -> socket.socket:
    sock = socket.socket(_family(host), socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuseport:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ListenError(exc.errno, f"cannot listen on {host}:{port}: {exc.strerror}") from None
    return sock


def listening_sockets(host: str, port: int, workers: int, balance: Balance) -> list[socket.socket]:
    """``workers`` sockets (reuseport) or one (shared), listening, non-blocking; ``ListenError`` when the port is taken.

    Before the ``SO_REUSEPORT`` sockets are bound, a plain socket claims the port: a port another server listens on
    (even another fleet-stub with workers, whose sockets would otherwise accept ours into their group) is refused
    as in the single-process mode, and port 0 is resolved to one free port for all.
    """
    probe = _bound(host, port, reuseport=False)
    chosen = int(probe.getsockname()[1])
    if balance is Balance.SHARED:
        sockets = [probe]
    else:
        probe.close()
        sockets = []
        try:
            for _ in range(workers):
                sockets.append(_bound(host, chosen, reuseport=True))
        except ListenError:
            for sock in sockets:
                sock.close()
            raise
    for sock in sockets:
        sock.listen(BACKLOG)
        sock.setblocking(False)
    return sockets
