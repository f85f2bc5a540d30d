-- OmniQ PostgreSQL schema, version 6: tasks' progress (what a task reported with
-- current_task().progress), msgpack-encoded, in a table of its own: its frequent writes
-- neither rewrite nor lock the task rows claims and acks work on, and the foreign key
-- deletes it with its task and refuses one for a task that is gone.

CREATE TABLE {s}.task_progress (
    task_id TEXT PRIMARY KEY REFERENCES {s}.tasks (id) ON DELETE CASCADE,
    data BYTEA NOT NULL
);
