-- Idempotency-Key headers: written in the transaction of the request's data, kept 7 days.
CREATE TABLE request_keys (
    project_id INTEGER NOT NULL,
    key TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (project_id, key)
) WITHOUT ROWID;
CREATE INDEX request_keys_created ON request_keys (created_at);
