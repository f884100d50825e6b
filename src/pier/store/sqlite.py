"""SQLite backend: the embedded default. WAL mode; one writer connection used from the event loop
(the writer batches many requests into one transaction), one connection for reads."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future
from contextlib import asynccontextmanager
from typing import Any

from ..clock import NEVER
from ..domain.feed import DEVICE_REGISTERED, MERGED_AWAY
from .base import (
    PRUNE_EVERY,
    EventRow,
    StoreUnavailable,
    request_keys_cutoff,
)
from .common import SqlStore, SqlTx, event_row
from .list_cache import ListCache
from .loading import IdentityCache
from .migrations import migrations
from .queries import SQLITE, Queries, Run, json_text
from .segments_sql import register_sqlite_functions
from .sqlite_index import (
    MIDS,
    UserEventsIndexer,
    create_pending,
    delete_user_events,
    indexed_upto,
    move_user_events,
    user_items_named,
)

QUERIES = Queries(SQLITE)
BUSY_TIMEOUT_MS = 10_000  # how long a statement waits for another connection's lock
BEGIN_RETRY_S = 0.0005  # a write transaction's next try for the lock, outside the writer process
# SQLite's primary result codes that say the database cannot serve now (locked past the busy
# timeout, disk trouble, a file it cannot open or write): answered 503. Any other error (a
# constraint, a statement Pier got wrong) is a bug: a 500.
UNAVAILABLE_CODES = frozenset(
    {
        sqlite3.SQLITE_BUSY,
        sqlite3.SQLITE_LOCKED,
        sqlite3.SQLITE_NOMEM,
        sqlite3.SQLITE_READONLY,
        sqlite3.SQLITE_IOERR,
        sqlite3.SQLITE_FULL,
        sqlite3.SQLITE_CANTOPEN,
        sqlite3.SQLITE_PROTOCOL,
    }
)


def check_unavailable(exc: BaseException) -> None:
    """Raise StoreUnavailable for an error that means the database cannot serve now."""
    if isinstance(exc, sqlite3.Error) and exc.sqlite_errorcode & 0xFF in UNAVAILABLE_CODES:
        raise StoreUnavailable(f"{exc} ({exc.sqlite_errorname})") from exc


def _user_events_sql(cursor: str) -> str:
    """A user's events from user_events up to its watermark, and from a scan past it."""
    columns = "e.id, e.name, e.data, e.created_at, e.received_at, e.message_id, e.user_id"
    return (
        f"SELECT * FROM (SELECT {columns} FROM user_events x JOIN events e ON e.id = x.event_id"
        f" WHERE x.user_id = :u {cursor} ORDER BY x.created_at DESC, x.event_id DESC LIMIT :n)"
        f" UNION ALL SELECT {columns} FROM events e WHERE e.id > :upto AND e.user_id = :u"
        f" {cursor.replace('x.event_id', 'e.id').replace('x.', 'e.')}"
        # past the watermark, an indexer pass may have indexed some already
        " AND NOT EXISTS (SELECT 1 FROM user_events y WHERE y.user_id = e.user_id"
        " AND y.created_at = e.created_at AND y.event_id = e.id)"
        " ORDER BY 4 DESC, 1 DESC LIMIT :n"
    )


USER_EVENTS = {  # by whether there is a cursor
    False: _user_events_sql(""),
    True: _user_events_sql("AND (x.created_at, x.event_id) < (:t, :i)"),
}


EVENTS_OF = (
    "SELECT e.id, e.user_id, e.name, e.data, e.created_at FROM user_events x"
    " JOIN events e ON e.id = x.event_id WHERE x.user_id IN (SELECT value FROM json_each(?1))"
    " AND e.name IN (SELECT value FROM json_each(?2))"
    " UNION ALL SELECT e.id, e.user_id, e.name, e.data, e.created_at FROM events e WHERE e.id > ?3"
    " AND e.user_id IN (SELECT value FROM json_each(?1))"
    " AND e.name IN (SELECT value FROM json_each(?2))"
)
# the same, with the events past the watermark found through the indexer's pending rows (by
# user), and a scan only of those written since its last fill (?3: UserEventsIndexer.owners)
EVENTS_OF_PENDING = EVENTS_OF.replace(
    " UNION ALL ",
    " UNION ALL SELECT e.id, e.user_id, e.name, e.data, e.created_at FROM temp.pending p"
    " JOIN events e ON e.id = p.event_id WHERE p.user_id IN (SELECT value FROM json_each(?1))"
    " AND e.name IN (SELECT value FROM json_each(?2)) UNION ALL ",
)

# The message ids among ?2 that project ?1 holds: from message_ids up to the watermark, and
# from a scan of the events past ?3 (the watermark; migration 0013, sqlite_index.py), by id
# (`+project_id`: through events_project, each row was one more lookup in the table)
SEEN_MESSAGE_IDS = (
    "SELECT message_id FROM message_ids WHERE project_id = ?1"
    " AND message_id IN (SELECT value FROM json_each(?2))"
    " UNION ALL SELECT message_id FROM events WHERE id > ?3 AND +project_id = ?1"
    " AND message_id IN (SELECT value FROM json_each(?2))"
)
# the same, past the watermark from the indexer's pending_mids (each row whose event is still
# there: another connection may have deleted it), and a scan only of the events written since
# its last fill (?3: UserEventsIndexer.filled)
SEEN_MESSAGE_IDS_PENDING = SEEN_MESSAGE_IDS.replace(
    " UNION ALL ",
    " UNION ALL SELECT p.message_id FROM temp.pending_mids p JOIN events e ON e.id = p.event_id"
    " WHERE p.project_id = ?1 AND p.message_id IN (SELECT value FROM json_each(?2)) UNION ALL ",
)


EPOCH = "SELECT value FROM id_sequences WHERE name = 'transactions'"
BUMP_EPOCH = "UPDATE id_sequences SET value = value + 1 WHERE name = 'transactions' RETURNING value"


# seconds between two steps of the indexer while no pass is under way: each step has a cost
# of its own (its statements, and a thread), whatever it fills (docs/performance.md, "The
# default layout (eleventh session)", the writer process's waits)
STEP_EVERY = 0.02
# The WAL's size past which the writer lets the checkpoints catch up (SqliteStore._bound_wal),
# and how often it looks. The file is trimmed back to it when the WAL starts over.
WAL_LIMIT = 64 << 20
WAL_CHECK_EVERY = 1.0
# checkpoints run while batches go on before the one that holds them: each leaves less to copy
# (what was committed while it ran), so that the one that holds them takes about a millisecond
CATCH_UP_ROUNDS = 2


class SqliteStore(SqlStore):
    """Store over one SQLite file. `durability` is 'full' (fsync every commit) or 'normal'."""

    q = QUERIES
    max_chunks = 10  # a backfill's chunk scans the project's events: no events (user_id) index
    checkpoint_every = 0.5  # seconds between two of the Checkpointer's own checkpoints

    def __init__(
        self, url: str, path: str, durability: str = "full", on_loop: bool = False
    ) -> None:
        """`on_loop`: the event loop does nothing but this store's writes (the writer process),
        so the commits' waits for the disk and the indexer's steps run on it, not in a thread
        (the hand-off costs more than what the loop would do meanwhile)."""
        self.url = url
        self.path = path
        self.durability = durability
        self.never_suspends = on_loop  # (base.Store): its waits run on the loop
        self._writer: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None
        self._checkpointer: Checkpointer | None = None
        self._indexer: UserEventsIndexer | None = None  # made by the first step, once migrated
        self._last_step = self._last_pruned = self._last_wal_check = NEVER
        self._catching_up: Future[None] | None = None  # a checkpoint asked for by _bound_wal
        self._caught_up = 0  # how many of its rounds have run
        self._tx_lock = asyncio.Lock()
        self._identity = IdentityCache()  # one writer per file is the fast case: cache who is who
        # and what each user is to each dynamic list, with the lists' rows between batches
        self._lists: ListCache = ListCache(keep_rows=True)
        self._data_version = -1
        self._known_epoch: tuple[int, int] | None = None  # _epoch after this process's last
        self._seen_others = 0  # (_others)
        self._synchronous = "FULL" if durability == "full" else "NORMAL"

    # -- connections ---------------------------------------------------------------------
    def _connect(self, cache_mib: int = 8) -> sqlite3.Connection:
        folder = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(folder, exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self._synchronous}")
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        conn.execute(f"PRAGMA cache_size=-{cache_mib * 1024}")  # each connection has its own
        conn.execute(f"PRAGMA journal_size_limit={WAL_LIMIT}")
        register_sqlite_functions(conn)  # the coercions of rule-based segments
        return conn

    async def open(self) -> None:
        try:
            self._writer = self._connect(cache_mib=32)  # the one that loads and writes batches
            self._reader = self._connect()
            # Checkpoints copy the WAL into the database file: a thread does them, so that
            # the writer (on the event loop) never stalls on that I/O.
            self._writer.execute("PRAGMA wal_autocheckpoint=0")
            self._indexer = None
            create_pending(self._writer)  # merges and deletions update it (sqlite_index.py)
            self._checkpointer = Checkpointer(self._connect(), self.checkpoint_every)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"cannot open {self.path}: {exc}") from exc

    async def close(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.stop()
            self._checkpointer = None
        for conn in (self._writer, self._reader):
            if conn is not None:
                conn.close()
        self._writer = self._reader = None

    @property
    def db(self) -> sqlite3.Connection:
        assert self._writer is not None, "store is not open"
        return self._writer

    @property
    def ro(self) -> sqlite3.Connection:
        assert self._reader is not None, "store is not open"
        return self._reader

    @property
    def reader(self) -> SqliteRun:
        return SqliteRun(self.ro)

    @asynccontextmanager
    async def reading(self) -> AsyncIterator[SqliteRun]:
        # its statements never wait: no other read can come between BEGIN and COMMIT
        ro = self.ro
        ro.execute("BEGIN")
        try:
            yield SqliteRun(ro)
        finally:
            ro.execute("COMMIT")

    @asynccontextmanager
    async def writing(self, durable: bool = True) -> AsyncIterator[SqliteRun]:
        async with self._tx_lock:  # never inside a batch that is committing
            db = self.db
            if not durable:  # see SqlStore.writing: no fsync (the event loop would wait on it);
                # in WAL mode NORMAL syncs only at checkpoints, which this connection never runs
                db.execute("PRAGMA synchronous=NORMAL")
            try:
                await self._begin(db)
            except BaseException as exc:  # cancelled while waiting for the lock, too
                self._synced(durable)
                check_unavailable(exc)
                raise
            try:
                yield SqliteRun(db)
                db.execute("COMMIT")
            except BaseException as exc:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                check_unavailable(exc)
                raise
            finally:
                self._synced(durable)
                self._lists.rows.clear()  # a list may have changed (ListCache.rows)

    async def _begin(self, db: sqlite3.Connection) -> None:
        """BEGIN IMMEDIATE. The writer process waits for the write lock in SQLite's busy
        handler: it has nothing else to do. Any other process (the delivery process and `pier
        deliver` committing a cursor, a worker's management writes) tries again every
        BEGIN_RETRY_S on its event loop. The busy handler would block the loop, and its sleeps
        (1, 2, 5, 10 ... 100 ms) miss the short gaps between the writer's batches: under (d) a
        destination's cursor commit waited 34 ms at p90 and up to half a second, and the
        destination fell seconds behind (docs/performance.md, "The fifteenth session")."""
        if self.never_suspends:
            db.execute("BEGIN IMMEDIATE")
            return
        deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
        db.execute("PRAGMA busy_timeout=0")
        try:
            while True:
                try:
                    db.execute("BEGIN IMMEDIATE")
                    return
                except sqlite3.OperationalError as exc:
                    busy = exc.sqlite_errorcode & 0xFF == sqlite3.SQLITE_BUSY
                    if not busy or time.monotonic() >= deadline:
                        raise
                await asyncio.sleep(BEGIN_RETRY_S)
        finally:
            db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")

    def _synced(self, durable: bool) -> None:
        if not durable:
            self.db.execute(f"PRAGMA synchronous={self._synchronous}")

    async def migrate(self) -> list[int]:
        db = self.db
        db.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations"
            " (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)"
        )
        applied = []
        for version, name, sql in migrations("sqlite"):
            db.execute("BEGIN IMMEDIATE")
            try:
                done = db.execute(
                    "SELECT 1 FROM schema_migrations WHERE version = ?", (version,)
                ).fetchone()
                if not done:
                    for statement in _statements(sql):
                        db.execute(statement)
                    db.execute(
                        "INSERT INTO schema_migrations VALUES (?, ?, strftime('%s','now') * 1000)",
                        (version, name),
                    )
                    applied.append(version)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return applied

    # -- write path ----------------------------------------------------------------------
    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[SqliteTx]:
        # one transaction at a time on the writer's connection
        async with self._tx_lock, self._transaction() as tx:
            yield tx

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[SqliteTx]:
        db = self.db
        try:
            await self._begin(db)
        except sqlite3.Error as exc:
            check_unavailable(exc)
            raise
        tx = SqliteTx(db, self._identity, self._indexer, self._lists)
        try:
            self._others()
            bumped = db.execute(BUMP_EPOCH).fetchone()  # None: a database not migrated yet
            epoch = (bumped[0], self._schema_version()) if bumped else None
            yield tx
            # The commit waits for the disk (fsync): in a thread, so that the event loop
            # goes on reading and parsing the next requests meanwhile (unless on_loop).
            await self._off_loop(db.execute, "COMMIT")
        except BaseException as exc:
            if db.in_transaction:
                db.execute("ROLLBACK")
            check_unavailable(exc)
            raise
        finally:
            tx.release()
        self._known_epoch = epoch
        if tx.written is None:
            self._identity.clear()  # written outside the batch path: the cache can't follow
            self._lists.rows.clear()  # (a list may have changed)
        else:
            self._identity.committed(tx.written)
        self._lists.committed(tx.staged, tx.forget)

    def _others(self) -> int:
        """How many times this process has seen another's write transaction of the writer's
        kind (or a migration) committed, checked now: when that happens the caches of who is
        who and of lists are emptied, and the indexer stops trusting its pending rows. Other
        processes' commits (a delivery process's cursors, keys, a list's lease) change nothing
        those keep, and are told apart by the counter of migration 0010 (_epoch), read only
        when PRAGMA data_version says another connection committed something."""
        version = self.db.execute("PRAGMA data_version").fetchone()[0]
        if version != self._data_version:
            self._data_version = version
            self._lists.rows.clear()  # any commit may have made or changed a list (a CLI's)
            epoch = self._epoch()
            if epoch is None or epoch != self._known_epoch:
                self._known_epoch = epoch
                self._seen_others += 1
                self._identity.clear()
                self._lists.clear()
        return self._seen_others

    def _epoch(self) -> tuple[int, int] | None:
        """(transactions of the writer's kind ever committed, the schema's version): while it
        is what this process's last one left, no other process has written what its caches
        keep (migration 0010), whatever else was committed."""
        row = self.db.execute(EPOCH).fetchone()
        return (row[0], self._schema_version()) if row else None

    def _schema_version(self) -> int:
        return int(self.db.execute("PRAGMA schema_version").fetchone()[0])

    def is_retryable(self, exc: BaseException) -> bool:
        return False  # one writer at a time: there are no conflicts to replay

    # -- reads ---------------------------------------------------------------------------
    async def user_events(
        self, user_id: int, limit: int, before: tuple[int, int] | None
    ) -> list[EventRow]:
        """From user_events up to its watermark, and from a scan of the events past it."""
        ro = self.ro
        ro.execute("BEGIN")
        try:
            args = {"u": user_id, "n": limit, "upto": indexed_upto(ro)}
            if before is not None:
                args["t"], args["i"] = before
            rows = ro.execute(USER_EVENTS[before is not None], args).fetchall()
        except sqlite3.Error as exc:
            check_unavailable(exc)
            raise
        finally:
            ro.execute("COMMIT")
        return [event_row(r) for r in rows]

    async def _apart(self, sql: str, params: list[Any]) -> list[Any]:
        """The rows of a query that may take seconds over a large project, read on a
        connection of its own, in a thread (sqlite3 lets go of the GIL while it runs), so that
        ingestion goes on meanwhile."""

        def run() -> list[Any]:
            conn = self._connect()
            try:
                return conn.execute(sql, params).fetchall()
            finally:
                conn.close()

        return await asyncio.to_thread(run)

    async def maintain(self) -> None:
        """Between batches: a step of the user_events indexer (sqlite_index.py)."""
        now = time.monotonic()
        indexer = self._indexer
        if indexer is None or indexer.passing or now - self._last_step >= STEP_EVERY:
            self._last_step = now
            # in a thread unless on_loop (SQLite lets go of the GIL): requests are read meanwhile
            async with self._tx_lock:
                await self._off_loop(self._index_step)
        if now - self._last_pruned >= PRUNE_EVERY:
            self._last_pruned = now
            async with self._tx_lock:
                self.db.execute(QUERIES.prune_request_keys, (request_keys_cutoff(),))
        await self._bound_wal(now)

    async def _bound_wal(self, now: float) -> None:
        """Keep the WAL near WAL_LIMIT. It starts over from its beginning only when a write
        transaction finds all of it checkpointed; while batches follow one another the
        checkpointer never catches up with the last commit, and the file grows with every
        batch (by about 16 MB a second under the events bench, with no end). Past the limit:
        CATCH_UP_ROUNDS checkpoints at once, batches going on meanwhile, each copying what was
        committed during the one before; then one more while this process writes nothing (a
        millisecond or two, its sync mostly), so that the next batch starts the WAL over. A
        reader still on an older snapshot can keep it from starting over: it is tried again a
        second later."""
        checkpointer = self._checkpointer
        if checkpointer is None:
            return
        if self._catching_up is None:
            if now - self._last_wal_check < WAL_CHECK_EVERY:
                return
            self._last_wal_check = now
            try:
                size = os.path.getsize(self.path + "-wal")
            except OSError:
                return
            if size > WAL_LIMIT:
                self._catching_up = checkpointer.now()
                self._caught_up = 0
            return
        if not self._catching_up.done():
            return
        self._caught_up += 1
        if self._caught_up < CATCH_UP_ROUNDS:
            self._catching_up = checkpointer.now()
            return
        self._catching_up = None
        async with self._tx_lock:
            await asyncio.wrap_future(checkpointer.now())

    async def _off_loop(self, work: Callable[..., Any], *args: Any) -> Any:
        """`work(*args)`: in a thread, so that the event loop serves meanwhile; at once with
        `on_loop`."""
        if self.never_suspends:
            return work(*args)
        return await asyncio.to_thread(work, *args)

    def _index_step(self) -> None:
        """Extend user_events without waiting for the disk: it is derived from committed
        events, and the next batch's commit syncs the WAL, these pages with it. A crash before
        that loses the step whole (WAL frames are checksummed), and the next step redoes it."""
        db = self.db
        if self._indexer is None:
            self._indexer = UserEventsIndexer(db, self._others)
        db.execute("PRAGMA synchronous=OFF")
        try:
            self._indexer.step()
        finally:
            db.execute(f"PRAGMA synchronous={self._synchronous}")

    async def delete_user(self, project_id: int, ref: str, by: str) -> bool:
        # Runs as a write transaction of the writer's kind (BEGIN IMMEDIATE on the writer's
        # connection). SQLite runs one write transaction at a time, and a writer batch never
        # yields to the event loop inside its transaction, so a concurrent event for this user
        # either committed before (its rows are deleted here) or is decided after, finds no user
        # and creates a new one: no row can be left pointing to the deleted user. (The writer's
        # identity cache is cleared after a transaction that wrote outside a batch, as this one.)
        async with self.transaction() as tx:
            return await self._delete_user(tx, project_id, ref, by)

    async def _device_items(self, run: Run, project_id: int, user_id: int) -> list[str]:
        return user_items_named(self.db, user_id, DEVICE_REGISTERED)  # through user_events

    async def _delete_events(self, run: Run, project_id: int, user_id: int) -> None:
        delete_user_events(self.db, user_id)  # and their user_events rows (sqlite_index.py)


class Checkpointer:
    """Runs PASSIVE WAL checkpoints on its own connection and thread, twice a second, and at
    once when asked (`now`)."""

    def __init__(self, conn: sqlite3.Connection, interval: float = 0.5) -> None:
        self.conn = conn
        self.interval = interval
        self._stopping = False
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._asked: list[Future[None]] = []
        self._thread = threading.Thread(target=self._run, name="pier-checkpoint", daemon=True)
        self._thread.start()

    def now(self) -> Future[None]:
        """A checkpoint as soon as the thread is free: done when it has run."""
        done: Future[None] = Future()
        with self._lock:
            if self._stopping:
                done.cancel()
                return done
            self._asked.append(done)
        self._wake.set()
        return done

    def _run(self) -> None:
        while True:
            self._wake.wait(self.interval)
            self._wake.clear()
            with self._lock:
                asked, self._asked = self._asked, []
            if self._stopping:
                break
            # busy or disk trouble: the writer reports real failures; try again later
            with contextlib.suppress(sqlite3.Error):
                self.conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
            for done in asked:
                done.set_result(None)
        for done in asked:
            done.cancel()
        self.conn.close()

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
        self._wake.set()
        self._thread.join()


class SqliteRun:
    """Statements on one connection, called directly: each is quick, and handing them to a
    thread measured slower."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    async def all(self, sql: str, *args: Any) -> list[Any]:
        try:
            return self.db.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            check_unavailable(exc)
            raise

    async def one(self, sql: str, *args: Any) -> Any:
        try:
            return self.db.execute(sql, args).fetchone()
        except sqlite3.Error as exc:
            check_unavailable(exc)
            raise

    async def execute(self, sql: str, *args: Any) -> int:
        try:
            return self.db.execute(sql, args).rowcount
        except sqlite3.Error as exc:
            check_unavailable(exc)
            raise

    async def many(self, sql: str, rows: Any) -> None:
        try:
            self.db.executemany(sql, rows)
        except sqlite3.Error as exc:
            check_unavailable(exc)
            raise


class SqliteTx(SqlTx):
    """The writer's transaction, on the event loop (see SqliteRun)."""

    def __init__(
        self,
        db: sqlite3.Connection,
        cache: IdentityCache,
        indexer: UserEventsIndexer | None,
        lists: ListCache | None = None,
    ) -> None:
        super().__init__(SqliteRun(db), QUERIES)
        self.db = db
        self.cache = cache
        self.indexer = indexer
        self.lists = lists

    async def reserve_user_ids(self, n: int) -> list[int]:
        last = self.db.execute(
            "UPDATE id_sequences SET value = value + ? WHERE name = 'users' RETURNING value", (n,)
        ).fetchone()[0]
        return list(range(last - n + 1, last + 1))

    async def release_user_ids(self, ids: list[int]) -> None:
        if ids:  # they are the tail of this transaction's reservation
            self.db.execute("UPDATE id_sequences SET value = ? WHERE name = 'users'", (ids[0] - 1,))

    async def move_events(self, moves: list[tuple[int, int]]) -> None:
        move_user_events(self.db, moves, MERGED_AWAY)  # and user_events (sqlite_index.py)

    async def seen_message_ids(self, pid: int, values: list[str]) -> list[str]:
        """Through message_ids, the indexer's pending_mids and the events past its last fill
        (without an indexer yet: the events past message_ids' watermark). SQLite has no unique
        index on the events' message ids (migration 0013; sqlite_index.py)."""
        if self.indexer is None:
            sql, upto = SEEN_MESSAGE_IDS, indexed_upto(self.db, MIDS)
        else:
            sql, upto = SEEN_MESSAGE_IDS_PENDING, self.indexer.filled
        return [r[0] for r in self.db.execute(sql, (pid, json_text(values), upto)).fetchall()]

    def _past_watermark(self) -> tuple[bool, int]:
        """How to read the events past the watermark: through the indexer's pending rows when
        they can be trusted, and then a scan past its last fill (UserEventsIndexer.owners);
        else a scan past the watermark. (Whether pending is read; the id the scan starts past.)"""
        tail = self.indexer.owners() if self.indexer is not None else None
        return (False, indexed_upto(self.db)) if tail is None else (True, tail)

    async def events_of(self, user_ids: list[int], names: frozenset[str]) -> list[Any]:
        """From user_events up to its watermark, and past it from the indexer's pending rows
        when they can be trusted, else from a scan of the events past it. The parts may
        overlap (a pass moves rows past the watermark; pending is filled again after a
        crash): an event found twice is kept once by its id, here rather than by a UNION,
        which sorted every row, data and all (a fifth of the query's time)."""
        pending, upto = self._past_watermark()
        sql = EVENTS_OF_PENDING if pending else EVENTS_OF
        args = (json_text(user_ids), json_text(sorted(names)), upto)
        return list({r[0]: r[1:] for r in self.db.execute(sql, args).fetchall()}.values())


def _statements(sql: str) -> list[str]:
    """Split a migration script into statements (SQLite's own tokenizer finds their ends)."""
    statements, buffer = [], ""
    for line in sql.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            statements.append(buffer.strip())
            buffer = ""
    if buffer.strip() and not all(
        not ln.strip() or ln.strip().startswith("--") for ln in buffer.splitlines()
    ):
        raise ValueError(f"incomplete statement at the end of a migration: {buffer.strip()!r}")
    return statements
