-- OmniQ PostgreSQL schema, version 1. Every table lives in the namespace's own schema
-- ({schema}, filled in by omniq.backend.postgres), so applications share a database safely.
-- Immutable task data lives in the msgspec-encoded blob; the fields that change while a
-- task lives live in columns. Times are epoch seconds (double precision), as in SQLite.

CREATE TABLE {schema}.tasks (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,  -- enqueue order
    id TEXT NOT NULL UNIQUE,
    queue TEXT NOT NULL,
    status TEXT NOT NULL,
    priority INTEGER NOT NULL,
    due_ts DOUBLE PRECISION NOT NULL,   -- due_at, or created_at when the task has none
    lease_ts DOUBLE PRECISION,
    worker_id TEXT,
    attempts INTEGER NOT NULL,
    has_deps BOOLEAN NOT NULL,
    updated_ts DOUBLE PRECISION NOT NULL,
    data BYTEA NOT NULL,
    -- When the task becomes claimable (NULL: never, as it stands): the one "claimable" rule
    -- of omniq.storage.base, computed by PostgreSQL so no statement can forget it.
    ready_ts DOUBLE PRECISION GENERATED ALWAYS AS (
        CASE
            WHEN status IN ('pending', 'retrying') THEN due_ts
            WHEN status = 'scheduled' AND NOT has_deps THEN due_ts
            WHEN status = 'running' THEN lease_ts
        END
    ) STORED
);

-- Claim order within a queue; only rows that are or will become claimable are indexed,
-- so finished tasks cost the claim nothing.
CREATE INDEX tasks_claim ON {schema}.tasks (queue, priority DESC, due_ts, seq)
    INCLUDE (ready_ts) WHERE ready_ts IS NOT NULL;
-- next_due_at: the earliest ready time of a queue.
CREATE INDEX tasks_ready ON {schema}.tasks (queue, ready_ts) WHERE ready_ts IS NOT NULL;
-- stats, list (newest first) and cleanup.
CREATE INDEX tasks_queue_status ON {schema}.tasks (queue, status, seq);
CREATE INDEX tasks_finished ON {schema}.tasks (updated_ts)
    WHERE status IN ('complete', 'failed', 'cancelled', 'expired');

CREATE TABLE {schema}.task_deps (
    depends_on TEXT NOT NULL,
    task_id TEXT NOT NULL,
    PRIMARY KEY (depends_on, task_id)
);
CREATE INDEX task_deps_task ON {schema}.task_deps (task_id);

CREATE TABLE {schema}.results (
    task_id TEXT PRIMARY KEY,
    expires_ts DOUBLE PRECISION,
    data BYTEA NOT NULL
);
CREATE INDEX results_expiry ON {schema}.results (expires_ts) WHERE expires_ts IS NOT NULL;

CREATE TABLE {schema}.events (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    task_id TEXT NOT NULL,
    ts DOUBLE PRECISION NOT NULL,
    data BYTEA NOT NULL
);
CREATE INDEX events_task ON {schema}.events (task_id, id);
CREATE INDEX events_ts ON {schema}.events (ts);

CREATE TABLE {schema}.schedules (
    id TEXT PRIMARY KEY,
    next_run_ts DOUBLE PRECISION,
    paused BOOLEAN NOT NULL,
    data BYTEA NOT NULL
);
CREATE INDEX schedules_due ON {schema}.schedules (next_run_ts)
    WHERE NOT paused AND next_run_ts IS NOT NULL;
