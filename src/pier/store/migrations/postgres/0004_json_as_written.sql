-- JSON columns keep the text Pier writes (issue 17). jsonb parses JSON into its own form and prints
-- it back its own way: numbers re-spelled (1e308 as 309 digits, -0.0 as 0, 1E5 as 100000), keys
-- sorted and deduplicated. `json` keeps the text as written (still checked to be JSON), as SQLite
-- does: an event's data comes back as the client sent it, on both backends. Nothing queries inside
-- these columns. (This rewrites the tables: on a large database, run `pier migrate` in a quiet hour.)
ALTER TABLE events ALTER COLUMN data TYPE json USING data::json;
ALTER TABLE users ALTER COLUMN data DROP DEFAULT;
ALTER TABLE users ALTER COLUMN data TYPE json USING data::json;
ALTER TABLE users ALTER COLUMN data SET DEFAULT '{}';
ALTER TABLE devices ALTER COLUMN extra DROP DEFAULT;
ALTER TABLE devices ALTER COLUMN extra TYPE json USING extra::json;
ALTER TABLE devices ALTER COLUMN extra SET DEFAULT '{}';
