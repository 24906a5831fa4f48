"""Receiver for ``notifications.pending_script_execution_ids`` (docs/reference/orbit-behaviour.md §3.1, §3.2, §11.3).

Fleet's semantics, kept:

- ids are handled one batch at a time, in the order the server sent them; while a batch runs, a new call returns at
  once (try-lock), so overlapping config ticks never start a slow script twice;
- scripts disabled → post ``"Scripts are disabled"`` with exit code -2 (nothing is fetched or run);
- enabled → fetch the script; skip it if the server already has an exit code; a fetch error stops the batch so the
  queue order is kept; the timeout is ``script_execution_timeout`` from the config, or 300 s when 0/absent.

Better than Fleet: ids handled by this process are remembered (a bounded history) and never run twice, and a result
whose upload failed is kept and re-posted on the next tick instead of running the script again.

``handle`` awaits the whole batch (minutes, for slow scripts): the config poller should start it as its own task
rather than wait for it. Logs carry ids, exit codes and timings, never script contents or output.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from orbit.fleet.script_runner import (
    DEFAULT_SCRIPT_TIMEOUT,
    DISABLED_EXIT_CODE,
    DISABLED_OUTPUT,
    ScriptOutcome,
    run_script,
)

log = logging.getLogger(__name__)

DEFAULT_HISTORY_SIZE = 500
MAX_UNPOSTED_RESULTS = 100


class ScriptRequestError(ValueError):
    """The ``/scripts/request`` answer is not a HostScriptResult we can use."""


@dataclass(frozen=True)
class ScriptRequest:
    """The parts of Fleet's HostScriptResult (answer of ``POST /api/fleet/orbit/scripts/request``) that orbit uses."""

    execution_id: str
    script_contents: str
    exit_code: int | None
    timeout: int | None

    @classmethod
    def from_json(cls, payload: object) -> ScriptRequest:
        """Validate a decoded JSON body; raises ScriptRequestError naming the offending field."""
        if not isinstance(payload, Mapping):
            raise ScriptRequestError(f"expected a JSON object, got {type(payload).__name__}")
        execution_id = payload.get("execution_id")
        if not isinstance(execution_id, str) or not execution_id:
            raise ScriptRequestError("execution_id must be a non-empty string")
        contents = payload.get("script_contents")
        if not isinstance(contents, str):
            raise ScriptRequestError("script_contents must be a string")
        return cls(
            execution_id=execution_id,
            script_contents=contents,
            exit_code=_optional_int(payload, "exit_code"),
            timeout=_optional_int(payload, "timeout"),
        )


def _optional_int(payload: Mapping[object, object], key: str) -> int | None:
    value = payload.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ScriptRequestError(f"{key} must be an integer or null, got {type(value).__name__}")
    return value


class ScriptsApi(Protocol):
    async def script_request(self, execution_id: str) -> ScriptRequest: ...

    async def post_script_result(
        self, execution_id: str, output: str, runtime: int, exit_code: int, timeout: int
    ) -> None: ...


class ScriptRunner(Protocol):
    async def __call__(
        self, contents: str, execution_id: str, *, timeout: float, keep_tempdir: bool = ..., tmp_root: Path | None = ...
    ) -> ScriptOutcome: ...


@dataclass(frozen=True)
class _Unposted:
    outcome: ScriptOutcome
    timeout: int


def effective_timeout(configured: int | None) -> int:
    """``script_execution_timeout`` from the config, or Fleet's 300 s default when it is 0, negative or absent."""
    return configured if configured is not None and configured > 0 else DEFAULT_SCRIPT_TIMEOUT


class ScriptsReceiver:
    def __init__(
        self,
        api: ScriptsApi,
        *,
        enabled: Callable[[], bool],
        timeout: Callable[[], int | None],
        keep_tempdir: bool = False,
        runner: ScriptRunner = run_script,
        history_size: int = DEFAULT_HISTORY_SIZE,
    ) -> None:
        if history_size < 1:
            raise ValueError("history_size must be at least 1")
        self._api = api
        self._enabled = enabled
        self._timeout = timeout
        self._keep_tempdir = keep_tempdir
        self._runner = runner
        self._history_size = history_size
        self._lock = asyncio.Lock()
        self._handled: OrderedDict[str, None] = OrderedDict()
        self._unposted: OrderedDict[str, _Unposted] = OrderedDict()

    @property
    def busy(self) -> bool:
        """A batch is in progress (a new ``handle`` call would return at once)."""
        return self._lock.locked()

    def was_handled(self, execution_id: str) -> bool:
        return execution_id in self._handled

    async def handle(self, pending_ids: Sequence[str]) -> None:
        """Process one batch of pending execution ids; returns at once if a batch is already running."""
        if not pending_ids or self._lock.locked():
            if pending_ids:
                log.debug("event=scripts_batch_skipped reason=batch_in_progress count=%d", len(pending_ids))
            return
        async with self._lock:
            enabled = self._enabled()
            timeout = effective_timeout(self._timeout())
            log.debug("event=scripts_batch_start count=%d enabled=%s timeout=%d", len(pending_ids), enabled, timeout)
            for execution_id in pending_ids:
                if execution_id in self._handled:
                    continue
                if execution_id in self._unposted:
                    await self._post(execution_id, self._unposted[execution_id])
                elif not enabled:
                    disabled = ScriptOutcome(
                        output=DISABLED_OUTPUT, exit_code=DISABLED_EXIT_CODE, runtime=0, timed_out=False
                    )
                    await self._post(execution_id, _Unposted(disabled, timeout))
                elif not await self._fetch_and_run(execution_id, timeout):
                    break

    async def _fetch_and_run(self, execution_id: str, timeout: int) -> bool:
        """Returns False when the batch must stop here (the script could not be fetched or run)."""
        try:
            request = await self._api.script_request(execution_id)
        except Exception as exc:
            log.warning(
                "event=script_fetch_failed execution_id=%s error_type=%s error=%s",
                execution_id,
                type(exc).__name__,
                exc,
            )
            return False
        if request.exit_code is not None:
            log.info("event=script_already_done execution_id=%s exit_code=%d", execution_id, request.exit_code)
            self._remember(execution_id)
            return True
        try:
            outcome = await self._runner(
                request.script_contents, execution_id, timeout=timeout, keep_tempdir=self._keep_tempdir
            )
        except Exception:
            log.exception("event=script_run_crashed execution_id=%s", execution_id)
            return False
        log.info(
            "event=script_ran execution_id=%s exit_code=%d runtime=%d timed_out=%s output_chars=%d",
            execution_id,
            outcome.exit_code,
            outcome.runtime,
            outcome.timed_out,
            len(outcome.output),
        )
        await self._post(execution_id, _Unposted(outcome, timeout))
        return True

    async def _post(self, execution_id: str, result: _Unposted) -> None:
        outcome = result.outcome
        try:
            await self._api.post_script_result(
                execution_id, outcome.output, outcome.runtime, outcome.exit_code, result.timeout
            )
        except Exception as exc:
            log.warning(
                "event=script_result_post_failed execution_id=%s exit_code=%d error_type=%s error=%s retry=next_tick",
                execution_id,
                outcome.exit_code,
                type(exc).__name__,
                exc,
            )
            self._unposted[execution_id] = result
            self._unposted.move_to_end(execution_id)
            while len(self._unposted) > MAX_UNPOSTED_RESULTS:
                dropped, _ = self._unposted.popitem(last=False)
                log.warning("event=script_result_dropped execution_id=%s reason=too_many_unposted", dropped)
            return
        self._unposted.pop(execution_id, None)
        self._remember(execution_id)

    def _remember(self, execution_id: str) -> None:
        self._handled[execution_id] = None
        self._handled.move_to_end(execution_id)
        while len(self._handled) > self._history_size:
            self._handled.popitem(last=False)
