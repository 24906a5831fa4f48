"""The rollout engine: the I/O shell around the pure rollout core (docs/adr/0017).

* ``create`` checks a definition against the world — the teams exist, the version and from_version are
  exact-version channels of the served TUF repository (``tuf_catalog``) for the same platforms, no running rollout
  of the same target covers the same hosts — derives from_version when it was not given, and stores it.
* ``evaluate`` (the ticker, every few seconds, sooner after a failure report) reads each active rollout's wave
  counts (``rollout_status``), asks ``rollout_rules.decide`` and stores what it decided, until nothing changes.
* ``pins`` is the in-memory ``PinBook`` the orbit config answer reads; it is rebuilt after every change, so a
  config poll never touches the rollout tables. With several worker processes (ADR 0019) a change may come from
  another process: a ``watching`` engine compares the database's rollout generation with the one its book was built
  from at most every ``GENERATION_CHECK_SECONDS`` (one indexed row read), so its pins are at most that stale.
* Every change is stored only onto the row's revision it was decided from (``rollout_store.save_transition``): two
  processes deciding at once cannot both apply a change, whichever the ticker or the admin.

Nothing here keeps state the database does not have: after a restart the engine reloads the rows and the clock
decides the rest (a wave whose soak passed while the server was down advances at the first tick).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from server_stub import teams
from server_stub.rollout_model import ACTIVE_STATES, Rollout, RolloutSpec, RolloutState, Target
from server_stub.rollout_pins import EMPTY, PinBook
from server_stub.rollout_rules import Action, AdminAction, TransitionRefused, admin_transition, decide, next_state
from server_stub.rollout_spec import EXACT_VERSION, RolloutRequest
from server_stub.rollout_status import host_facts, wave_counts
from server_stub.rollout_store import (
    find_by_name,
    generation,
    get_rollout,
    insert_rollout,
    list_rollouts,
    name_taken,
    save_transition,
)
from server_stub.tuf_catalog import TufCatalog, TufCatalogError, read_catalog

log = logging.getLogger(__name__)

DEFAULT_TICK_SECONDS = 5.0
MIN_SECONDS_BETWEEN_NUDGES = 0.5
FULL_EVALUATION_SECONDS = 60.0
GENERATION_CHECK_SECONDS = 0.25  # a watching engine's pins lag another process's change by at most this
ADMIN_RETRIES = 3
_SHOWN_VERSIONS = 10


class RolloutRefused(ValueError):
    """A rollout that cannot be created or changed: ``status`` is the HTTP answer (404, 409, 422)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class DeclaredRollout:
    """A ``[[rollouts]]`` table of the configuration file, checked (declarative_config) but not yet resolved."""

    request: RolloutRequest
    team_names: tuple[str, ...] | None


def _overlaps(a: tuple[int, ...] | None, b: tuple[int, ...] | None) -> bool:
    return a is None or b is None or bool(set(a) & set(b))


class RolloutEngine:
    """``watching``: other processes change the same rollouts (``serve --workers N``): check the database's
    rollout generation before answering ``pins`` (at most every ``GENERATION_CHECK_SECONDS``). ``on_nudge``: what a
    nudge also does (a worker without the ticker passes it on to the one with it). ``before_evaluation``: called first
    by every evaluation (the state writes its noted seen times, which decide who is offline: ``seen_times``)."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        tuf_repo: Path | None,
        *,
        watching: bool = False,
        monotonic: Callable[[], float] = time.monotonic,
        before_evaluation: Callable[[], None] = lambda: None,
    ) -> None:
        self._conn = conn
        self._before_evaluation = before_evaluation
        self._tuf_repo = tuf_repo
        self._pins = EMPTY
        self._wake = asyncio.Event()
        self._last_nudged_run = 0.0
        self._watching = watching
        self._monotonic = monotonic
        self._generation = -1
        self._next_check = 0.0
        self.on_nudge: Callable[[], None] | None = None
        self.reload()

    # --- reading ---------------------------------------------------------------------------------------------

    @property
    def pins(self) -> PinBook:
        if self._watching:
            now = self._monotonic()
            if now >= self._next_check:
                self._next_check = now + GENERATION_CHECK_SECONDS
                self._follow_generation()
        return self._pins

    def _follow_generation(self) -> None:
        try:
            if generation(self._conn) != self._generation:
                self.reload()
        except sqlite3.Error as exc:  # a busy or failing database: keep the book, look again at the next check
            log.warning("event=rollout_generation_unreadable error=%s", exc)

    def reload(self) -> None:
        # the generation first: a change committed between the two reads is then seen again at the next check
        self._generation = generation(self._conn)
        self._pins = PinBook.of(list_rollouts(self._conn))

    def get(self, rollout_id: int) -> Rollout:
        rollout = get_rollout(self._conn, rollout_id)
        if rollout is None:
            raise RolloutRefused(404, f"rollout {rollout_id} not found")
        return rollout

    # --- creating --------------------------------------------------------------------------------------------

    def _catalog(self) -> TufCatalog:
        if self._tuf_repo is None:
            raise RolloutRefused(
                422,
                "fleet-stub serves no TUF repository (start it with --tuf-repo): it is where a rollout's versions "
                "are checked",
            )
        try:
            return read_catalog(self._tuf_repo)
        except TufCatalogError as exc:
            raise RolloutRefused(422, f"cannot read the served TUF repository: {exc}") from None

    @staticmethod
    def _published(catalog: TufCatalog, target: Target, version: str, what: str) -> frozenset[str]:
        platforms = catalog.platforms(str(target), version)
        if not platforms:
            versions = sorted(c for c in catalog.channels_of(str(target)) if EXACT_VERSION.fullmatch(c))
            shown = ", ".join(versions[-_SHOWN_VERSIONS:]) or "none"
            raise RolloutRefused(
                422,
                f"{what} {version} is not published for {target} in the served TUF repository (no target "
                f"{target}/<platform>/{version}/…; publish it with `orbitctl updates add --version {version}`); "
                f"published versions: {shown}",
            )
        return platforms

    def check_versions(
        self, target: Target, version: str, from_version: str, catalog: TufCatalog | None = None
    ) -> tuple[str, ...]:
        """Both versions published for the same platforms; returns the platforms of ``version``."""
        catalog = catalog or self._catalog()
        new = self._published(catalog, target, version, "version")
        old = self._published(catalog, target, from_version, "from_version")
        missing = sorted(old - new)
        if missing:
            raise RolloutRefused(
                422,
                f"{target} {version} is not published for {', '.join(missing)}, where {from_version} is: hosts there "
                "could not install it (publish it for those platforms, or limit the rollout to teams without them)",
            )
        return tuple(sorted(new))

    def _derive_from_version(
        self, request: RolloutRequest, team_ids: tuple[int, ...] | None, now: float, catalog: TufCatalog
    ) -> str:
        """The version most of the population runs now, among the target's published exact versions."""
        # host_facts reads the target, version and population of a rollout: a probe with the requested ones
        probe = Rollout(
            id=0,
            spec=RolloutSpec("", request.target, request.version, "", team_ids, (100.0,), 0, request.rules),
            state=RolloutState.RUNNING,
            current_wave=0,
            wave_started_at=now,
            halt_reason=None,
            created_at=now,
            updated_at=now,
            source="",
            platforms=(),
        )
        running = Counter(
            f.running_version
            for f in host_facts(self._conn, probe, now)
            if f.running_version
            and f.running_version != request.version
            and catalog.has(str(request.target), f.running_version)
        )
        if not running:
            raise RolloutRefused(
                422,
                f"from_version is required: no host of the population reports a published {request.target} version "
                "to return to",
            )
        (version, _count), *_ = sorted(running.items(), key=lambda item: (-item[1], item[0]))
        return version

    def _check_teams(self, team_ids: tuple[int, ...] | None) -> None:
        for team_id in team_ids or ():
            if teams.get_team(self._conn, team_id) is None:
                raise RolloutRefused(422, f"team {team_id} does not exist")

    def _check_no_conflict(self, target: Target, team_ids: tuple[int, ...] | None) -> None:
        for other in list_rollouts(self._conn):
            active = other.state in ACTIVE_STATES
            if other.spec.target is target and active and _overlaps(other.spec.team_ids, team_ids):
                raise RolloutRefused(
                    409,
                    f"rollout {other.id} ({other.spec.name}) of {target} is {other.state} for some of the same hosts; "
                    "abort it (or let it complete) before starting another",
                )

    def _name(self, request: RolloutRequest) -> str:
        if request.name is not None:
            if name_taken(self._conn, request.name):
                raise RolloutRefused(409, f"a rollout named {request.name!r} already exists")
            return request.name
        base = f"{request.target}-{request.version}"
        candidate, number = base, 1
        while name_taken(self._conn, candidate):
            number += 1
            candidate = f"{base}-{number}"
        return candidate

    def create(
        self, request: RolloutRequest, team_ids: tuple[int, ...] | None, now: float, *, source: str = "api"
    ) -> Rollout:
        self._check_teams(team_ids)
        self._check_no_conflict(request.target, team_ids)
        catalog = self._catalog()
        self._published(catalog, request.target, request.version, "version")  # before deriving: the clearer error
        from_version = request.from_version or self._derive_from_version(request, team_ids, now, catalog)
        if from_version == request.version:
            raise RolloutRefused(422, "from_version must differ from version")
        platforms = self.check_versions(request.target, request.version, from_version, catalog)
        spec = RolloutSpec(
            name=self._name(request),
            target=request.target,
            version=request.version,
            from_version=from_version,
            team_ids=team_ids,
            waves=request.waves,
            soak_seconds=request.soak_seconds,
            rules=request.rules,
        )

        def still_free() -> None:  # again, inside the insert's transaction: another worker may have been quicker
            self._check_no_conflict(request.target, team_ids)
            if name_taken(self._conn, spec.name):
                raise RolloutRefused(409, f"a rollout named {spec.name!r} already exists")

        rollout = insert_rollout(self._conn, spec, platforms, source, now, still_free)
        log.info(
            "event=rollout_created rollout_id=%d name=%s target=%s from=%s to=%s source=%s",
            rollout.id,
            spec.name,
            spec.target,
            spec.from_version,
            spec.version,
            source,
        )
        self.reload()
        return rollout

    # --- changing --------------------------------------------------------------------------------------------

    def transition(self, rollout_id: int, action: AdminAction, now: float) -> Rollout:
        for _ in range(ADMIN_RETRIES):
            rollout = self.get(rollout_id)
            try:
                changed = admin_transition(rollout, action, now)
            except TransitionRefused as exc:
                raise RolloutRefused(409, str(exc)) from None
            if changed is rollout:
                return rollout
            event = {AdminAction.PAUSE: "paused", AdminAction.RESUME: "resumed", AdminAction.ABORT: "aborted"}[action]
            if save_transition(self._conn, changed, event, "by an admin") is None:
                continue  # another process changed it since it was read: decide again on what it is now
            log.info("event=rollout_%s rollout_id=%d", event, rollout_id)
            self.reload()
            if action is AdminAction.RESUME:
                self.evaluate(now)
            return self.get(rollout_id)
        raise RolloutRefused(409, f"rollout {rollout_id} kept changing while this was applied; look at it and retry")

    def evaluate(self, now: float, *, only_soaked: bool = False) -> int:
        """Apply every decision due now; returns how many changes were stored.

        ``only_soaked``: skip the rollouts still inside a soak (their only possible decision is a failure halt, and
        new failures nudge a full evaluation): a plain tick then costs nothing while waves soak, where a pass over
        a rollout's population is ~60 ms per 10 000 hosts (benchmarks/rollout_config_cost.py).
        """
        self._before_evaluation()
        changes = 0
        lost = False
        for rollout in list_rollouts(self._conn):
            if rollout.state not in ACTIVE_STATES:
                continue
            soaking = rollout.state is RolloutState.PAUSED or now < rollout.wave_started_at + rollout.spec.soak_seconds
            if only_soaked and soaking:
                continue
            counts = wave_counts(self._conn, rollout, now)
            current = rollout
            for _ in range(current.wave_count + 1):
                decision = decide(current, counts, now)
                if not decision.changes_something:
                    break
                event = {Action.ADVANCE: "advanced", Action.HALT: "halted", Action.COMPLETE: "completed"}[
                    decision.action
                ]
                stored = save_transition(self._conn, next_state(current, decision, now), event, decision.reason)
                if stored is None:  # changed by another process since it was read: the next pass sees it as it is
                    log.info("event=rollout_change_skipped rollout_id=%d reason=changed_elsewhere", current.id)
                    lost = True
                    break
                current = stored
                changes += 1
                log.log(
                    logging.WARNING if decision.action is Action.HALT else logging.INFO,
                    "event=rollout_%s rollout_id=%d wave=%d reason=%r",
                    event,
                    current.id,
                    current.current_wave + 1,
                    decision.reason,
                )
                if current.state not in ACTIVE_STATES:
                    break
        if changes or lost:
            self.reload()
        return changes

    # --- the configuration file ------------------------------------------------------------------------------

    def check_declared(self, declared: Sequence[DeclaredRollout]) -> None:
        """What can be checked before the file changes anything: versions in TUF, and the definition of a rollout
        already created from the file (a started rollout is never redefined: give it a new name)."""
        for item in declared:
            request = item.request
            existing = find_by_name(self._conn, request.name or "")
            if existing is not None:
                continue  # compared in apply_declared, once the file's teams exist
            assert request.from_version is not None  # required in files (declarative_config)
            self.check_versions(request.target, request.version, request.from_version)

    def apply_declared(self, declared: Sequence[DeclaredRollout], now: float) -> None:
        for item in declared:
            request = item.request
            team_ids = self._team_ids(item.team_names)
            existing = find_by_name(self._conn, request.name or "")
            if existing is None:
                self.create(request, team_ids, now, source="config")
                continue
            wanted = RolloutSpec(
                name=existing.spec.name,
                target=request.target,
                version=request.version,
                from_version=request.from_version or existing.spec.from_version,
                team_ids=team_ids,
                waves=request.waves,
                soak_seconds=request.soak_seconds,
                rules=request.rules,
            )
            if wanted != existing.spec:
                raise RolloutRefused(
                    422,
                    f"rollout {existing.spec.name!r} already exists with another definition; a started rollout is "
                    "never redefined: give the new one another name",
                )

    def _team_ids(self, names: tuple[str, ...] | None) -> tuple[int, ...] | None:
        if names is None:
            return None
        ids = []
        for name in names:
            team = teams.find_team_by_name(self._conn, name)
            if team is None:
                raise RolloutRefused(422, f"team {name!r} does not exist")
            ids.append(team.id)
        return tuple(sorted(set(ids)))

    # --- the ticker ------------------------------------------------------------------------------------------

    def nudge(self) -> None:
        """A failure was reported: evaluate soon instead of at the next tick."""
        self._wake.set()
        if self.on_nudge is not None:
            self.on_nudge()

    def nudged_elsewhere(self) -> None:
        """Another process was told of a failure (it has no ticker: this one has)."""
        self._wake.set()

    async def run_ticker(self, clock: Callable[[], float], interval: float) -> None:
        """Every ``interval`` seconds, evaluate the rollouts whose soak has passed; after a nudge (at most every
        0.5 s) and at least every minute, all of them (what else changes counts: deleted hosts, hosts changing
        team). Cancelled on shutdown."""
        loop = asyncio.get_running_loop()
        last_full = loop.time()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), interval)
            full = loop.time() - last_full >= FULL_EVALUATION_SECONDS
            if self._wake.is_set():
                self._wake.clear()
                pause = self._last_nudged_run + MIN_SECONDS_BETWEEN_NUDGES - loop.time()
                if pause > 0:
                    await asyncio.sleep(pause)
                self._last_nudged_run = loop.time()
                full = True
            try:
                self.evaluate(clock(), only_soaked=not full)
            except sqlite3.Error as exc:  # a full disk or a busy database: the next tick tries again
                log.error("event=rollout_tick_failed error=%s", exc)
            if full:
                last_full = loop.time()
