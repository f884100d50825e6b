"""PostgreSQL backend (asyncpg): the scale-out store for many stateless API processes.

Each batch runs in one SERIALIZABLE transaction: PostgreSQL detects every interleaving with
another process's batch that could not happen one after the other, and the writer replays the
batch (`is_retryable`). Events are written with COPY. A process keeps the lists' cache
(list_cache.py) and the identity cache (loading.IdentityCache: who owns an external or
anonymous id, so that a batch of known users does not read them) while it is the only one that
writes (`PostgresStore.lists_for`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from typing import Any

import asyncpg

from ..clock import NEVER, now_ms
from ..domain.model import Device
from .base import (
    PRUNE_EVERY,
    EventRow,
    StoreUnavailable,
    request_keys_cutoff,
)
from .common import ListWrites, SqlStore, SqlTx, event_row
from .list_cache import ListCache
from .loading import IdentityCache, device_values
from .migrations import migrations
from .queries import EVENT_FIELDS, POSTGRES, Queries

ID_BLOCK = 100  # must match the sequence's INCREMENT BY
MIGRATION_LOCK = 0x5049455201  # advisory lock: one process migrates at a time
FEED_LOCK = 0x5049455202  # advisory lock: event ids are taken and committed one batch at a time


class CachesStale(Exception):
    """A transaction used the identity cache while another process was writing (found before
    its commit, PostgresTx.check_identity): rolled back and replayed, as a conflict is."""


RETRYABLE = (
    CachesStale,
    asyncpg.SerializationError,
    asyncpg.DeadlockDetectedError,
    asyncpg.UniqueViolationError,
    asyncpg.ForeignKeyViolationError,
)
BATCH_LOCK = 0x5049455203  # advisory lock (session): contended batches take turns
SWEEP_LOCK = 0x5049455204  # advisory lock (transaction): one lists sweeper at a time
CONTENDED_FOR = 1.0  # seconds after a conflict during which this process's batches take turns
# SQLSTATE classes that say the database cannot serve now: connection exception, insufficient
# resources (disk full, too many connections), operator intervention (shut down, terminated,
# starting up), system error (I/O). Answered 503; any other error is a bug: a 500.
UNAVAILABLE_CLASSES = frozenset({"08", "53", "57", "58"})
QUERIES = Queries(POSTGRES)
log = logging.getLogger("pier.store")
DELETE_ATTEMPTS = 20  # a user deletion conflicting with batches is replayed this often at most
# The lists' cache holds while no other process commits a transaction of the writer's kind.
# Each such transaction counts itself in its process's row of `writers` (migration 0012), with
# its BEGIN. Before one uses the cache it reads the other rows, in its SERIALIZABLE snapshot:
# changed since the cache started, another process wrote, and the cache is emptied and off.
# If one commits while this transaction runs, it wrote a row this one read, so PostgreSQL
# orders the two or rolls one back, as for any other read. While off, the rows are looked at
# outside transactions (to add no conflicts between busy writers), at most every LOOK_EVERY
# seconds; the same at two looks, nobody else wrote in between, and the cache starts again,
# empty.
COUNT_LITERAL = (  # sent with the BEGIN, in one round trip (_serializable): two integers
    "INSERT INTO writers VALUES ({0:d}, 1, {1:d}, true) ON CONFLICT (token)"
    " DO UPDATE SET transactions = writers.transactions + 1, counted_at = {1:d}, running = true"
)
# The feed's lock (PostgresTx.lock_feed), taken with the BEGIN by a process that writes alone
LOCK_FEED_LITERAL = f"SELECT pg_advisory_xact_lock({FEED_LOCK:d})"
ROWS = "coalesce(string_agg(token || ':' || transactions, ',' ORDER BY token), '')"  # as text
OTHERS = (  # the other rows, and the last instant one of them still running counted in
    f"SELECT {ROWS}, max(counted_at) FILTER (WHERE running) FROM writers WHERE token <> $1"
)
STOPPED = "UPDATE writers SET running = false WHERE token = $1"
PRUNE_WRITERS = "DELETE FROM writers WHERE counted_at < $1 AND token <> $2"
KEEP_WRITERS_MS = 86_400_000  # a row not counted in for this long is a process gone
# A cache not checked for this long starts again, empty: a row that came and was pruned
# (KEEP_WRITERS_MS) between two checks would leave the other rows as they were.
CHECK_WITHIN_S = 3_600.0
# A batch's dynamic lists and, in the same round trip, the other writers' rows as OTHERS has
# them, for the caches' check (PostgresTx.dynamic_lists): the rows come on a row of their own
# (the lists' columns null) when the batch's projects have no lists
LISTS_AND_OTHERS = (
    f"SELECT d.*, o.rows FROM (SELECT {ROWS} AS rows FROM writers WHERE token <> $2) AS o"
    f" LEFT JOIN ({QUERIES.dynamic_lists}) AS d ON true"
)
# A transaction's settled memberships (SqlTx.flush_list_writes), in one statement rather than
# one a kind: the members that joined and left, the due instants dropped and set, and the
# lists' feed items (in their order, under the feed's lock: insert_event_rows). No row is
# touched twice in it (PostgresTx.flush_list_writes), so the parts' order does not matter.
_PAIRS = "unnest($%d::bigint[], $%d::bigint[]) AS x(list_id, user_id)"
LIST_WRITES = (
    "WITH joined AS (INSERT INTO list_members (list_id, project_id, user_id, joined_at)"
    " SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[])"
    " ON CONFLICT DO NOTHING),"
    f" gone AS (DELETE FROM list_members m USING {_PAIRS % (5, 6)}"
    " WHERE m.list_id = x.list_id AND m.user_id = x.user_id),"
    f" undue AS (DELETE FROM list_due d USING {_PAIRS % (7, 8)}"
    " WHERE d.list_id = x.list_id AND d.user_id = x.user_id),"
    " due AS (INSERT INTO list_due (list_id, project_id, user_id, due_at)"
    " SELECT * FROM unnest($9::bigint[], $10::bigint[], $11::bigint[], $12::bigint[])"
    " ON CONFLICT (list_id, user_id) DO UPDATE SET due_at = excluded.due_at),"
    f" items AS (INSERT INTO events ({', '.join(EVENT_FIELDS)})"
    " SELECT p, u, n, d::jsonb, c, r, m FROM unnest($13::bigint[], $14::bigint[], $15::text[],"
    " $16::text[], $17::bigint[], $18::bigint[], $19::text[]) WITH ORDINALITY"
    " AS x(p, u, n, d, c, r, m, o) ORDER BY o)"
    " SELECT 1"
)
# A table that no ANALYZE has seen, once this many of its rows have changed, is analysed by the
# writer (in the background) rather than left to autovacuum, whose first visit to a new
# database can come a minute or more later. Without statistics PostgreSQL takes `x = $1` for
# 1/200 of a table and a list of a few hundred keys for all of it, so lookups of users by
# external or anonymous id read a whole project through another index: 20 - 77 ms instead of
# under one for 200,000 users (docs/performance.md, "PostgreSQL's check for stored message ids
# on a new database"). Autovacuum keeps the statistics current after that.
FIRST_ANALYZE_ROWS = 1_000
FIRST_ANALYZE_EVERY = 5.0  # seconds between two looks for such tables
NEVER_ANALYSED = (
    "SELECT relname FROM pg_stat_user_tables WHERE schemaname = current_schema()"
    " AND last_analyze IS NULL AND last_autoanalyze IS NULL AND n_mod_since_analyze >= $1"
    " ORDER BY relname"
)

# The message ids among $2 that project $1 holds, each id looked up by itself in its unique index
# events_message_id (migration 0013): the LIMIT keeps the subquery a loop of lookups, whatever
# the statistics say. As `message_id = ANY($2)`, a table never analysed (a new database, until
# autovacuum's first ANALYZE) took a few hundred ids for the whole table, and each batch read
# all of the project's events by the primary key (docs/performance.md, "PostgreSQL's check for
# stored message ids on a new database")
SEEN_MESSAGE_IDS = (
    "SELECT m.id FROM unnest($2::text[]) AS m(id), LATERAL (SELECT 1 FROM events e"
    " WHERE e.message_id = m.id AND e.project_id = $1 LIMIT 1) AS stored"
)
USER_EVENTS = {  # by whether there is a cursor; the events_user index serves both
    before: "SELECT id, name, data::text, created_at, received_at, message_id, user_id"
    f" FROM events WHERE user_id = $1{cursor} ORDER BY created_at DESC, id DESC LIMIT ${n}"
    for before, cursor, n in ((False, "", 2), (True, " AND (created_at, id) < ($2, $3)", 4))
}


def check_unavailable(exc: BaseException, conn: Any = None) -> None:
    """Raise StoreUnavailable for an error that means the database cannot serve now: of its
    kind, or any error of a connection (`conn`) that the server has closed meanwhile."""
    if (
        isinstance(exc, OSError)  # refused, reset, timed out
        # terminated while idle, asyncpg may fail the next statement with an internal error
        or (conn is not None and not isinstance(conn, asyncpg.Pool) and conn.is_closed())
        or (isinstance(exc, asyncpg.PostgresError) and str(exc.sqlstate)[:2] in UNAVAILABLE_CLASSES)
        # asyncpg says "connection is closed" (the server went away) with the class it uses for
        # misuse too: only the message tells them apart
        or (isinstance(exc, asyncpg.InterfaceError) and "is clos" in str(exc))
    ):
        raise StoreUnavailable(f"{type(exc).__name__}: {exc}") from exc


async def _connect(*args: Any, **kwargs: Any) -> asyncpg.Connection:
    """A new connection of the pool: whatever stops one being made (refused, a database that
    takes no connections, a login refused), the database cannot be reached."""
    try:
        return await asyncpg.connect(*args, **kwargs)
    except (OSError, asyncpg.PostgresError) as exc:
        raise StoreUnavailable(f"cannot connect to PostgreSQL: {exc}") from exc


@asynccontextmanager
async def held(pool: asyncpg.Pool) -> AsyncIterator[Any]:
    """A connection of the pool. What fails while it is held is classified (check_unavailable)
    before it goes back to the pool, while it can still be asked whether the server closed it."""
    try:
        async with pool.acquire() as conn:
            try:
                yield conn
            except Exception as exc:
                check_unavailable(exc, conn)
                raise
    except Exception as exc:  # acquiring (the pool is closing) or giving back
        check_unavailable(exc)
        raise


@asynccontextmanager
async def _holding(conn: asyncpg.Connection, lock: int) -> AsyncIterator[None]:
    """A session advisory lock around a transaction: taken before its snapshot is."""
    await conn.execute("SELECT pg_advisory_lock($1)", lock)
    try:
        yield
    finally:
        try:
            await conn.execute("SELECT pg_advisory_unlock($1)", lock)
        except BaseException:
            # the pool does not reset a connection's session (_session_kept): the lock goes
            # with the connection
            conn.terminate()
            raise


async def _session_kept(conn: asyncpg.Connection) -> None:
    """The pool's reset of a connection given back: nothing past what asyncpg always does (roll
    back a transaction left open). Its default, `RESET ALL` and the rest, costs a round trip
    each time a connection goes back, after every batch and every read, and undoes nothing
    Pier does: it sets no session settings but the pool's own, and listens to nothing; the one
    session lock it takes (_holding) is released or goes with its connection."""


@asynccontextmanager
async def _serializable(conn: asyncpg.Connection, first: str) -> AsyncIterator[None]:
    """A SERIALIZABLE transaction whose BEGIN goes with its first statement (`first`: no
    parameters), in one round trip: as asyncpg's own, which sends the BEGIN alone."""
    try:
        await conn.execute(f"BEGIN ISOLATION LEVEL SERIALIZABLE; {first}")
        yield
    except BaseException:
        if not conn.is_closed() and conn.is_in_transaction():
            with contextlib.suppress(Exception):  # (the first error is the one to tell)
                await conn.execute("ROLLBACK")
        raise
    await conn.execute("COMMIT")


class PostgresStore(SqlStore):
    q = QUERIES
    remote = True  # (base.Store)

    def __init__(self, url: str, *, min_size: int = 2, max_size: int = 10) -> None:
        self.url = url
        self.min_size = min_size
        self.max_size = max_size
        self._pool: asyncpg.Pool | None = None
        self._ids: list[int] = []  # user ids this process holds (sequence values never roll back)
        self._last_pruned = self._last_analyse_look = NEVER
        self._analysing: asyncio.Task[None] | None = None  # maintain: a first ANALYZE running
        self._analysed: set[str] = set()  # the tables it has analysed (or tried to)
        self._contended_until = 0.0  # see is_retryable
        self._lists: ListCache = ListCache(keep_rows=False)
        self._identity = IdentityCache()  # who is who, under the same rule as the lists' cache
        self._token = secrets.randbits(63)  # this process's row of `writers`
        self._others: str | None = None  # the other rows as the cache started; None: it is off
        self._checked_at = 0.0  # when a transaction last found them so
        self._look: tuple[float, str] | None = None  # off: when they were last looked at, as what
        self._tx_lock = asyncio.Lock()  # one transaction of the writer's kind at a time

    async def open(self) -> None:
        try:
            self._pool = await asyncpg.create_pool(
                self.url,
                min_size=self.min_size,
                max_size=self.max_size,
                command_timeout=60,
                connect=_connect,
                reset=_session_kept,
                # A generic plan of `x = ANY($1)` scans the array for every row; a custom plan
                # hashes it. Measured: 200 ms against 3 ms for 620 ids over 10,000 users.
                server_settings={"plan_cache_mode": "force_custom_plan"},
            )
        except (OSError, asyncpg.PostgresError) as exc:
            raise StoreUnavailable(f"cannot connect to PostgreSQL: {exc}") from exc

    async def close(self) -> None:
        if self._analysing is not None:
            self._analysing.cancel()
            with contextlib.suppress(BaseException):
                await self._analysing
            self._analysing = None
        if self._pool is not None:
            with contextlib.suppress(Exception):  # (only spares the next process a wait)
                await self._pool.execute(STOPPED, self._token)
            await self._pool.close()
            self._pool = None

    @property
    def pool(self) -> asyncpg.Pool:
        assert self._pool is not None, "store is not open"
        return self._pool

    @property
    def reader(self) -> PgRun:
        return PgRun(self.pool)

    @asynccontextmanager
    async def reading(self) -> AsyncIterator[PgRun]:
        async with held(self.pool) as conn, conn.transaction(isolation="repeatable_read"):
            yield PgRun(conn)

    @asynccontextmanager
    async def writing(self, durable: bool = True) -> AsyncIterator[PgRun]:
        # durable=False changes nothing here: a commit waits on the server, not on this loop
        async with held(self.pool) as conn, conn.transaction():
            yield PgRun(conn)

    async def migrate(self) -> list[int]:
        applied = []
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations"
                " (version integer PRIMARY KEY, name text NOT NULL, applied_at bigint NOT NULL)"
            )
            done = {r[0] for r in await conn.fetch("SELECT version FROM schema_migrations")}
            for version, name, sql in migrations("postgres"):
                if version in done:
                    continue
                await conn.execute(sql)
                await conn.execute(
                    "INSERT INTO schema_migrations VALUES"
                    " ($1, $2, (extract(epoch from now()) * 1000)::bigint)",
                    version,
                    name,
                )
                applied.append(version)
        return applied

    # -- write path ----------------------------------------------------------------------
    LOOK_EVERY = 1.0  # seconds between two looks at the other writers' rows, the cache off

    @property
    def token(self) -> int:
        """This process's row of `writers`."""
        return self._token

    @property
    def lists_off(self) -> bool:
        return self._others is None

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[PostgresTx]:
        """A transaction of the writer's kind. This process's transactions run one at a time,
        as on SQLite: each may use the lists' cache as the one before it left it."""
        async with self._tx_lock:
            await self._look_at_writers()
            committing = False
            try:
                async with held(self.pool) as conn:
                    contended = time.monotonic() < self._contended_until
                    first = COUNT_LITERAL.format(self._token, now_ms())
                    alone = not self.lists_off  # (no other writer seen: nobody waits for it)
                    if alone:  # the feed's lock in the same round trip, not one of its own
                        first = f"{first}; {LOCK_FEED_LITERAL}"
                    async with (
                        _holding(conn, BATCH_LOCK) if contended else contextlib.nullcontext(),
                        _serializable(conn, first),
                    ):
                        tx = PostgresTx(conn, self)
                        tx.feed_locked = alone
                        if alone:
                            tx.cache = self._identity
                        try:
                            yield tx
                            await tx.check_identity()
                        finally:
                            tx.release()
                        committing = True
            except BaseException:
                # a batch rolled back may have taken in rows another writer changed (it is
                # one, then); a commit that failed may have happened or not
                self._identity.clear()
                if committing:
                    self._lists.clear()
                raise
            if tx.cache is not None:  # (checked: it held for the transaction)
                if tx.written is None:  # written outside the batch path: it can't follow
                    self._identity.clear()
                else:
                    self._identity.committed(tx.written)
            if tx.lists is not None:  # checked: it held for the transaction
                self._lists.committed(tx.staged, tx.forget)
            elif tx.forget:  # (gone users' entries go whatever the transaction checked)
                self._lists.committed({}, tx.forget)

    async def lists_for(
        self, conn: asyncpg.Connection, others: str | None = None
    ) -> ListCache | None:
        """The lists' cache when it holds for the transaction on `conn` (on, and no other
        process has written since it started), else None. `others`: the other writers' rows
        as the transaction has already read them (else read now)."""
        if self._others is None:
            return None
        if others is None:
            others, _ = await conn.fetchrow(OTHERS, self._token)
        at = time.monotonic()
        if others == self._others and at < self._checked_at + CHECK_WITHIN_S:
            self._checked_at = at
            return self._lists
        self._others = None  # another process wrote (or an hour passed unchecked): off
        self._lists.clear()
        self._identity.clear()
        self._look = (at, others)
        return None

    async def _look_at_writers(self) -> None:
        """With the cache off, now and then: the other writers' rows, outside a transaction.
        It goes on, empty, when they are as the look before found them; at the first look, when
        none of them counted in for LOOK_EVERY (by this process's clock). Either way the
        transaction that uses it checks the rows again; this only spares a process that other
        writers keep busy the conflicts of reading their rows in every transaction."""
        if self._others is not None:
            return
        at = time.monotonic()
        if self._look is not None and at < self._look[0] + self.LOOK_EVERY:
            return
        others, last = await self.reader.one(OTHERS, self._token)
        if self._look is None:
            quiet = last is None or last < now_ms() - self.LOOK_EVERY * 1000
        else:
            quiet = others == self._look[1]
        if quiet:
            self._others, self._checked_at = others, at
        else:
            self._look = (at, others)

    async def maintain(self) -> None:
        """Between batches: prune expired Idempotency-Keys now and then (indexes keep up
        by themselves), and give tables their first statistics (FIRST_ANALYZE_ROWS)."""
        now = time.monotonic()
        if now - self._last_pruned >= PRUNE_EVERY:
            self._last_pruned = now
            await self.pool.execute(QUERIES.prune_request_keys, request_keys_cutoff())
            await self.pool.execute(PRUNE_WRITERS, now_ms() - KEEP_WRITERS_MS, self._token)
        if now - self._last_analyse_look >= FIRST_ANALYZE_EVERY and (
            self._analysing is None or self._analysing.done()
        ):
            self._last_analyse_look = now
            self._analysing = asyncio.create_task(self._analyse_new_tables())

    async def _analyse_new_tables(self) -> None:
        """ANALYZE each table without statistics that has changed enough (NEVER_ANALYSED), on
        a connection of its own: the batches go on meanwhile (ANALYZE blocks no reads or
        writes). Another process may analyse the same table at the same time: harmless."""
        try:
            for (table,) in await self.pool.fetch(NEVER_ANALYSED, FIRST_ANALYZE_ROWS):
                if table in self._analysed:  # once a process: a role that does not own the
                    continue  # table gets a warning and no statistics, every time
                started = time.monotonic()
                await self.pool.execute(f'ANALYZE "{table.replace(chr(34), chr(34) * 2)}"')
                self._analysed.add(table)
                log.info(
                    "ANALYZE %s: it had no statistics yet (%.0f ms)",
                    table,
                    (time.monotonic() - started) * 1000,
                )
        except Exception:  # only plans depend on it: the next look tries again
            log.exception("first ANALYZE of new tables failed")

    def is_retryable(self, exc: BaseException) -> bool:
        if isinstance(exc, RETRYABLE):
            # Batches of several processes are conflicting (most often: creating the same new
            # users). For a while this process's batches take turns with the other contended
            # ones: a replay then starts after the batch it lost to has committed, and sees it.
            self._contended_until = time.monotonic() + CONTENDED_FOR
            return True
        return False

    async def take_user_ids(self, conn: asyncpg.Connection, n: int) -> list[int]:
        while len(self._ids) < n:
            blocks = -(-(n - len(self._ids)) // ID_BLOCK)
            rows = await conn.fetch(
                "SELECT nextval('user_id_blocks') FROM generate_series(1, $1)", blocks
            )
            for row in rows:
                self._ids.extend(range(row[0], row[0] + ID_BLOCK))
        taken, self._ids = self._ids[:n], self._ids[n:]
        return taken

    def give_back(self, ids: list[int]) -> None:
        """Ids a batch did not use go back to the pool."""
        self._ids[:0] = ids

    # -- reads ---------------------------------------------------------------------------
    async def user_events(
        self, user_id: int, limit: int, before: tuple[int, int] | None
    ) -> list[EventRow]:
        args = (user_id, *before) if before is not None else (user_id,)
        rows = await self.reader.all(USER_EVENTS[before is not None], *args, limit)
        return [event_row(r) for r in rows]

    async def delete_user(self, project_id: int, ref: str, by: str) -> bool:
        # A SERIALIZABLE transaction like the writer's: a batch of another process that adds an
        # event for this user conflicts with it (it read the user, this deletes the user and reads
        # its events), so one of the two is rolled back and replayed: no orphan rows.
        for attempt in range(DELETE_ATTEMPTS):
            try:
                async with self.transaction() as tx:
                    return await self._delete_user(tx, project_id, ref, by)
            except RETRYABLE as exc:
                # the next attempt, and this process's batches, take turns (BATCH_LOCK): the
                # tombstone's insert into events made conflicts with racing batches likelier
                self.is_retryable(exc)
                if attempt == DELETE_ATTEMPTS - 1:
                    raise StoreUnavailable(f"delete kept conflicting: {exc}") from exc
                await asyncio.sleep(0.002 * (attempt + 1))
        raise AssertionError("unreachable")


class PgRun:
    """Statements on a held connection, or each on a connection of its own from the pool."""

    def __init__(self, conn: asyncpg.Connection | asyncpg.Pool) -> None:
        self.conn = conn

    def _using(self) -> AbstractAsyncContextManager[Any]:
        # a held connection's errors are classified where it is held (held())
        return held(self.conn) if isinstance(self.conn, asyncpg.Pool) else nullcontext(self.conn)

    async def all(self, sql: str, *args: Any) -> list[Any]:
        async with self._using() as conn:
            rows: list[Any] = await conn.fetch(sql, *args)
        return rows

    async def one(self, sql: str, *args: Any) -> Any:
        async with self._using() as conn:
            return await conn.fetchrow(sql, *args)

    async def execute(self, sql: str, *args: Any) -> int:
        async with self._using() as conn:
            status = await conn.execute(sql, *args)  # e.g. "UPDATE 3"
        return int(status.rpartition(" ")[2])

    async def many(self, sql: str, rows: Any) -> None:
        async with self._using() as conn:
            await conn.executemany(sql, rows)


class PostgresTx(SqlTx):
    def __init__(self, conn: asyncpg.Connection, store: PostgresStore) -> None:
        super().__init__(PgRun(conn), QUERIES)
        self.conn = conn
        self.store = store
        self.checked = False  # check_lists
        self.feed_locked = False  # insert_event_rows
        self.others: str | None = None  # the other writers' rows, read by dynamic_lists

    async def check_lists(self) -> None:
        if self.lists is None and not self.checked:
            self.checked = True
            self.lists = await self.store.lists_for(self.conn, self.others)

    async def check_identity(self) -> None:
        """Before the commit of a transaction that had the identity cache: it held (no other
        process has written since it started, in this transaction's snapshot: the check of
        the lists' cache, most often on rows already read with the lists), else the batch is
        replayed without it (the check turned both caches off)."""
        if self.cache is None:
            return
        await self.check_lists()
        if self.lists is None:
            raise CachesStale("another process wrote: the batch is replayed without the caches")

    async def dynamic_lists(self, projects: set[int]) -> list[Any]:
        """With the caches on, the other writers' rows come with the lists (LISTS_AND_OTHERS):
        check_lists, which follows when there are lists or at the end (`transaction`), need
        not read them."""
        if self.checked or self.store.lists_off:
            return await super().dynamic_lists(projects)
        rows = await self.conn.fetch(LISTS_AND_OTHERS, sorted(projects), self.store.token)
        self.others = rows[0][-1]
        return [tuple(r)[:-1] for r in rows if r[0] is not None]

    async def reserve_user_ids(self, n: int) -> list[int]:
        return await self.store.take_user_ids(self.conn, n)

    async def release_user_ids(self, ids: list[int]) -> None:
        self.store.give_back(ids)

    async def write_devices(self, devices: list[Device]) -> None:
        conn, q = self.conn, self.q
        for d in devices:  # a new device gets its id from the database
            values = device_values(d)
            if d.id is None:
                d.id = await conn.fetchval(q.insert_new_device, *values[1:])
            else:
                await conn.execute(q.insert_device, *values)

    async def sweeping(self) -> bool:
        # Sweepers of several processes would read the same due rows; with row locks (FOR
        # UPDATE SKIP LOCKED) they would take different ones, but each reads the range of
        # list_due the other writes, so SERIALIZABLE rolls one back and it does its work again.
        # Taking turns, the one that finds the lock taken does nothing this round.
        return bool(await self.conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", SWEEP_LOCK))

    async def flush_list_writes(self, writes: ListWrites) -> None:
        """All of them in one statement (LIST_WRITES): a round trip rather than up to five,
        with the same outcome as SqlTx's statements one after the other."""
        if not (writes.joins or writes.leaves or writes.undue or writes.due or writes.items):
            return
        leaves = dict.fromkeys(writes.leaves)  # (a join then a leave: not a member)
        joins = [j for j in dict.fromkeys(writes.joins) if (j[0], j[2]) not in leaves]
        due = {(d[0], d[2]): d for d in writes.due}  # (the last instant set wins)
        undue = [(lid, u) for lid, users in writes.undue for u in users if (lid, u) not in due]
        if writes.items and not self.feed_locked:
            await self.lock_feed()
        await self.conn.execute(
            LIST_WRITES, *_columns(joins, 4), *_columns(list(leaves), 2),
            *_columns(undue, 2), *_columns(list(due.values()), 4),
            *_columns(writes.items, len(EVENT_FIELDS)),
        )  # fmt: skip

    async def lock_feed(self) -> None:
        # Event ids must become visible in id order, or a consumer following the feed
        # (`id > cursor`) could pass an id that another process commits later. Holding this
        # lock from taking the ids until the commit makes the id order the commit order; every
        # row of the feed comes under it (a batch's events, the lists' items of a transaction
        # that may have inserted no event before them: the sweeper's, an identify's).
        await self.conn.execute(LOCK_FEED_LITERAL)
        self.feed_locked = True

    async def seen_message_ids(self, pid: int, values: list[str]) -> list[str]:
        return [r[0] for r in await self.conn.fetch(SEEN_MESSAGE_IDS, pid, values)]

    async def insert_event_rows(self, rows: Sequence[tuple[Any, ...]]) -> None:
        if not self.feed_locked:  # (taken with the BEGIN by a process that writes alone)
            await self.lock_feed()
        await self.conn.copy_records_to_table("events", columns=EVENT_FIELDS, records=rows)


def _columns(rows: Sequence[tuple[Any, ...]], width: int) -> list[list[Any]]:
    """Rows as `width` columns, each bound as an array for unnest()."""
    return [list(c) for c in zip(*rows, strict=True)] if rows else [[] for _ in range(width)]
