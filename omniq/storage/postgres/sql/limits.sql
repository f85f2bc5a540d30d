-- Queries of the PostgreSQL backend's global limits (omniq.storage.postgres._limits), by
-- name; {s} is the schema.

-- name: lock
-- Claims under limits take turns (per schema) for their transaction: each counts the
-- starts and running tasks the others left.
SELECT pg_advisory_xact_lock(hashtext($1));

-- name: limits
SELECT key, spec FROM {s}.limits;

-- name: set_limit
INSERT INTO {s}.limits (key, spec) VALUES ($1, $2)
ON CONFLICT (key) DO UPDATE SET spec = EXCLUDED.spec;

-- name: set_limits
INSERT INTO {s}.limits (key, spec) SELECT * FROM unnest($1::text[], $2::text[])
ON CONFLICT (key) DO UPDATE SET spec = EXCLUDED.spec;

-- name: drop_limit
-- Its log goes too: no claim prunes a key without a limit.
WITH dropped AS (DELETE FROM {s}.limit_starts WHERE key = $1)
DELETE FROM {s}.limits WHERE key = $1;

-- name: name_tasks
UPDATE {s}.tasks AS t SET limit_name = n.name
FROM unnest($1::text[], $2::text[]) AS n(id, name) WHERE t.id = n.id;

-- name: candidates
-- One queue's claimable tasks in claim order (claim_one's scan), but those of names a
-- limit holds back ($3) and those this claim took already ($4).
SELECT seq, priority, due_ts, limit_name FROM {s}.tasks
WHERE queue = $1::text AND ready_ts IS NOT NULL AND (ready_ts <= $2) IS TRUE
  AND (limit_name IS NULL OR limit_name <> ALL($3::text[]))
  AND seq <> ALL($4::bigint[])
ORDER BY priority DESC, due_ts, seq
LIMIT $5
FOR UPDATE SKIP LOCKED;

-- name: claim_picked
UPDATE {s}.tasks AS t
SET status = 'running', worker_id = $2, lease_ts = $3, attempts = t.attempts + 1,
    lost_runs = t.lost_runs + (t.status = 'running')::int, updated_ts = $4
WHERE t.seq = ANY($1::bigint[])
RETURNING t.seq, t.id, t.status, t.priority, t.attempts, t.worker_id, t.lease_ts, t.due_ts,
    t.updated_ts, t.data, t.lost_runs;

-- name: starts
-- The key's log pruned of what left its window ($2), and what is left, oldest first.
WITH pruned AS (DELETE FROM {s}.limit_starts WHERE key = $1 AND ts <= $2)
SELECT ts FROM {s}.limit_starts WHERE key = $1 AND ts > $2 ORDER BY ts;

-- name: add_starts
INSERT INTO {s}.limit_starts (key, ts) SELECT * FROM unnest($1::text[], $2::float8[]);

-- name: running_in_queue
SELECT COUNT(*) FROM {s}.tasks WHERE queue = $1 AND status = 'running' AND lease_ts > $2;

-- name: running_of_name
SELECT COUNT(*) FROM {s}.tasks WHERE limit_name = $1 AND status = 'running' AND lease_ts > $2;

-- name: guard_head
-- The pieces that guard a claim statement of queries.sql (postgres/_limits.py, _guard):
-- it claims nothing while a limit is stored, and then ends with one row of NULLs.
WITH limited AS (SELECT EXISTS (SELECT 1 FROM {s}.limits) AS yes), picked AS (

-- name: guard_update
), claimed AS (
UPDATE {s}.tasks AS t

-- name: guard_where
FROM picked WHERE t.seq = picked.seq AND NOT (SELECT yes FROM limited)

-- name: guard_tail
) SELECT * FROM claimed
UNION ALL SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL
WHERE (SELECT yes FROM limited)
