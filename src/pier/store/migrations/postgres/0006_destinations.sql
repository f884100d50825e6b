-- Destinations (docs/destinations.md): where a project's feed is delivered, each with its cursor
-- (the last event id delivered), retry state, counters and the lease of the process delivering it.
-- Keys and secrets are stored as pier.delivery.secrets seals them (encrypted with PIER_SECRET_KEY
-- when it is set); their first characters are kept apart, for display.
CREATE TABLE destinations (
    id bigserial PRIMARY KEY,
    project_id bigint NOT NULL REFERENCES projects (id),
    kind text NOT NULL,
    name text,
    url text NOT NULL,
    key text,
    key_prefix text,
    secret_key text,
    secret_key_prefix text,
    signing_secret text,
    signing_secret_prefix text,
    batch_size bigint NOT NULL,
    max_bytes bigint NOT NULL,
    retry_window_ms bigint NOT NULL,
    only_globs text NOT NULL,
    skip_globs text NOT NULL,
    state text NOT NULL,
    cursor bigint NOT NULL,
    delivered bigint NOT NULL DEFAULT 0,
    attempts bigint NOT NULL DEFAULT 0,
    failing_since bigint,
    next_try_at bigint,
    last_success_at bigint,
    last_error text,
    last_error_at bigint,
    lease_holder text,
    lease_expires_at bigint,
    created_at bigint NOT NULL
);
CREATE INDEX destinations_project ON destinations (project_id);

-- Items that failed alone, with the answer they got; redelivered by hand.
CREATE TABLE dead_letters (
    id bigserial PRIMARY KEY,
    destination_id bigint NOT NULL REFERENCES destinations (id) ON DELETE CASCADE,
    event_id bigint NOT NULL,
    item text NOT NULL,
    answer text NOT NULL,
    created_at bigint NOT NULL
);
CREATE INDEX dead_letters_destination ON dead_letters (destination_id, id);
