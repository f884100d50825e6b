"""SQLite's `writing(durable=False)` (a destination's cursor commit): its transaction commits
without an fsync (synchronous=NORMAL), and the writer's connection is back to its durability setting afterwards,
whether the transaction committed or failed, so that the writer's batches stay durable."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from pier.clock import now_ms
from pier.domain.commands import EventIn, TrackEvents
from pier.store import sqlite
from pier.store.sqlite import SqliteStore
from pier.writer import Writer

NORMAL, FULL = 1, 2  # PRAGMA synchronous (in WAL mode NORMAL syncs only at checkpoints)


def synchronous(store: SqliteStore) -> int:
    return int(store.db.execute("PRAGMA synchronous").fetchone()[0])


@pytest.mark.parametrize(("durability", "setting"), [("full", FULL), ("normal", NORMAL)])
def test_a_writing_that_need_not_be_durable_skips_the_sync_and_only_it(
    tmp_path: Path, durability: str, setting: int
) -> None:
    async def main() -> None:
        store = SqliteStore("sqlite://", str(tmp_path / "p.db"), durability)
        await store.open()
        await store.migrate()
        try:
            async with store.writing(durable=False) as run:
                assert synchronous(store) == NORMAL
                await run.one(store.q.insert_project, "fast", now_ms())
            assert synchronous(store) == setting
            with pytest.raises(RuntimeError):
                async with store.writing(durable=False) as run:
                    await run.one(store.q.insert_project, "undone", now_ms())
                    raise RuntimeError("a failure inside the transaction")
            assert synchronous(store) == setting
            async with store.writing() as run:
                assert synchronous(store) == setting
            assert [p.name for p in await store.list_projects()] == ["fast"]
        finally:
            await store.close()

    asyncio.run(main())


def wal_started_over(wal: Path) -> int:
    """The WAL header's checkpoint sequence number: one more each time the WAL starts over."""
    with wal.open("rb") as f:
        return int.from_bytes(f.read(16)[12:16], "big")


def test_the_wal_starts_over_past_its_limit_while_batches_keep_coming(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Batches one after another, and no checkpoint but those the writer asks for (the
    # checkpointer's own come once an hour): without SqliteStore._bound_wal the WAL only grows.
    limit = 64 * 1024
    monkeypatch.setattr(sqlite, "WAL_LIMIT", limit)
    monkeypatch.setattr(sqlite, "WAL_CHECK_EVERY", 0.0)
    monkeypatch.setattr(SqliteStore, "checkpoint_every", 3600.0)
    wal = tmp_path / "p.db-wal"

    async def main() -> None:
        store = SqliteStore("sqlite://", str(tmp_path / "p.db"), "normal")
        await store.open()
        await store.migrate()
        try:
            pid = (await store.create_project("p", now_ms())).id
            writer = Writer(store)
            store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # from an empty WAL

            async def batch() -> None:
                events = [EventIn(None, f"u{batches % 7}-{i}", "e", {}) for i in range(20)]
                await writer.run_batch([TrackEvents(project_id=pid, events=events)])
                sizes.append(wal.stat().st_size)
                await store.maintain()
                await asyncio.sleep(0.001)  # the checkpoints run in a thread meanwhile

            sizes: list[int] = []
            batches = 1
            await batch()
            seen = [wal_started_over(wal)]
            while len(seen) < 4 and batches < 3000:  # until it has started over three times
                batches += 1
                await batch()
                if wal_started_over(wal) != seen[-1]:
                    seen.append(wal_started_over(wal))
            assert len(seen) == 4, (
                f"the WAL started over {len(seen) - 1} times in {batches} batches"
            )
            assert max(sizes) > limit  # each time once past the limit
            count = store.db.execute("SELECT count(*) FROM events WHERE name = 'e'").fetchone()[0]
            assert count == 20 * batches  # every batch is there
        finally:
            await store.close()

    asyncio.run(main())


def test_a_write_outside_the_writer_process_waits_for_the_lock_with_the_loop_going_on(
    tmp_path: Path,
) -> None:
    # Another connection (the writer process) holds the write lock. A write of this process
    # (a delivery process's cursor, a worker's management write) waits for it on the event
    # loop, which serves meanwhile; cancelled while it waits, it leaves the connection as it was.
    path = str(tmp_path / "p.db")

    async def main() -> None:
        store = SqliteStore("sqlite://", path)
        await store.open()
        await store.migrate()
        other = sqlite3.connect(path, isolation_level=None)
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.005)
                ticks += 1

        async def write(name: str) -> None:
            async with store.writing(durable=False) as run:
                await run.one(store.q.insert_project, name, now_ms())

        ticker = asyncio.create_task(tick())
        try:
            other.execute("BEGIN IMMEDIATE")
            cancelled = asyncio.create_task(write("cancelled"))
            await asyncio.sleep(0.05)
            cancelled.cancel()
            with pytest.raises(asyncio.CancelledError):
                await cancelled
            assert synchronous(store) == FULL
            assert store.db.execute("PRAGMA busy_timeout").fetchone()[0] == 10_000
            waiting = asyncio.create_task(write("after"))
            before = ticks
            await asyncio.sleep(0.2)
            assert not waiting.done()  # it waits for the lock
            assert ticks - before >= 10  # and the loop goes on meanwhile
            other.execute("COMMIT")
            await asyncio.wait_for(waiting, 5)
            assert [p.name for p in await store.list_projects()] == ["after"]
            assert synchronous(store) == FULL
        finally:
            ticker.cancel()
            other.close()
            await store.close()

    asyncio.run(main())
