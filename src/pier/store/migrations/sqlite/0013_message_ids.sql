-- The events' message ids move out of a unique index on events into message_ids, filled in
-- passes between batches as user_events is (store/sqlite_index.py): the index wrote a page at a
-- random place for every event with a message id, at each commit (docs/performance.md, "Events
-- with message ids"). Up to the watermark of user_events every event's message id is here; past
-- it the writer finds them in its pending rows or in the events themselves.
CREATE TABLE message_ids (
    project_id INTEGER NOT NULL,
    message_id TEXT NOT NULL,
    event_id INTEGER NOT NULL,
    PRIMARY KEY (project_id, message_id)
) WITHOUT ROWID;
INSERT INTO message_ids (project_id, message_id, event_id)
    SELECT project_id, message_id, id FROM events
    WHERE message_id IS NOT NULL
      AND id <= (SELECT upto FROM index_state WHERE name = 'user_events')
    ORDER BY project_id, message_id;
DROP INDEX events_message_id;
