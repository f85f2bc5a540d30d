-- OmniQ PostgreSQL schema, version 1. Every table lives in the namespace's own schema
-- ({s}, filled in by omniq.storage.postgres.connection), so applications share a database
-- safely.
-- Immutable task data lives in the msgspec-encoded blob; the fields that change while a
-- task lives live in columns. Times are epoch seconds (double precision), as in SQLite.

CREATE TABLE {s}.tasks (
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
CREATE INDEX tasks_claim ON {s}.tasks (queue, priority DESC, due_ts, seq)
    INCLUDE (ready_ts) WHERE ready_ts IS NOT NULL;
-- next_due_at: the earliest ready time of a queue.
CREATE INDEX tasks_ready ON {s}.tasks (queue, ready_ts) WHERE ready_ts IS NOT NULL;
-- stats, list (newest first) and cleanup.
CREATE INDEX tasks_queue_status ON {s}.tasks (queue, status, seq);
CREATE INDEX tasks_finished ON {s}.tasks (updated_ts)
    WHERE status IN ('complete', 'failed', 'cancelled', 'expired');

CREATE TABLE {s}.task_deps (
    depends_on TEXT NOT NULL,
    task_id TEXT NOT NULL,
    PRIMARY KEY (depends_on, task_id)
);
CREATE INDEX task_deps_task ON {s}.task_deps (task_id);

CREATE TABLE {s}.results (
    task_id TEXT PRIMARY KEY,
    expires_ts DOUBLE PRECISION,
    data BYTEA NOT NULL
);
CREATE INDEX results_expiry ON {s}.results (expires_ts) WHERE expires_ts IS NOT NULL;

CREATE TABLE {s}.events (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    task_id TEXT NOT NULL,
    ts DOUBLE PRECISION NOT NULL,
    data BYTEA NOT NULL
);
CREATE INDEX events_task ON {s}.events (task_id, id);
CREATE INDEX events_ts ON {s}.events (ts);

CREATE TABLE {s}.schedules (
    id TEXT PRIMARY KEY,
    next_run_ts DOUBLE PRECISION,
    paused BOOLEAN NOT NULL,
    data BYTEA NOT NULL
);
CREATE INDEX schedules_due ON {s}.schedules (next_run_ts)
    WHERE NOT paused AND next_run_ts IS NOT NULL;
