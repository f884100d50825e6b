"""One project cannot stall the others: the writer takes requests from each project in turn, up
to a budget of work per batch, and one request may merge at most MAX_MERGES_PER_REQUEST users.
Counted in batches and units of work, never in seconds."""

from __future__ import annotations

import asyncio

from pier.clock import now_ms
from pier.domain.commands import Command, EventIn, TrackEvents
from pier.domain.errors import DomainError
from pier.domain.identity import MAX_MERGES_PER_REQUEST
from pier.settings import Settings
from pier.store import make_store
from pier.writer import MERGE_WEIGHT, Writer

HEAVY_REQUESTS = 8
EVENTS = 1000  # per heavy request, each merging an anonymous user into an identified one
MERGES = MAX_MERGES_PER_REQUEST  # per heavy request: the most one may make


class CountingWriter(Writer):
    """A real writer that notes which projects each of its batches held."""

    def __init__(self, *args: object, **kw: object) -> None:
        super().__init__(*args, **kw)  # type: ignore[arg-type]
        self.log: list[list[int]] = []

    async def run_batch(self, commands, keys=None):  # type: ignore[no-untyped-def]
        self.log.append([c.project_id for c in commands])
        return await super().run_batch(commands, keys)


def events(pid: int, pairs: list[tuple[str | None, str | None]]) -> TrackEvents:
    return TrackEvents(
        project_id=pid,
        events=[EventIn(anonymous_id=a, external_id=e, name="e", data={}) for a, e in pairs],
    )


def merging(pid: int, prefix: str, n: int, merges: int) -> TrackEvents:
    """n events: the first `merges` each link a new anonymous user to a stored identified one;
    the rest name users already linked (no merge)."""
    return events(pid, [(f"{prefix}a{i % merges}", f"{prefix}e{i % merges}") for i in range(n)])


async def prepare(writer: Writer, pid: int, prefix: str, merges: int) -> None:
    """The users a `merging(pid, prefix, ..., merges)` request merges: stored, not yet linked."""
    await writer.submit(events(pid, [(None, f"{prefix}e{i}") for i in range(merges)]))
    await writer.submit(events(pid, [(f"{prefix}a{i}", None) for i in range(merges)]))


async def open_store(url: str):  # type: ignore[no-untyped-def]
    store = make_store(url)
    await store.open()
    await store.migrate()
    return store


def test_a_heavy_backlog_delays_another_project_by_one_batch_at_most(database_url: str) -> None:
    async def main() -> None:
        store = await open_store(database_url)
        heavy = (await store.create_project("heavy", now_ms())).id
        light = (await store.create_project("light", now_ms())).id
        setup = Writer(store)
        setup.start()
        for r in range(HEAVY_REQUESTS):
            await prepare(setup, heavy, f"r{r}", MERGES)
        await setup.stop()

        writer = CountingWriter(store)  # not started: the backlog queues first
        backlog = [
            asyncio.create_task(writer.submit(merging(heavy, f"r{r}", EVENTS, MERGES)))
            for r in range(HEAVY_REQUESTS)
        ]
        await asyncio.sleep(0)
        one = asyncio.create_task(writer.submit(events(light, [(None, "late")])))
        await asyncio.sleep(0)
        assert writer.pending == HEAVY_REQUESTS * EVENTS + 1
        writer.start()
        await asyncio.gather(one, *backlog)
        await writer.stop()

        # The light request waited for one heavy request at most (one per other project), not
        # for the backlog of 8 ahead of it (FIFO); every batch held what Settings.batch_work allows.
        k = next(i for i, batch in enumerate(writer.log) if light in batch)
        heavy_before = sum(len(b) for b in writer.log[:k]) + writer.log[k].index(light)
        assert heavy_before <= 1 and k <= 1
        per_request = EVENTS + MERGE_WEIGHT * MERGES
        assert all(len(b) <= 1 + Settings.batch_work // per_request + 1 for b in writer.log)
        assert len(writer.log) >= 3  # the backlog did take several batches
        stats = await store.stats(heavy)
        assert stats["users"] == HEAVY_REQUESTS * MERGES  # every anonymous user merged away
        assert (await store.stats(light))["events"] == 3  # user_created, user_updated, its event
        await store.close()

    asyncio.run(main())


def test_a_request_merging_too_many_users_is_refused_alone(database_url: str) -> None:
    async def main() -> None:
        store = await open_store(database_url)
        pid = (await store.create_project("p", now_ms())).id
        writer = Writer(store)
        writer.start()
        await prepare(writer, pid, "x", MERGES + 1)
        before = await store.stats(pid)

        # In one batch: a request one merge over the bound, and two that are fine.
        cmds: list[Command] = [
            events(pid, [(None, "bystander")]),
            merging(pid, "x", MERGES + 1, MERGES + 1),
            events(pid, [("xa0", "xe0")]),  # merges what the refused request did not
        ]
        results = await asyncio.gather(*(writer.submit(c) for c in cmds), return_exceptions=True)
        assert results[0] is None and results[2] is None
        assert isinstance(results[1], DomainError)
        assert f"at most {MAX_MERGES_PER_REQUEST} " in results[1].message
        after = await store.stats(pid)
        assert after["users"] == before["users"] + 1 - 1  # bystander created, xa0 merged
        assert after["events"] == before["events"] + 2 + 1 + 1  # created+event, event, merged
        # The same request within the bound merges them all.
        await writer.submit(merging(pid, "x", MERGES, MERGES + 1))
        assert (await store.stats(pid))["users"] == after["users"] - (MERGES - 1)
        await writer.stop()
        await store.close()

    asyncio.run(main())
