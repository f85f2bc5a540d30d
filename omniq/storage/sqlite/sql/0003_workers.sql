-- OmniQ SQLite schema, version 3: the registry of live worker pools (list_workers).
-- One row per registered pool: its msgpack WorkerInfo and when it lapses without a
-- heartbeat. Nothing else changes: an older store gains an empty table.

CREATE TABLE workers (
    id TEXT PRIMARY KEY,
    expires_ts REAL NOT NULL,
    data BLOB NOT NULL
);
