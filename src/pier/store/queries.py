"""Every statement the two backends share, written once. A `Dialect` renders them for SQLite or
PostgreSQL when the module is imported (`Queries(dialect)`), so no SQL is built per call.

Templates spell parameters as PostgreSQL does (`$1`, `$2`...), and use four fields:

- `{any[n]}`: `column {any[2]}` holds when the column equals an item of the list parameter $2
  (pass the list through `Dialect.array`);
- `{text}`: after a JSON column that is read, gives its text;
- `{json}`: after a parameter that is written to a JSON column;
- `{cross}`: a join whose order the planner must keep (SQLite's CROSS JOIN).

To add a table: its statements go here, as templates; the shared store (common.py) runs them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import msgspec

_encoder = msgspec.json.Encoder()
_PARAM = re.compile(r"\$(\d+)")


def json_text(value: Any) -> str:
    return _encoder.encode(value).decode()


Row = Sequence[Any]


class Run(Protocol):
    """A backend's driver behind four calls, for statements rendered by its dialect."""

    async def all(self, sql: str, *args: Any) -> list[Row]: ...
    async def one(self, sql: str, *args: Any) -> Row | None: ...
    async def execute(self, sql: str, *args: Any) -> int:
        """The number of rows changed."""

    async def many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None: ...


class _Lists:
    def __init__(self, spelling: str) -> None:
        self.spelling = spelling

    def __getitem__(self, n: int) -> str:
        return self.spelling.format(n=n)


class Dialect:
    """How one backend spells what differs between the two."""

    def __init__(
        self,
        name: str,
        *,
        any_list: str,
        array: Callable[[list[Any]], Any],
        text: str = "",
        json: str = "",
        cross: str = "JOIN",
        qmark: bool = False,
    ) -> None:
        self.name = name
        self.array = array  # a Python list as the driver takes a list parameter
        self._fields = {"any": _Lists(any_list), "text": text, "json": json, "cross": cross}
        self._qmark = qmark

    def render(self, template: str) -> str:
        sql = template.format(**self._fields)
        if not self._qmark:
            return sql
        # SQLite: plain `?` when each parameter comes once and in order, else `?NNN`
        numbers = [int(n) for n in _PARAM.findall(sql)]
        if numbers == list(range(1, len(numbers) + 1)):
            return _PARAM.sub("?", sql)
        return _PARAM.sub(r"?\1", sql)


SQLITE = Dialect(
    "sqlite",
    # one JSON array parameter for a whole IN list
    any_list="IN (SELECT value FROM json_each(${n}))",
    array=json_text,
    cross="CROSS JOIN",
    qmark=True,
)
POSTGRES = Dialect(
    "postgres",
    any_list="= ANY(${n})",
    array=list,
    text="::text",
    json="::json",
)


def lease_free(holder: str, now: str) -> str:
    """The condition under which `holder` may take or renew a lease (lease_holder,
    lease_expires_at): free, expired at `now`, or its own. Destinations and lists use it."""
    return f"(lease_holder IS NULL OR lease_holder = {holder} OR lease_expires_at < {now})"


# Column orders of the rows the loaders and reads get (see loading.user_from_row, device_from_row)
USER_FIELDS = (
    "id, project_id, external_id, email, phone, timezone, locale, data, created_at, updated_at"
)
DEVICE_FIELDS = (
    "id, project_id, user_id, device_id, token, os, os_version, model, app_build, app_version,"
    " extra, created_at, updated_at"
)
USER_COLUMNS = (
    "u.id, u.project_id, u.external_id, u.email, u.phone, u.timezone, u.locale, u.data{text},"
    " u.created_at, u.updated_at"
)
PARTIAL_USER = "u.id, u.project_id, u.external_id"
DEVICE_COLUMNS = DEVICE_FIELDS.replace("extra", "extra{text}")
KEY_COLUMNS = "id, project_id, name, scope, prefix, created_at, revoked_at, value, rate_limit"
EVENT_FIELDS = ("project_id", "user_id", "name", "data", "created_at", "received_at", "message_id")
STAT_TABLES = ("users", "user_anonymous_ids", "devices", "events")
USERS_OF = {
    "external_id": f"SELECT {USER_COLUMNS} FROM users u WHERE u.project_id = $1"
    " AND u.external_id = $2",
    "anonymous_id": f"SELECT {USER_COLUMNS} FROM user_anonymous_ids a JOIN users u"
    " ON u.project_id = a.project_id AND u.id = a.user_id"
    " WHERE a.project_id = $1 AND a.anonymous_id = $2",
}
FEED = (
    "SELECT e.id, e.name, e.data{text}, e.created_at, e.received_at, e.message_id, e.user_id,"
    " u.external_id, (SELECT a.anonymous_id FROM user_anonymous_ids a WHERE a.user_id = e.user_id"
    " ORDER BY a.id LIMIT 1) FROM events e"
    " LEFT JOIN users u ON u.project_id = e.project_id AND u.id = e.user_id"
    " WHERE e.project_id = $1 AND e.id > $2"
)

# Rows per multi-row INSERT: a batch's rows go in the fewest statements of these sizes (a few
# distinct statements, each prepared once and cached). 128 rows of 7 columns bind 896
# parameters, under SQLite's smallest limit (999, SQLITE_MAX_VARIABLE_NUMBER before 3.32).
ROWS_PER_INSERT = (128, 64, 32, 16, 8, 4, 2, 1)


def _insert_values(table: str, fields: Sequence[str], rows: int) -> str:
    """INSERT of `rows` rows of these fields, numbered $1, $2... row after row."""
    width = len(fields)
    values = ", ".join(
        "(" + ", ".join(f"${r * width + c + 1}" for c in range(width)) + ")" for r in range(rows)
    )
    return f"INSERT INTO {table} ({', '.join(fields)}) VALUES {values}"


def row_sizes(n: int) -> list[int]:
    """How `n` rows split into statements of ROWS_PER_INSERT sizes, largest first."""
    sizes = [ROWS_PER_INSERT[0]] * (n // ROWS_PER_INSERT[0])
    n %= ROWS_PER_INSERT[0]
    sizes += [size for size in ROWS_PER_INSERT[1:] if n & size]
    return sizes


LIST_COLUMNS = (
    "l.id, l.project_id, l.name, l.type, l.rule, l.state, l.progress, l.published, l.version,"
    " l.created_at, l.updated_at, (SELECT count(*) FROM list_members m WHERE m.list_id = l.id),"
    " l.failures, l.error, l.failed_at"
)
LISTS = f"SELECT {LIST_COLUMNS} FROM lists l"
# The tables of a (list, user), keyed by (list_id, user_id) and nothing else: a user's rows are
# found by a probe of that key for each list of its project (PROJECT_LISTS; no index by user,
# which each row entering a list would write to a page of its own: docs/performance.md).
LIST_USER_TABLES = ("list_members", "list_due")
PROJECT_LISTS = "SELECT id FROM lists WHERE project_id = $1"


def _list_users(q: bool, before: bool) -> str:
    """Newest users first, from a cursor; with `q`, the few exact, indexed matches first (the
    join keeps that order)."""
    if q:
        sql = (
            f"SELECT {USER_COLUMNS} FROM (SELECT id FROM users WHERE project_id = $1"
            " AND external_id = $2 UNION SELECT id FROM users WHERE project_id = $1"
            " AND email = $2 UNION SELECT id FROM users WHERE project_id = $1 AND phone = $2"
            " UNION SELECT user_id FROM user_anonymous_ids WHERE project_id = $1"
            " AND anonymous_id = $2) AS m {cross} users u ON u.id = m.id WHERE u.project_id = $1"
        )
    else:
        sql = f"SELECT {USER_COLUMNS} FROM users u WHERE u.project_id = $1"
    n = 3 if q else 2
    if before:
        sql += f" AND (u.created_at, u.id) < (${n}, ${n + 1})"
        n += 2
    return sql + f" ORDER BY u.created_at DESC, u.id DESC LIMIT ${n}"


class Queries:
    """The statements as templates (class attributes); an instance holds them rendered for one
    dialect, under the same names (dicts of templates become dicts of statements)."""

    # -- projects and keys
    insert_project = "INSERT INTO projects (name, created_at) VALUES ($1, $2) RETURNING id"
    projects = "SELECT id, name, created_at FROM projects ORDER BY id"
    project = "SELECT id, name, created_at FROM projects WHERE id = $1"
    insert_key = (
        "INSERT INTO keys (project_id, name, scope, key_hash, prefix, value, created_at,"
        " rate_limit) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id"
    )
    keys = f"SELECT {KEY_COLUMNS} FROM keys WHERE project_id = $1 ORDER BY id"
    key_by_hash = f"SELECT {KEY_COLUMNS} FROM keys WHERE key_hash = $1"
    revoke_key = (
        "UPDATE keys SET revoked_at = COALESCE(revoked_at, $1) WHERE id = $2 OR key_hash = $3"
    )

    # -- portal admins and sessions
    insert_admin = (
        "INSERT INTO admins (email, password_hash, created_at) VALUES ($1, $2, $3) RETURNING id"
    )
    admin_by_email = "SELECT id, email, password_hash, created_at FROM admins WHERE email = $1"
    admins = "SELECT id, email, password_hash, created_at FROM admins ORDER BY id"
    set_admin_password = "UPDATE admins SET password_hash = $1 WHERE email = $2 RETURNING id"
    delete_admin = "DELETE FROM admins WHERE email = $1"
    delete_admin_sessions = "DELETE FROM admin_sessions WHERE admin_id = $1"
    delete_expired_sessions = "DELETE FROM admin_sessions WHERE expires_at <= $1"
    insert_session = (
        "INSERT INTO admin_sessions (token_hash, admin_id, csrf_token, created_at, expires_at)"
        " VALUES ($1, $2, $3, $4, $5)"
    )
    live_session = (
        "SELECT s.admin_id, a.email, s.csrf_token, s.expires_at FROM admin_sessions s"
        " JOIN admins a ON a.id = s.admin_id WHERE s.token_hash = $1 AND s.expires_at > $2"
    )
    delete_session = "DELETE FROM admin_sessions WHERE token_hash = $1"

    # -- reads
    user_of = USERS_OF  # by external_id or anonymous_id
    user_by_id = f"SELECT {USER_COLUMNS} FROM users u WHERE u.project_id = $1 AND u.id = $2"
    user_id_of = {
        "id": "SELECT id FROM users WHERE project_id = $1 AND id = $2",
        "external_id": "SELECT id FROM users WHERE project_id = $1 AND external_id = $2",
        "anonymous_id": "SELECT user_id FROM user_anonymous_ids"
        " WHERE project_id = $1 AND anonymous_id = $2",
    }
    list_users = {(q, b): _list_users(q, b) for q in (False, True) for b in (False, True)}
    counts = {t: f"SELECT count(*) FROM {t} WHERE project_id = $1" for t in STAT_TABLES}
    feed = FEED + " ORDER BY e.id LIMIT $3"
    latest = FEED + " ORDER BY e.id DESC LIMIT $3"
    first_event = "SELECT min(id) FROM events WHERE project_id = $1"  # one each: both use
    last_event = "SELECT max(id) FROM events WHERE project_id = $1"  # the (project, id) index
    event_from = (
        "SELECT id, received_at FROM events WHERE project_id = $1 AND id >= $2 ORDER BY id LIMIT 1"
    )
    per_minute = (
        "SELECT received_at / 60000 * 60000, count(*) FROM events"
        " WHERE project_id = $1 AND id >= $2 AND received_at >= $3 GROUP BY 1"
    )

    # -- the loaders of a batch (loading.BatchQueries)
    users_by_external = {
        whole: f"SELECT {columns} FROM users u WHERE u.project_id = $1 AND u.external_id {{any[2]}}"
        for whole, columns in ((True, USER_COLUMNS), (False, PARTIAL_USER))
    }
    users_by_anonymous = {
        whole: f"SELECT a.anonymous_id, {columns} FROM user_anonymous_ids a"
        " JOIN users u ON u.project_id = a.project_id AND u.id = a.user_id"
        " WHERE a.project_id = $1 AND a.anonymous_id {any[2]}"
        for whole, columns in ((True, USER_COLUMNS), (False, PARTIAL_USER))
    }
    users_by_id = f"SELECT {USER_COLUMNS} FROM users u WHERE u.id {{any[1]}}"
    devices_where = {
        column: f"SELECT {DEVICE_COLUMNS} FROM devices WHERE project_id = $1 AND {column}"
        " {any[2]}"
        for column in ("device_id", "token")
    }
    devices_of = f"SELECT {DEVICE_COLUMNS} FROM devices WHERE user_id {{any[1]}} ORDER BY id"
    anonymous_ids_of = (
        "SELECT user_id, anonymous_id FROM user_anonymous_ids WHERE user_id {any[1]} ORDER BY id"
    )
    stored_request_keys = (
        "SELECT key, fingerprint FROM request_keys WHERE project_id = $1 AND key {any[2]}"
    )

    # -- the writes of a batch (common.SqlTx.write), in its order
    insert_request_key = (
        "INSERT INTO request_keys (project_id, key, fingerprint, created_at)"
        " VALUES ($1, $2, $3, $4)"
    )
    insert_user = (
        f"INSERT INTO users ({USER_FIELDS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8{{json}}, $9,"
        " $10)"
    )
    delete_devices = "DELETE FROM devices WHERE id {any[1]}"
    delete_anonymous_id = (
        "DELETE FROM user_anonymous_ids WHERE project_id = $1 AND anonymous_id = $2"
    )
    insert_anonymous_id = (
        "INSERT INTO user_anonymous_ids (project_id, anonymous_id, user_id) VALUES ($1, $2, $3)"
    )
    insert_device = (
        f"INSERT INTO devices ({DEVICE_FIELDS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10,"
        " $11{json}, $12, $13)"
    )
    insert_new_device = (  # with an id of the database's
        "INSERT INTO devices (project_id, user_id, device_id, token, os, os_version, model,"
        " app_build, app_version, extra, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6,"
        " $7, $8, $9, $10{json}, $11, $12) RETURNING id"
    )
    # a merged user's own items (domain.feed.MERGED_AWAY) leave the feed; its events move
    delete_merged_items = "DELETE FROM events WHERE user_id = $1 AND name {any[2]}"
    move_events = "UPDATE events SET user_id = $1 WHERE user_id = $2"
    update_user = (
        "UPDATE users SET external_id = $1, email = $2, phone = $3, timezone = $4, locale = $5,"
        " data = $6{json}, updated_at = $7 WHERE id = $8"
    )
    # events, as many rows a statement as ROWS_PER_INSERT says (common.SqlTx.insert_event_rows,
    # SQLite's; PostgreSQL copies the same EVENT_FIELDS), and one row (tests, tools)
    insert_event_rows = {n: _insert_values("events", EVENT_FIELDS, n) for n in ROWS_PER_INSERT}
    insert_events = insert_event_rows[1]
    delete_users = "DELETE FROM users WHERE id {any[1]}"
    delete_user_rows = tuple(  # a deleted user's rows, its events and lists apart
        f"DELETE FROM {table} WHERE project_id = $1 AND user_id = $2"  # (sqlite_index.py;
        for table in ("devices", "user_anonymous_ids")  # delete_members_of)
    )
    delete_user = "DELETE FROM users WHERE project_id = $1 AND id = $2"
    delete_user_events = "DELETE FROM events WHERE project_id = $1 AND user_id = $2"
    user_items_named = (  # PostgreSQL's (events_user index); SQLite reads user_events
        "SELECT data{text} FROM events WHERE project_id = $1 AND user_id = $2 AND name = $3"
    )
    prune_request_keys = "DELETE FROM request_keys WHERE created_at < $1"

    # -- lists (docs/lists.md)
    insert_list = (  # a dynamic list with its lease held by its creator ($9, until $10)
        "INSERT INTO lists (project_id, name, type, rule, state, progress, published, version,"
        " created_at, updated_at, lease_holder, lease_expires_at)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, 1, $8, $8, $9, $10) RETURNING id"
    )
    lists_of = LISTS + " WHERE l.project_id = $1 ORDER BY l.id"
    list_by_id = LISTS + " WHERE l.project_id = $1 AND l.id = $2"
    # the lists waiting for a process to compute them: no lease, or one that expired at $1
    loading_lists = (
        LISTS + " WHERE l.state = 'loading' AND (l.lease_holder IS NULL"
        " OR l.lease_expires_at < $1) ORDER BY l.id"
    )
    lists_of_user = (  # a probe of list_members' key for each list of the project
        LISTS + " JOIN list_members j ON j.list_id = l.id AND j.user_id = $2"
        " WHERE l.project_id = $1 ORDER BY l.id"
    )
    update_list = (  # a list being computed stays loading: its end settles the state
        "UPDATE lists SET name = $3, published = $4, updated_at = $5, state = CASE WHEN"
        " state = 'loading' THEN state WHEN $4 = CAST(1 AS bigint) THEN 'ready' ELSE 'draft' END"
        " WHERE project_id = $1 AND id = $2"
    )
    restart_list = (  # compute again (with a new rule when $3 is not null), by $5 (until $6)
        "UPDATE lists SET rule = COALESCE($3, rule), version = version + 1, state = 'loading',"
        " progress = 0, updated_at = $4, lease_holder = $5, lease_expires_at = $6,"
        " failures = 0, error = NULL, failed_at = NULL WHERE project_id = $1 AND id = $2"
    )
    # one process computes a version of a list: the one that holds its lease ($3, until $4)
    claim_list = (
        "UPDATE lists SET lease_holder = $3, lease_expires_at = $4 WHERE id = $1 AND version = $2"
        " AND state = 'loading' AND " + lease_free("$3", "$5")
    )
    # after each chunk of a backfill; nothing when the lease was lost or a newer version asked
    list_progress = (
        "UPDATE lists SET progress = $4, lease_expires_at = $5 WHERE id = $1 AND version = $2"
        " AND lease_holder = $3"
    )
    # a backfill that failed: noted, and its lease kept until the next try ($6)
    fail_list = (
        "UPDATE lists SET failures = failures + 1, error = $4, failed_at = $5,"
        " lease_expires_at = $6 WHERE id = $1 AND version = $2 AND lease_holder = $3"
    )
    release_list = (  # a process that stops gives its backfills back
        "UPDATE lists SET lease_holder = NULL, lease_expires_at = NULL WHERE id = $1"
        " AND lease_holder = $2"
    )
    # the ends of the chunks of a backfill: every $2-th user of the project by id, with its rank
    chunk_ends = (
        "SELECT id, n FROM (SELECT id, row_number() OVER (ORDER BY id) AS n FROM users"
        " WHERE project_id = $1) AS r WHERE n % $2 = 0 ORDER BY id"
    )
    user_count = "SELECT count(*) FROM users WHERE project_id = $1"
    user_ids = "SELECT id FROM users WHERE project_id = $1"
    # the end of a computation: only when no newer one was asked for meanwhile
    finish_list = (  # (and by the process holding its lease)
        "UPDATE lists SET progress = NULL, state = CASE WHEN published = 1 THEN 'ready'"
        " ELSE 'draft' END, lease_holder = NULL, lease_expires_at = NULL, failures = 0,"
        " error = NULL, failed_at = NULL WHERE id = $1 AND version = $2 AND lease_holder = $3"
        " RETURNING id"
    )
    delete_list = "DELETE FROM lists WHERE project_id = $1 AND id = $2"
    delete_list_members = tuple(
        f"DELETE FROM {table} WHERE list_id = $1" for table in ("list_members", "list_due")
    )
    list_member_ids = "SELECT user_id FROM list_members WHERE list_id = $1"
    list_due_of = "SELECT user_id, due_at FROM list_due WHERE list_id = $1"
    insert_list_member = (
        "INSERT INTO list_members (list_id, project_id, user_id, joined_at)"
        " VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING"
    )
    delete_list_member = "DELETE FROM list_members WHERE list_id = $1 AND user_id = $2"
    # the writer's (a CSV import): nothing when the list was deleted meanwhile
    join_static_list = (
        "INSERT INTO list_members (list_id, project_id, user_id, joined_at)"
        " SELECT $1, $2, CAST($3 AS bigint), CAST($4 AS bigint) WHERE EXISTS (SELECT 1 FROM lists WHERE id = $1"
        " AND project_id = $2 AND type = 'static') ON CONFLICT DO NOTHING"
    )
    list_members = {
        before: f"SELECT {USER_COLUMNS} FROM list_members m {{cross}} users u"
        " ON u.project_id = m.project_id AND u.id = m.user_id WHERE m.list_id = $1"
        " AND m.project_id = $2"
        + (
            " AND (u.created_at, u.id) < ($3, $4) ORDER BY u.created_at DESC, u.id DESC LIMIT $5"
            if before
            else " ORDER BY u.created_at DESC, u.id DESC LIMIT $3"
        )
        for before in (False, True)
    }
    user_ids_by_external = (
        "SELECT external_id, id FROM users WHERE project_id = $1 AND external_id {any[2]}"
    )
    # a merged user's static memberships go to the user it merged into (SqlTx.write)
    move_list_members = (
        "INSERT INTO list_members (list_id, project_id, user_id, joined_at)"
        " SELECT list_id, project_id, $1, joined_at FROM list_members WHERE user_id = $2"
        " AND list_id IN (SELECT id FROM lists WHERE type = 'static') ON CONFLICT DO NOTHING"
    )
    delete_members_of = tuple(  # of users of project $1
        f"DELETE FROM {table} WHERE list_id IN ({PROJECT_LISTS}) AND user_id {{any[2]}}"
        for table in LIST_USER_TABLES
    )

    # the lists a batch keeps current (SqlTx.update_lists), from the rule on what the lists'
    # cache knows them by (list_cache.py: a stamp)
    dynamic_lists = (
        "SELECT id, project_id, name, rule, version, state, created_at FROM lists"
        " WHERE type = 'dynamic' AND project_id {any[1]}"
    )
    members_among = "SELECT user_id FROM list_members WHERE list_id = $1 AND user_id {any[2]}"
    members_of_users = (  # of the lists $1 (SqlTx.settle_many): a probe of the key a pair
        "SELECT list_id, user_id FROM list_members WHERE list_id {any[1]} AND user_id {any[2]}"
    )
    due_of_users = (
        "SELECT list_id, user_id, due_at FROM list_due WHERE list_id {any[1]} AND user_id {any[2]}"
    )
    lists_by_id = (
        "SELECT id, project_id, name, rule, version, state, created_at FROM lists WHERE id {any[1]}"
    )
    # the documents of a few users, for evaluating rules in memory (SqlTx.evaluate)
    users_in_range = (  # a backfill's chunk of users (ids after $2, up to $3), as documents
        f"SELECT {USER_COLUMNS} FROM users u WHERE u.project_id = $1 AND u.id > $2 AND u.id <= $3"
    )
    list_users_by_id = (
        f"SELECT {USER_COLUMNS} FROM users u WHERE u.project_id = $1 AND u.id {{any[2]}}"
    )
    events_of_users = (  # PostgreSQL's (the events_user index); SQLite: sqlite.py
        "SELECT user_id, name, data{text}, created_at FROM events WHERE user_id {any[1]}"
        " AND name {any[2]}"
    )
    delete_due = "DELETE FROM list_due WHERE list_id = $1 AND user_id {any[2]}"
    insert_due = (
        "INSERT INTO list_due (list_id, project_id, user_id, due_at) VALUES ($1, $2, $3, $4)"
        " ON CONFLICT (list_id, user_id) DO UPDATE SET due_at = excluded.due_at"
    )
    due_all = (  # after a backfill: every user of the project is looked at once
        "INSERT INTO list_due (list_id, project_id, user_id, due_at)"
        " SELECT $1, project_id, id, $3 FROM users WHERE project_id = $2"
        " ON CONFLICT (list_id, user_id) DO UPDATE SET due_at = excluded.due_at"
    )
    due_members = (  # the same, for a fading rule: time can only take its members out
        "INSERT INTO list_due (list_id, project_id, user_id, due_at)"
        " SELECT list_id, project_id, user_id, $3 FROM list_members"
        " WHERE list_id = $1 AND project_id = $2"
        " ON CONFLICT (list_id, user_id) DO UPDATE SET due_at = excluded.due_at"
    )
    # read in the sweeper's write transaction: one sweeper at a time (SqlTx.sweep)
    due = "SELECT list_id, user_id FROM list_due WHERE due_at <= $1 ORDER BY due_at LIMIT $2"
    any_due = "SELECT 1 FROM list_due WHERE due_at <= $1 LIMIT 1"
    feed_mark = "SELECT max(id) FROM events WHERE project_id = $1"
    changed_since = (  # the users a backfill may have missed (their events or profile changed)
        "SELECT DISTINCT user_id FROM events WHERE project_id = $1 AND id > $2"
        " UNION SELECT id FROM users WHERE project_id = $1 AND updated_at >= $3"
    )
    prune_gone_members = (  # users deleted while a backfill ran
        "DELETE FROM list_members WHERE list_id = $1 AND NOT EXISTS"
        " (SELECT 1 FROM users u WHERE u.project_id = $2 AND u.id = list_members.user_id)"
    )

    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect
        for name, template in vars(Queries).items():
            if name.startswith("_"):
                continue
            if isinstance(template, str):
                setattr(self, name, dialect.render(template))
            elif isinstance(template, dict):
                setattr(self, name, {k: dialect.render(t) for k, t in template.items()})
            elif isinstance(template, tuple):
                setattr(self, name, tuple(dialect.render(t) for t in template))
