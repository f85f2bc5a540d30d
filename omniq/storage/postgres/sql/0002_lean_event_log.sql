-- OmniQ PostgreSQL schema, version 2: the event log keeps one B-tree instead of three.
-- Every enqueue writes an event row per task, so each index on it is paid for on the
-- hot path. Nothing looks events up by id (readers go by task, in id order, through
-- events_task), so the primary key goes; the column stays, for that order. Retention
-- deletes by time, and rows arrive in time order, so a BRIN index (a summary per block
-- range, almost free to keep up) finds the old ones as well as the B-tree did.

ALTER TABLE {s}.events DROP CONSTRAINT events_pkey;
DROP INDEX {s}.events_ts;
CREATE INDEX events_ts ON {s}.events USING brin (ts);
