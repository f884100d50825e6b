"""SQLite's user_events: a user's events read the same whether they are indexed yet or not,
and merges and deletions reach both parts."""

from __future__ import annotations

import asyncio
from pathlib import Path

from conftest import sqlite_writer
from pier.domain.commands import EventIn, Identify, TrackEvents, Traits
from pier.store.sqlite import SqliteStore
from pier.store.sqlite_index import index_user_events


def track(pid: int, name: str, anon: str | None = None, ext: str | None = None) -> TrackEvents:
    event = EventIn(anonymous_id=anon, external_id=ext, name=name, data={})
    return TrackEvents(project_id=pid, events=[event])


async def names(store: SqliteStore, pid: int, ref: str, by: str = "external_id") -> list[str]:
    user = await store.get_user(pid, ref, by)
    assert user is not None
    result, cursor = [], None
    while True:  # pages of 2: the cursor crosses the indexed part and the tail
        rows = await store.user_events(user.id, 2, cursor)
        result += [r.name for r in rows]
        if len(rows) < 2:
            return result
        cursor = (rows[-1].created_at, rows[-1].id)


def test_indexed_and_unindexed_events_read_as_one(tmp_path: Path) -> None:
    async def main() -> None:
        store, pid, writer = await sqlite_writer(tmp_path / "p.db")
        for i in range(3):
            await writer.run_batch(
                [track(pid, f"old{i}", ext="e1"), track(pid, f"anon{i}", anon="a")]
            )
        assert index_user_events(store.db) == 10  # 6 events, 2 user_created, 2 user_updated
        for i in range(3):
            await writer.run_batch(
                [track(pid, f"new{i}", ext="e1"), track(pid, f"anon-new{i}", anon="a")]
            )
        expected = ["new2", "new1", "new0", "old2", "old1", "old0", "user_updated", "user_created"]
        assert await names(store, pid, "e1") == expected

        # merge the anonymous user (indexed and unindexed events) into e1
        ident = Identify(project_id=pid, anonymous_id="a", external_id="e1", traits=Traits())
        await writer.run_batch([ident])
        merged = await names(store, pid, "e1")
        assert sorted(merged) == sorted(  # a's own items (indexed) left with it
            [*expected, "user_merged", "user_updated"]
            + [f"anon{i}" for i in range(3)]
            + [f"anon-new{i}" for i in range(3)]
        )
        index_user_events(store.db)
        assert await names(store, pid, "e1") == merged

        assert await store.delete_user(pid, "e1", "external_id")
        assert (await store.stats(pid))["events"] == 1  # its user_deleted
        await store.close()

    asyncio.run(main())


def test_merges_of_one_batch_move_indexed_and_unindexed_events(tmp_path: Path) -> None:
    async def main() -> None:
        store, pid, writer = await sqlite_writer(tmp_path / "p.db")
        users = range(3)
        for phase in ("old", "new"):  # "old" indexed, "new" past the index
            await writer.run_batch(
                [track(pid, f"{phase}-e{i}", ext=f"e{i}") for i in users]
                + [track(pid, f"{phase}-a{i}", anon=f"a{i}") for i in users]
            )
            if phase == "old":
                index_user_events(store.db)
        await writer.run_batch(  # three merges in one batch
            [
                Identify(project_id=pid, anonymous_id=f"a{i}", external_id=f"e{i}", traits=Traits())
                for i in users
            ]
        )
        for i in users:
            expected = {f"{p}-{x}{i}" for p in ("old", "new") for x in "ea"} | {"user_merged"}
            got = await names(store, pid, f"e{i}")
            # E's own user_created and user_updated, and the user_updated of what the merge gave
            # it; the merged user's own items left with it (indexed or not)
            mine = ["user_created", "user_updated", "user_updated"]
            assert sorted(got) == sorted([*expected, *mine])
            index_user_events(store.db)
            assert await names(store, pid, f"e{i}") == got
        assert (await store.stats(pid))["users"] == 3
        await store.close()

    asyncio.run(main())
