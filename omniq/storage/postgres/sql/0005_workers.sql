-- OmniQ PostgreSQL schema, version 5: the registry of live worker pools (list_workers).
-- One row per registered pool: its msgpack WorkerInfo and when it lapses without a
-- heartbeat. Nothing else changes: an older store gains an empty table.

CREATE TABLE {s}.workers (
    id TEXT PRIMARY KEY,
    expires_ts DOUBLE PRECISION NOT NULL,
    data BYTEA NOT NULL
);
