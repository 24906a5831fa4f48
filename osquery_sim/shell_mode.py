"""``osqueryd -S [--json] "SQL"``: one-shot queries against the sim's tables (what orbit runs at start-up).

With ``--database_path`` the instance id comes from (or is created in) that database, as osquery does, so
``osquery_info.instance_id`` matches what the daemon later uses.
"""

from __future__ import annotations

import os
import sys
import time

from osquery_sim.flag_rows import effective_flags
from osquery_sim.gflags import Flags
from osquery_sim.host_facts import identity_overrides
from osquery_sim.identity import machine_identity
from osquery_sim.shell import run_shell
from osquery_sim.sim_store import SimStore
from osquery_sim.table_rows import SimRuntime
from osquery_sim.tables import SimDatabase
from osquery_sim.version import SIM_VERSION


def run_shell_mode(flags: Flags) -> int:
    sql = " ".join(flags.positional).strip()
    if not sql:
        print("Error: the simulator's shell needs a SQL statement argument (no interactive shell)", file=sys.stderr)
        return 1
    instance_id = flags.string("sim_instance_id")
    if not instance_id:
        use_disk = flags.is_set("database_path") and not flags.boolean("ephemeral")
        store = SimStore.open(flags.string("database_path"), in_memory=not use_disk)
        try:
            instance_id = store.instance_id()
        finally:
            store.close()
    identity = machine_identity(identity_overrides(flags))
    runtime = SimRuntime(version=SIM_VERSION, instance_id=instance_id, pid=os.getpid(), start_time=int(time.time()))
    database = SimDatabase(identity, runtime, flags=effective_flags(flags))
    try:
        return run_shell(sql, database, json_output=flags.boolean("json"), out=sys.stdout, err=sys.stderr)
    finally:
        database.close()
