"""The 5-minute capabilities ping: a server gaining token_rotation makes orbit register its device token."""

from __future__ import annotations

import asyncio

from orbit.fleet.capabilities import CapabilitiesWatcher


class FakeClient:
    def __init__(self, *answers: frozenset[str]) -> None:
        self.answers = list(answers)
        self.server_capabilities: frozenset[str] = frozenset()

    async def ping(self) -> bool:
        self.server_capabilities = self.answers.pop(0)
        return True


def test_only_a_newly_gained_token_rotation_triggers_registration() -> None:
    client = FakeClient(frozenset({"orbit_endpoints"}), frozenset({"orbit_endpoints"}), frozenset({"token_rotation"}))
    calls: list[str] = []

    async def on_rotation() -> None:
        calls.append("ensure")

    watcher = CapabilitiesWatcher(client, on_rotation)  # type: ignore[arg-type]

    async def main() -> None:
        await watcher.check()  # gained orbit_endpoints: logged only
        await watcher.check()  # unchanged
        assert calls == []
        await watcher.check()  # gained token_rotation
        assert calls == ["ensure"]

    asyncio.run(main())


def test_run_ends_at_once_on_stop() -> None:
    watcher = CapabilitiesWatcher(FakeClient(), lambda: asyncio.sleep(0), interval=3600.0)  # type: ignore[arg-type]

    async def main() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(watcher.run(stop))
        await asyncio.sleep(0)
        stop.set()
        await asyncio.wait_for(task, timeout=60)

    asyncio.run(main())
