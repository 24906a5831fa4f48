"""The SQLite database: one connection, WAL mode, versioned migrations applied at start.

Every acknowledged write is committed before the response is sent. With WAL and ``synchronous=NORMAL`` a
committed transaction survives the process being killed (only an OS crash can lose the last transactions), which
is the guarantee the stub gives: a crash or ``kill -9`` loses nothing that was acknowledged.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

MIGRATIONS: tuple[str, ...] = (
    # 1: the initial schema
    """
    CREATE TABLE teams (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        agent_options TEXT,
        orbit_notifications TEXT NOT NULL DEFAULT '{}',
        source TEXT NOT NULL DEFAULT 'api'
    );
    CREATE TABLE enroll_secrets (
        secret TEXT PRIMARY KEY,
        team_id INTEGER REFERENCES teams(id) ON DELETE CASCADE,
        source TEXT NOT NULL DEFAULT 'api',
        created_at REAL NOT NULL
    );
    CREATE TABLE settings (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    CREATE TABLE hosts (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        osquery_host_id TEXT NOT NULL UNIQUE,
        uuid TEXT NOT NULL DEFAULT '',
        hardware_serial TEXT NOT NULL DEFAULT '',
        hardware_model TEXT NOT NULL DEFAULT '',
        hostname TEXT NOT NULL DEFAULT '',
        computer_name TEXT NOT NULL DEFAULT '',
        platform TEXT NOT NULL DEFAULT '',
        platform_like TEXT NOT NULL DEFAULT '',
        os_version TEXT NOT NULL DEFAULT '',
        osquery_version TEXT NOT NULL DEFAULT '',
        orbit_version TEXT NOT NULL DEFAULT '',
        team_id INTEGER REFERENCES teams(id) ON DELETE SET NULL,
        node_key TEXT UNIQUE,
        orbit_node_key TEXT UNIQUE,
        created_at REAL NOT NULL,
        seen_time REAL,
        osquery_enrolled_at REAL,
        orbit_enrolled_at REAL,
        detail_updated_at REAL,
        policy_updated_at REAL,
        distributed_interval INTEGER NOT NULL DEFAULT 0,
        config_tls_refresh INTEGER NOT NULL DEFAULT 0,
        logger_tls_period INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE device_tokens (
        host_id INTEGER PRIMARY KEY REFERENCES hosts(id) ON DELETE CASCADE,
        token TEXT NOT NULL UNIQUE,
        previous_token TEXT,
        updated_at REAL NOT NULL
    );
    CREATE TABLE log_counters (
        host_id INTEGER NOT NULL,
        log_type TEXT NOT NULL,
        lines INTEGER NOT NULL DEFAULT 0,
        bytes INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (host_id, log_type)
    );
    CREATE TABLE live_queries (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        host_id INTEGER NOT NULL,
        sql TEXT NOT NULL,
        state TEXT NOT NULL,
        created_at REAL NOT NULL,
        sent_at REAL,
        answered_at REAL,
        rows TEXT,
        error TEXT
    );
    CREATE INDEX live_queries_by_host ON live_queries(host_id, state);
    CREATE TABLE policies (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL UNIQUE,
        query TEXT NOT NULL,
        description TEXT NOT NULL DEFAULT '',
        resolution TEXT NOT NULL DEFAULT '',
        platform TEXT NOT NULL DEFAULT '',
        team_id INTEGER REFERENCES teams(id) ON DELETE CASCADE,
        source TEXT NOT NULL DEFAULT 'api',
        updated_at REAL NOT NULL
    );
    CREATE TABLE policy_results (
        host_id INTEGER NOT NULL REFERENCES hosts(id) ON DELETE CASCADE,
        policy_id INTEGER NOT NULL REFERENCES policies(id) ON DELETE CASCADE,
        passes INTEGER,
        updated_at REAL NOT NULL,
        PRIMARY KEY (host_id, policy_id)
    );
    CREATE TABLE scripts (
        execution_id TEXT PRIMARY KEY,
        host_id INTEGER NOT NULL REFERENCES hosts(id) ON DELETE CASCADE,
        contents TEXT NOT NULL,
        timeout INTEGER,
        created_at REAL NOT NULL,
        exit_code INTEGER,
        output TEXT NOT NULL DEFAULT '',
        runtime INTEGER NOT NULL DEFAULT 0,
        completed_at REAL
    );
    CREATE TABLE carves (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        session_id TEXT NOT NULL UNIQUE,
        host_id INTEGER NOT NULL,
        carve_id TEXT NOT NULL,
        request_id TEXT NOT NULL,
        block_count INTEGER NOT NULL,
        block_size INTEGER NOT NULL,
        carve_size INTEGER NOT NULL,
        max_block INTEGER NOT NULL DEFAULT -1,
        created_at REAL NOT NULL,
        completed_at REAL
    );
    CREATE TABLE debug_errors (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        host_id INTEGER NOT NULL,
        received_at REAL NOT NULL,
        body TEXT NOT NULL
    );
    """,
    # issue 18: staged rollouts, update outcomes reported by orbit, osqueryd restarts on demand (docs/adr/0017)
    """
    CREATE TABLE rollouts (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL UNIQUE,
        target TEXT NOT NULL,
        version TEXT NOT NULL,
        from_version TEXT NOT NULL,
        team_ids TEXT,
        waves TEXT NOT NULL,
        soak_seconds INTEGER NOT NULL,
        max_failed_percent REAL NOT NULL,
        min_healthy_percent REAL NOT NULL,
        platforms TEXT NOT NULL DEFAULT '[]',
        state TEXT NOT NULL,
        current_wave INTEGER NOT NULL DEFAULT 0,
        wave_started_at REAL NOT NULL,
        halt_reason TEXT,
        source TEXT NOT NULL DEFAULT 'api',
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE TABLE rollout_events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        rollout_id INTEGER NOT NULL REFERENCES rollouts(id) ON DELETE CASCADE,
        at REAL NOT NULL,
        event TEXT NOT NULL,
        detail TEXT
    );
    CREATE INDEX rollout_events_by_rollout ON rollout_events(rollout_id, id);
    CREATE TABLE update_outcomes (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        host_id INTEGER NOT NULL REFERENCES hosts(id) ON DELETE CASCADE,
        outcome_id TEXT NOT NULL,
        target TEXT NOT NULL,
        version TEXT NOT NULL,
        previous_version TEXT,
        channel TEXT NOT NULL,
        outcome TEXT NOT NULL,
        reason TEXT,
        at TEXT NOT NULL,
        received_at REAL NOT NULL,
        UNIQUE (host_id, outcome_id)
    );
    CREATE INDEX update_outcomes_by_host ON update_outcomes(host_id, id);
    CREATE TABLE host_target_versions (
        host_id INTEGER NOT NULL REFERENCES hosts(id) ON DELETE CASCADE,
        target TEXT NOT NULL,
        version TEXT NOT NULL,
        health TEXT,
        updated_at REAL NOT NULL,
        PRIMARY KEY (host_id, target, version)
    );
    CREATE INDEX host_target_versions_by_version ON host_target_versions(target, version);
    CREATE TABLE host_targets (
        host_id INTEGER NOT NULL REFERENCES hosts(id) ON DELETE CASCADE,
        target TEXT NOT NULL,
        running_version TEXT,
        updated_at REAL NOT NULL,
        PRIMARY KEY (host_id, target)
    );
    CREATE TABLE osqueryd_restarts (
        request_id TEXT NOT NULL,
        host_id INTEGER NOT NULL REFERENCES hosts(id) ON DELETE CASCADE,
        created_at REAL NOT NULL,
        state TEXT NOT NULL,
        error TEXT,
        answered_at REAL,
        PRIMARY KEY (request_id, host_id)
    );
    CREATE INDEX osqueryd_restarts_pending ON osqueryd_restarts(host_id) WHERE state = 'pending';
    """,
    # 3: the admin console (issue 20): Fleet Desktop's version, observed version changes, indexes for sorted pages
    """
    ALTER TABLE hosts ADD COLUMN desktop_version TEXT NOT NULL DEFAULT '';
    CREATE INDEX hosts_by_hostname ON hosts(hostname, id);
    CREATE INDEX hosts_by_platform ON hosts(platform, id);
    CREATE INDEX hosts_by_team ON hosts(team_id, id);
    CREATE INDEX hosts_by_seen_time ON hosts(seen_time, id);
    CREATE INDEX hosts_by_orbit_version ON hosts(orbit_version, id);
    CREATE INDEX hosts_by_osquery_version ON hosts(osquery_version, id);
    CREATE INDEX hosts_by_desktop_version ON hosts(desktop_version, id);
    CREATE INDEX policy_results_failing ON policy_results(host_id) WHERE passes = 0;
    CREATE INDEX scripts_by_host ON scripts(host_id, created_at);
    CREATE TABLE host_version_changes (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        host_id INTEGER NOT NULL REFERENCES hosts(id) ON DELETE CASCADE,
        target TEXT NOT NULL,
        version TEXT NOT NULL,
        previous_version TEXT NOT NULL DEFAULT '',
        seen_at REAL NOT NULL
    );
    CREATE INDEX host_version_changes_by_host ON host_version_changes(host_id, id);
    """,
    # 4: state every worker process must share (ADR 0019, "Rollouts and the console across workers"): console
    # sessions, the rollouts' generation (bumped with every change, so other processes know to re-read), and a
    # revision per rollout (each transition is applied only to the row it was decided from)
    """
    CREATE TABLE console_sessions (
        key TEXT PRIMARY KEY,
        csrf_token TEXT NOT NULL,
        created_at REAL NOT NULL,
        last_used REAL NOT NULL
    );
    CREATE INDEX console_sessions_by_use ON console_sessions(last_used);
    CREATE TABLE rollout_generation (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        generation INTEGER NOT NULL
    );
    INSERT INTO rollout_generation (id, generation) VALUES (1, 0);
    ALTER TABLE rollouts ADD COLUMN revision INTEGER NOT NULL DEFAULT 0;
    """,
)


def open_database(path: Path) -> sqlite3.Connection:
    """Open (creating if needed) the database at ``path`` and bring its schema up to date."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA busy_timeout=5000")
    migrate(conn)
    return conn


def schema_version(conn: sqlite3.Connection) -> int:
    row = conn.execute("PRAGMA user_version").fetchone()
    return int(row[0])


def migrate(conn: sqlite3.Connection) -> None:
    current = schema_version(conn)
    if current > len(MIGRATIONS):
        raise RuntimeError(
            f"database schema version {current} is newer than this fleet-stub understands ({len(MIGRATIONS)})"
        )
    for version in range(current + 1, len(MIGRATIONS) + 1):
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in _split_statements(MIGRATIONS[version - 1]):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version={version}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise


def _split_statements(script: str) -> list[str]:
    return [part.strip() for part in script.split(";") if part.strip()]
