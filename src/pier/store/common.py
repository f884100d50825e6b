"""What the two backends share, over their `Run` (queries.py): the writer's transaction (load,
then write the change set in one order) and the store's other methods. A backend supplies its
connections, its transaction policy, id reservation, bulk insert of events and its own upkeep."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from ..domain.batch import ChangeSet
from ..domain.model import Device, Event
from .loading import BatchQueries, device_values, user_values

_encoder = msgspec.json.Encoder()


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
        """Give the events of each merged user (from) to the user it merged into (to)."""
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
