-- OmniQ SQLite schema, version 4: a task's progress (what it reported with
-- current_task().progress), msgpack-encoded, in a column of its own: written a few times
-- a second by its worker, read with the task, deleted with it.

ALTER TABLE tasks ADD COLUMN progress BLOB;
