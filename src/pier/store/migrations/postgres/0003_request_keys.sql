-- Idempotency-Key headers: written in the transaction of the request's data, kept 7 days.
CREATE TABLE request_keys (
    project_id bigint NOT NULL,
    key text NOT NULL,
    fingerprint text NOT NULL,
    created_at bigint NOT NULL,
    PRIMARY KEY (project_id, key)
);
CREATE INDEX request_keys_created ON request_keys (created_at);
