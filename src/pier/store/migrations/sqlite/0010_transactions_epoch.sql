-- Counts the write transactions of the writer's kind (batches, deletions, sweeps, a backfill's
-- end: SqliteStore._transaction), each of which adds one. A process's caches of who is who and
-- of lists (loading.IdentityCache, list_cache.ListCache) hold while no other process has
-- committed one: other commits (a delivery process's cursors, keys, a list's lease) change
-- nothing they keep, and no longer empty them.
INSERT INTO id_sequences (name, value) VALUES ('transactions', 0);
