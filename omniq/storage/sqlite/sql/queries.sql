-- Queries of the SQLite backend, loaded by name (``-- name: <name>``).
-- ``{...}`` marks a fragment omniq.storage.sqlite.queue fills in (claim sub-queries, a WHERE).
-- Task rows are always selected as: seq, id, status, priority, attempts, worker_id,
-- lease_ts, due_ts, updated_ts, data, lost_runs.

-- name: schema_version
SELECT MAX(version) FROM schema_version;

-- name: create_schema_version
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, applied_ts REAL NOT NULL);

-- name: record_schema_version
INSERT INTO schema_version (version, applied_ts) VALUES (?, ?);

-- name: insert_task
INSERT INTO tasks (id, queue, status, priority, due_ts, lease_ts, worker_id, attempts,
                   has_deps, updated_ts, data)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (id) DO NOTHING;

-- name: insert_dep
INSERT OR IGNORE INTO task_deps (depends_on, task_id) VALUES (?, ?);

-- name: claim_candidates
SELECT seq, priority, due_ts FROM tasks INDEXED BY tasks_claim
WHERE queue = {queue} AND ready_ts IS NOT NULL AND ready_ts <= :now
ORDER BY priority DESC, due_ts, seq
LIMIT :limit

-- name: claim_candidates_ranked
-- claim_candidates, with the queue's position in the worker's list (strict order).
SELECT seq, priority, due_ts, {rank} AS queue_rank FROM tasks INDEXED BY tasks_claim
WHERE queue = {queue} AND ready_ts IS NOT NULL AND ready_ts <= :now
ORDER BY priority DESC, due_ts, seq
LIMIT :limit

-- name: claim_pick
SELECT seq FROM ({candidates}) ORDER BY priority DESC, due_ts, seq LIMIT :limit

-- name: claim_pick_in_list_order
SELECT seq FROM ({candidates}) ORDER BY queue_rank, priority DESC, due_ts, seq LIMIT :limit

-- name: claim
-- Takes the seqs that claim_pick (queues merged) or claim_pick_in_list_order (strict) pick.
UPDATE tasks
SET status = 'running', worker_id = :worker, lease_ts = :lease,
    attempts = attempts + 1, lost_runs = lost_runs + (status = 'running'), updated_ts = :now
WHERE seq IN ({pick})
RETURNING seq, id, status, priority, attempts, worker_id, lease_ts, due_ts, updated_ts, data, lost_runs;

-- name: renew
UPDATE tasks SET lease_ts = :lease, updated_ts = :now
WHERE id IN (SELECT value FROM json_each(:ids)) AND worker_id = :worker AND status = 'running'
RETURNING id;

-- name: ack
-- :unrun is 1 when the claim being acknowledged did not run the task (Ack.ran is False).
UPDATE tasks SET status = :status, lease_ts = NULL, updated_ts = :now,
    attempts = attempts - :unrun
WHERE id IN (SELECT value FROM json_each(:ids)) AND worker_id = :worker AND status = 'running'
RETURNING id;

-- name: retry
UPDATE tasks SET status = 'retrying', due_ts = :due, lease_ts = NULL, updated_ts = :now
WHERE id = :id AND worker_id = :worker AND status = 'running';

-- name: release
UPDATE tasks
SET status = CASE WHEN attempts > 1 THEN 'retrying' ELSE 'pending' END,
    attempts = MAX(attempts - 1, 0), lease_ts = NULL, worker_id = NULL, updated_ts = :now
WHERE id IN (SELECT value FROM json_each(:ids)) AND worker_id = :worker AND status = 'running';

-- name: transition
UPDATE tasks
SET status = :to_status, due_ts = COALESCE(:due, due_ts), lease_ts = NULL, updated_ts = :now
WHERE id = :id AND status IN (SELECT value FROM json_each(:from_statuses))
RETURNING seq, id, status, priority, attempts, worker_id, lease_ts, due_ts, updated_ts, data, lost_runs;

-- name: queue_of_task
SELECT queue FROM tasks WHERE seq = ?;

-- name: get_tasks
SELECT seq, id, status, priority, attempts, worker_id, lease_ts, due_ts, updated_ts, data, lost_runs
FROM tasks WHERE id IN (SELECT value FROM json_each(?));

-- name: list_tasks
SELECT seq, id, status, priority, attempts, worker_id, lease_ts, due_ts, updated_ts, data, lost_runs
FROM tasks {where} ORDER BY seq DESC LIMIT :limit;

-- name: stats
-- The counts the triggers of migration 6 keep (not a COUNT over every task).
SELECT queue, status, n FROM task_counts WHERE n > 0;

-- name: dependents
SELECT d.depends_on, t.seq, t.id, t.status, t.priority, t.attempts, t.worker_id, t.lease_ts,
       t.due_ts, t.updated_ts, t.data, t.lost_runs
FROM task_deps AS d JOIN tasks AS t ON t.id = d.task_id
WHERE d.depends_on IN (SELECT value FROM json_each(?))
ORDER BY t.seq;

-- name: next_ready
-- One seek (migration 7's index): tasks_claim would read every task of the queue.
SELECT MIN(ready_ts) FROM tasks INDEXED BY tasks_next_ready
WHERE queue = ? AND ready_ts IS NOT NULL;

-- name: delete_finished_deps
DELETE FROM task_deps WHERE task_id IN (
    SELECT id FROM tasks
    WHERE status IN ('complete', 'failed', 'cancelled', 'expired') AND updated_ts < :before
);

-- name: delete_finished
DELETE FROM tasks
WHERE status IN ('complete', 'failed', 'cancelled', 'expired') AND updated_ts < :before;

-- name: put_result
INSERT OR REPLACE INTO results (task_id, expires_ts, data) VALUES (?, ?, ?);

-- name: get_result
SELECT expires_ts, data FROM results WHERE task_id = ?;

-- name: delete_expired_results
DELETE FROM results WHERE expires_ts IS NOT NULL AND expires_ts <= ?;

-- name: append_event
INSERT INTO events (task_id, ts, data) VALUES (?, ?, ?);

-- name: get_events
SELECT id, data FROM events WHERE task_id = ? ORDER BY id;

-- name: delete_events_before
DELETE FROM events WHERE ts < ?;

-- name: upsert_schedule
INSERT OR REPLACE INTO schedules (id, next_run_ts, paused, data) VALUES (?, ?, ?, ?);

-- name: get_schedule
SELECT id, data FROM schedules WHERE id = ?;

-- name: list_schedules
SELECT id, data FROM schedules ORDER BY id;

-- name: delete_schedule
DELETE FROM schedules WHERE id = ?;

-- name: due_schedules
SELECT id, data FROM schedules
WHERE paused = 0 AND next_run_ts IS NOT NULL AND next_run_ts <= ?
ORDER BY next_run_ts, id
LIMIT ?;

-- name: advance_schedule
UPDATE schedules SET next_run_ts = ?, data = ? WHERE id = ? AND next_run_ts IS ?;

-- name: requeue
-- Replace a finished task's row with its fresh run (omniq._requeue), if its status is
-- still one of :from_statuses.
UPDATE tasks
SET status = :status, due_ts = :due, lease_ts = NULL, worker_id = NULL, attempts = 0,
    lost_runs = 0, updated_ts = :now, data = :data
WHERE id = :id AND status IN (SELECT value FROM json_each(:from_statuses))
RETURNING seq, id, status, priority, attempts, worker_id, lease_ts, due_ts, updated_ts, data, lost_runs;

-- name: delete_results
DELETE FROM results WHERE task_id IN (SELECT value FROM json_each(?));

-- name: register_worker
INSERT OR REPLACE INTO workers (id, expires_ts, data) VALUES (?, ?, ?);

-- name: deregister_worker
DELETE FROM workers WHERE id = ?;

-- name: purge_workers
DELETE FROM workers WHERE expires_ts <= ?;

-- name: list_workers
SELECT data FROM workers WHERE expires_ts > ? ORDER BY id;

-- name: set_progress
UPDATE tasks SET progress = ? WHERE id = ?;

-- name: get_progress
SELECT id, progress FROM tasks
WHERE id IN (SELECT value FROM json_each(?)) AND progress IS NOT NULL;
