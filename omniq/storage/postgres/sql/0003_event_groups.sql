-- OmniQ PostgreSQL schema, version 3: the events a bulk enqueue logs are stored once for
-- the batch. The tasks of an enqueue_many all log the same ENQUEUED event but for their
-- ids; a row and an index entry per task were most of the cost of the event log on that
-- path. A group holds the batch's events (their records without a task id); each task
-- points at it, and a deleted task's events move to rows of their own first (so the event
-- log outlives the task). `tasks` counts the tasks still pointing at the group, so that
-- retention counts each task's event once.

-- The enqueue statement draws a group's id before it stores the tasks that point at it.
CREATE SEQUENCE {s}.event_group_ids;
CREATE TABLE {s}.event_groups (
    id BIGINT PRIMARY KEY,
    ts DOUBLE PRECISION NOT NULL,           -- its oldest event
    tasks INTEGER NOT NULL,
    stamps DOUBLE PRECISION[] NOT NULL,     -- each event's time, in the order logged
    data BYTEA[] NOT NULL
);
CREATE INDEX event_groups_ts ON {s}.event_groups USING brin (ts);

ALTER TABLE {s}.tasks ADD COLUMN event_group BIGINT;
