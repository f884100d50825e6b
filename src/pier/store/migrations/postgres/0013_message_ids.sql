-- The events' message ids in a unique index that is not partial, message id first. The check
-- for stored message ids (queries.seen_message_ids: project_id = $1 AND message_id = ANY($2))
-- read the partial index (project_id, message_id) WHERE message_id IS NOT NULL by the project
-- alone, testing every message id of the project against the list, whenever the statistics
-- said the index was empty (after events without message ids, until the next ANALYZE, which
-- on a large table comes after a tenth of it has been written): the planner then costs
-- walking all of it at nothing. Every event is in this one (NULLs are distinct in a unique
-- index, and sort last: those inserts append), so the planner knows its size, and with the
-- message id first any use of it looks each id up. (docs/performance.md, "Events with
-- message ids": the bench's (m) ran at 0.10 - 0.53 of (a).)
CREATE UNIQUE INDEX events_message_id_first ON events (message_id, project_id);
DROP INDEX events_message_id;
ALTER INDEX events_message_id_first RENAME TO events_message_id;
