"""In-process, no HTTP: the SQLite writer's path for scenario (a)'s requests (10 events each, for
users drawn from 10,000), as `Writer` runs it: a batch of REQUESTS requests in one transaction,
then the store's upkeep step (`SqliteStore.maintain`: the user_events indexer). Prints the
process CPU (all threads: the commit's, the indexer's, the checkpointer's) per request of each,
for the batches after a warm-up that creates the users.

Run it against two source trees in turn to compare them (the other one through PYTHONPATH,
e.g. a `git archive` of its `src`):

    .venv/bin/python bench/write_path.py [--batches 300] [--requests 64]
    PYTHONPATH=/tmp/parent/src .venv/bin/python bench/write_path.py
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pier
from pier.clock import now_ms
from pier.domain.commands import Command, EventIn, TrackEvents
from pier.store.sqlite import SqliteStore
from pier.writer import Writer

USERS = 10_000


def requests(pid: int, n: int, rng: random.Random, ids: bool = False) -> list[Command]:
    """`ids`: each event with a new message id (a random UUID), as the SDKs send them."""
    return [
        TrackEvents(
            project_id=pid,
            events=[
                EventIn(
                    None,
                    f"u{rng.randrange(USERS)}",
                    "Product Viewed",
                    {"product_id": i},
                    message_id=str(uuid.UUID(int=rng.getrandbits(128), version=4)) if ids else None,
                )
                for i in range(10)
            ],
        )
        for _ in range(n)
    ]


@asynccontextmanager
async def bench_writer(on_loop: bool = True) -> AsyncIterator[tuple[SqliteStore, int, Writer]]:
    """A fresh SQLite file in a folder of its own, with the bench project: the store, the
    project's id and a Writer on it (closed, and the folder removed, after). `on_loop`: as the
    writer process runs it (commits and index steps on the event loop); else as a server
    without one (in a thread)."""
    with tempfile.TemporaryDirectory() as folder:
        store = SqliteStore("sqlite://", str(Path(folder) / "pier.db"), on_loop=on_loop)
        await store.open()
        await store.migrate()
        try:
            yield store, (await store.create_project("bench", now_ms())).id, Writer(store)
        finally:
            await store.close()


async def main(batches: int, per_batch: int, on_loop: bool, ids: bool) -> None:
    rng = random.Random(1)
    async with bench_writer(on_loop) as (store, pid, writer):
        for start in range(0, USERS, 1000):  # every user exists, as in (a) after its warm-up
            events = [EventIn(None, f"u{i}", "seen", {}) for i in range(start, start + 1000)]
            await writer.run_batch([TrackEvents(project_id=pid, events=events)])
            await store.maintain()
        write, upkeep = [], []
        for _ in range(batches):
            cmds = requests(pid, per_batch, rng, ids)
            t0 = time.process_time()
            await writer.run_batch(cmds)
            t1 = time.process_time()
            await store.maintain()
            t2 = time.process_time()
            write.append((t1 - t0) / per_batch * 1e6)
            upkeep.append((t2 - t1) / per_batch * 1e6)
    print(
        f"{pier.__file__}: {batches} batches of {per_batch} requests x 10 events"
        f"{' with message ids' if ids else ''};"
        f" CPU us per request: batch {statistics.mean(write):.1f}"
        f" (median {statistics.median(write):.1f}), upkeep step {statistics.mean(upkeep):.1f}"
        f" (median {statistics.median(upkeep):.1f}),"
        f" total {statistics.mean(write) + statistics.mean(upkeep):.1f}"
    )


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batches", type=int, default=300)
    p.add_argument("--requests", type=int, default=64, help="requests per batch")
    p.add_argument(
        "--in-thread",
        action="store_true",
        help="commits and index steps in a thread, as a server without a writer process runs"
        " them (default: on the event loop, as the writer process)",
    )
    p.add_argument(
        "--message-ids", action="store_true", help="each event with a new message id (a UUID)"
    )
    a = p.parse_args()
    asyncio.run(main(a.batches, a.requests, not a.in_thread, a.message_ids))
