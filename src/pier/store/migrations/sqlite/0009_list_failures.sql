-- A backfill that failed (docs/lists.md): how many times in a row this version of the list
-- failed, the last error and when; the next try waits (the lease's end is set to it), longer
-- after each failure. A success, a new rule or a recount clears them.
ALTER TABLE lists ADD COLUMN failures INTEGER NOT NULL DEFAULT 0;
ALTER TABLE lists ADD COLUMN error TEXT;
ALTER TABLE lists ADD COLUMN failed_at INTEGER;
