-- One row a process that writes: the write transactions of the writer's kind (batches,
-- deletions, sweeps, a backfill's end) it has committed, counted in the same transaction, and
-- when it last counted one. A process's lists' cache (list_cache.py) holds while the other
-- rows stay as they were (PostgresStore.lists_for; SQLite's counterpart is migration 0010).
-- Each process writes only its own row, so writers never wait on one another for it.
-- `running` is false once the process has closed its store: a process that starts then need
-- not wait to see whether that one is still writing.
CREATE TABLE writers (
    token bigint PRIMARY KEY,
    transactions bigint NOT NULL,
    counted_at bigint NOT NULL,
    running boolean NOT NULL
);
