-- Queries of the SQLite backend's global limits (omniq.storage.sqlite._limits), by name.

-- name: limits
SELECT key, spec FROM limits;

-- name: set_limit
INSERT OR REPLACE INTO limits (key, spec) VALUES (?, ?);

-- name: drop_limit
DELETE FROM limits WHERE key = ?;

-- name: drop_starts
DELETE FROM limit_starts WHERE key = ?;

-- name: name_tasks
UPDATE tasks SET limit_name = ? WHERE id = ?;

-- name: candidates
-- One queue's claimable tasks in claim order, but those of names a limit holds back
-- (:blocked) and those this claim took already (:picked).
SELECT seq, priority, due_ts, limit_name FROM tasks INDEXED BY tasks_claim
WHERE queue = :queue AND ready_ts IS NOT NULL AND ready_ts <= :now
  AND (limit_name IS NULL OR limit_name NOT IN (SELECT value FROM json_each(:blocked)))
  AND seq NOT IN (SELECT value FROM json_each(:picked))
ORDER BY priority DESC, due_ts, seq
LIMIT :n;

-- name: starts
SELECT ts FROM limit_starts WHERE key = ? AND ts > ? ORDER BY ts;

-- name: prune_starts
DELETE FROM limit_starts WHERE key = ? AND ts <= ?;

-- name: add_start
INSERT INTO limit_starts (key, ts) VALUES (?, ?);

-- name: running_in_queue
SELECT COUNT(*) FROM tasks WHERE queue = ? AND status = 'running' AND lease_ts > ?;

-- name: running_of_name
SELECT COUNT(*) FROM tasks INDEXED BY tasks_limited
WHERE limit_name = ? AND status = 'running' AND lease_ts > ?;
