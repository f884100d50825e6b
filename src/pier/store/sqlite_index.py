"""SQLite's per-user event index, `user_events` (user_id, created_at, event_id), kept apart from
the writer's commits.

Events are appended in id order for random users, so indexing them as they are written would
touch a leaf page per user on every commit. Instead the table is extended in the background,
up to a watermark (`index_state.upto`): every event with an id at or below it is in
user_events, and readers scan the events past it (see SqliteStore.user_events).

The indexer does this in small steps, run by the writer between batches so that no step holds
the write lock for long (one large step per second was the whole p99 of the events benchmark):

1. fill: copy the events written since the last step into `pending`, an in-memory table of
   the connection, sorted by (user_id, created_at, event_id). (Read back, in a thread: a
   trigger filling it from the writer's inserts, and a fill on the event loop, both cost more
   over HTTP; docs/performance.md, "Issue 16: multi-row inserts and the index fill");
2. once enough is pending, a pass walks `pending` in key order, a chunk per step, and moves
   each chunk into user_events; a chunk covers a narrow range of users, so it touches few
   leaves, and many rows per leaf. At the end of a pass the watermark moves to the last event
   filled before the pass began: all of those were moved.

Passes of their own keep `message_ids` (project_id, message_id) -> event_id, SQLite's index of
the events' message ids, the same way, up to a watermark of its own (index_state's row
'message_ids'): `pending_mids` holds the message ids of the events past it, sorted by
(project_id, message_id), and a pass moves it in chunks in that order. A unique index on events
(project_id, message_id) wrote a page at a random place for every event with a message id
(every event the SDKs send) at each commit: 2.5 times the CPU of a batch of events without. The
ids are random, so a pass writes a page of message_ids for every few rows it moves until it
moves more rows than the table has leaves: its passes are larger and rarer than user_events'
(MIDS_PASS_ROWS; with passes of user_events' size, at 10M events stored a pass wrote a page for
every 1.6 rows it moved; docs/performance.md, "Message ids at 10M events"). Nothing reads message_ids but the writer's check for message ids stored already
(SqliteTx.seen_message_ids): message_ids, then pending_mids (each row checked against its event,
which another connection may have deleted) and the events past the last fill; SQLite runs one
write transaction at a time, so that check, inside the batch's, is what keeps message ids
unique, as the unique index did.

Merges and deletions by this process update `pending` too (move_user_events,
delete_user_events). Another process writing the same file (`--workers` on SQLite, or a CLI)
cannot: for a while after one is seen (`others`: by default PRAGMA data_version, which any
commit of another connection moves; the store gives one that only its transactions of the
writer's kind move, not a delivery process's cursors), chunks take each event's owner from
`events` instead, which costs more. Rows are inserted with OR IGNORE: after a crash,
`pending` is gone and the events past the watermark are filled again, some already indexed.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

PASS_ROWS = 100_000  # pending rows that start a pass (about five seconds at full speed)
PASS_EVERY = 5.0  # seconds: a pass starts after this even with fewer rows pending
MIDS_PASS_ROWS = 400_000  # the same for pending_mids (it then holds about 24 MB)
MIDS_PASS_EVERY = 60.0
MIDS_CHUNKS = 128  # a chunk of a message ids' pass moves at least this share of what is pending
CHUNK_ROWS = 2_000  # rows moved per step at least (a few ms of the write lock)
FILL_MAX = 50_000  # events copied per step at most (a long backlog after a restart)
INDEX_MAX_ROWS = 500_000  # events indexed in one go by index_user_events at most

COLUMNS = "user_id, created_at, event_id"  # the key of pending and of user_events
SHARED_FOR = 60.0  # seconds after another process's commit during which chunks join events
MID_COLUMNS = "project_id, message_id"  # the key of pending_mids and of message_ids
USERS, MIDS = "user_events", "message_ids"  # the watermarks' names in index_state


Key = tuple[Any, ...]  # a row of a Sorted table's key


class Sorted:
    """A temporary table of rows waiting for the index table they go to, keyed as it is, and
    the statements that move the rows of a span of its keys there (a step of a pass)."""

    def __init__(
        self, table: str, key: tuple[str, ...], target: str, extra: str, by_events: str
    ) -> None:
        """`key`: its key columns, also the index table's; `extra`: a column its rows hold
        beside them, or ""; `by_events`: the same columns as the events now have them, for a
        chunk while another connection may have changed or deleted events."""
        self.start: Key = (-1,) * len(key)  # below every key (its first column is an id)
        cols = ", ".join(key)
        held = ", ".join(f"p.{c}" for c in (*key, extra) if c)
        span = f"({', '.join(f'p.{c}' for c in key)})"
        marks = ", ".join("?" * len(key))
        order = ", ".join(str(i + 1) for i in range(len(key)))  # (the columns selected)
        where = f" WHERE {span} > ({marks}) AND {span} <= ({marks}) ORDER BY {order}"
        into = f"INSERT OR IGNORE INTO {target} ({held.replace('p.', '')})"
        self.nth = (
            f"SELECT {cols} FROM temp.{table} WHERE ({cols}) > ({marks})"
            f" ORDER BY {cols} LIMIT 1 OFFSET ?"
        )
        self.last = (
            f"SELECT {cols} FROM temp.{table} ORDER BY"
            f" {', '.join(c + ' DESC' for c in key)} LIMIT 1"
        )
        self.move = {  # by whether the rows are read through their events (`by_events`)
            False: f"{into} SELECT {held} FROM temp.{table} p{where}",
            True: f"{into} SELECT {by_events} FROM temp.{table} p"
            f" JOIN events e ON e.id = p.event_id{where}",
        }
        self.drop = f"DELETE FROM temp.{table} WHERE ({cols}) > ({marks}) AND ({cols}) <= ({marks})"

    def chunk(
        self, db: sqlite3.Connection, after: Key, rows: int, to_end: bool, by_events: bool
    ) -> tuple[Key, int, bool]:
        """Move the `rows` rows past the key `after` (all of them when `to_end`, or when fewer
        are left): (the last key moved, or `after`; how many rows left the table; whether
        that was all of them past `after`)."""
        end = None if to_end else db.execute(self.nth, (*after, rows - 1)).fetchone()
        reached = end is None
        if end is None:
            end = db.execute(self.last).fetchone()
        if end is None or tuple(end) <= after:
            return after, 0, reached
        span = (*after, *end)
        db.execute(self.move[by_events], span)
        return tuple(end), db.execute(self.drop, span).rowcount, reached


# pending: user_events' rows, or with each event's owner as events hold it now; pending_mids:
# message_ids' rows, or only those whose event is still there
PENDING = Sorted(
    "pending", tuple(COLUMNS.split(", ")), "user_events", "",
    "e.user_id, e.created_at, e.id",
)  # fmt: skip
PENDING_MIDS = Sorted(
    "pending_mids", tuple(MID_COLUMNS.split(", ")), "message_ids", "event_id",
    "p.project_id, p.message_id, p.event_id",
)  # fmt: skip


def create_pending(db: sqlite3.Connection) -> None:
    """The writer connection's in-memory table of events waiting for user_events."""
    db.execute("PRAGMA temp_store=MEMORY")
    db.execute(
        "CREATE TEMP TABLE IF NOT EXISTS pending (user_id INTEGER NOT NULL,"
        " created_at INTEGER NOT NULL, event_id INTEGER NOT NULL,"
        f" PRIMARY KEY ({COLUMNS})) WITHOUT ROWID"
    )
    db.execute(
        "CREATE TEMP TABLE IF NOT EXISTS pending_mids (project_id INTEGER NOT NULL,"
        " message_id TEXT NOT NULL, event_id INTEGER NOT NULL,"
        f" PRIMARY KEY ({MID_COLUMNS})) WITHOUT ROWID"
    )


def indexed_upto(db: sqlite3.Connection, name: str = USERS) -> int:
    """The watermark of user_events (or, `name` MIDS, of message_ids)."""
    upto: int = db.execute("SELECT upto FROM index_state WHERE name = ?", (name,)).fetchone()[0]
    return upto


@contextmanager
def _immediate(db: sqlite3.Connection) -> Iterator[None]:
    """A write transaction of its own (BEGIN IMMEDIATE), committed, or rolled back on any
    error."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


def _due(pending: int, rows: int, last: float, every: float) -> bool:
    """Whether a pass starts: `rows` pending, or some and `every` seconds since the last."""
    return pending >= rows or (pending > 0 and time.monotonic() - last >= every)


class UserEventsIndexer:
    """Runs on the writer's connection, between batches, under the writer's lock."""

    def __init__(self, db: sqlite3.Connection, others: Callable[[], int] | None = None) -> None:
        """`others`: a number that changes when another connection may have changed events'
        owners (merged or deleted users); PRAGMA data_version if not given."""
        self.db = db
        self.others = others or (lambda: int(db.execute("PRAGMA data_version").fetchone()[0]))
        create_pending(db)
        db.execute("DELETE FROM temp.pending")
        db.execute("DELETE FROM temp.pending_mids")
        # every event up to here is indexed or pending, in both
        self.users_from = indexed_upto(db)  # (pending is filled past this)
        self.filled = min(self.users_from, indexed_upto(db, MIDS))
        self.pending = 0
        self.pass_upto: int | None = None  # the watermark the pass in progress will set
        self.pass_version = 0  # others() when the pass in progress began
        self.cursor: Key | None = None  # last key moved by this pass
        self.last_pass = time.monotonic()
        self.mids = 0  # rows in pending_mids
        self.mids_pass_upto: int | None = None  # the same for the passes of message ids
        self.mids_pass_version = 0
        self.mids_cursor: Key = PENDING_MIDS.start
        self.mids_last_pass = self.last_pass
        self.data_version = self.others()
        self.shared_until = 0.0  # until then, another process may have changed owners
        # others() when pending was last known faithful (empty, or at the end of a
        # pass no other connection committed during): while it reads the same, no other
        # connection has committed since, so each pending row's owner is its event's (owners()
        # and the lists' reads of a user's events rely on it)
        self.empty_version: int | None = self.data_version
        # the same for pending_mids: while others() reads this, its rows are moved as they are,
        # else through their events (another connection may have deleted some)
        self.mids_version: int | None = self.data_version

    @property
    def passing(self) -> bool:
        """Whether a pass is under way (of either table): then every step moves a chunk."""
        return self.pass_upto is not None or self.mids_pass_upto is not None

    def step(self) -> None:
        """One bounded piece of work: fill, then move one chunk if a pass is due: of
        user_events', which goes first, else of message_ids'. A chunk is at least twice what
        this step filled: rows filled during a pass land all over the key order, and a pass
        that moved fewer than came in would never reach the end (then the watermark stands
        still, and so does pending's trust after another connection's commit, while batches
        grow: seen with lists under (a), 5,000 events a batch)."""
        filled, mids = self._fill()
        if self.pass_upto is None and _due(self.pending, PASS_ROWS, self.last_pass, PASS_EVERY):
            self.pass_upto, self.pass_version = self.filled, self.others()
            self.cursor = PENDING.start
        if self.pass_upto is not None:
            self._move_chunk(max(CHUNK_ROWS, self.pending // 32, 2 * filled))
            return
        if self.mids_pass_upto is None and _due(
            self.mids, MIDS_PASS_ROWS, self.mids_last_pass, MIDS_PASS_EVERY
        ):
            self.mids_pass_upto, self.mids_pass_version = self.filled, self.others()
            self.mids_cursor = PENDING_MIDS.start
        if self.mids_pass_upto is not None:
            self._move_mids_chunk(max(CHUNK_ROWS, self.mids // MIDS_CHUNKS, 2 * mids))

    def owners(self) -> int | None:
        """When `pending` can stand in for an index of the events past the watermark (their
        owners there are the events' own, and none of them was deleted: nothing committed by
        another connection since it was last empty), the id past which events are not in it
        (the events written since the last fill, found by a short scan); else None. Call
        inside a write transaction."""
        if self.empty_version is None:
            return None
        return self.filled if self.others() == self.empty_version else None

    def _fill(self) -> tuple[int, int]:
        """Copy the events written since the last fill into pending and pending_mids; returns
        how many rows each got."""
        db = self.db
        last = db.execute("SELECT max(id) FROM events").fetchone()[0] or 0
        if last <= self.filled:
            return 0, 0
        upto = min(last, self.filled + FILL_MAX)
        cur = db.execute(
            "INSERT OR IGNORE INTO temp.pending SELECT user_id, created_at, id FROM events"
            " WHERE id > ? AND id <= ?",
            (max(self.filled, self.users_from), upto),
        )
        rows = max(cur.rowcount, 0)
        self.pending += rows
        # OR REPLACE: after another connection deleted an event and stored its message id
        # again, the newer event is the one that holds it
        mids = db.execute(
            "INSERT OR REPLACE INTO temp.pending_mids SELECT project_id, message_id, id"
            " FROM events WHERE id > ? AND id <= ? AND message_id IS NOT NULL",
            (self.filled, upto),
        ).rowcount
        self.mids += mids
        self.filled = upto
        return rows, mids

    def _move_chunk(self, rows: int) -> None:
        db = self.db
        assert self.cursor is not None and self.pass_upto is not None
        with _immediate(db):
            version = self.others()
            if version != self.data_version:  # another connection committed
                self.data_version = version
                self.shared_until = time.monotonic() + SHARED_FOR
            shared = time.monotonic() < self.shared_until
            self.cursor, moved, last_chunk = PENDING.chunk(db, self.cursor, rows, False, shared)
            if last_chunk:
                left = self._end_pass("pending", USERS, self.pass_upto)
                # and message_ids' watermark over every event filled when none is pending
                # there (events without message ids: no pass of message ids moves it then)
                mids_left = (
                    None
                    if self.mids_pass_upto is not None
                    else self._end_pass("pending_mids", MIDS)
                )
        self.pending -= moved
        if last_chunk:
            self.pending = left
            if mids_left == 0:
                self.mids, self.mids_version = 0, self.data_version  # (empty: faithful)
            # pending is faithful again when it is empty, or when no other connection has
            # committed since the pass began: every row left was filled during the pass, from
            # events as they were then, and this connection's own changes since are in it
            # (under steady ingestion pending is never empty at the end of a pass)
            if left == 0 or self.pass_version == self.data_version:
                self.empty_version = self.data_version
            self.pass_upto = self.cursor = None
            self.last_pass = time.monotonic()

    def _move_mids_chunk(self, rows: int) -> None:
        """A step of a pass of message ids (as _move_chunk's of user_events)."""
        db = self.db
        assert self.mids_pass_upto is not None
        with _immediate(db):
            version = self.others()
            through_events = version != self.mids_version
            self.mids_cursor, moved, last_chunk = PENDING_MIDS.chunk(
                db, self.mids_cursor, rows, False, through_events
            )
            if last_chunk:
                left = self._end_pass("pending_mids", MIDS, self.mids_pass_upto)
        self.mids -= moved
        if last_chunk:
            self.mids = left
            if left == 0 or self.mids_pass_version == version:  # (as at the end of _move_chunk)
                self.mids_version = version
            self.mids_pass_upto = None
            self.mids_last_pass = time.monotonic()

    def _end_pass(self, table: str, name: str, pass_upto: int = 0) -> int:
        """At a pass's last chunk, inside its transaction: move the watermark `name` over
        what the pass moved (up to `pass_upto`), or over all that was filled when nothing is
        left pending (counted again: merges and deletions take rows out too); returns the rows
        left."""
        left: int = self.db.execute(f"SELECT count(*) FROM temp.{table}").fetchone()[0]
        self.db.execute(
            "UPDATE index_state SET upto = max(upto, ?) WHERE name = ?",
            (self.filled if left == 0 else pass_upto, name),
        )
        return left


def index_user_events(db: sqlite3.Connection, max_rows: int = INDEX_MAX_ROWS) -> int:
    """Index every event past the watermark now, in one transaction; returns how many events
    the watermark moved over. (Tests, and tools; the server uses UserEventsIndexer.)"""
    with _immediate(db):
        upto, mids_upto = indexed_upto(db), indexed_upto(db, MIDS)
        last = db.execute("SELECT max(id) FROM events").fetchone()[0] or 0
        last = min(last, upto + max_rows)
        if last > upto:
            db.execute(
                "INSERT OR IGNORE INTO user_events (user_id, created_at, event_id) SELECT"
                " user_id, created_at, id FROM events WHERE id > ? AND id <= ?"
                " ORDER BY user_id, created_at, id",
                (upto, last),
            )
            db.execute("UPDATE index_state SET upto = ? WHERE name = ?", (last, USERS))
        if last > mids_upto:
            db.execute(
                f"INSERT OR IGNORE INTO message_ids ({MID_COLUMNS}, event_id) SELECT"
                " project_id, message_id, id FROM events WHERE id > ? AND id <= ?"
                " AND message_id IS NOT NULL ORDER BY project_id, message_id",
                (mids_upto, last),
            )
            db.execute("UPDATE index_state SET upto = ? WHERE name = ?", (last, MIDS))
    return max(last - upto, 0)


def move_user_events(
    db: sqlite3.Connection, moves: list[tuple[int, int]], drop: Sequence[str] = ()
) -> None:
    """Give every event of user `from` to user `to`, indexed or not, for each (from, to) of a
    batch's merges, but delete those named one of `drop` (a merged user's own items): each
    statement serves them all (one scan of the events past the index per merge made a batch of
    merges cost seconds)."""
    db.execute(
        "CREATE TEMP TABLE IF NOT EXISTS moves (frm INTEGER PRIMARY KEY, dst INTEGER NOT NULL)"
    )
    db.execute("DELETE FROM temp.moves")
    db.executemany("INSERT INTO temp.moves (frm, dst) VALUES (?, ?)", moves)
    upto = indexed_upto(db)
    if drop:
        named = f"name IN ({', '.join('?' * len(drop))})"
        for where, args in (
            (
                f"{named} AND id IN (SELECT event_id FROM user_events"
                " WHERE user_id IN (SELECT frm FROM temp.moves))",
                tuple(drop),
            ),
            (f"id > ? AND {named} AND user_id IN (SELECT frm FROM temp.moves)", (upto, *drop)),
        ):
            _forget_message_ids(db, where, args)
            db.execute(f"DELETE FROM events WHERE {where}", args)
    to = "(SELECT dst FROM temp.moves WHERE frm = events.user_id)"
    db.execute(
        f"UPDATE events SET user_id = {to} WHERE id IN (SELECT event_id FROM user_events"
        " WHERE user_id IN (SELECT frm FROM temp.moves))"
    )
    db.execute(
        f"UPDATE events SET user_id = {to} WHERE id > ?"
        " AND user_id IN (SELECT frm FROM temp.moves)",
        (upto,),
    )
    # indexed rows, and pending ones (straight in, as `to`'s: a pass past `to` would miss them)
    for table in ("user_events", "temp.pending"):
        db.execute(
            f"INSERT OR IGNORE INTO user_events ({COLUMNS}) SELECT m.dst, t.created_at,"
            f" t.event_id FROM temp.moves m JOIN {table} t ON t.user_id = m.frm"
            " JOIN events e ON e.id = t.event_id"  # not the dropped ones
        )
        db.execute(f"DELETE FROM {table} WHERE user_id IN (SELECT frm FROM temp.moves)")


def user_items_named(db: sqlite3.Connection, user_id: int, name: str) -> list[str]:
    """The data of a user's events with this name, indexed or not (some may come twice: an
    indexer pass may have indexed events past the watermark)."""
    rows = db.execute(
        "SELECT e.data FROM user_events x JOIN events e ON e.id = x.event_id"
        " WHERE x.user_id = ? AND e.name = ?"
        " UNION ALL SELECT data FROM events WHERE id > ? AND user_id = ? AND name = ?",
        (user_id, name, indexed_upto(db), user_id, name),
    ).fetchall()
    return [r[0] for r in rows]


def delete_user_events(db: sqlite3.Connection, user_id: int) -> None:
    """Delete every event of a user, indexed or not."""
    upto = indexed_upto(db)
    for where, args in (
        ("id IN (SELECT event_id FROM user_events WHERE user_id = ?)", (user_id,)),
        ("id > ? AND user_id = ?", (upto, user_id)),
    ):
        _forget_message_ids(db, where, args)  # (a retry of one of them is stored again)
        db.execute(f"DELETE FROM events WHERE {where}", args)
    db.execute("DELETE FROM user_events WHERE user_id = ?", (user_id,))
    db.execute("DELETE FROM temp.pending WHERE user_id = ?", (user_id,))


def _forget_message_ids(db: sqlite3.Connection, where: str, args: tuple[object, ...]) -> None:
    """Before the events `where` are deleted: their message ids leave message_ids and this
    connection's pending_mids (another connection's keeps its rows: its check joins them with
    the events, and its chunks move them through the events after this commit)."""
    keys = db.execute(
        f"SELECT {MID_COLUMNS} FROM events WHERE message_id IS NOT NULL AND {where}", args
    ).fetchall()
    for table in ("message_ids", "temp.pending_mids"):  # by key (a row-value IN walks a project)
        db.executemany(f"DELETE FROM {table} WHERE project_id = ? AND message_id = ?", keys)
