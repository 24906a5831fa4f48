"""Reading an osquery configuration document (what ``/api/osquery/config`` returns) into typed values (pure).

Keys used: ``options`` (flag values set at run time), ``schedule``, ``packs`` (inline pack objects; pack file
paths and non-object entries are ignored), ``decorators`` (``load``, ``always``, ``interval``). Query names of
packs are ``pack<delimiter><pack><delimiter><query>`` with ``--pack_delimiter`` (``_`` by default; Fleet sets
``/``). Queries for another platform are skipped, as osquery does.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

LINUX_PLATFORMS = frozenset({"", "all", "any", "linux", "posix", "ubuntu", "centos"})


@dataclass(frozen=True)
class ScheduledQuery:
    name: str
    sql: str
    interval: int
    snapshot: bool = False
    removed: bool = True


@dataclass(frozen=True)
class Decorators:
    load: tuple[str, ...] = ()
    always: tuple[str, ...] = ()
    interval: tuple[tuple[int, tuple[str, ...]], ...] = ()


@dataclass(frozen=True)
class OsqueryConfig:
    options: dict[str, object] = field(default_factory=dict)
    queries: tuple[ScheduledQuery, ...] = ()
    decorators: Decorators = Decorators()


def _platform_ok(value: object) -> bool:
    if not isinstance(value, str):
        return True
    wanted = {p.strip().lower() for p in value.split(",")}
    return bool(wanted & LINUX_PLATFORMS)


def _as_int(value: object, default: int) -> int:
    if isinstance(value, bool):
        return default
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return default


def _truthy(value: object, default: bool) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes")
    if isinstance(value, int):
        return value != 0
    return default


def _query(name: str, spec: object, default_interval: int) -> ScheduledQuery | None:
    if not isinstance(spec, Mapping):
        return None
    sql = spec.get("query")
    if not isinstance(sql, str) or not sql.strip() or not _platform_ok(spec.get("platform")):
        return None
    interval = _as_int(spec.get("interval"), default_interval)
    if interval <= 0:
        return None
    return ScheduledQuery(
        name=name,
        sql=sql,
        interval=interval,
        snapshot=_truthy(spec.get("snapshot"), False),
        removed=_truthy(spec.get("removed"), True),
    )


def _sql_list(value: object) -> tuple[str, ...]:
    if not isinstance(value, list):
        return ()
    return tuple(v for v in value if isinstance(v, str) and v.strip())


def parse_config(document: Mapping[str, object], *, pack_delimiter: str, default_interval: int = 3600) -> OsqueryConfig:
    raw_options = document.get("options")
    options = {str(k): v for k, v in raw_options.items()} if isinstance(raw_options, Mapping) else {}
    delimiter = options.get("pack_delimiter", pack_delimiter)
    delimiter = delimiter if isinstance(delimiter, str) else pack_delimiter
    queries: list[ScheduledQuery] = []
    schedule = document.get("schedule")
    if isinstance(schedule, Mapping):
        for name, spec in schedule.items():
            found = _query(str(name), spec, default_interval)
            if found:
                queries.append(found)
    packs = document.get("packs")
    if isinstance(packs, Mapping):
        for pack_name, pack in packs.items():
            if not isinstance(pack, Mapping) or not _platform_ok(pack.get("platform")):
                continue
            pack_queries = pack.get("queries")
            if not isinstance(pack_queries, Mapping):
                continue
            for query_name, spec in pack_queries.items():
                found = _query(f"pack{delimiter}{pack_name}{delimiter}{query_name}", spec, default_interval)
                if found:
                    queries.append(found)
    raw_decorators = document.get("decorators")
    decorators = Decorators()
    if isinstance(raw_decorators, Mapping):
        interval_map = raw_decorators.get("interval")
        intervals: list[tuple[int, tuple[str, ...]]] = []
        if isinstance(interval_map, Mapping):
            for key, sqls in interval_map.items():
                seconds = _as_int(key, 0)
                if seconds > 0:
                    intervals.append((seconds, _sql_list(sqls)))
        decorators = Decorators(
            load=_sql_list(raw_decorators.get("load")),
            always=_sql_list(raw_decorators.get("always")),
            interval=tuple(intervals),
        )
    return OsqueryConfig(options=options, queries=tuple(queries), decorators=decorators)
