"""Who is registered with the sim's extension manager and which tables they provide (pure; thread-safe).

Registration follows osquery's ``ExtensionManagerHandler::registerExtension``: a name already registered is refused
("Duplicate extension registered"), an SDK older than the last API change (1.7.7) is refused ("Incompatible
extension SDK version"; an empty SDK version passes, as osquery-go sends none), and the broadcast is refused as a
whole ("Failed adding registry broadcast") when a table route has no columns or a table name is already taken by
the sim or another extension. An accepted extension gets a fresh non-zero 16-bit uuid. Only the ``table``
registry becomes SQL tables; other registries (config, logger, …) are accepted and ignored.

A table route is osquery's ``TablePlugin::routeInfo``: maps with ``id`` = ``column`` (``name``, ``type``, ``op``);
entries with another ``id`` (``alias``, ``columnAlias``, ``attributes``) are not columns. Routes from older SDKs
carry no ``id`` at all and are read as columns.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

SDK_VERSION_CHANGES = ("1.7.7",)
COLUMN_TYPES = frozenset({"TEXT", "INTEGER", "BIGINT", "UNSIGNED BIGINT", "DOUBLE", "BLOB"})

Broadcast = Mapping[str, Mapping[str, Sequence[Mapping[str, str]]]]


@dataclass(frozen=True)
class ExtensionInfo:
    name: str
    version: str = ""
    sdk_version: str = ""
    min_sdk_version: str = ""


@dataclass(frozen=True)
class ExternalColumn:
    name: str
    type: str  # osquery's column type name, e.g. "TEXT", "BIGINT", "UNSIGNED BIGINT"


@dataclass(frozen=True)
class ExternalTable:
    name: str
    owner_uuid: int
    columns: tuple[ExternalColumn, ...]

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(column.name for column in self.columns)


@dataclass(frozen=True)
class Registration:
    uuid: int
    info: ExtensionInfo
    tables: tuple[ExternalTable, ...]
    registered_at: float


class RegistrationRefused(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _leading_number(chunk: str) -> int:
    digits = ""
    for char in chunk:
        if not char.isdigit():
            break
        digits += char
    return int(digits) if digits else 0


def version_at_least(required: str, version: str) -> bool:
    """osquery's ``versionAtLeast``: "0.0.0" on either side passes, missing trailing parts pass."""
    if required == "0.0.0" or version == "0.0.0":
        return True
    have = [part for part in version.split(".") if part]
    for index, chunk in enumerate(part for part in required.split(".") if part):
        if index >= len(have):
            return True
        mine, needed = _leading_number(have[index]), _leading_number(chunk)
        if mine != needed:
            return mine > needed
    return True


def route_columns(route: Sequence[Mapping[str, str]]) -> tuple[ExternalColumn, ...]:
    """The columns a table route declares (types outside osquery's set are read as TEXT)."""
    columns: list[ExternalColumn] = []
    for entry in route:
        if entry.get("id", "column") != "column" or not entry.get("name"):
            continue
        column_type = entry.get("type", "TEXT").upper().replace("_", " ")
        columns.append(ExternalColumn(entry["name"], column_type if column_type in COLUMN_TYPES else "TEXT"))
    return tuple(columns)


def _new_uuid() -> int:
    return random.randint(1, 0xFFFF)  # noqa: S311 - osquery's RouteUUID is a plain rand() truncated to 16 bits


class ExtensionRegistry:
    def __init__(
        self,
        reserved_tables: Iterable[str],
        *,
        clock: Callable[[], float] = time.monotonic,
        new_uuid: Callable[[], int] = _new_uuid,
    ) -> None:
        self._reserved = frozenset(name.lower() for name in reserved_tables)
        self._clock = clock
        self._new_uuid = new_uuid
        self._lock = threading.Lock()
        self._registrations: dict[int, Registration] = {}
        self.generation = 0

    def register(self, info: ExtensionInfo, broadcast: Broadcast) -> Registration:
        with self._lock:
            if any(existing.info.name == info.name for existing in self._registrations.values()):
                raise RegistrationRefused("Duplicate extension registered")
            for change in SDK_VERSION_CHANGES:
                if not version_at_least(change, info.sdk_version):
                    raise RegistrationRefused("Incompatible extension SDK version")
            uuid = self._new_uuid()
            while uuid == 0 or uuid in self._registrations:
                uuid = self._new_uuid()
            taken = self._reserved | {table.lower() for table in self._tables()}
            tables: list[ExternalTable] = []
            for name, route in broadcast.get("table", {}).items():
                columns = route_columns(route)
                if not name or not columns or name.lower() in taken:
                    raise RegistrationRefused("Failed adding registry broadcast")
                taken = taken | {name.lower()}
                tables.append(ExternalTable(name, uuid, columns))
            registration = Registration(uuid, info, tuple(tables), self._clock())
            self._registrations[uuid] = registration
            self.generation += 1
            return registration

    def deregister(self, uuid: int) -> Registration | None:
        with self._lock:
            removed = self._registrations.pop(uuid, None)
            if removed is not None:
                self.generation += 1
            return removed

    def registrations(self) -> list[Registration]:
        with self._lock:
            return list(self._registrations.values())

    def extensions(self) -> dict[int, ExtensionInfo]:
        with self._lock:
            return {uuid: registration.info for uuid, registration in self._registrations.items()}

    def tables(self) -> dict[str, ExternalTable]:
        with self._lock:
            return self._tables()

    def _tables(self) -> dict[str, ExternalTable]:
        return {table.name: table for registration in self._registrations.values() for table in registration.tables}
