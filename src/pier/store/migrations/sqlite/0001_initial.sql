-- Pier schema, SQLite. Times are integer milliseconds since the Unix epoch (UTC).
CREATE TABLE projects (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    created_at INTEGER NOT NULL
);

CREATE TABLE keys (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    project_id INTEGER NOT NULL REFERENCES projects (id),
    name TEXT,
    scope TEXT NOT NULL CHECK (scope IN ('public', 'secret')),
    key_hash TEXT NOT NULL UNIQUE,
    prefix TEXT NOT NULL,
    value TEXT,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER,
    rate_limit INTEGER
);
CREATE INDEX keys_project ON keys (project_id);

CREATE TABLE id_sequences (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT INTO id_sequences (name, value) VALUES ('users', 0);

CREATE TABLE users (
    id INTEGER PRIMARY KEY,
    project_id INTEGER NOT NULL REFERENCES projects (id),
    external_id TEXT,
    email TEXT,
    phone TEXT,
    timezone TEXT,
    locale TEXT,
    data TEXT NOT NULL DEFAULT '{}',
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE UNIQUE INDEX users_external_id ON users (project_id, external_id);
CREATE INDEX users_project ON users (project_id, id);

CREATE TABLE user_anonymous_ids (
    id INTEGER PRIMARY KEY,
    project_id INTEGER NOT NULL,
    anonymous_id TEXT NOT NULL,
    user_id INTEGER NOT NULL REFERENCES users (id),
    UNIQUE (project_id, anonymous_id)
);
CREATE INDEX user_anonymous_ids_user ON user_anonymous_ids (user_id);

CREATE TABLE devices (
    id INTEGER PRIMARY KEY,
    project_id INTEGER NOT NULL,
    user_id INTEGER NOT NULL REFERENCES users (id),
    device_id TEXT NOT NULL,
    token TEXT,
    os TEXT,
    os_version TEXT,
    model TEXT,
    app_build TEXT,
    app_version TEXT,
    extra TEXT NOT NULL DEFAULT '{}',
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    UNIQUE (project_id, device_id)
);
CREATE UNIQUE INDEX devices_token ON devices (project_id, token);
CREATE INDEX devices_user ON devices (user_id);

-- AUTOINCREMENT: an id is never used twice, so cursors and the user_events watermark hold.
CREATE TABLE events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    project_id INTEGER NOT NULL,
    user_id INTEGER NOT NULL,
    name TEXT NOT NULL,
    data TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    received_at INTEGER NOT NULL,
    message_id TEXT
);
CREATE INDEX events_project ON events (project_id, id);
CREATE UNIQUE INDEX events_message_id ON events (project_id, message_id)
    WHERE message_id IS NOT NULL;

-- A user's events, newest first, come from user_events. It is filled in bulk, about once a
-- second, for the events up to index_state.upto; newer events are found by a short scan of the
-- events table past that id. An index on events (user_id, ...) kept up on every commit would
-- write one page a user a commit, which SQLite's WAL pays in full.
CREATE TABLE user_events (
    user_id INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    event_id INTEGER NOT NULL,
    PRIMARY KEY (user_id, created_at, event_id)
) WITHOUT ROWID;
CREATE TABLE index_state (name TEXT PRIMARY KEY, upto INTEGER NOT NULL);
INSERT INTO index_state (name, upto) VALUES ('user_events', 0);
