-- OmniQ SQLite schema, version 7: the earliest ready time of a queue in one index seek.
-- A waiting worker asks it before every wait (next_ready); through tasks_claim, ordered by
-- priority and due time, it read every claimable or delayed task of the queue: 15 ms at
-- 100,000 delayed tasks, growing with them (issue 37). This index costs each enqueue, claim
-- and ack one more entry to keep.

CREATE INDEX tasks_next_ready ON tasks (queue, ready_ts) WHERE ready_ts IS NOT NULL;
