-- Lists (docs/lists.md): dynamic (a rule tree, stored as received) or static. Members are rows,
-- computed by the backfill for dynamic lists, written by the API for static ones.
CREATE TABLE lists (
    id INTEGER PRIMARY KEY,
    project_id INTEGER NOT NULL REFERENCES projects (id),
    name TEXT NOT NULL,
    type TEXT NOT NULL,            -- dynamic | static
    rule TEXT,                     -- the tree's JSON text as received; NULL for static lists
    state TEXT NOT NULL,           -- draft | loading | ready
    progress REAL,                 -- 0..1 while loading, else NULL
    published INTEGER NOT NULL,    -- 0 or 1 (one statement serves both backends)
    version INTEGER NOT NULL,      -- bumped when the members must be computed again
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX lists_project ON lists (project_id, id);
CREATE TABLE list_members (
    list_id INTEGER NOT NULL,
    project_id INTEGER NOT NULL,
    user_id INTEGER NOT NULL,
    joined_at INTEGER NOT NULL,
    PRIMARY KEY (list_id, user_id)
) WITHOUT ROWID;
CREATE INDEX list_members_user ON list_members (project_id, user_id);
-- When each user's membership of a list whose rule moves with time (a rolling period, a `now`
-- template) is next to be looked at again, with no new data (evaluate.next_change): the sweeper
-- evaluates the due ones.
CREATE TABLE list_due (
    list_id INTEGER NOT NULL,
    project_id INTEGER NOT NULL,
    user_id INTEGER NOT NULL,
    due_at INTEGER NOT NULL,
    PRIMARY KEY (list_id, user_id)
) WITHOUT ROWID;
CREATE INDEX list_due_at ON list_due (due_at);
CREATE INDEX list_due_user ON list_due (project_id, user_id);
