-- Every statement OmniQ sends to PostgreSQL, by name (loaded by omniq.storage._sql).
--
-- {s} is the namespace's schema, quoted, filled in once per connection; it is the only
-- fragment, so a statement reads here as it runs. A comment about a statement goes under
-- its name line (what comes before a name line belongs to the statement above it).
-- Each operation is one statement, so one round trip and its own transaction; times are
-- epoch seconds. A task row is always selected as: seq, id, status, priority, attempts,
-- worker_id, lease_ts, due_ts, updated_ts, data, lost_runs (omniq/storage/_rows.py).


-- name: lock_migrations
-- Concurrent first connects to a database queue here (the lock ends with the transaction).
SELECT pg_advisory_xact_lock(hashtext($1));

-- name: create_schema
CREATE SCHEMA IF NOT EXISTS {s};

-- name: create_version_table
CREATE TABLE IF NOT EXISTS {s}.schema_version
    (version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now());

-- name: schema_version
SELECT max(version) FROM {s}.schema_version;

-- name: record_version
INSERT INTO {s}.schema_version (version) VALUES ($1);


-- name: enqueue
-- Tasks as column arrays ($1..$11), their dependencies ($12, $13) and the events of the
-- tasks stored ($14..$16), then the NOTIFY that wakes workers ($17), committed together.
WITH new AS (
    INSERT INTO {s}.tasks (id, queue, status, priority, due_ts, lease_ts, worker_id,
                            attempts, has_deps, updated_ts, data)
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::int[], $5::float8[],
                         $6::float8[], $7::text[], $8::int[], $9::bool[], $10::float8[],
                         $11::bytea[])
    ON CONFLICT (id) DO NOTHING
    RETURNING id
), deps AS (
    INSERT INTO {s}.task_deps (depends_on, task_id)
    SELECT * FROM unnest($12::text[], $13::text[])
    ON CONFLICT DO NOTHING
), logged AS (
    INSERT INTO {s}.events (task_id, ts, data)
    SELECT e.task_id, e.ts, e.data
    FROM unnest($14::text[], $15::float8[], $16::bytea[]) WITH ORDINALITY AS e(task_id, ts, data, n)
    WHERE e.task_id IN (SELECT id FROM new)
    ORDER BY e.n
)
SELECT pg_notify($17, '') FROM (SELECT 1 FROM new LIMIT 1) AS stored;

-- name: enqueue_uniform
-- The same, for a batch whose tasks differ only in id and data (enqueue_many, and any
-- single task without dependencies): the shared columns go once, as scalars. asyncpg
-- encodes an array element by element, with a few abstract-class checks each: for 1,000
-- tasks, 2 arrays of 1,000 instead of 16 halve the client's work.
WITH new AS (
    INSERT INTO {s}.tasks (id, queue, status, priority, due_ts, lease_ts, worker_id,
                            attempts, has_deps, updated_ts, data)
    SELECT t.id, $3, $4, $5, $6, $7, $8, $9, $10, $11, t.data
    FROM unnest($1::text[], $2::bytea[]) AS t(id, data)
    ON CONFLICT (id) DO NOTHING
    RETURNING id
)
SELECT pg_notify($12, '') FROM (SELECT 1 FROM new LIMIT 1) AS stored;

-- name: enqueue_uniform_logged
-- A uniform batch with its events: they are the same for every task but for the id, so
-- they are stored once, as an event group the new tasks point at (schema version 3),
-- their records without the task id (readers put it back).
WITH grp AS MATERIALIZED (
    SELECT nextval('{s}.event_group_ids') AS id
), new AS (
    INSERT INTO {s}.tasks (id, queue, status, priority, due_ts, lease_ts, worker_id,
                            attempts, has_deps, updated_ts, data, event_group)
    SELECT t.id, $3, $4, $5, $6, $7, $8, $9, $10, $11, t.data, grp.id
    FROM unnest($1::text[], $2::bytea[]) AS t(id, data), grp
    ON CONFLICT (id) DO NOTHING
    RETURNING id
), logged AS (
    INSERT INTO {s}.event_groups (id, ts, tasks, stamps, data)
    SELECT grp.id, (SELECT min(stamp) FROM unnest($12::float8[]) AS stamp), stored.n, $12, $13
    FROM grp, (SELECT count(*) AS n FROM new) AS stored
    WHERE stored.n > 0
)
SELECT pg_notify($14, '') FROM (SELECT 1 FROM new LIMIT 1) AS stored;

-- name: claim_one
-- A claim of one queue ($1) should be an ordered scan of tasks_claim that stops after
-- LIMIT rows. The planner took another path whenever tasks_ready looked cheaper: a bitmap
-- scan of every ready row of the queue, then a sort, per claim (9 ms with 10,000 ready
-- against 0.3 ms; a fresh table, before autovacuum's first ANALYZE, always looked that
-- way). So the readiness test is written so that no index can take it ("IS TRUE"), and
-- the queue is matched with "=" ("= ANY(array)" cannot give PostgreSQL 15 an ordered
-- scan). The scan walks past the queue's running tasks and past not-yet-due tasks of a
-- higher priority than the ready ones; both are few in the usual queue.
-- A claim that takes a task whose lease ran out (status still 'running') counts a lost run.
WITH picked AS (
    SELECT seq FROM {s}.tasks
    WHERE queue = $1::text AND ready_ts IS NOT NULL AND (ready_ts <= $2) IS TRUE
    ORDER BY priority DESC, due_ts, seq
    LIMIT $3
    FOR UPDATE SKIP LOCKED
)
UPDATE {s}.tasks AS t
SET status = 'running', worker_id = $4, lease_ts = $5, attempts = t.attempts + 1,
    lost_runs = t.lost_runs + (t.status = 'running')::int, updated_ts = $2
FROM picked WHERE t.seq = picked.seq
RETURNING t.seq, t.id, t.status, t.priority, t.attempts, t.worker_id, t.lease_ts, t.due_ts,
    t.updated_ts, t.data, t.lost_runs;

-- name: claim_any
-- A claim of several queues ($1) merged by priority, due time and enqueue order: the
-- claim_one statement with the queues matched by "= ANY", which scans every ready row of
-- them and sorts (see claim_in_list_order for a claim that keeps the ordered scans).
WITH picked AS (
    SELECT seq FROM {s}.tasks
    WHERE queue = ANY($1::text[]) AND ready_ts IS NOT NULL AND ready_ts <= $2
    ORDER BY priority DESC, due_ts, seq
    LIMIT $3
    FOR UPDATE SKIP LOCKED
)
UPDATE {s}.tasks AS t
SET status = 'running', worker_id = $4, lease_ts = $5, attempts = t.attempts + 1,
    lost_runs = t.lost_runs + (t.status = 'running')::int, updated_ts = $2
FROM picked WHERE t.seq = picked.seq
RETURNING t.seq, t.id, t.status, t.priority, t.attempts, t.worker_id, t.lease_ts, t.due_ts,
    t.updated_ts, t.data, t.lost_runs;

-- name: claim_in_list_order
-- A strict claim (queue_order="strict": the worker's list order first) keeps what
-- claim_one's comment is about: per queue, an ordered scan of tasks_claim matched with "="
-- that stops after LIMIT rows, here one per queue through a LATERAL join over the array
-- WITH ORDINALITY, in list order. EXPLAIN ANALYZE (PostgreSQL 15, 10,000 ready tasks in
-- "high" and "low", limit 8, 5 runs each): 0.16-0.38 ms whether the tasks are split
-- 5,000/5,000, 0/10,000 or 3/10,000, where the merged "= ANY" form of claim_any takes
-- 3-15 ms (a scan of every ready row, then a sort). Claiming queue by queue from the
-- client would use the same scans but cost a round trip for each queue that falls short.
-- The outer ORDER BY is the rank alone, on purpose: PostgreSQL knows an ordinality column
-- is sorted, so no Sort node comes between the LIMIT and the nested loop, which hands out
-- each queue's rows in its sub-query's index order and locks a row only when the LIMIT
-- takes it. With the full key (rank, priority, due, seq) an Incremental Sort appears
-- instead, which reads (and locks, until the statement ends) rows of the next queues to
-- fill its first batch: 11 rows locked for 8 taken with 3 ready in "high".
WITH picked AS (
    SELECT c.seq FROM unnest($1::text[]) WITH ORDINALITY AS q(name, rank)
    CROSS JOIN LATERAL (
        SELECT seq FROM {s}.tasks
        WHERE queue = q.name AND ready_ts IS NOT NULL AND (ready_ts <= $2) IS TRUE
        ORDER BY priority DESC, due_ts, seq
        LIMIT $3
        FOR UPDATE SKIP LOCKED
    ) AS c
    ORDER BY q.rank
    LIMIT $3
)
UPDATE {s}.tasks AS t
SET status = 'running', worker_id = $4, lease_ts = $5, attempts = t.attempts + 1,
    lost_runs = t.lost_runs + (t.status = 'running')::int, updated_ts = $2
FROM picked WHERE t.seq = picked.seq
RETURNING t.seq, t.id, t.status, t.priority, t.attempts, t.worker_id, t.lease_ts, t.due_ts,
    t.updated_ts, t.data, t.lost_runs;

-- name: renew
UPDATE {s}.tasks SET lease_ts = $1, updated_ts = $2
WHERE id = ANY($3::text[]) AND worker_id = $4 AND status = 'running'
RETURNING id;

-- name: ack
-- ``unrun`` is 1 for an ack whose claim did not run the task (``Ack.ran`` is False).
UPDATE {s}.tasks AS t SET status = a.status, lease_ts = NULL, updated_ts = $5,
    attempts = t.attempts - a.unrun
FROM unnest($1::text[], $2::text[], $3::text[], $4::int[]) AS a(id, worker, status, unrun)
WHERE t.id = a.id AND t.worker_id = a.worker AND t.status = 'running'
RETURNING t.id, a.worker, a.status;

-- name: finish
-- Acks (the ack statement, $1..$5), and the results ($6..$8) and events ($9..$11) of the
-- tasks they finished, in one statement: a task its worker no longer holds (cancelled, or
-- taken over) keeps the outcome that won. The results stored are announced on $12 as
-- put_results does; the rows of the acks come first, then one NULL row per notification.
WITH acked AS (
    UPDATE {s}.tasks AS t SET status = a.status, lease_ts = NULL, updated_ts = $5,
        attempts = t.attempts - a.unrun
    FROM unnest($1::text[], $2::text[], $3::text[], $4::int[]) AS a(id, worker, status, unrun)
    WHERE t.id = a.id AND t.worker_id = a.worker AND t.status = 'running'
    RETURNING t.id, a.worker, a.status
), put AS (
    INSERT INTO {s}.results (task_id, expires_ts, data)
    SELECT r.task_id, r.expires_ts, r.data
    FROM unnest($6::text[], $7::float8[], $8::bytea[]) AS r(task_id, expires_ts, data)
    WHERE r.task_id IN (SELECT id FROM acked)
    ON CONFLICT (task_id) DO UPDATE SET expires_ts = EXCLUDED.expires_ts, data = EXCLUDED.data
    RETURNING task_id
), logged AS (
    INSERT INTO {s}.events (task_id, ts, data)
    SELECT e.task_id, e.ts, e.data
    FROM unnest($9::text[], $10::float8[], $11::bytea[])
        WITH ORDINALITY AS e(task_id, ts, data, n)
    WHERE e.task_id IN (SELECT id FROM acked)
    ORDER BY e.n
)
SELECT id, worker, status FROM acked
UNION ALL
SELECT NULL, NULL, NULL FROM (
    SELECT pg_notify($12, string_agg(task_id, E'\n'))
    FROM (
        SELECT task_id,
               sum(octet_length(task_id) + 1) OVER (ROWS UNBOUNDED PRECEDING) / 6000 AS chunk
        FROM put
    ) AS stored
    GROUP BY chunk
) AS announced;

-- name: retry
WITH moved AS (
    UPDATE {s}.tasks SET status = 'retrying', due_ts = $1, lease_ts = NULL, updated_ts = $2
    WHERE id = $3 AND worker_id = $4 AND status = 'running'
    RETURNING id
)
SELECT id, pg_notify($5, '') FROM moved;

-- name: release
-- A task handed back gets back the attempt its claim counted.
WITH released AS (
    UPDATE {s}.tasks
    SET status = CASE WHEN attempts > 1 THEN 'retrying' ELSE 'pending' END,
        attempts = GREATEST(attempts - 1, 0), lease_ts = NULL, worker_id = NULL,
        updated_ts = $1
    WHERE id = ANY($2::text[]) AND worker_id = $3 AND status = 'running'
    RETURNING id
)
SELECT id, pg_notify($4, '') FROM released;

-- name: transition
-- A compare-and-set of one task's status. A task made claimable wakes workers ($6 on
-- $7). A task taken from its worker (a cancel, $8) is announced on the cancel channel
-- ($9) as "worker\nid", so that worker stops it at once. The worker of a task's last run
-- stays on its row: a waiting task's old worker hears too, and finds nothing of it running.
WITH moved AS (
    UPDATE {s}.tasks
    SET status = $1, due_ts = COALESCE($2, due_ts), lease_ts = NULL, updated_ts = $3
    WHERE id = $4 AND status = ANY($5::text[])
    RETURNING seq, id, status, priority, attempts, worker_id, lease_ts, due_ts, updated_ts,
        data, lost_runs
)
SELECT moved.*,
       CASE WHEN $6 THEN pg_notify($7, '') END,
       CASE WHEN $8 AND moved.worker_id IS NOT NULL
            THEN pg_notify($9, moved.worker_id || E'\n' || moved.id) END
FROM moved;

-- name: get_tasks
SELECT seq, id, status, priority, attempts, worker_id, lease_ts, due_ts, updated_ts, data,
    lost_runs
FROM {s}.tasks WHERE id = ANY($1::text[]);

-- name: list_tasks
SELECT seq, id, status, priority, attempts, worker_id, lease_ts, due_ts, updated_ts, data,
    lost_runs
FROM {s}.tasks
WHERE ($1::text IS NULL OR queue = $1) AND ($2::text IS NULL OR status = $2)
ORDER BY seq DESC LIMIT $3;

-- name: queue_of_task
SELECT queue FROM {s}.tasks WHERE seq = $1;

-- name: count_tasks
SELECT queue, status, count(*) FROM {s}.tasks GROUP BY queue, status;

-- name: dependents
SELECT d.depends_on, t.seq, t.id, t.status, t.priority, t.attempts, t.worker_id, t.lease_ts,
    t.due_ts, t.updated_ts, t.data, t.lost_runs
FROM {s}.task_deps AS d JOIN {s}.tasks AS t ON t.id = d.task_id
WHERE d.depends_on = ANY($1::text[]) ORDER BY t.seq;

-- name: next_due
-- Each queue's first entry of tasks_ready, then the earliest of those: min() over
-- queue = ANY(...) read every ready or delayed task (290-540 ms at a million; issue 37).
SELECT min(first.ready_ts)
FROM unnest($1::text[]) AS q (name)
CROSS JOIN LATERAL (
    SELECT t.ready_ts FROM {s}.tasks AS t
    WHERE t.queue = q.name AND t.ready_ts IS NOT NULL
    ORDER BY t.ready_ts LIMIT 1
) AS first;

-- name: delete_finished
-- The events a deleted task's enqueue stored in a group move to rows of their own first
-- (the event log outlives the task); a group no task points at any more goes.
WITH gone AS (
    DELETE FROM {s}.tasks
    WHERE status IN ('complete', 'failed', 'cancelled', 'expired') AND updated_ts < $1
    RETURNING id, event_group
), deps AS (
    DELETE FROM {s}.task_deps WHERE task_id IN (SELECT id FROM gone)
), pointing AS (
    SELECT event_group AS id, count(*) AS n FROM gone
    WHERE event_group IS NOT NULL GROUP BY event_group
), moved AS (
    INSERT INTO {s}.events (task_id, ts, data)
    SELECT gone.id, e.ts, e.data
    FROM gone JOIN {s}.event_groups AS g ON g.id = gone.event_group
    CROSS JOIN LATERAL unnest(g.stamps, g.data) WITH ORDINALITY AS e(ts, data, n)
    ORDER BY gone.id, e.n
), emptied AS (
    DELETE FROM {s}.event_groups AS g USING pointing AS p WHERE g.id = p.id AND g.tasks <= p.n
), counted AS (
    UPDATE {s}.event_groups AS g SET tasks = g.tasks - p.n
    FROM pointing AS p WHERE g.id = p.id AND g.tasks > p.n
)
SELECT count(*) FROM gone;


-- name: put_results
-- Stored results are announced on $4 a few hundred at a time: one NOTIFY per chunk of ids
-- joined by newlines, each chunk under PostgreSQL's 8,000-byte payload limit (6,000 plus
-- one id). One NOTIFY per result cost the server a queue entry and every listener a
-- message each.
WITH put AS (
    INSERT INTO {s}.results (task_id, expires_ts, data)
    SELECT * FROM unnest($1::text[], $2::float8[], $3::bytea[])
    ON CONFLICT (task_id) DO UPDATE SET expires_ts = EXCLUDED.expires_ts, data = EXCLUDED.data
    RETURNING task_id
)
SELECT pg_notify($4, string_agg(task_id, E'\n'))
FROM (
    SELECT task_id,
           sum(octet_length(task_id) + 1) OVER (ROWS UNBOUNDED PRECEDING) / 6000 AS chunk
    FROM put
) AS stored
GROUP BY chunk;

-- name: get_result
SELECT expires_ts, data FROM {s}.results WHERE task_id = $1;

-- name: delete_expired_results
DELETE FROM {s}.results WHERE expires_ts IS NOT NULL AND expires_ts <= $1;


-- name: append_events
INSERT INTO {s}.events (task_id, ts, data)
SELECT e.task_id, e.ts, e.data
FROM unnest($1::text[], $2::float8[], $3::bytea[]) WITH ORDINALITY AS e(task_id, ts, data, n)
ORDER BY e.n;

-- name: events_of_task
-- A task's events: those of its enqueue's group first (id 0), then its own rows.
SELECT id, data FROM (
    SELECT 0 AS part, 0::bigint AS id, e.n, e.data
    FROM {s}.tasks AS t JOIN {s}.event_groups AS g ON g.id = t.event_group
    CROSS JOIN LATERAL unnest(g.data) WITH ORDINALITY AS e(data, n)
    WHERE t.id = $1
    UNION ALL
    SELECT 1, id, 0, data FROM {s}.events WHERE task_id = $1
) AS found
ORDER BY part, id, n;

-- name: delete_events_before
-- Rows older than the cutoff go; so do a group's old events (the group itself once none
-- is left; tasks pointing at a deleted group read no events from it). The count is an
-- event of a group once per task still pointing at it.
WITH rows AS (
    DELETE FROM {s}.events WHERE ts < $1 RETURNING 1
), old AS (
    SELECT g.id, g.tasks,
           (SELECT count(*) FROM unnest(g.stamps) AS s WHERE s < $1) AS dropped,
           (SELECT count(*) FROM unnest(g.stamps) AS s WHERE s >= $1) AS kept
    FROM {s}.event_groups AS g WHERE g.ts < $1
), gone AS (
    DELETE FROM {s}.event_groups AS g USING old WHERE g.id = old.id AND old.kept = 0
), trimmed AS (
    UPDATE {s}.event_groups AS g
    SET ts = (SELECT min(s) FROM unnest(g.stamps) AS s WHERE s >= $1),
        stamps = ARRAY(SELECT e.s FROM unnest(g.stamps, g.data) WITH ORDINALITY AS e(s, d, n)
                       WHERE e.s >= $1 ORDER BY e.n),
        data = ARRAY(SELECT e.d FROM unnest(g.stamps, g.data) WITH ORDINALITY AS e(s, d, n)
                     WHERE e.s >= $1 ORDER BY e.n)
    FROM old WHERE g.id = old.id AND old.kept > 0
)
SELECT (SELECT count(*) FROM rows) + coalesce((SELECT sum(tasks * dropped) FROM old), 0);


-- name: upsert_schedule
INSERT INTO {s}.schedules (id, next_run_ts, paused, data) VALUES ($1, $2, $3, $4)
ON CONFLICT (id) DO UPDATE SET next_run_ts = EXCLUDED.next_run_ts,
    paused = EXCLUDED.paused, data = EXCLUDED.data;

-- name: lock_schedule
SELECT data FROM {s}.schedules WHERE id = $1 FOR UPDATE;

-- name: get_schedule
SELECT data FROM {s}.schedules WHERE id = $1;

-- name: list_schedules
SELECT id, data FROM {s}.schedules ORDER BY id;

-- name: delete_schedule
DELETE FROM {s}.schedules WHERE id = $1;

-- name: due_schedules
SELECT id, data FROM {s}.schedules
WHERE NOT paused AND next_run_ts IS NOT NULL AND next_run_ts <= $1
ORDER BY next_run_ts, id LIMIT $2;

-- name: requeue
-- Replace a finished task's row with its fresh run (omniq._requeue) if its status is
-- still one of $7; a claimable one wakes workers ($8 on $9).
WITH moved AS (
    UPDATE {s}.tasks
    SET status = $1, due_ts = $2, lease_ts = NULL, worker_id = NULL, attempts = 0,
        lost_runs = 0, updated_ts = $3, data = $4
    WHERE id = $5 AND status = ANY($6::text[])
    RETURNING seq, id, status, priority, attempts, worker_id, lease_ts, due_ts, updated_ts,
        data, lost_runs
)
SELECT moved.*, CASE WHEN $7 THEN pg_notify($8, '') END FROM moved;

-- name: delete_results
DELETE FROM {s}.results WHERE task_id = ANY($1::text[]);

-- name: register_worker
INSERT INTO {s}.workers (id, expires_ts, data) VALUES ($1, $2, $3)
ON CONFLICT (id) DO UPDATE SET expires_ts = EXCLUDED.expires_ts, data = EXCLUDED.data;

-- name: deregister_worker
DELETE FROM {s}.workers WHERE id = $1;

-- name: list_workers
-- The live registrations; the lapsed ones are purged on the way.
WITH purged AS (DELETE FROM {s}.workers WHERE expires_ts <= $1)
SELECT data FROM {s}.workers WHERE expires_ts > $1 ORDER BY id;

-- name: set_progress
-- Tasks that are gone get none (a delete racing this fails it on the foreign key).
INSERT INTO {s}.task_progress (task_id, data)
SELECT u.id, u.data FROM unnest($1::text[], $2::bytea[]) AS u(id, data)
WHERE EXISTS (SELECT 1 FROM {s}.tasks AS t WHERE t.id = u.id)
ON CONFLICT (task_id) DO UPDATE SET data = EXCLUDED.data;

-- name: get_progress
SELECT task_id, data FROM {s}.task_progress WHERE task_id = ANY($1::text[]);
