"""SQLite's `writing(durable=False)` (a destination's cursor commit): its transaction commits
without an fsync (synchronous=NORMAL), and the writer's connection is back to its durability setting afterwards,
whether the transaction committed or failed, so that the writer's batches stay durable."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from pier.clock import now_ms
from pier.store.sqlite import SqliteStore

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
