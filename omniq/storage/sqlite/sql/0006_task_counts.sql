-- OmniQ SQLite schema, version 6: task counts per queue and status kept as tasks change,
-- so stats() reads a few rows instead of counting every task (74 ms at a million tasks;
-- issue 37). Triggers keep them, so no statement that writes tasks can forget to; the
-- counts start from the tasks already stored, in the migration's own transaction.
-- A row may fall to 0; stats() leaves those out.

CREATE TABLE task_counts (
    queue TEXT NOT NULL,
    status TEXT NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (queue, status)
) WITHOUT ROWID;

INSERT INTO task_counts (queue, status, n)
SELECT queue, status, COUNT(*) FROM tasks GROUP BY queue, status;

CREATE TRIGGER task_counts_insert AFTER INSERT ON tasks
BEGIN
    INSERT INTO task_counts (queue, status, n) VALUES (NEW.queue, NEW.status, 1)
    ON CONFLICT (queue, status) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER task_counts_delete AFTER DELETE ON tasks
BEGIN
    UPDATE task_counts SET n = n - 1 WHERE queue = OLD.queue AND status = OLD.status;
END;

CREATE TRIGGER task_counts_update AFTER UPDATE OF queue, status ON tasks
WHEN NEW.queue IS NOT OLD.queue OR NEW.status IS NOT OLD.status
BEGIN
    UPDATE task_counts SET n = n - 1 WHERE queue = OLD.queue AND status = OLD.status;
    INSERT INTO task_counts (queue, status, n) VALUES (NEW.queue, NEW.status, 1)
    ON CONFLICT (queue, status) DO UPDATE SET n = n + 1;
END;
