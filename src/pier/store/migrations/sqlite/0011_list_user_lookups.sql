-- A user's rows of list_members and list_due are found by their keys, (list_id, user_id), one
-- probe for each list of its project (queries.PROJECT_LISTS): each row entering a list wrote a
-- page of these indexes too, at a random place, and on SQLite each such page is written to the
-- WAL at the commit (docs/performance.md, "(l): what a user entering a list writes").
DROP INDEX list_members_user;
DROP INDEX list_due_user;
