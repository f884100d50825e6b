"""PostgreSQL backend (asyncpg): the scale-out store for many stateless API processes.

Each batch runs in one SERIALIZABLE transaction: PostgreSQL detects every interleaving with
another process's batch that could not happen one after the other, and the writer replays the
batch (`is_retryable`). Events are written with COPY.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import msgspec

from ..domain.batch import Batch, ChangeSet, Key, LoadRequest
from ..domain.keys import Key as ApiKey
from ..domain.keys import Project
from ..domain.model import Device, User
from .base import EventRow, StoreUnavailable
from .migrations import migrations

_encoder = msgspec.json.Encoder()
_decode = msgspec.json.decode

USER_COLUMNS = (
    "u.id, u.project_id, u.external_id, u.email, u.phone, u.timezone, u.locale, u.data::text,"
    " u.created_at, u.updated_at"
)
DEVICE_COLUMNS = (
    "id, project_id, user_id, device_id, token, os, os_version, model, app_build, app_version,"
    " extra::text, created_at, updated_at"
)
KEY_COLUMNS = "id, project_id, name, scope, prefix, created_at, revoked_at, value, rate_limit"
STAT_TABLES = ("users", "user_anonymous_ids", "devices", "events")
ID_BLOCK = 100  # must match the sequence's INCREMENT BY
MIGRATION_LOCK = 0x5049455201  # advisory lock: one process migrates at a time
RETRYABLE = (
    asyncpg.SerializationError,
    asyncpg.DeadlockDetectedError,
    asyncpg.UniqueViolationError,
    asyncpg.ForeignKeyViolationError,
)
UNAVAILABLE = (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError)


def _encode(value: Any) -> str:
    return _encoder.encode(value).decode()


def _user(row: Any) -> User:
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


def _device(row: Any, owner: User) -> Device:
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


class PostgresStore:
    def __init__(self, url: str, *, min_size: int = 2, max_size: int = 10) -> None:
        self.url = url
        self.min_size = min_size
        self.max_size = max_size
        self._pool: asyncpg.Pool | None = None
        self._ids: list[int] = []  # user ids this process holds (sequence values never roll back)

    async def open(self) -> None:
        try:
            self._pool = await asyncpg.create_pool(
                self.url, min_size=self.min_size, max_size=self.max_size, command_timeout=60
            )
        except (*UNAVAILABLE, asyncpg.PostgresError) as exc:
            raise StoreUnavailable(f"cannot connect to PostgreSQL: {exc}") from exc

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    @property
    def pool(self) -> asyncpg.Pool:
        assert self._pool is not None, "store is not open"
        return self._pool

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
    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[PostgresTx]:
        try:
            async with self.pool.acquire() as conn, conn.transaction(isolation="serializable"):
                yield PostgresTx(conn, self)
        except UNAVAILABLE as exc:
            raise StoreUnavailable(str(exc)) from exc

    def is_retryable(self, exc: BaseException) -> bool:
        return isinstance(exc, RETRYABLE)

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

    # -- projects and keys ---------------------------------------------------------------
    async def create_project(self, name: str, now: int) -> Project:
        pid = await self.pool.fetchval(
            "INSERT INTO projects (name, created_at) VALUES ($1, $2) RETURNING id", name, now
        )
        return Project(pid, name, now)

    async def list_projects(self) -> list[Project]:
        rows = await self.pool.fetch("SELECT id, name, created_at FROM projects ORDER BY id")
        return [Project(*r) for r in rows]

    async def get_project(self, project_id: int) -> Project | None:
        row = await self.pool.fetchrow(
            "SELECT id, name, created_at FROM projects WHERE id = $1", project_id
        )
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
        key_id = await self.pool.fetchval(
            "INSERT INTO keys (project_id, name, scope, key_hash, prefix, value, created_at,"
            " rate_limit) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
            project_id,
            name,
            scope,
            key_hash,
            prefix,
            value,
            now,
            rate_limit,
        )
        return ApiKey(key_id, project_id, name, scope, prefix, now, None, value, rate_limit)

    async def list_keys(self, project_id: int) -> list[ApiKey]:
        rows = await self.pool.fetch(
            f"SELECT {KEY_COLUMNS} FROM keys WHERE project_id = $1 ORDER BY id", project_id
        )
        return [ApiKey(*r) for r in rows]

    async def find_key(self, key_hash: str) -> ApiKey | None:
        try:
            row = await self.pool.fetchrow(
                f"SELECT {KEY_COLUMNS} FROM keys WHERE key_hash = $1", key_hash
            )
        except UNAVAILABLE as exc:
            raise StoreUnavailable(str(exc)) from exc
        return ApiKey(*row) if row else None

    async def revoke_key(self, key_id: int | None, key_hash: str | None, now: int) -> bool:
        status = await self.pool.execute(
            "UPDATE keys SET revoked_at = COALESCE(revoked_at, $1) WHERE id = $2 OR key_hash = $3",
            now,
            key_id,
            key_hash,
        )
        return status != "UPDATE 0"

    # -- reads ---------------------------------------------------------------------------
    async def get_user(self, project_id: int, ref: str, by: str) -> User | None:
        async with self.pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
            if by == "anonymous_id":
                sql = (
                    f"SELECT {USER_COLUMNS} FROM user_anonymous_ids a JOIN users u"
                    " ON u.project_id = a.project_id AND u.id = a.user_id"
                    " WHERE a.project_id = $1 AND a.anonymous_id = $2"
                )
            else:
                sql = (
                    f"SELECT {USER_COLUMNS} FROM users u WHERE project_id = $1 AND external_id = $2"
                )
            row = await conn.fetchrow(sql, project_id, ref)
            if row is None:
                return None
            user = _user(row)
            anon = await conn.fetch(
                "SELECT anonymous_id FROM user_anonymous_ids WHERE user_id = $1 ORDER BY id",
                user.id,
            )
            user.anonymous_ids = [r[0] for r in anon]
            devices = await conn.fetch(
                f"SELECT {DEVICE_COLUMNS} FROM devices WHERE user_id = $1 ORDER BY id", user.id
            )
            user.devices = [_device(r, user) for r in devices]
            return user

    async def user_events(
        self, user_id: int, limit: int, before: tuple[int, int] | None
    ) -> list[EventRow]:
        sql = (
            "SELECT id, name, data::text, created_at, received_at, message_id, user_id"
            " FROM events WHERE user_id = $1"
        )
        args: list[Any] = [user_id]
        if before is not None:
            sql += " AND (created_at, id) < ($2, $3)"
            args += before
        sql += f" ORDER BY created_at DESC, id DESC LIMIT ${len(args) + 1}"
        args.append(limit)
        rows = await self.pool.fetch(sql, *args)
        return [
            EventRow(r[0], r[1], msgspec.Raw(r[2].encode()), r[3], r[4], r[5], r[6]) for r in rows
        ]

    async def stats(self, project_id: int) -> dict[str, int]:
        result = {}
        for table in STAT_TABLES:
            result[table] = await self.pool.fetchval(
                f"SELECT count(*) FROM {table} WHERE project_id = $1", project_id
            )
        return result


class PostgresTx:
    def __init__(self, conn: asyncpg.Connection, store: PostgresStore) -> None:
        self.conn = conn
        self.store = store

    async def reserve_user_ids(self, n: int) -> list[int]:
        return await self.store.take_user_ids(self.conn, n)

    async def release_user_ids(self, ids: list[int]) -> None:
        self.store.give_back(ids)

    async def load(self, request: LoadRequest, batch: Batch) -> None:
        conn = self.conn
        for pid, values in _by_project(request.external_ids).items():
            sql = (
                f"SELECT {USER_COLUMNS} FROM users u"
                " WHERE u.project_id = $1 AND u.external_id = ANY($2::text[])"
            )
            for row in await conn.fetch(sql, pid, values):
                if row[0] not in batch.users:
                    batch.add_user(_user(row))
        for pid, values in _by_project(request.anonymous_ids).items():
            sql = (
                f"SELECT a.anonymous_id, {USER_COLUMNS} FROM user_anonymous_ids a"
                " JOIN users u ON u.project_id = a.project_id AND u.id = a.user_id"
                " WHERE a.project_id = $1 AND a.anonymous_id = ANY($2::text[])"
            )
            for row in await conn.fetch(sql, pid, values):
                user = batch.users.get(row[1]) or _user(row[1:])
                batch.add_user(user, (row[0],))
        await self._load_devices(request.device_ids, "device_id", batch)
        await self._load_devices(request.tokens, "token", batch)
        for pid, values in _by_project(request.message_ids).items():
            rows = await conn.fetch(
                "SELECT message_id FROM events WHERE project_id = $1"
                " AND message_id = ANY($2::text[])",
                pid,
                values,
            )
            batch.seen_message_ids.update((pid, r[0]) for r in rows)

    async def _load_devices(self, keys: set[Key], column: str, batch: Batch) -> None:
        for pid, values in _by_project(keys).items():
            rows = await self.conn.fetch(
                f"SELECT {DEVICE_COLUMNS} FROM devices WHERE project_id = $1"
                f" AND {column} = ANY($2::text[])",
                pid,
                values,
            )
            await self._add_devices(rows, batch)

    async def _add_devices(self, rows: list[Any], batch: Batch) -> None:
        missing = list({r[2] for r in rows} - batch.users.keys())
        if missing:
            sql = f"SELECT {USER_COLUMNS} FROM users u WHERE u.id = ANY($1::bigint[])"
            for row in await self.conn.fetch(sql, missing):
                batch.add_user(_user(row))
        for row in rows:
            if (row[1], row[3]) not in batch.devices_by_id:
                batch.add_device(_device(row, batch.users[row[2]]))

    async def load_full(self, user_ids: set[int], batch: Batch) -> None:
        ids = sorted(user_ids)
        owned: dict[int, list[str]] = defaultdict(list)
        rows = await self.conn.fetch(
            "SELECT user_id, anonymous_id FROM user_anonymous_ids"
            " WHERE user_id = ANY($1::bigint[]) ORDER BY id",
            ids,
        )
        for uid, anon in rows:
            owned[uid].append(anon)
        for uid in user_ids:
            user = batch.users[uid]
            user.anonymous_ids = owned[uid]
            batch.add_user(user, owned[uid])
            user.devices = []
        rows = await self.conn.fetch(
            f"SELECT {DEVICE_COLUMNS} FROM devices WHERE user_id = ANY($1::bigint[])", ids
        )
        for row in rows:
            known = batch.devices_by_id.get((row[1], row[3]))
            if known is not None:
                if known.user.devices is not None and known not in known.user.devices:
                    known.user.devices.append(known)
            else:
                batch.add_device(_device(row, batch.users[row[2]]))

    async def write(self, c: ChangeSet) -> None:
        conn = self.conn
        if c.new_users:
            await conn.executemany(
                "INSERT INTO users (id, project_id, external_id, email, phone, timezone, locale,"
                " data, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, $9,"
                " $10)",
                [_user_values(u) for u in c.new_users],
            )
        if c.device_deletes:
            await conn.execute("DELETE FROM devices WHERE id = ANY($1::bigint[])", c.device_deletes)
        if c.anonymous_id_deletes:
            await conn.executemany(
                "DELETE FROM user_anonymous_ids WHERE project_id = $1 AND anonymous_id = $2",
                c.anonymous_id_deletes,
            )
        if c.anonymous_id_inserts:
            await conn.executemany(
                "INSERT INTO user_anonymous_ids (project_id, anonymous_id, user_id)"
                " VALUES ($1, $2, $3)",
                c.anonymous_id_inserts,
            )
        for d in c.device_writes:
            values = _device_values(d)
            if d.id is None:
                d.id = await conn.fetchval(
                    "INSERT INTO devices (project_id, user_id, device_id, token, os, os_version,"
                    " model, app_build, app_version, extra, created_at, updated_at) VALUES ($1, $2,"
                    " $3, $4, $5, $6, $7, $8, $9, $10::jsonb, $11, $12) RETURNING id",
                    *values[1:],
                )
            else:
                await conn.execute(
                    f"INSERT INTO devices ({DEVICE_COLUMNS.replace('::text', '')}) VALUES ($1, $2,"
                    " $3, $4, $5, $6, $7, $8, $9, $10, $11::jsonb, $12, $13)",
                    *values,
                )
        if c.event_moves:
            await conn.executemany(
                "UPDATE events SET user_id = $1 WHERE user_id = $2",
                [(to, frm) for frm, to in c.event_moves],
            )
        if c.updated_users:
            await conn.executemany(
                "UPDATE users SET external_id = $1, email = $2, phone = $3, timezone = $4,"
                " locale = $5, data = $6::jsonb, updated_at = $7 WHERE id = $8",
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
            await conn.copy_records_to_table(
                "events",
                columns=(
                    "project_id",
                    "user_id",
                    "name",
                    "data",
                    "created_at",
                    "received_at",
                    "message_id",
                ),
                records=[
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
            await conn.execute(
                "DELETE FROM users WHERE id = ANY($1::bigint[])", [u.id for u in c.deleted_users]
            )


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
