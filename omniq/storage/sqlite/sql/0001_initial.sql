-- OmniQ SQLite schema, version 1.
-- Immutable task data lives in the msgspec-encoded blob; the fields that change while a
-- task lives live in columns. Times are REAL epoch seconds.

CREATE TABLE tasks (
    seq INTEGER PRIMARY KEY,          -- rowid: enqueue order
    id TEXT NOT NULL UNIQUE,
    queue TEXT NOT NULL,
    status TEXT NOT NULL,
    priority INTEGER NOT NULL,
    due_ts REAL NOT NULL,             -- due_at, or created_at when the task has none
    lease_ts REAL,
    worker_id TEXT,
    attempts INTEGER NOT NULL,
    has_deps INTEGER NOT NULL,
    updated_ts REAL NOT NULL,         -- updated_at, or created_at
    data BLOB NOT NULL,
    -- When the task becomes claimable (NULL: never, as it stands): the one "claimable" rule
    -- of omniq.storage.base, computed by SQLite so no statement can forget it.
    ready_ts REAL GENERATED ALWAYS AS (
        CASE
            WHEN status IN ('pending', 'retrying') THEN due_ts
            WHEN status = 'scheduled' AND has_deps = 0 THEN due_ts
            WHEN status = 'running' THEN lease_ts
        END
    ) VIRTUAL
);

-- Claim order within a queue; only rows that are or will become claimable are indexed.
-- It covers next_due_at too. Every index costs each claim and ack, so there are few:
-- cleanup (delete_finished) scans the table.
CREATE INDEX tasks_claim ON tasks (queue, priority DESC, due_ts, seq, ready_ts)
    WHERE ready_ts IS NOT NULL;
-- stats and list (the implicit rowid suffix gives newest-first order).
CREATE INDEX tasks_queue_status ON tasks (queue, status);

CREATE TABLE task_deps (
    depends_on TEXT NOT NULL,
    task_id TEXT NOT NULL,
    PRIMARY KEY (depends_on, task_id)
) WITHOUT ROWID;
CREATE INDEX task_deps_task ON task_deps (task_id);

CREATE TABLE results (
    task_id TEXT PRIMARY KEY,
    expires_ts REAL,
    data BLOB NOT NULL
);
CREATE INDEX results_expiry ON results (expires_ts) WHERE expires_ts IS NOT NULL;

CREATE TABLE events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id TEXT NOT NULL,
    ts REAL NOT NULL,
    data BLOB NOT NULL
);
CREATE INDEX events_task ON events (task_id);
CREATE INDEX events_ts ON events (ts);

CREATE TABLE schedules (
    id TEXT PRIMARY KEY,
    next_run_ts REAL,
    paused INTEGER NOT NULL,
    data BLOB NOT NULL
);
CREATE INDEX schedules_due ON schedules (next_run_ts) WHERE paused = 0 AND next_run_ts IS NOT NULL;
