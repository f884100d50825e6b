"""SQLite backend: the embedded default. WAL mode; one writer connection used from the event loop
(the writer batches many requests into one transaction), one connection for reads."""

from __future__ import annotations

import os
import sqlite3
from collections import defaultdict
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any

import msgspec

from ..domain.batch import Batch, ChangeSet, Key, LoadRequest
from ..domain.keys import Key as ApiKey
from ..domain.keys import Project
from ..domain.model import Device, User
from .base import EventRow, StoreUnavailable
from .migrations import migrations

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
    return User(
        row[0],
        row[1],
        row[2],
        None,
        email=row[3],
        phone=row[4],
        timezone=row[5],
        locale=row[6],
        data=_decode(row[7]),
        created_at=row[8],
        updated_at=row[9],
        stored=True,
    )


def _device(row: tuple, owner: User) -> Device:
    return Device(
        row[0],
        row[1],
        owner,
        row[3],
        token=row[4],
        os=row[5],
        os_version=row[6],
        model=row[7],
        app_build=row[8],
        app_version=row[9],
        extra=_decode(row[10]),
        created_at=row[11],
        updated_at=row[12],
        stored=True,
    )


def _by_project(keys: Iterable[Key]) -> dict[int, list[str]]:
    grouped: dict[int, list[str]] = defaultdict(list)
    for pid, value in keys:
        grouped[pid].append(value)
    return grouped


class SqliteStore:
    """Store over one SQLite file. `durability` is 'full' (fsync every commit) or 'normal'."""

    def __init__(self, url: str, path: str, durability: str = "full") -> None:
        self.url = url
        self.path = path
        self.durability = durability
        self._writer: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None

    # -- connections ---------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        folder = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(folder, exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={'FULL' if self.durability == 'full' else 'NORMAL'}")
        conn.execute("PRAGMA busy_timeout=10000")
        conn.execute("PRAGMA cache_size=-65536")
        return conn

    async def open(self) -> None:
        try:
            self._writer = self._connect()
            self._reader = self._connect()
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"cannot open {self.path}: {exc}") from exc

    async def close(self) -> None:
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
        db = self.db
        try:
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise StoreUnavailable(str(exc)) from exc
        try:
            yield SqliteTx(db)
            db.execute("COMMIT")
        except BaseException as exc:
            if db.in_transaction:
                db.execute("ROLLBACK")
            if isinstance(exc, sqlite3.OperationalError):
                raise StoreUnavailable(str(exc)) from exc
            raise

    def is_retryable(self, exc: BaseException) -> bool:
        return False  # one writer at a time: there are no conflicts to replay

    # -- projects and keys ---------------------------------------------------------------
    async def create_project(self, name: str, now: int) -> Project:
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
        sql = (
            "SELECT id, name, data, created_at, received_at, message_id, user_id FROM events"
            " WHERE user_id = ?"
        )
        args: list[Any] = [user_id]
        if before is not None:
            sql += " AND (created_at, id) < (?, ?)"
            args += before
        sql += " ORDER BY created_at DESC, id DESC LIMIT ?"
        args.append(limit)
        return [
            EventRow(r[0], r[1], msgspec.Raw(r[2].encode()), r[3], r[4], r[5], r[6])
            for r in self.ro.execute(sql, args)
        ]

    async def stats(self, project_id: int) -> dict[str, int]:
        return {
            table: self.ro.execute(
                f"SELECT count(*) FROM {table} WHERE project_id = ?", (project_id,)
            ).fetchone()[0]
            for table in STAT_TABLES
        }


class SqliteTx:
    """The writer's transaction. Runs on the event loop: SQLite calls here are quick and
    handing them to a thread measured slower."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    async def reserve_user_ids(self, n: int) -> list[int]:
        last = self.db.execute(
            "UPDATE id_sequences SET value = value + ? WHERE name = 'users' RETURNING value", (n,)
        ).fetchone()[0]
        return list(range(last - n + 1, last + 1))

    async def load(self, request: LoadRequest, batch: Batch) -> None:
        db = self.db
        for pid, values in _by_project(request.external_ids).items():
            sql = (
                f"SELECT {USER_COLUMNS} FROM users u WHERE u.project_id = ?"
                " AND u.external_id IN (SELECT value FROM json_each(?))"
            )
            for row in db.execute(sql, (pid, _json_list(values))):
                if row[0] not in batch.users:
                    batch.add_user(_user(row))
        for pid, values in _by_project(request.anonymous_ids).items():
            sql = (
                f"SELECT a.anonymous_id, {USER_COLUMNS} FROM user_anonymous_ids a"
                " JOIN users u ON u.id = a.user_id WHERE a.project_id = ?"
                " AND a.anonymous_id IN (SELECT value FROM json_each(?))"
            )
            for row in db.execute(sql, (pid, _json_list(values))):
                user = batch.users.get(row[1]) or _user(row[1:])
                batch.add_user(user, (row[0],))
        await self._load_devices(request.device_ids, "device_id", batch)
        await self._load_devices(request.tokens, "token", batch)
        for pid, values in _by_project(request.message_ids).items():
            sql = (
                "SELECT message_id FROM events WHERE project_id = ?"
                " AND message_id IN (SELECT value FROM json_each(?))"
            )
            batch.seen_message_ids.update(
                (pid, r[0]) for r in db.execute(sql, (pid, _json_list(values)))
            )

    async def _load_devices(self, keys: set[Key], column: str, batch: Batch) -> None:
        for pid, values in _by_project(keys).items():
            sql = (
                f"SELECT {DEVICE_COLUMNS} FROM devices WHERE project_id = ?"
                f" AND {column} IN (SELECT value FROM json_each(?))"
            )
            rows = self.db.execute(sql, (pid, _json_list(values))).fetchall()
            self._add_devices(rows, batch)

    def _add_devices(self, rows: list[tuple], batch: Batch) -> None:
        missing = {r[2] for r in rows} - batch.users.keys()
        if missing:
            sql = (
                f"SELECT {USER_COLUMNS} FROM users u WHERE u.id IN (SELECT value FROM json_each(?))"
            )
            for row in self.db.execute(sql, (_json_list(list(missing)),)):
                batch.add_user(_user(row))
        for row in rows:
            if (row[1], row[3]) not in batch.devices_by_id:
                batch.add_device(_device(row, batch.users[row[2]]))

    async def load_full(self, user_ids: set[int], batch: Batch) -> None:
        ids = _json_list(sorted(user_ids))
        owned: dict[int, list[str]] = defaultdict(list)
        sql = (
            "SELECT user_id, anonymous_id FROM user_anonymous_ids"
            " WHERE user_id IN (SELECT value FROM json_each(?)) ORDER BY id"
        )
        for uid, anon in self.db.execute(sql, (ids,)):
            owned[uid].append(anon)
        for uid in user_ids:
            user = batch.users[uid]
            user.anonymous_ids = owned[uid]
            batch.add_user(user, owned[uid])
            user.devices = []
        sql = f"SELECT {DEVICE_COLUMNS} FROM devices WHERE user_id IN (SELECT value FROM json_each(?))"
        rows = self.db.execute(sql, (ids,)).fetchall()
        for row in rows:
            known = batch.devices_by_id.get((row[1], row[3]))
            if known is not None:
                if known.user.devices is not None and known not in known.user.devices:
                    known.user.devices.append(known)
            else:
                batch.add_device(_device(row, batch.users[row[2]]))

    async def write(self, c: ChangeSet) -> None:
        db = self.db
        if c.new_users:
            db.executemany(
                "INSERT INTO users (id, project_id, external_id, email, phone, timezone, locale,"
                " data, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [_user_values(u) for u in c.new_users],
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
                [_device_values(d) for d in c.device_writes],
            )
        if c.event_moves:
            db.executemany(
                "UPDATE events SET user_id = ? WHERE user_id = ?",
                [(to, frm) for frm, to in c.event_moves],
            )
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
            db.executemany(
                "INSERT INTO events (project_id, user_id, name, data, created_at, received_at,"
                " message_id) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        e.user.project_id,
                        e.user.id,
                        e.name,
                        _encode(e.data),
                        e.created_at,
                        now,
                        e.message_id,
                    )
                    for e in c.events
                ],
            )
        if c.deleted_users:
            db.executemany("DELETE FROM users WHERE id = ?", [(u.id,) for u in c.deleted_users])


def _user_values(u: User) -> tuple:
    return (
        u.id,
        u.project_id,
        u.external_id,
        u.email,
        u.phone,
        u.timezone,
        u.locale,
        _encode(u.data),
        u.created_at,
        u.updated_at,
    )


def _device_values(d: Device) -> tuple:
    return (
        d.id,
        d.project_id,
        d.user.id,
        d.device_id,
        d.token,
        d.os,
        d.os_version,
        d.model,
        d.app_build,
        d.app_version,
        _encode(d.extra),
        d.created_at,
        d.updated_at,
    )


def _statements(sql: str) -> list[str]:
    """Split a migration into statements (ours contain no semicolons inside literals)."""
    return [s.strip() for s in sql.split(";") if s.strip() and not _only_comments(s)]


def _only_comments(chunk: str) -> bool:
    return all(not line.strip() or line.strip().startswith("--") for line in chunk.splitlines())
