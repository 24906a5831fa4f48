"""Running a real fleet-stub over TLS on loopback inside the test process (a thread with its own event loop)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from server_stub.device_throttle import DeviceGuessLimiter
from server_stub.server import StubServer, bind_socket, make_uvicorn_config, prepare
from server_stub.settings import EnrollSecretSpec, ServeSettings

GLOBAL_SECRET = "global-secret-0123"
TEAM_SECRET = "team-secret-4567"
TEAM_NAME = "Laptops"


class FakeClock:
    """An injectable clock: starts at real time, moves only when told to."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class RunningStub:
    url: str
    ca_path: Path
    admin_token: str
    data_dir: Path
    clock: FakeClock | None

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_path))

    def client(self, **kwargs: object) -> httpx.Client:
        return httpx.Client(base_url=self.url, verify=self.ssl_context(), trust_env=False, timeout=30.0, **kwargs)  # type: ignore[arg-type]

    def admin(self) -> httpx.Client:
        return self.client(headers={"Authorization": f"Bearer {self.admin_token}"})


def default_settings(data_dir: Path, **overrides: object) -> ServeSettings:
    settings = ServeSettings(
        data_dir=data_dir,
        listen_host="127.0.0.1",
        listen_port=0,
        enroll_secrets=(EnrollSecretSpec(GLOBAL_SECRET, None), EnrollSecretSpec(TEAM_SECRET, TEAM_NAME)),
    )
    return dataclasses.replace(settings, **overrides)  # type: ignore[arg-type]


@contextmanager
def running_stub(data_dir: Path, *, clock: FakeClock | None = None, **overrides: object) -> Iterator[RunningStub]:
    settings = default_settings(data_dir, **overrides)
    state, files = prepare(settings)
    if clock is not None:
        state.clock = clock
        state.live._clock = clock
        state.device_guesses = DeviceGuessLimiter(clock=clock)
    sock = bind_socket("127.0.0.1", 0)
    port = int(sock.getsockname()[1])
    ready = threading.Event()
    server = StubServer(make_uvicorn_config(state, files), state, ready.set)
    loop_holder: dict[str, asyncio.AbstractEventLoop] = {}
    failure: list[BaseException] = []

    def run() -> None:
        loop = asyncio.new_event_loop()
        loop_holder["loop"] = loop
        try:
            loop.run_until_complete(server.serve(sockets=[sock]))
        except BaseException as exc:  # surfaced to the test below
            failure.append(exc)
            ready.set()
        finally:
            loop.close()

    thread = threading.Thread(target=run, name="fleet-stub", daemon=True)
    thread.start()
    if not ready.wait(20) or failure:
        raise RuntimeError(f"fleet-stub did not start: {failure}")
    assert files.ca is not None
    try:
        yield RunningStub(f"https://127.0.0.1:{port}", files.ca, state.admin_token, data_dir, clock)
    finally:
        loop = loop_holder["loop"]
        loop.call_soon_threadsafe(server.request_stop)
        thread.join(30)
        sock.close()
        state.close()
        assert not thread.is_alive(), "fleet-stub did not stop"


def server_json(data_dir: Path) -> dict[str, object]:
    loaded: dict[str, object] = json.loads((data_dir / "server.json").read_text())
    return loaded
