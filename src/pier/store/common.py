"""What the two backends share, over their `Run` (queries.py): the writer's transaction (load,
then write the change set in one order) and the store's other methods. A backend supplies its
connections, its transaction policy, id reservation, bulk insert of events and its own upkeep."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

import msgspec

from ..clock import now_ms
from ..domain.batch import ChangeSet
from ..domain.feed import DEVICE_REGISTERED, MERGED_AWAY, USER_DELETED
from ..domain.keys import Key as ApiKey
from ..domain.keys import Project
from ..domain.model import Device, Event, User
from ..domain.segments import Rule
from .base import Admin, AdminSession, EventRow, FeedEvent
from .loading import BatchQueries, device_from_row, device_values, user_from_row, user_values
from .queries import Queries, Row, Run
from .segments_sql import compile_members

_encoder = msgspec.json.Encoder()
_decode = msgspec.json.decode


def _encode(value: Any) -> str:
    return _encoder.encode(value).decode()


class SqlTx(BatchQueries):
    """The writer's transaction: the loaders (loading.BatchQueries) and the write. A backend
    adds id reservation and may replace the three steps whose policy differs."""

    async def write(self, c: ChangeSet) -> None:
        """Write a change set, always in this order (each step may rely on the ones before)."""
        run, q = self.run, self.q
        if c.request_keys:
            await run.many(q.insert_request_key, [(*k, c.now) for k in c.request_keys])
        if c.new_users:
            await run.many(q.insert_user, [user_values(u) for u in c.new_users])
        if c.device_deletes:
            await run.execute(q.delete_devices, self.array(c.device_deletes))
        if c.anonymous_id_deletes:
            await run.many(q.delete_anonymous_id, c.anonymous_id_deletes)
        if c.anonymous_id_inserts:
            await run.many(q.insert_anonymous_id, c.anonymous_id_inserts)
        if c.device_writes:
            await self.write_devices(c.device_writes)
        if c.event_moves:
            await self.move_events(c.event_moves)
        if c.updated_users:
            await run.many(
                q.update_user,
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
            await self.insert_events(c.events, c.now)
        if c.deleted_users:
            await run.execute(q.delete_users, self.array([u.id for u in c.deleted_users]))

    async def write_devices(self, devices: list[Device]) -> None:
        """Insert devices whole (stored ones were deleted just before)."""
        await self.run.many(self.q.insert_device, [device_values(d) for d in devices])

    async def move_events(self, moves: list[tuple[int, int]]) -> None:
        """Give the events of each merged user (from) to the user it merged into (to); its own
        items (feed.MERGED_AWAY) leave the feed instead."""
        names = self.array(list(MERGED_AWAY))
        await self.run.many(self.q.delete_merged_items, [(frm, names) for frm, _ in moves])
        await self.run.many(self.q.move_events, [(to, frm) for frm, to in moves])

    async def insert_events(self, events: list[Event], now: int) -> None:
        await self.run.many(self.q.insert_events, event_values(events, now))


def event_values(events: list[Event], now: int) -> Sequence[tuple[Any, ...]]:
    """Events as rows in queries.EVENT_FIELDS order."""
    encode = _encoder.encode
    return [
        (
            e.user.project_id,
            e.user.id,
            e.name,
            encode(e.data).decode(),
            e.created_at,
            now,
            e.message_id,
        )
        for e in events
    ]


def event_row(r: Row) -> EventRow:
    return EventRow(r[0], r[1], msgspec.Raw(r[2].encode()), r[3], r[4], r[5], r[6])


def _feed_event(r: Row) -> FeedEvent:
    return FeedEvent(r[0], r[1], msgspec.Raw(r[2].encode()), r[3], r[4], r[5], r[6], r[7], r[8])


class SqlStore:
    """The Store methods that are the same on both backends (base.Store). A backend sets `q`
    (the queries rendered for it) and gives three ways to run them: `reader`, `reading()` and
    `writing()`; it implements the rest of the protocol itself."""

    q: Queries

    @property
    def reader(self) -> Run:
        """For one read statement."""
        raise NotImplementedError

    def reading(self) -> AbstractAsyncContextManager[Run]:
        """For several reads from one snapshot."""
        raise NotImplementedError

    def writing(self) -> AbstractAsyncContextManager[Run]:
        """For a write outside the batch path (management), in a transaction of its own."""
        raise NotImplementedError

    # -- projects and keys ---------------------------------------------------------------
    async def create_project(self, name: str, now: int) -> Project:
        async with self.writing() as run:
            row = await run.one(self.q.insert_project, name, now)
        assert row is not None
        return Project(row[0], name, now)

    async def list_projects(self) -> list[Project]:
        return [Project(*r) for r in await self.reader.all(self.q.projects)]

    async def get_project(self, project_id: int) -> Project | None:
        row = await self.reader.one(self.q.project, project_id)
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
        args = (project_id, name, scope, key_hash, prefix, value, now, rate_limit)
        async with self.writing() as run:
            row = await run.one(self.q.insert_key, *args)
        assert row is not None
        return ApiKey(row[0], project_id, name, scope, prefix, now, None, value, rate_limit)

    async def list_keys(self, project_id: int) -> list[ApiKey]:
        return [ApiKey(*r) for r in await self.reader.all(self.q.keys, project_id)]

    async def find_key(self, key_hash: str) -> ApiKey | None:
        row = await self.reader.one(self.q.key_by_hash, key_hash)
        return ApiKey(*row) if row else None

    async def revoke_key(self, key_id: int | None, key_hash: str | None, now: int) -> bool:
        async with self.writing() as run:
            return await run.execute(self.q.revoke_key, now, key_id, key_hash) > 0

    # -- reads ---------------------------------------------------------------------------
    async def get_user(self, project_id: int, ref: str, by: str) -> User | None:
        if "\0" in ref:  # no id holds U+0000 (refused on ingestion); PostgreSQL text cannot
            return None
        sql = self.q.user_of["anonymous_id" if by == "anonymous_id" else "external_id"]
        async with self.reading() as run:
            row = await run.one(sql, project_id, ref)
            return (await self._whole_users(run, [row]))[0] if row else None

    async def get_user_by_id(self, project_id: int, user_id: int) -> User | None:
        async with self.reading() as run:
            row = await run.one(self.q.user_by_id, project_id, user_id)
            return (await self._whole_users(run, [row]))[0] if row else None

    async def list_users(
        self, project_id: int, limit: int, before: tuple[int, int] | None, q: str | None
    ) -> list[User]:
        if q and "\0" in q:  # (as in get_user)
            return []
        args: list[Any] = [project_id, q] if q else [project_id]
        if before is not None:
            args += before
        sql = self.q.list_users[(bool(q), before is not None)]
        async with self.reading() as run:
            return await self._whole_users(run, await run.all(sql, *args, limit))

    async def _whole_users(self, run: Run, rows: list[Row]) -> list[User]:
        """Users from their rows, with all their anonymous ids and devices."""
        users = {row[0]: user_from_row(row) for row in rows}
        ids = self.q.dialect.array(list(users))
        anonymous: dict[int, list[str]] = defaultdict(list)
        for uid, anon in await run.all(self.q.anonymous_ids_of, ids):
            anonymous[uid].append(anon)
        devices: dict[int, list[Device]] = defaultdict(list)
        for row in await run.all(self.q.devices_of, ids):
            devices[row[2]].append(device_from_row(row, users[row[2]], _decode))
        for uid, user in users.items():
            user.anonymous_ids = anonymous[uid]
            user.devices = devices[uid]
        return list(users.values())

    async def stats(self, project_id: int) -> dict[str, int]:
        counts = {}
        for table, sql in self.q.counts.items():
            row = await self.reader.one(sql, project_id)
            counts[table] = row[0] if row else 0
        return counts

    async def _delete_user(self, tx: SqlTx, project_id: int, ref: str, by: str) -> bool:
        """Delete a user and all its rows, inside the backend's write transaction, and record
        its user_deleted item (the one item of the user that stays in the feed)."""
        if "\0" in ref:  # (as in get_user)
            return False
        run, q = tx.run, self.q
        row = await run.one(q.user_id_of[by], project_id, int(ref) if by == "id" else ref)
        if row is None:
            return False
        uid = row[0]
        found = await run.one(q.user_by_id, project_id, uid)
        assert found is not None
        user = user_from_row(found)
        ids = q.dialect.array([uid])
        anonymous = [a for _, a in await run.all(q.anonymous_ids_of, ids)]
        devices = [row[3] for row in await run.all(q.devices_of, ids)]  # DEVICE_FIELDS order
        devices += await self._gone_devices(run, project_id, uid, devices)
        await self._delete_events(run, project_id, uid)
        for sql in q.delete_user_rows:
            await run.execute(sql, project_id, uid)
        await run.execute(q.delete_user, project_id, uid)
        now = now_ms()
        # device_ids: a device's earlier items may name another user (it moved there from
        # it): they stay, and the tombstone tells a consumer to drop the device too
        data = {"external_id": user.external_id, "anonymous_ids": anonymous, "device_ids": devices}
        await tx.insert_events([Event(user, USER_DELETED, data, now)], now)
        return True

    async def _gone_devices(
        self, run: Run, project_id: int, user_id: int, owned: list[str]
    ) -> list[str]:
        """The device ids that the user's device_registered items name, that it does not own
        and no device has now (renamed, found by its token, or deleted with another user):
        their items under other users, older, would stay in the feed with nothing after."""
        named = {
            _decode(d)["device_id"] for d in await self._device_items(run, project_id, user_id)
        }
        named -= set(owned)
        if not named:
            return []
        found = await run.all(
            self.q.devices_where["device_id"], project_id, self.q.dialect.array(sorted(named))
        )
        return sorted(named - {row[3] for row in found})

    async def _device_items(self, run: Run, project_id: int, user_id: int) -> list[str]:
        """The data of the user's device_registered items."""
        rows = await run.all(self.q.user_items_named, project_id, user_id, DEVICE_REGISTERED)
        return [r[0] for r in rows]

    async def _delete_events(self, run: Run, project_id: int, user_id: int) -> None:
        await run.execute(self.q.delete_user_events, project_id, user_id)

    # -- segments ------------------------------------------------------------------------
    async def segment_members(
        self, project_id: int, rule: Rule, now: int, user_ids: list[int] | None = None
    ) -> list[int]:
        """The ids of the project's users (or of those of `user_ids`) for whom `rule` holds at
        `now` (ms), from one query (segments_sql.py). Raises RuleError when a rule value cannot
        be rendered at `now`."""
        sql, params = compile_members(rule, self.q.dialect, project_id, now, user_ids)
        return [r[0] for r in await self.reader.all(sql, *params)]

    # -- the feed ------------------------------------------------------------------------
    async def event_feed(self, project_id: int, after: int | None, limit: int) -> list[FeedEvent]:
        rows = await self.reader.all(self.q.feed, project_id, after or 0, limit)
        return [_feed_event(r) for r in rows]

    async def latest_events(
        self, project_id: int, limit: int, after: int | None = None
    ) -> list[FeedEvent]:
        rows = await self.reader.all(self.q.latest, project_id, after or 0, limit)
        return [_feed_event(r) for r in rows]

    async def events_per_minute(self, project_id: int, since: int) -> dict[int, int]:
        # No index on time (it would slow every insert): received_at grows with the id, so the
        # first id of the period is found by bisection over the (project_id, id) index, and only
        # the period's rows are read.
        q = self.q
        async with self.reading() as run:
            first, last = (
                await run.one(q.first_event, project_id),
                await run.one(q.last_event, project_id),
            )
            if first is None or first[0] is None or last is None:
                return {}
            lo, hi = first[0], last[0] + 1
            start = None
            while lo < hi:
                mid = (lo + hi) // 2
                found = await run.one(q.event_from, project_id, mid)
                assert found is not None
                if found[1] >= since:
                    start, hi = found[0], mid
                else:
                    lo = found[0] + 1
            if start is None:
                return {}
            rows = await run.all(q.per_minute, project_id, start, since)
        return {r[0]: r[1] for r in rows}

    # -- portal admins and sessions ------------------------------------------------------
    async def create_admin(self, email: str, password_hash: str, now: int) -> Admin:
        async with self.writing() as run:
            row = await run.one(self.q.insert_admin, email, password_hash, now)
        assert row is not None
        return Admin(row[0], email, password_hash, now)

    async def find_admin(self, email: str) -> Admin | None:
        row = await self.reader.one(self.q.admin_by_email, email)
        return Admin(*row) if row else None

    async def list_admins(self) -> list[Admin]:
        return [Admin(*r) for r in await self.reader.all(self.q.admins)]

    async def set_admin_password(self, email: str, password_hash: str) -> bool:
        async with self.writing() as run:
            row = await run.one(self.q.set_admin_password, password_hash, email)
            if row is not None:
                await run.execute(self.q.delete_admin_sessions, row[0])
        return row is not None

    async def delete_admin(self, email: str) -> bool:
        async with self.writing() as run:
            row = await run.one(self.q.admin_by_email, email)
            if row is not None:
                await run.execute(self.q.delete_admin_sessions, row[0])
                await run.execute(self.q.delete_admin, email)
        return row is not None

    async def create_session(
        self, token_hash: str, admin_id: int, csrf_token: str, now: int, expires_at: int
    ) -> None:
        async with self.writing() as run:
            await run.execute(self.q.delete_expired_sessions, now)
            await run.execute(
                self.q.insert_session, token_hash, admin_id, csrf_token, now, expires_at
            )

    async def get_session(self, token_hash: str, now: int) -> AdminSession | None:
        row = await self.reader.one(self.q.live_session, token_hash, now)
        return AdminSession(*row) if row else None

    async def delete_session(self, token_hash: str) -> None:
        async with self.writing() as run:
            await run.execute(self.q.delete_session, token_hash)
