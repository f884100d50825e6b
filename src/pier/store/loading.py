"""Loading a batch, shared by the backends: which users, anonymous ids and devices to read, in
what order, with which queries (queries.py), and an identity cache."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import msgspec

from ..domain.batch import Batch, ChangeSet
from ..domain.model import Device, User
from ..domain.plan import Key, LoadRequest
from .queries import Queries, Row, Run

_encoder = msgspec.json.Encoder()
_decode = msgspec.json.decode


def user_from_row(row: Row) -> User:
    """A whole user from a row in queries.USER_FIELDS order (data stays JSON until it is read)."""
    return User(
        row[0],
        row[1],
        row[2],
        None,
        email=row[3],
        phone=row[4],
        timezone=row[5],
        locale=row[6],
        raw_data=row[7],
        created_at=row[8],
        updated_at=row[9],
        stored=True,
    )


def device_from_row(row: Row, owner: User, decode: Any) -> Device:
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
        extra=decode(row[10]),
        created_at=row[11],
        updated_at=row[12],
        stored=True,
    )


def user_values(u: User) -> tuple[Any, ...]:
    """A user as a row in queries.USER_FIELDS order, data encoded as JSON text."""
    data = _encoder.encode(u.data).decode()
    return (
        u.id,
        u.project_id,
        u.external_id,
        u.email,
        u.phone,
        u.timezone,
        u.locale,
        data,
        u.created_at,
        u.updated_at,
    )


def device_values(d: Device) -> tuple[Any, ...]:
    """A device as a row in queries.DEVICE_FIELDS order, extra encoded as JSON text."""
    extra = _encoder.encode(d.extra).decode()
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
        extra,
        d.created_at,
        d.updated_at,
    )


def by_project(keys: Iterable[Key]) -> dict[int, list[str]]:
    grouped: dict[int, list[str]] = defaultdict(list)
    for pid, value in keys:
        grouped[pid].append(value)
    return grouped


class IdentityCache:
    """Which user owns each external and anonymous id, as committed. Valid only while this
    process is the only writer: the SQLite store clears it when another process commits a
    write transaction of the writer's kind (SqliteStore._epoch); the PostgreSQL store keeps it
    under the rule of its lists' cache (PostgresStore.lists_for, PostgresTx.check_identity)."""

    MAX_ENTRIES = 2_000_000

    def __init__(self) -> None:
        self.by_external: dict[Key, int] = {}
        self.by_anonymous: dict[Key, int] = {}
        self.external_of: dict[int, str | None] = {}

    def clear(self) -> None:
        self.by_external.clear()
        self.by_anonymous.clear()
        self.external_of.clear()

    def remember(self, uid: int, pid: int, ext: str | None, anon: str | None = None) -> None:
        if len(self.external_of) > self.MAX_ENTRIES:
            self.clear()
        self.external_of[uid] = ext
        if ext is not None:
            self.by_external[(pid, ext)] = uid
        if anon is not None:
            self.by_anonymous[(pid, anon)] = uid

    def committed(self, c: ChangeSet) -> None:
        """Bring the cache up to date with a committed change set."""
        for u in c.deleted_users:
            self.external_of.pop(u.id, None)
        for u in (*c.new_users, *c.updated_users):
            self.remember(u.id, u.project_id, u.external_id)
        for key in c.anonymous_id_deletes:
            self.by_anonymous.pop(key, None)
        for pid, anon, uid in c.anonymous_id_inserts:
            self.by_anonymous[(pid, anon)] = uid

    def lookup(self, keys: set[Key], anonymous: bool, batch: Batch) -> set[Key]:
        """Add the cached owners of `keys` to the batch as partial users; returns the misses."""
        index = self.by_anonymous if anonymous else self.by_external
        external_of = self.external_of
        misses = set()
        for key in keys:
            uid = index.get(key)
            if uid is None or uid not in external_of:  # (None there is "no external id")
                misses.add(key)
                continue
            batch.add_partial(uid, key[0], external_of[uid], key[1] if anonymous else None)
        return misses


class BatchQueries:
    """The queries that load a batch, run inside the backend's write transaction."""

    cache: IdentityCache | None = None

    def __init__(self, run: Run, q: Queries) -> None:
        self.run = run
        self.q = q
        self.array = q.dialect.array

    def decode(self, raw: Any) -> Any:
        return _decode(raw)

    async def users_by_external(self, pid: int, values: list[str], whole: bool) -> list[Row]:
        """Rows in queries.USER_FIELDS order when `whole`, else (id, project_id, external_id)."""
        return await self.run.all(self.q.users_by_external[whole], pid, self.array(values))

    async def users_by_anonymous(self, pid: int, values: list[str], whole: bool) -> list[Row]:
        """(anonymous_id, *user row) with the user row as in users_by_external."""
        return await self.run.all(self.q.users_by_anonymous[whole], pid, self.array(values))

    async def users_by_id(self, ids: list[int]) -> list[Row]:
        """Whole rows."""
        return await self.run.all(self.q.users_by_id, self.array(ids))

    async def devices_where(self, pid: int, column: str, values: list[str]) -> list[Row]:
        return await self.run.all(self.q.devices_where[column], pid, self.array(values))

    async def devices_of(self, user_ids: list[int]) -> list[Row]:
        return await self.run.all(self.q.devices_of, self.array(user_ids))

    async def anonymous_ids_of(self, user_ids: list[int]) -> list[Row]:
        """(user_id, anonymous_id), oldest first."""
        return await self.run.all(self.q.anonymous_ids_of, self.array(user_ids))

    async def seen_message_ids(self, pid: int, values: list[str]) -> list[str]:
        """The message ids among `values` that project `pid` has stored. Each backend has its
        own statement: SQLite reads its message_ids table (SqliteTx), PostgreSQL the events'
        unique index (PostgresTx)."""
        raise NotImplementedError

    async def stored_request_keys(self, pid: int, values: list[str]) -> list[Row]:
        """(key, fingerprint) of the Idempotency-Keys already committed."""
        return await self.run.all(self.q.stored_request_keys, pid, self.array(values))

    # -- the shared loading logic ----------------------------------------------------------
    async def load(self, request: LoadRequest, batch: Batch) -> None:
        """Add every user, anonymous id, device, seen message id and Idempotency-Key the
        request names, then complete the users it says to (request.to_complete), so that
        the batch needs nothing more. Whole rows first, so that a user named by several keys
        is one object."""
        for pid, values in by_project(request.profile_external_ids).items():
            self._add_users(await self.users_by_external(pid, values, True), batch, True)
        for pid, values in by_project(request.profile_anonymous_ids).items():
            for row in await self.users_by_anonymous(pid, values, True):
                self._add_user(row[1:], batch, True, row[0])
        external = request.external_ids - request.profile_external_ids
        anonymous = request.anonymous_ids - request.profile_anonymous_ids
        if self.cache is not None:
            external = self.cache.lookup(external, False, batch)
            anonymous = self.cache.lookup(anonymous, True, batch)
        for pid, values in by_project(external).items():
            self._add_users(await self.users_by_external(pid, values, False), batch, False)
        for pid, values in by_project(anonymous).items():
            for row in await self.users_by_anonymous(pid, values, False):
                self._add_user(row[1:], batch, False, row[0])
        for column, keys in (("device_id", request.device_ids), ("token", request.tokens)):
            for pid, values in by_project(keys).items():
                await self._add_devices(await self.devices_where(pid, column, values), batch)
        for pid, values in by_project(request.request_keys).items():
            for key, fingerprint in await self.stored_request_keys(pid, values):
                batch.add_request_key(pid, key, fingerprint)
        for pid, values in by_project(request.message_ids).items():
            batch.add_seen_message_ids(pid, await self.seen_message_ids(pid, values))
        complete = request.to_complete(batch.by_anonymous, batch.by_external)
        if complete:
            await self._complete(complete, batch)

    def _add_users(self, rows: list[Row], batch: Batch, whole: bool) -> None:
        for row in rows:
            self._add_user(row, batch, whole)

    def _add_user(self, row: Row, batch: Batch, whole: bool, anon: str | None = None) -> None:
        uid = row[0]
        if not whole:
            batch.add_partial(uid, row[1], row[2], anon)
        else:
            user = batch.users.get(uid) or user_from_row(row)
            batch.add_user(user, (anon,) if anon is not None else ())
        if self.cache is not None:
            self.cache.remember(uid, row[1], row[2], anon)

    async def _add_devices(self, rows: list[Row], batch: Batch) -> None:
        missing = list({r[2] for r in rows} - batch.users.keys())
        if missing:
            self._add_users(await self.users_by_id(missing), batch, True)
        for row in rows:
            if (row[1], row[3]) not in batch.devices_by_id:
                batch.add_device(device_from_row(row, batch.users[row[2]], self.decode))

    async def _complete(self, user_ids: set[int], batch: Batch) -> None:
        """Complete these users: whole rows, every anonymous id, every device."""
        ids = sorted(user_ids)
        partial = [uid for uid in ids if batch.users[uid].partial]
        for row in await self.users_by_id(partial) if partial else ():
            batch.users[row[0]].fill(user_from_row(row))
        owned: dict[int, list[str]] = defaultdict(list)
        for uid, anon in await self.anonymous_ids_of(ids):
            owned[uid].append(anon)
        for uid in ids:
            user = batch.users[uid]
            user.anonymous_ids = owned[uid]
            batch.add_user(user, owned[uid])
            user.devices = []
        for row in await self.devices_of(ids):
            known = batch.devices_by_id.get((row[1], row[3]))
            if known is None:
                batch.add_device(device_from_row(row, batch.users[row[2]], self.decode))
            elif known.user.devices is not None and known not in known.user.devices:
                known.user.devices.append(known)
