"""Destinations and their dead letters (migration 0006), on either backend: the statements are
written once (rendered per dialect, as queries.py does) and run through the store's `reader`,
`reading()` and `writing()`. The delivery engine (pier.delivery) and the management commands use
`Destinations(store)`; the store itself knows nothing of delivery."""

from __future__ import annotations

from typing import Any

import msgspec

from .common import SqlStore
from .queries import Dialect, lease_free

COLUMNS = (
    "id, project_id, kind, name, url, key, key_prefix, secret_key, secret_key_prefix,"
    " signing_secret, signing_secret_prefix, batch_size, max_bytes, retry_window_ms, only_globs,"
    " skip_globs, state, cursor, delivered, attempts, failing_since, next_try_at,"
    " last_success_at, last_error, last_error_at, lease_holder, lease_expires_at, created_at"
)
NEW = COLUMNS.split(", ", 1)[1].split(", delivered")[0] + ", created_at"  # what `add` writes
DEAD_LETTER_COLUMNS = "id, destination_id, event_id, item, answer, created_at"


class Destination(msgspec.Struct, kw_only=True):
    """A destination row. `key`, `secret_key` and `signing_secret` are sealed (delivery.secrets);
    `cursor` is the id of the last feed item delivered (0: none)."""

    id: int = 0
    project_id: int
    kind: str
    name: str | None
    url: str
    key: str | None = None
    key_prefix: str | None = None
    secret_key: str | None = None
    secret_key_prefix: str | None = None
    signing_secret: str | None = None
    signing_secret_prefix: str | None = None
    batch_size: int = 500
    max_bytes: int = 1 << 20
    retry_window_ms: int = 86_400_000
    only: list[str] = []
    skip: list[str] = []
    state: str = "active"
    cursor: int = 0
    delivered: int = 0
    attempts: int = 0  # failed tries of the batch in flight
    failing_since: int | None = None
    next_try_at: int | None = None
    last_success_at: int | None = None
    last_error: str | None = None
    last_error_at: int | None = None
    lease_holder: str | None = None
    lease_expires_at: int | None = None
    created_at: int = 0


class DeadLetter(msgspec.Struct):
    id: int
    destination_id: int
    event_id: int
    item: msgspec.Raw  # the feed item as it was sent
    answer: str
    created_at: int


def _destination(r: Any) -> Destination:
    values = list(r)
    values[14] = msgspec.json.decode(values[14])
    values[15] = msgspec.json.decode(values[15])
    names = [c.strip() for c in COLUMNS.split(",")]
    names[14], names[15] = "only", "skip"
    return Destination(**dict(zip(names, values, strict=True)))


class DestinationQueries:
    """The statements as templates (see queries.py), rendered for one dialect."""

    insert = (
        f"INSERT INTO destinations ({NEW}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11,"
        " $12, $13, $14, $15, $16, $17, $18) RETURNING id"
    )
    one = f"SELECT {COLUMNS} FROM destinations WHERE id = $1"
    of_project = f"SELECT {COLUMNS} FROM destinations WHERE project_id = $1 ORDER BY id"
    active = "SELECT id FROM destinations WHERE state = 'active' ORDER BY id"
    set_state = "UPDATE destinations SET state = $2 WHERE id = $1"
    rewind = (
        "UPDATE destinations SET cursor = $2, attempts = 0, failing_since = NULL,"
        " next_try_at = NULL WHERE id = $1"
    )
    remove = "DELETE FROM destinations WHERE id = $1"
    remove_dead_letters = "DELETE FROM dead_letters WHERE destination_id = $1"
    # a lease is taken when free, expired or already ours; the holder renews it as it goes
    lease = (
        "UPDATE destinations SET lease_holder = $2, lease_expires_at = $3 WHERE id = $1"
        " AND state = 'active' AND " + lease_free("$2", "$4")
    )
    release = (
        "UPDATE destinations SET lease_holder = NULL, lease_expires_at = NULL"
        " WHERE id = $1 AND lease_holder = $2"
    )
    # moves the cursor only from where the holder read it: a replay or a lost lease meanwhile
    # makes it change nothing
    commit = (
        "UPDATE destinations SET cursor = $4, delivered = delivered + $5, attempts = 0,"
        " failing_since = NULL, next_try_at = NULL, last_success_at = $6"
        " WHERE id = $1 AND lease_holder = $2 AND cursor = $3 AND state = 'active'"
    )
    failed = (
        "UPDATE destinations SET attempts = $3, failing_since = $4, next_try_at = $5,"
        " last_error = $6, last_error_at = $7 WHERE id = $1 AND lease_holder = $2"
    )
    insert_dead_letter = (
        "INSERT INTO dead_letters (destination_id, event_id, item, answer, created_at)"
        " VALUES ($1, $2, $3, $4, $5)"
    )
    dead_letters = (
        f"SELECT {DEAD_LETTER_COLUMNS} FROM dead_letters WHERE destination_id = $1 ORDER BY id"
    )
    dead_letter_count = "SELECT count(*) FROM dead_letters WHERE destination_id = $1"
    delete_dead_letter = "DELETE FROM dead_letters WHERE destination_id = $1 AND id = $2"
    # the lag: a count over the (project, id) index alone, and the first item's time (one
    # seek; received_at grows with the id, as events_per_minute has it): min(received_at) over
    # them all read every row after the cursor, each second, from the engine's loop
    lag_items = "SELECT count(*) FROM events WHERE project_id = $1 AND id > $2"
    oldest = "SELECT received_at FROM events WHERE project_id = $1 AND id > $2 ORDER BY id LIMIT 1"
    # a replay from a time: the last item received before it (no index on time: a scan)
    cursor_at = "SELECT coalesce(max(id), 0) FROM events WHERE project_id = $1 AND received_at < $2"
    newest = "SELECT coalesce(max(id), 0) FROM events WHERE project_id = $1"

    def __init__(self, dialect: Dialect) -> None:
        for name, template in vars(DestinationQueries).items():
            if not name.startswith("_") and isinstance(template, str):
                setattr(self, name, dialect.render(template))


_rendered: dict[str, DestinationQueries] = {}


class Destinations:
    """The destinations of a store (SQLite or PostgreSQL)."""

    def __init__(self, store: SqlStore) -> None:
        self.store = store
        name = store.q.dialect.name
        if name not in _rendered:
            _rendered[name] = DestinationQueries(store.q.dialect)
        self.q = _rendered[name]

    async def add(self, d: Destination) -> int:
        args = (
            d.project_id,
            d.kind,
            d.name,
            d.url,
            d.key,
            d.key_prefix,
            d.secret_key,
            d.secret_key_prefix,
            d.signing_secret,
            d.signing_secret_prefix,
            d.batch_size,
            d.max_bytes,
            d.retry_window_ms,
            msgspec.json.encode(d.only).decode(),
            msgspec.json.encode(d.skip).decode(),
            d.state,
            d.cursor,
            d.created_at,
        )
        async with self.store.writing() as run:
            row = await run.one(self.q.insert, *args)
        assert row is not None
        return int(row[0])

    async def get(self, destination_id: int) -> Destination | None:
        row = await self.store.reader.one(self.q.one, destination_id)
        return _destination(row) if row else None

    async def of_project(self, project_id: int) -> list[Destination]:
        return [_destination(r) for r in await self.store.reader.all(self.q.of_project, project_id)]

    async def active(self) -> list[int]:
        return [r[0] for r in await self.store.reader.all(self.q.active)]

    async def set_state(self, destination_id: int, state: str) -> bool:
        async with self.store.writing() as run:
            return await run.execute(self.q.set_state, destination_id, state) > 0

    async def rewind(self, destination_id: int, cursor: int) -> bool:
        async with self.store.writing() as run:
            return await run.execute(self.q.rewind, destination_id, cursor) > 0

    async def remove(self, destination_id: int) -> bool:
        async with self.store.writing() as run:
            await run.execute(self.q.remove_dead_letters, destination_id)
            return await run.execute(self.q.remove, destination_id) > 0

    async def lease(self, destination_id: int, holder: str, now: int, ttl_ms: int) -> bool:
        """Take or renew the lease of a destination; False when another process holds it."""
        async with self.store.writing() as run:
            return await run.execute(self.q.lease, destination_id, holder, now + ttl_ms, now) > 0

    async def release(self, destination_id: int, holder: str) -> None:
        async with self.store.writing() as run:
            await run.execute(self.q.release, destination_id, holder)

    async def commit(
        self,
        destination_id: int,
        holder: str,
        cursor: int,
        new_cursor: int,
        delivered: int,
        dead: list[tuple[int, str, str]],
        now: int,
    ) -> bool:
        """Move the cursor from `cursor` to `new_cursor` with the dead letters (event id, item
        JSON, answer) of the items passed, in one transaction. False, and nothing written, when
        the lease was lost, the destination paused or removed, or its cursor moved (a replay).
        Not durable (store.writing): a crash of the machine may take the cursor back to an
        earlier batch, whose items are then sent again (at least once)."""
        async with self.store.writing(durable=False) as run:
            moved = await run.execute(
                self.q.commit, destination_id, holder, cursor, new_cursor, delivered, now
            )
            if moved and dead:
                await run.many(self.q.insert_dead_letter, [(destination_id, *d, now) for d in dead])
        return moved > 0

    async def failed(
        self,
        destination_id: int,
        holder: str,
        attempts: int,
        failing_since: int,
        next_try_at: int,
        error: str,
        now: int,
    ) -> None:
        async with self.store.writing() as run:
            await run.execute(
                self.q.failed,
                destination_id,
                holder,
                attempts,
                failing_since,
                next_try_at,
                error,
                now,
            )

    async def dead_letters(self, destination_id: int) -> list[DeadLetter]:
        rows = await self.store.reader.all(self.q.dead_letters, destination_id)
        return [DeadLetter(r[0], r[1], r[2], msgspec.Raw(r[3].encode()), r[4], r[5]) for r in rows]

    async def dead_letter_count(self, destination_id: int) -> int:
        row = await self.store.reader.one(self.q.dead_letter_count, destination_id)
        return row[0] if row else 0

    async def delete_dead_letter(self, destination_id: int, dead_letter_id: int) -> bool:
        async with self.store.writing() as run:
            return await run.execute(self.q.delete_dead_letter, destination_id, dead_letter_id) > 0

    async def lag(self, project_id: int, cursor: int) -> tuple[int, int | None]:
        """Items after the cursor, and when the oldest of them was received (ms)."""
        async with self.store.reading() as run:
            count = await run.one(self.q.lag_items, project_id, cursor)
            first = await run.one(self.q.oldest, project_id, cursor)
        return (count[0] if count else 0), (first[0] if first else None)

    async def cursor_at(self, project_id: int, ms: int) -> int:
        row = await self.store.reader.one(self.q.cursor_at, project_id, ms)
        return row[0] if row else 0

    async def newest(self, project_id: int) -> int:
        """The id of the project's newest feed item (0: none); cheap, by the (project, id) index."""
        row = await self.store.reader.one(self.q.newest, project_id)
        return row[0] if row else 0
