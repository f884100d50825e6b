-- Portal (issue 5): admin accounts and their sessions; indexes for the user list and search.
CREATE TABLE admins (
    id bigserial PRIMARY KEY,
    email text NOT NULL UNIQUE,
    password_hash text NOT NULL,
    created_at bigint NOT NULL
);

-- One row a logged-in browser. The cookie holds a random token; only its SHA-256 is stored.
CREATE TABLE admin_sessions (
    token_hash text PRIMARY KEY,
    admin_id bigint NOT NULL REFERENCES admins (id) ON DELETE CASCADE,
    csrf_token text NOT NULL,
    created_at bigint NOT NULL,
    expires_at bigint NOT NULL
);
CREATE INDEX admin_sessions_expires ON admin_sessions (expires_at);

-- Users newest first, and exact search by email or phone.
CREATE INDEX users_created ON users (project_id, created_at, id);
CREATE INDEX users_email ON users (project_id, email);
CREATE INDEX users_phone ON users (project_id, phone);
