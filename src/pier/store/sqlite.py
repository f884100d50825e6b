"""SQLite backend: the embedded default. WAL mode; one writer connection used from the event loop
(the writer batches many requests into one transaction), one connection for reads."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import msgspec

from ..domain.batch import ChangeSet
from ..domain.keys import Key as ApiKey
from ..domain.keys import Project
from ..domain.model import Device, User
from .base import (
    PRUNE_EVERY,
    Admin,
    AdminSession,
    EventRow,
    FeedEvent,
    StoreUnavailable,
    request_keys_cutoff,
)
from .loading import (
    BatchQueries,
    IdentityCache,
    device_from_row,
    device_values,
    user_from_row,
    user_values,
)
from .migrations import migrations
from .sqlite_index import (
    UserEventsIndexer,
    create_pending,
    delete_user_events,
    indexed_upto,
    move_user_events,
)

_encoder = msgspec.json.Encoder()
_decode = msgspec.json.decode


def _encode(value: Any) -> str:
    return _encoder.encode(value).decode()


_json_list = _encode

USER_COLUMNS = "u.id, u.project_id, u.external_id, u.email, u.phone, u.timezone, u.locale, u.data, u.created_at, u.updated_at"
DEVICE_COLUMNS = "id, project_id, user_id, device_id, token, os, os_version, model, app_build, app_version, extra, created_at, updated_at"
STAT_TABLES = ("users", "user_anonymous_ids", "devices", "events")
KEY_COLUMNS = "id, project_id, name, scope, prefix, created_at, revoked_at, value, rate_limit"


def _user(row: tuple) -> User:
    return user_from_row(row)


def _device(row: tuple, owner: User) -> Device:
    return device_from_row(row, owner, _decode)


FEED_SELECT = (
    "SELECT e.id, e.name, e.data, e.created_at, e.received_at, e.message_id, e.user_id,"
    " u.external_id, (SELECT a.anonymous_id FROM user_anonymous_ids a WHERE a.user_id = e.user_id"
    " ORDER BY a.id LIMIT 1) FROM events e LEFT JOIN users u ON u.id = e.user_id"
)


def _feed_event(r: tuple) -> FeedEvent:
    return FeedEvent(r[0], r[1], msgspec.Raw(r[2].encode()), r[3], r[4], r[5], r[6], r[7], r[8])


class SqliteStore:
    """Store over one SQLite file. `durability` is 'full' (fsync every commit) or 'normal'."""

    def __init__(self, url: str, path: str, durability: str = "full") -> None:
        self.url = url
        self.path = path
        self.durability = durability
        self._writer: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None
        self._checkpointer: Checkpointer | None = None
        self._indexer: UserEventsIndexer | None = None  # made by the first step, once migrated
        self._last_pruned = 0.0
        self._tx_lock = asyncio.Lock()
        self._identity = IdentityCache()  # one writer per file is the fast case: cache who is who
        self._data_version = -1
        self._synchronous = "FULL" if durability == "full" else "NORMAL"

    # -- connections ---------------------------------------------------------------------
    def _connect(self, cache_mib: int = 8) -> sqlite3.Connection:
        folder = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(folder, exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self._synchronous}")
        conn.execute("PRAGMA busy_timeout=10000")
        conn.execute(f"PRAGMA cache_size=-{cache_mib * 1024}")  # each connection has its own
        return conn

    async def open(self) -> None:
        try:
            self._writer = self._connect(cache_mib=64)  # the one that loads and writes batches
            self._reader = self._connect()
            # Checkpoints copy the WAL into the database file: a thread does them, so that
            # the writer (on the event loop) never stalls on that I/O.
            self._writer.execute("PRAGMA wal_autocheckpoint=0")
            self._indexer = None
            create_pending(self._writer)  # merges and deletions update it (sqlite_index.py)
            self._checkpointer = Checkpointer(self._connect())
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
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise StoreUnavailable(str(exc)) from exc
        tx = SqliteTx(db, self._identity)
        try:
            version = db.execute("PRAGMA data_version").fetchone()[0]
            if version != self._data_version:  # another connection committed: forget
                self._identity.clear()
                self._data_version = version
            yield tx
            # The commit waits for the disk (fsync): in a thread, so that the event loop
            # goes on reading and parsing the next requests meanwhile.
            await asyncio.to_thread(db.execute, "COMMIT")
        except BaseException as exc:
            if db.in_transaction:
                db.execute("ROLLBACK")
            if isinstance(exc, sqlite3.OperationalError):
                raise StoreUnavailable(str(exc)) from exc
            raise
        if tx.written is None:
            self._identity.clear()  # written outside the batch path: the cache can't follow
        else:
            self._identity.committed(tx.written)

    def is_retryable(self, exc: BaseException) -> bool:
        return False  # one writer at a time: there are no conflicts to replay

    # -- projects and keys ---------------------------------------------------------------
    async def create_project(self, name: str, now: int) -> Project:
        async with self._tx_lock:  # never inside a batch that is committing
            cur = self.db.execute(
                "INSERT INTO projects (name, created_at) VALUES (?, ?) RETURNING id", (name, now)
            )
            return Project(cur.fetchone()[0], name, now)

    async def list_projects(self) -> list[Project]:
        rows = self.ro.execute("SELECT id, name, created_at FROM projects ORDER BY id")
        return [Project(*row) for row in rows]

    async def get_project(self, project_id: int) -> Project | None:
        row = self.ro.execute(
            "SELECT id, name, created_at FROM projects WHERE id = ?", (project_id,)
        ).fetchone()
        return Project(*row) if row else None

    async def create_key(
        self,
        project_id: int,
        scope: str,
        name: str | None,
        key_hash: str,
        prefix: str,
        value: str | None,
        now: int,
        rate_limit: int | None = None,
    ) -> ApiKey:
        async with self._tx_lock:  # never inside a batch that is committing
            cur = self.db.execute(
                "INSERT INTO keys (project_id, name, scope, key_hash, prefix, value, created_at,"
                " rate_limit) VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                (project_id, name, scope, key_hash, prefix, value, now, rate_limit),
            )
            key_id = cur.fetchone()[0]
            return ApiKey(key_id, project_id, name, scope, prefix, now, None, value, rate_limit)

    async def list_keys(self, project_id: int) -> list[ApiKey]:
        rows = self.ro.execute(
            f"SELECT {KEY_COLUMNS} FROM keys WHERE project_id = ? ORDER BY id", (project_id,)
        )
        return [ApiKey(*row) for row in rows]

    async def find_key(self, key_hash: str) -> ApiKey | None:
        row = self.ro.execute(
            f"SELECT {KEY_COLUMNS} FROM keys WHERE key_hash = ?", (key_hash,)
        ).fetchone()
        return ApiKey(*row) if row else None

    async def revoke_key(self, key_id: int | None, key_hash: str | None, now: int) -> bool:
        async with self._tx_lock:  # never inside a batch that is committing
            cur = self.db.execute(
                "UPDATE keys SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ? OR key_hash = ?",
                (now, key_id, key_hash),
            )
            return cur.rowcount > 0

        # -- reads ---------------------------------------------------------------------------

    async def get_user(self, project_id: int, ref: str, by: str) -> User | None:
        ro = self.ro
        ro.execute("BEGIN")
        try:
            if by == "anonymous_id":
                sql = (
                    f"SELECT {USER_COLUMNS} FROM user_anonymous_ids a JOIN users u"
                    " ON u.id = a.user_id WHERE a.project_id = ? AND a.anonymous_id = ?"
                )
            else:
                sql = f"SELECT {USER_COLUMNS} FROM users u WHERE project_id = ? AND external_id = ?"
            row = ro.execute(sql, (project_id, ref)).fetchone()
            if row is None:
                return None
            user = _user(row)
            user.anonymous_ids = [
                r[0]
                for r in ro.execute(
                    "SELECT anonymous_id FROM user_anonymous_ids WHERE user_id = ? ORDER BY id",
                    (user.id,),
                )
            ]
            user.devices = [
                _device(r, user)
                for r in ro.execute(
                    f"SELECT {DEVICE_COLUMNS} FROM devices WHERE user_id = ? ORDER BY id",
                    (user.id,),
                )
            ]
            return user
        finally:
            ro.execute("COMMIT")

    async def user_events(
        self, user_id: int, limit: int, before: tuple[int, int] | None
    ) -> list[EventRow]:
        """From user_events up to its watermark, and from a scan of the events past it."""
        columns = "e.id, e.name, e.data, e.created_at, e.received_at, e.message_id, e.user_id"
        cursor = "AND (x.created_at, x.event_id) < (:t, :i)" if before is not None else ""
        sql = (
            f"SELECT * FROM (SELECT {columns} FROM user_events x JOIN events e ON e.id = x.event_id"
            f" WHERE x.user_id = :u {cursor} ORDER BY x.created_at DESC, x.event_id DESC LIMIT :n)"
            f" UNION ALL SELECT {columns} FROM events e WHERE e.id > :upto AND e.user_id = :u"
            f" {cursor.replace('x.event_id', 'e.id').replace('x.', 'e.')}"
            # past the watermark, an indexer pass may have indexed some already
            " AND NOT EXISTS (SELECT 1 FROM user_events y WHERE y.user_id = e.user_id"
            " AND y.created_at = e.created_at AND y.event_id = e.id)"
            " ORDER BY 4 DESC, 1 DESC LIMIT :n"
        )
        ro = self.ro
        ro.execute("BEGIN")
        try:
            args = {"u": user_id, "n": limit, "upto": indexed_upto(ro)}
            if before is not None:
                args["t"], args["i"] = before
            rows = ro.execute(sql, args).fetchall()
        finally:
            ro.execute("COMMIT")
        return [
            EventRow(r[0], r[1], msgspec.Raw(r[2].encode()), r[3], r[4], r[5], r[6]) for r in rows
        ]

    async def maintain(self) -> None:
        """Between batches: a step of the user_events indexer (sqlite_index.py)."""
        now = time.monotonic()
        # in a thread (SQLite lets go of the GIL): requests are read meanwhile
        async with self._tx_lock:
            await asyncio.to_thread(self._index_step)
        if now - self._last_pruned >= PRUNE_EVERY:
            self._last_pruned = now
            async with self._tx_lock:
                self.db.execute(
                    "DELETE FROM request_keys WHERE created_at < ?",
                    (request_keys_cutoff(),),
                )

    def _index_step(self) -> None:
        """Extend user_events without waiting for the disk: it is derived from committed
        events, and the next batch's commit syncs the WAL, these pages with it. A crash before
        that loses the step whole (WAL frames are checksummed), and the next step redoes it."""
        db = self.db
        if self._indexer is None:
            self._indexer = UserEventsIndexer(db)
        db.execute("PRAGMA synchronous=OFF")
        try:
            self._indexer.step()
        finally:
            db.execute(f"PRAGMA synchronous={self._synchronous}")

    async def stats(self, project_id: int) -> dict[str, int]:
        return {
            table: self.ro.execute(
                f"SELECT count(*) FROM {table} WHERE project_id = ?", (project_id,)
            ).fetchone()[0]
            for table in STAT_TABLES
        }

    # -- management reads and deletion (read API, export, portal) ------------------------
    async def list_users(
        self, project_id: int, limit: int, before: tuple[int, int] | None, q: str | None
    ) -> list[User]:
        if q:  # the few matches of exact, indexed lookups first (CROSS JOIN keeps that order)
            sql = (
                f"SELECT {USER_COLUMNS} FROM (SELECT id FROM users WHERE project_id = ?"
                " AND external_id = ? UNION SELECT id FROM users WHERE project_id = ? AND email = ?"
                " UNION SELECT id FROM users WHERE project_id = ? AND phone = ?"
                " UNION SELECT user_id FROM user_anonymous_ids WHERE project_id = ?"
                " AND anonymous_id = ?) AS m CROSS JOIN users u ON u.id = m.id"
                " WHERE u.project_id = ?"
            )
            args: list[Any] = [project_id, q] * 4 + [project_id]
        else:
            sql = f"SELECT {USER_COLUMNS} FROM users u WHERE u.project_id = ?"
            args = [project_id]
        if before is not None:
            sql += " AND (u.created_at, u.id) < (?, ?)"
            args += before
        sql += " ORDER BY u.created_at DESC, u.id DESC LIMIT ?"
        args.append(limit)
        return self._read_users(sql, args)

    async def get_user_by_id(self, project_id: int, user_id: int) -> User | None:
        sql = f"SELECT {USER_COLUMNS} FROM users u WHERE u.project_id = ? AND u.id = ?"
        users = self._read_users(sql, [project_id, user_id])
        return users[0] if users else None

    def _read_users(self, sql: str, args: list[Any]) -> list[User]:
        """Users with all their anonymous ids and devices, read in one snapshot."""
        ro = self.ro
        ro.execute("BEGIN")
        try:
            users = {row[0]: _user(row) for row in ro.execute(sql, args)}
            for user in users.values():
                user.anonymous_ids = []
                user.devices = []
            ids = _json_list(list(users))
            for uid, anon in ro.execute(
                "SELECT user_id, anonymous_id FROM user_anonymous_ids"
                " WHERE user_id IN (SELECT value FROM json_each(?)) ORDER BY id",
                (ids,),
            ):
                users[uid].anonymous_ids.append(anon)  # type: ignore[union-attr]
            for row in ro.execute(
                f"SELECT {DEVICE_COLUMNS} FROM devices"
                " WHERE user_id IN (SELECT value FROM json_each(?)) ORDER BY id",
                (ids,),
            ):
                owner = users[row[2]]
                owner.devices.append(_device(row, owner))  # type: ignore[union-attr]
            return list(users.values())
        finally:
            ro.execute("COMMIT")

    async def delete_user(self, project_id: int, ref: str, by: str) -> bool:
        # Runs as a write transaction of the writer's kind (BEGIN IMMEDIATE on the writer's
        # connection). SQLite runs one write transaction at a time, and a writer batch never
        # yields to the event loop inside its transaction, so a concurrent event for this user
        # either committed before (its rows are deleted here) or is decided after, finds no user
        # and creates a new one: no row can be left pointing to the deleted user. (The writer's
        # identity cache is cleared after a transaction that wrote outside a batch, as this one.)
        async with self.transaction():
            db = self.db
            if by == "id":
                sql = "SELECT id FROM users WHERE project_id = ? AND id = ?"
            elif by == "anonymous_id":
                sql = "SELECT user_id FROM user_anonymous_ids WHERE project_id = ? AND anonymous_id = ?"
            else:
                sql = "SELECT id FROM users WHERE project_id = ? AND external_id = ?"
            row = db.execute(sql, (project_id, ref)).fetchone()
            if row is None:
                return False
            delete_user_events(db, row[0])
            for table in ("devices", "user_anonymous_ids"):
                db.execute(f"DELETE FROM {table} WHERE user_id = ?", (row[0],))
            db.execute("DELETE FROM users WHERE id = ?", (row[0],))
            return True

    async def event_feed(self, project_id: int, after: int | None, limit: int) -> list[FeedEvent]:
        sql = f"{FEED_SELECT} WHERE e.project_id = ? AND e.id > ? ORDER BY e.id LIMIT ?"
        return [_feed_event(r) for r in self.ro.execute(sql, (project_id, after or 0, limit))]

    async def latest_events(
        self, project_id: int, limit: int, after: int | None = None
    ) -> list[FeedEvent]:
        sql = f"{FEED_SELECT} WHERE e.project_id = ? AND e.id > ? ORDER BY e.id DESC LIMIT ?"
        return [_feed_event(r) for r in self.ro.execute(sql, (project_id, after or 0, limit))]

    async def events_per_minute(self, project_id: int, since: int) -> dict[int, int]:
        # No index on time (it would slow every insert): received_at grows with the id, so the
        # first id of the period is found by bisection over the (project_id, id) index, and only
        # the period's rows are read.
        ro = self.ro
        ends = "SELECT {}(id) FROM events WHERE project_id = ?"  # one each: both use the index
        lo = ro.execute(ends.format("min"), (project_id,)).fetchone()[0]
        hi = ro.execute(ends.format("max"), (project_id,)).fetchone()[0]
        if lo is None:
            return {}
        probe = "SELECT id, received_at FROM events WHERE project_id = ? AND id >= ? ORDER BY id LIMIT 1"
        start = None
        hi += 1
        while lo < hi:
            mid = (lo + hi) // 2
            found, received = ro.execute(probe, (project_id, mid)).fetchone()
            if received >= since:
                start, hi = found, mid
            else:
                lo = found + 1
        if start is None:
            return {}
        rows = ro.execute(
            "SELECT received_at / 60000 * 60000, count(*) FROM events"
            " WHERE project_id = ? AND id >= ? AND received_at >= ? GROUP BY 1",
            (project_id, start, since),
        )
        return dict(rows.fetchall())

    # -- portal admins and sessions ------------------------------------------------------
    async def create_admin(self, email: str, password_hash: str, now: int) -> Admin:
        async with self._tx_lock:  # never inside a batch that is committing
            cur = self.db.execute(
                "INSERT INTO admins (email, password_hash, created_at) VALUES (?, ?, ?) RETURNING id",
                (email, password_hash, now),
            )
            return Admin(cur.fetchone()[0], email, password_hash, now)

    async def find_admin(self, email: str) -> Admin | None:
        row = self.ro.execute(
            "SELECT id, email, password_hash, created_at FROM admins WHERE email = ?", (email,)
        ).fetchone()
        return Admin(*row) if row else None

    async def list_admins(self) -> list[Admin]:
        rows = self.ro.execute(
            "SELECT id, email, password_hash, created_at FROM admins ORDER BY id"
        )
        return [Admin(*row) for row in rows]

    async def create_session(
        self, token_hash: str, admin_id: int, csrf_token: str, now: int, expires_at: int
    ) -> None:
        async with self._tx_lock:  # never inside a batch that is committing
            db = self.db
            db.execute("DELETE FROM admin_sessions WHERE expires_at <= ?", (now,))
            db.execute(
                "INSERT INTO admin_sessions (token_hash, admin_id, csrf_token, created_at, expires_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (token_hash, admin_id, csrf_token, now, expires_at),
            )

    async def get_session(self, token_hash: str, now: int) -> AdminSession | None:
        row = self.ro.execute(
            "SELECT s.admin_id, a.email, s.csrf_token, s.expires_at FROM admin_sessions s"
            " JOIN admins a ON a.id = s.admin_id WHERE s.token_hash = ? AND s.expires_at > ?",
            (token_hash, now),
        ).fetchone()
        return AdminSession(*row) if row else None

    async def delete_session(self, token_hash: str) -> None:
        async with self._tx_lock:  # never inside a batch that is committing
            self.db.execute("DELETE FROM admin_sessions WHERE token_hash = ?", (token_hash,))


class Checkpointer:
    """Runs PASSIVE WAL checkpoints on its own connection and thread, twice a second."""

    def __init__(self, conn: sqlite3.Connection, interval: float = 0.5) -> None:
        self.conn = conn
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pier-checkpoint", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            # busy or disk trouble: the writer reports real failures; try again later
            with contextlib.suppress(sqlite3.Error):
                self.conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        self.conn.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


_IN = "(SELECT value FROM json_each(?))"  # one JSON array parameter for a whole IN list


class SqliteTx(BatchQueries):
    """The writer's transaction. Runs on the event loop: SQLite calls here are quick and
    handing them to a thread measured slower."""

    def __init__(self, db: sqlite3.Connection, cache: IdentityCache) -> None:
        self.db = db
        self.cache = cache
        self.written: ChangeSet | None = None

    async def reserve_user_ids(self, n: int) -> list[int]:
        last = self.db.execute(
            "UPDATE id_sequences SET value = value + ? WHERE name = 'users' RETURNING value", (n,)
        ).fetchone()[0]
        return list(range(last - n + 1, last + 1))

    async def release_user_ids(self, ids: list[int]) -> None:
        if ids:  # they are the tail of this transaction's reservation
            self.db.execute("UPDATE id_sequences SET value = ? WHERE name = 'users'", (ids[0] - 1,))

    # -- the queries of a batch load (see loading.BatchQueries) -----------------------------
    def decode(self, raw: Any) -> Any:
        return _decode(raw)

    def _rows(self, sql: str, *args: Any) -> list[tuple]:
        return self.db.execute(sql, args).fetchall()

    async def users_by_external(self, pid: int, values: list[str], whole: bool) -> list[tuple]:
        columns = USER_COLUMNS if whole else "u.id, u.project_id, u.external_id"
        sql = f"SELECT {columns} FROM users u WHERE u.project_id = ? AND u.external_id IN {_IN}"
        return self._rows(sql, pid, _json_list(values))

    async def users_by_anonymous(self, pid: int, values: list[str], whole: bool) -> list[tuple]:
        columns = USER_COLUMNS if whole else "u.id, u.project_id, u.external_id"
        sql = (
            f"SELECT a.anonymous_id, {columns} FROM user_anonymous_ids a"
            f" JOIN users u ON u.id = a.user_id WHERE a.project_id = ? AND a.anonymous_id IN {_IN}"
        )
        return self._rows(sql, pid, _json_list(values))

    async def users_by_id(self, ids: list[int]) -> list[tuple]:
        return self._rows(
            f"SELECT {USER_COLUMNS} FROM users u WHERE u.id IN {_IN}", _json_list(ids)
        )

    async def devices_where(self, pid: int, column: str, values: list[str]) -> list[tuple]:
        sql = f"SELECT {DEVICE_COLUMNS} FROM devices WHERE project_id = ? AND {column} IN {_IN}"
        return self._rows(sql, pid, _json_list(values))

    async def devices_of(self, user_ids: list[int]) -> list[tuple]:
        sql = f"SELECT {DEVICE_COLUMNS} FROM devices WHERE user_id IN {_IN} ORDER BY id"
        return self._rows(sql, _json_list(user_ids))

    async def anonymous_ids_of(self, user_ids: list[int]) -> list[tuple]:
        sql = f"SELECT user_id, anonymous_id FROM user_anonymous_ids WHERE user_id IN {_IN} ORDER BY id"
        return self._rows(sql, _json_list(user_ids))

    async def seen_message_ids(self, pid: int, values: list[str]) -> list[str]:
        sql = (
            "SELECT message_id FROM events WHERE project_id = ? AND message_id IS NOT NULL"
            f" AND message_id IN {_IN}"
        )
        return [r[0] for r in self._rows(sql, pid, _json_list(values))]

    async def stored_request_keys(self, pid: int, values: list[str]) -> list[tuple]:
        sql = f"SELECT key, fingerprint FROM request_keys WHERE project_id = ? AND key IN {_IN}"
        return self._rows(sql, pid, _json_list(values))

    async def write(self, c: ChangeSet) -> None:
        self.written = c
        db = self.db
        if c.request_keys:
            db.executemany(
                "INSERT INTO request_keys (project_id, key, fingerprint, created_at)"
                " VALUES (?, ?, ?, ?)",
                [(*k, c.now) for k in c.request_keys],
            )
        if c.new_users:
            db.executemany(
                "INSERT INTO users (id, project_id, external_id, email, phone, timezone, locale,"
                " data, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [user_values(u) for u in c.new_users],
            )
        if c.device_deletes:
            db.executemany("DELETE FROM devices WHERE id = ?", [(i,) for i in c.device_deletes])
        if c.anonymous_id_deletes:
            db.executemany(
                "DELETE FROM user_anonymous_ids WHERE project_id = ? AND anonymous_id = ?",
                c.anonymous_id_deletes,
            )
        if c.anonymous_id_inserts:
            db.executemany(
                "INSERT INTO user_anonymous_ids (project_id, anonymous_id, user_id) VALUES (?, ?, ?)",
                c.anonymous_id_inserts,
            )
        if c.device_writes:
            db.executemany(
                f"INSERT INTO devices ({DEVICE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [device_values(d) for d in c.device_writes],
            )
        if c.event_moves:
            move_user_events(db, c.event_moves)
        if c.updated_users:
            db.executemany(
                "UPDATE users SET external_id = ?, email = ?, phone = ?, timezone = ?, locale = ?,"
                " data = ?, updated_at = ? WHERE id = ?",
                [
                    (
                        u.external_id,
                        u.email,
                        u.phone,
                        u.timezone,
                        u.locale,
                        _encode(u.data),
                        u.updated_at,
                        u.id,
                    )
                    for u in c.updated_users
                ],
            )
        if c.events:
            now = c.now
            encode = _encoder.encode
            db.executemany(
                "INSERT INTO events (project_id, user_id, name, data, created_at, received_at,"
                " message_id) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        e.user.project_id,
                        e.user.id,
                        e.name,
                        encode(e.data).decode(),
                        e.created_at,
                        now,
                        e.message_id,
                    )
                    for e in c.events
                ],
            )
        if c.deleted_users:
            db.executemany("DELETE FROM users WHERE id = ?", [(u.id,) for u in c.deleted_users])


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
