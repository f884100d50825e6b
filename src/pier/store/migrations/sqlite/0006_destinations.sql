-- Destinations (docs/destinations.md): where a project's feed is delivered, each with its cursor
-- (the last event id delivered), retry state, counters and the lease of the process delivering it.
-- Keys and secrets are stored as pier.delivery.secrets seals them (encrypted with PIER_SECRET_KEY
-- when it is set); their first characters are kept apart, for display.
CREATE TABLE destinations (
    id INTEGER PRIMARY KEY,
    project_id INTEGER NOT NULL REFERENCES projects (id),
    kind TEXT NOT NULL,
    name TEXT,
    url TEXT NOT NULL,
    key TEXT,
    key_prefix TEXT,
    secret_key TEXT,
    secret_key_prefix TEXT,
    signing_secret TEXT,
    signing_secret_prefix TEXT,
    batch_size INTEGER NOT NULL,
    max_bytes INTEGER NOT NULL,
    retry_window_ms INTEGER NOT NULL,
    only_globs TEXT NOT NULL,
    skip_globs TEXT NOT NULL,
    state TEXT NOT NULL,
    cursor INTEGER NOT NULL,
    delivered INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    failing_since INTEGER,
    next_try_at INTEGER,
    last_success_at INTEGER,
    last_error TEXT,
    last_error_at INTEGER,
    lease_holder TEXT,
    lease_expires_at INTEGER,
    created_at INTEGER NOT NULL
);
CREATE INDEX destinations_project ON destinations (project_id);

-- Items that failed alone, with the answer they got; redelivered by hand.
CREATE TABLE dead_letters (
    id INTEGER PRIMARY KEY,
    destination_id INTEGER NOT NULL REFERENCES destinations (id) ON DELETE CASCADE,
    event_id INTEGER NOT NULL,
    item TEXT NOT NULL,
    answer TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX dead_letters_destination ON dead_letters (destination_id, id);
