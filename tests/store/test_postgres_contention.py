"""PostgreSQL, two processes' writers creating the same new users at once: batches conflict,
take turns (store/postgres.py, BATCH_LOCK) and all commit, with one user per id."""

from __future__ import annotations

import asyncio
import random

from prometheus_client import REGISTRY

from pier.clock import now_ms
from pier.domain.commands import EventIn, TrackEvents
from pier.store.postgres import PostgresStore
from pier.writer import Writer
from support.postgres import PostgresServer

USERS = 40
ROUNDS = 15


def test_racing_creators_all_commit_once(pg_server: PostgresServer) -> None:
    url = pg_server.create_database()

    async def main() -> None:
        stores = [PostgresStore(url) for _ in range(2)]  # two pools: as two processes
        for store in stores:
            await store.open()
            await store.migrate()
        pid = (await stores[0].create_project("p", now_ms())).id
        writers = [Writer(store) for store in stores]
        rng = random.Random(7)
        replays_before = REGISTRY.get_sample_value("pier_writer_replays_total") or 0.0

        def batch(round_no: int) -> list[TrackEvents]:
            ids = rng.sample(range(USERS), 20)
            return [
                TrackEvents(
                    project_id=pid, events=[EventIn(None, f"u{i}-{round_no // 3}", "e", {})]
                )
                for i in ids
            ]

        for round_no in range(ROUNDS):
            results = await asyncio.gather(*(w.run_batch(batch(round_no)) for w in writers))
            assert all(e is None for errors in results for e in errors)

        conn = stores[0].pool
        users = await conn.fetchval("SELECT count(*) FROM users WHERE project_id = $1", pid)
        distinct = await conn.fetchval(
            "SELECT count(DISTINCT external_id) FROM users WHERE project_id = $1", pid
        )
        created = await conn.fetchval(
            "SELECT count(*) FROM events WHERE project_id = $1 AND name = 'user_created'", pid
        )
        sent = await conn.fetchval(
            "SELECT count(*) FROM events WHERE project_id = $1 AND name = 'e'", pid
        )
        assert users == distinct == created  # one user, and one user_created, per id
        assert sent == ROUNDS * 2 * 20  # every event of every batch
        # the race was real: some batch lost, and its process took turns afterwards
        assert any(store._contended_until > 0 for store in stores)
        assert (REGISTRY.get_sample_value("pier_writer_replays_total") or 0.0) > replays_before
        for store in stores:
            await store.close()

    asyncio.run(main())
