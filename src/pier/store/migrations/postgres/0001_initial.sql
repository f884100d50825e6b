-- Pier schema, PostgreSQL. Times are bigint milliseconds since the Unix epoch (UTC), as in SQLite.
-- Every table carries project_id, and every key and unique constraint starts with it, so that the
-- schema can be distributed by project (for example with Citus) without change of meaning.
CREATE TABLE projects (
    id bigserial PRIMARY KEY,
    name text NOT NULL,
    created_at bigint NOT NULL
);

CREATE TABLE keys (
    id bigserial PRIMARY KEY,
    project_id bigint NOT NULL REFERENCES projects (id),
    name text,
    scope text NOT NULL CHECK (scope IN ('public', 'secret')),
    key_hash text NOT NULL UNIQUE,
    prefix text NOT NULL,
    value text,
    created_at bigint NOT NULL,
    revoked_at bigint,
    rate_limit integer
);
CREATE INDEX keys_project ON keys (project_id);

-- User ids are handed out to the API processes in blocks of 100 (see PostgresStore).
CREATE SEQUENCE user_id_blocks INCREMENT BY 100 MINVALUE 1 START 1;

CREATE TABLE users (
    project_id bigint NOT NULL REFERENCES projects (id),
    id bigint NOT NULL,
    external_id text,
    email text,
    phone text,
    timezone text,
    locale text,
    data jsonb NOT NULL DEFAULT '{}',
    created_at bigint NOT NULL,
    updated_at bigint NOT NULL,
    PRIMARY KEY (project_id, id),
    UNIQUE (project_id, external_id)
);
CREATE INDEX users_id ON users (id);  -- ids are unique anyway: they come from one sequence

CREATE TABLE user_anonymous_ids (
    project_id bigint NOT NULL,
    id bigserial NOT NULL,
    anonymous_id text NOT NULL,
    user_id bigint NOT NULL,
    PRIMARY KEY (project_id, anonymous_id),
    FOREIGN KEY (project_id, user_id) REFERENCES users (project_id, id)
);
CREATE INDEX user_anonymous_ids_user ON user_anonymous_ids (user_id, id);

CREATE TABLE devices (
    project_id bigint NOT NULL,
    id bigserial NOT NULL,
    user_id bigint NOT NULL,
    device_id text NOT NULL,
    token text,
    os text,
    os_version text,
    model text,
    app_build text,
    app_version text,
    extra jsonb NOT NULL DEFAULT '{}',
    created_at bigint NOT NULL,
    updated_at bigint NOT NULL,
    PRIMARY KEY (project_id, id),
    UNIQUE (project_id, device_id),
    UNIQUE (project_id, token),
    FOREIGN KEY (project_id, user_id) REFERENCES users (project_id, id)
);
CREATE INDEX devices_user ON devices (user_id);

CREATE TABLE events (
    project_id bigint NOT NULL,
    id bigserial NOT NULL,
    user_id bigint NOT NULL,
    name text NOT NULL,
    data jsonb NOT NULL,
    created_at bigint NOT NULL,
    received_at bigint NOT NULL,
    message_id text,
    PRIMARY KEY (project_id, id)
);
CREATE UNIQUE INDEX events_message_id ON events (project_id, message_id)
    WHERE message_id IS NOT NULL;
CREATE INDEX events_user ON events (user_id, created_at, id);
