-- The lease of the process computing a list (docs/lists.md): one process backfills a list, the
-- one that holds it, renewing it after each chunk; another takes an expired lease over. The
-- same columns and rule as a destination's lease (0006_destinations.sql).
ALTER TABLE lists ADD COLUMN lease_holder text;
ALTER TABLE lists ADD COLUMN lease_expires_at bigint;
