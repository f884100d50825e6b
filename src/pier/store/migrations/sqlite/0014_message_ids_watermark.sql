-- message_ids gets a watermark of its own: its passes are larger and rarer than user_events'
-- (store/sqlite_index.py, MIDS_PASS_ROWS). Up to it, every event's message id is in
-- message_ids; past it the writer finds them in its pending rows or in the events themselves.
-- Until now it was user_events' watermark.
INSERT INTO index_state (name, upto)
    SELECT 'message_ids', upto FROM index_state WHERE name = 'user_events';
