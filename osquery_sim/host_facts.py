"""The simulated host's facts, assembled once at start: identity (real machine + ``--sim_*`` overrides),
instance id (from the database), the table database, and the ``host_details`` sent with enrollment.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass

from osquery_sim.flag_rows import effective_flags
from osquery_sim.gflags import Flags
from osquery_sim.identity import SimIdentity, machine_identity
from osquery_sim.sim_store import SimStore
from osquery_sim.table_rows import SimRuntime
from osquery_sim.tables import QueryError, SimDatabase

log = logging.getLogger(__name__)

OVERRIDE_FLAGS = {
    "sim_uuid": "uuid",
    "sim_hostname": "hostname",
    "sim_computer_name": "computer_name",
    "sim_hardware_serial": "hardware_serial",
    "sim_hardware_model": "hardware_model",
    "sim_hardware_vendor": "hardware_vendor",
    "sim_os_platform": "os_platform",
    "sim_os_name": "os_name",
    "sim_os_version": "os_version",
}
HOST_DETAIL_TABLES = ("os_version", "osquery_info", "system_info", "platform_info")


def identity_overrides(flags: Flags) -> dict[str, str]:
    return {key: flags.string(flag) for flag, key in OVERRIDE_FLAGS.items() if flags.string(flag)}


@dataclass(frozen=True)
class HostFacts:
    identity: SimIdentity
    instance_id: str
    database: SimDatabase
    runtime: SimRuntime

    def host_details(self) -> dict[str, dict[str, str]]:
        """The first row of each host-details table, as osqueryd sends them when enrolling."""
        details: dict[str, dict[str, str]] = {}
        for table in HOST_DETAIL_TABLES:
            try:
                rows = self.database.query(f"SELECT * FROM {table} LIMIT 1")
            except QueryError as exc:
                log.debug("event=host_details_table_skipped table=%s error=%s", table, exc)
                rows = []
            if rows:
                details[table] = rows[0]
        return details


def build_host_facts(flags: Flags, store: SimStore, version: str) -> HostFacts:
    identity = machine_identity(identity_overrides(flags))
    instance_id = flags.string("sim_instance_id") or store.instance_id()
    runtime = SimRuntime(version=version, instance_id=instance_id, pid=os.getpid(), start_time=int(time.time()))
    return HostFacts(
        identity=identity,
        instance_id=instance_id,
        database=SimDatabase(identity, runtime, flags=effective_flags(flags)),
        runtime=runtime,
    )
