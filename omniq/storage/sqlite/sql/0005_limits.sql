-- OmniQ SQLite schema, version 3: global limits (SPEC §8 "Limits", omniq._limits).
-- limits: the stored limit of each key (q:<queue> from limit_queue, t:<func> noted before
-- tasks carrying it are stored); while it is empty, claims run as before.
-- limit_starts: the sliding log of start times of each rate-limited key.
-- tasks.limit_name: the task's name when it carries a limit (NULL otherwise: the index
-- below holds no row of a task without one).

CREATE TABLE limits (key TEXT PRIMARY KEY, spec TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE limit_starts (key TEXT NOT NULL, ts REAL NOT NULL);
CREATE INDEX limit_starts_key ON limit_starts (key, ts);
ALTER TABLE tasks ADD COLUMN limit_name TEXT;
CREATE INDEX tasks_limited ON tasks (limit_name, status, lease_ts) WHERE limit_name IS NOT NULL;
