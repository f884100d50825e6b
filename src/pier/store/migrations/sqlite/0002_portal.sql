-- Portal (issue 5): admin accounts and their sessions; indexes for the user list and search.
CREATE TABLE admins (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    email TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    created_at INTEGER NOT NULL
);

-- One row a logged-in browser. The cookie holds a random token; only its SHA-256 is stored.
CREATE TABLE admin_sessions (
    token_hash TEXT PRIMARY KEY,
    admin_id INTEGER NOT NULL REFERENCES admins (id),
    csrf_token TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX admin_sessions_expires ON admin_sessions (expires_at);

-- Users newest first, and exact search by email or phone.
CREATE INDEX users_created ON users (project_id, created_at, id);
CREATE INDEX users_email ON users (project_id, email);
CREATE INDEX users_phone ON users (project_id, phone);
