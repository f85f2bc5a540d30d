-- OmniQ PostgreSQL schema, version 4: runs lost with their worker are counted apart.
-- A claim that takes a task whose lease ran out (its worker died, or stalled) counts
-- one; such runs do not use up max_retries, and past max_lost_runs the task fails.

ALTER TABLE {s}.tasks ADD COLUMN lost_runs INTEGER NOT NULL DEFAULT 0;
