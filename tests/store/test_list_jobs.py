"""Lists' background work (pier/lists.py, docs/lists.md) on real databases: a backfill computed
a chunk of users at a time, its progress readable by another connection after each chunk; a
newer version stopping it; and, with two stores on one database (as two processes), each
backfill and each due membership done by one of them only."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import msgspec
import pytest

from pier import lists
from pier.clock import frozen, now_ms, set_frozen
from pier.domain.commands import Identify, Traits
from pier.lists import LEASE_MS, Backfill, ListJobs, compute
from pier.store import make_store
from pier.store.common import SqlStore
from pier.writer import Writer
from support.postgres import PostgresServer

DAY = 86_400_000
ROOT = {"uuid": "r", "path": "$", "type": "wrapper", "group": "parent", "operator": "and"}
PRO = ROOT | {
    "children": [
        {"uuid": "p", "type": "string", "group": "user", "path": "$.plan", "operator": "=",
         "value": "pro"}
    ]
}  # fmt: skip
RECENT = ROOT | {  # time moves it: a rolling window
    "children": [
        {"uuid": "e", "type": "wrapper", "group": "event", "path": "$.name", "operator": "and",
         "value": "bought", "frequency": {"period": {"type": "rolling", "unit": "day",
         "value": 30}, "operator": ">=", "count": 1}}
    ]
}  # fmt: skip


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/pier.db"
    else:
        server: PostgresServer = request.getfixturevalue("pg_server")
        yield server.create_database()


@asynccontextmanager
async def stores(url: str, n: int) -> AsyncIterator[list[SqlStore]]:
    """n stores on one database, each with its own connections (as n processes)."""
    opened: list[SqlStore] = []
    try:
        for _ in range(n):
            store: SqlStore = make_store(url)  # type: ignore[assignment]
            await store.open()
            await store.migrate()
            opened.append(store)
        yield opened
    finally:
        for store in opened:
            await store.close()


async def project(store: SqlStore, plans: list[str], bought: bool = False) -> tuple[int, list[int]]:
    """A project with one user per plan (ids in order), each with a `bought` event if asked."""
    pid = (await store.create_project("lists", 0)).id
    base = pid * 1000
    now = now_ms()
    async with store.writing() as run:
        for i, plan in enumerate(plans):
            data = msgspec.json.encode({"plan": plan}).decode()
            await run.execute(store.q.insert_user, base + i, pid, f"u{i}", None, None, None,
                              None, data, now, now)  # fmt: skip
            if bought:
                await run.execute(store.q.insert_events, pid, base + i, "bought", "{}",
                                  now - DAY, now, None)  # fmt: skip
    return pid, [base + i for i in range(len(plans))]


async def new_list(store: SqlStore, pid: int, rule: dict[str, Any]) -> Any:
    return await store.create_list(pid, "l", "dynamic", msgspec.json.encode(rule).decode(), 0)


def test_a_backfill_notes_its_progress_after_each_chunk(url: str) -> None:
    async def main() -> None:
        async with stores(url, 2) as (store, other):
            plans = ["pro", "free", "pro", "pro", "free", "free", "pro"]
            pid, ids = await project(store, plans)
            row = await new_list(store, pid, PRO)
            backfill = Backfill(store, row, "me", chunk_users=2)
            seen = []
            async for progress in backfill.chunks():
                # what GET /api/client/lists/{id} shows, read by another connection
                now = await other.get_list(pid, row.id)
                assert now is not None and now.state == "loading"
                seen.append((progress, now.progress))
            assert seen == [(2 / 7, 2 / 7), (4 / 7, 4 / 7), (6 / 7, 6 / 7)]
            assert backfill.done
            done = await other.get_list(pid, row.id)
            assert done is not None and done.state == "draft" and done.progress is None
            wanted = sorted(i for i, p in zip(ids, plans, strict=True) if p == "pro")
            members = await other.list_members(pid, row.id, 10, None)
            assert sorted(u.id for u in members) == wanted

    asyncio.run(main())


def test_a_newer_version_stops_a_backfill_between_chunks(url: str) -> None:
    async def main() -> None:
        async with stores(url, 2) as (store, other):
            pid, _ = await project(store, ["pro"] * 5)
            row = await new_list(store, pid, PRO)
            backfill = Backfill(store, row, "me", chunk_users=2)
            chunks = backfill.chunks()
            assert await anext(chunks) == 2 / 5
            await other.restart_list(pid, row.id, None, now_ms())  # a recount: version 2
            assert [p async for p in chunks] == []  # the next progress note is refused
            assert not backfill.done
            now = await other.get_list(pid, row.id)
            assert now is not None and now.state == "loading" and now.users_count == 0
            assert now.progress == 0  # the new version's, which another backfill computes
            assert await compute(other, now, "them", chunk_users=2)
            assert (await other.get_list(pid, row.id)).users_count == 5  # type: ignore[union-attr]

    asyncio.run(main())


def test_two_processes_compute_a_list_once(pg_server: PostgresServer) -> None:
    url = pg_server.create_database()

    async def main() -> None:
        async with stores(url, 2) as pair:
            pid, _ = await project(pair[0], ["pro", "free", "pro"])
            row = await new_list(pair[0], pid, PRO)
            jobs = [ListJobs(store, 5.0, chunk_users=1) for store in pair]
            for j in jobs:  # both at once, as two servers starting
                j.schedule(row)
            for j in jobs:
                await j.idle()
            assert sum(j.computed for j in jobs) == 1
            now = await pair[1].get_list(pid, row.id)
            assert now is not None and now.state == "draft" and now.users_count == 2
            # a process that stopped while computing: once its lease runs out, another
            # process's sweeper takes the list up (and only one does)
            again = await pair[0].restart_list(pid, row.id, None, now_ms())
            assert again is not None
            assert await pair[0].claim_list(again, "gone", now_ms() - 120_000, 60_000)
            assert [r.id for r in await pair[1].loading_lists(now_ms())] == [row.id]
            for j in jobs:
                await j.resume()
            for j in jobs:
                await j.idle()
            assert sum(j.computed for j in jobs) == 2
            assert (await pair[1].get_list(pid, row.id)).state == "draft"  # type: ignore[union-attr]

    asyncio.run(main())


def test_two_sweepers_do_not_evaluate_the_same_memberships(pg_server: PostgresServer) -> None:
    url = pg_server.create_database()

    async def main() -> None:
        async with stores(url, 2) as (a, b):
            pid, ids = await project(a, ["x"] * 6, bought=True)
            row = await new_list(a, pid, RECENT)
            assert await compute(a, row, "me")  # every user is due once now (finish_list)
            now = now_ms()
            async with a.transaction() as tx:  # a's sweeper, at work on the due memberships
                assert await tx.sweep(now, 100) == 6
                # meanwhile b's sweeper looks: it leaves them to a, and does not wait for a
                # (the bound only turns a wait for a's row locks into a failure, not a hang)
                assert await asyncio.wait_for(b.sweep_lists(now, 100), 30) == 0
            assert await b.sweep_lists(now, 100) == 0  # a did them all: none is due now
            due = await b.reader.all("SELECT due_at FROM list_due WHERE list_id = $1", row.id)
            assert len(due) == 6 and min(r[0] for r in due) > now

    asyncio.run(main())


def test_changes_between_chunks_are_kept(url: str) -> None:
    """Users of a chunk already computed change while later chunks are computed (through the
    writer, which keeps the loading list current): the end of the backfill keeps the changes."""

    async def main() -> None:
        async with stores(url, 1) as (store,):
            pid, _ = await project(store, ["pro", "free", "pro", "free"])
            row = await new_list(store, pid, PRO)
            writer = Writer(store)
            writer.start()
            try:
                chunks = Backfill(store, row, "me", chunk_users=2).chunks()
                assert await anext(chunks) == 2 / 4  # u0 (pro) and u1 (free) computed
                for ext, plan in (("u0", "free"), ("u1", "pro")):
                    traits = Traits(data={"plan": plan})
                    await writer.submit(
                        Identify(project_id=pid, anonymous_id=None, external_id=ext, traits=traits)
                    )
                assert [p async for p in chunks] == []  # the last chunk: u2 and u3, then the end
            finally:
                await writer.stop()
            members = await store.list_members(pid, row.id, 10, None)
            assert sorted(u.external_id or "" for u in members) == ["u1", "u2"]

    asyncio.run(main())


def test_sqlite_backfills_in_ten_chunks_at_most(tmp_path: Any) -> None:
    """On SQLite each chunk scans the project's events: chunks grow with the project."""

    async def main() -> None:
        async with stores(f"sqlite:///{tmp_path}/pier.db", 1) as (store,):
            pid, _ = await project(store, ["pro"] * 25)
            row = await new_list(store, pid, PRO)
            notes = [p async for p in Backfill(store, row, "me", chunk_users=1).chunks()]
            assert notes == [n * 3 / 25 for n in range(1, 9)]  # every 3rd user: 8 notes, 9 chunks

    asyncio.run(main())


def test_a_new_or_restarted_list_is_held_by_its_creator_until_its_lease_runs_out(url: str) -> None:
    """Created (or computed again) with its lease already held: no other process takes it up
    in the instant before its creator claims it, only once the creator's lease ran out."""

    async def main() -> None:
        async with stores(url, 2) as (creator, other):
            pid, _ = await project(creator, ["pro", "free"])
            now = now_ms()
            rule = msgspec.json.encode(PRO).decode()
            row = await lists.create(creator, pid, "l", "dynamic", rule, "creator", now)
            assert await other.loading_lists(now) == []
            assert not await other.claim_list(row, "other", now, LEASE_MS)
            later = now + LEASE_MS + 1  # the creator stopped: its lease ran out
            assert [r.id for r in await other.loading_lists(later)] == [row.id]
            assert await other.claim_list(row, "other", later, LEASE_MS)
            assert await compute(other, row, "other")
            again = await lists.restart(creator, pid, row.id, None, "creator", now)  # a recount
            assert again is not None and await other.loading_lists(now) == []
            assert not await other.claim_list(again, "other", now, LEASE_MS)
            assert await compute(creator, again, "creator")
            static = await lists.create(creator, pid, "s", "static", None, "creator", now)
            assert (static.state, await other.loading_lists(later)) == ("draft", [])

    asyncio.run(main())


# a stored rule that no longer parses (as after an upgrade that checks trees more strictly):
# each backfill of it fails
BROKEN = '{"uuid": "r", "path": "$", "type": "wrapper", "group": "parent", "operator": "nand"}'


def test_a_failing_backfill_is_noted_and_tried_again_later_after_each_failure(url: str) -> None:
    async def main() -> None:
        async with stores(url, 2) as (a, b):
            pid, _ = await project(a, ["pro"])
            t = now_ms()
            with frozen(t):
                jobs = [ListJobs(store, 5.0) for store in (a, b)]
                row = await lists.create(a, pid, "l", "dynamic", BROKEN, jobs[0].holder, t)
                jobs[0].schedule(row)
                await jobs[0].idle()
                failed_at, waits = t, []
                for failures in range(1, 9):
                    now = await b.get_list(pid, row.id)
                    assert now is not None and now.state == "loading"
                    assert (now.failures, now.failed_at) == (failures, failed_at)
                    assert now.error is not None and "unknown operator" in now.error
                    # no process tries it again before its wait is over, one does after
                    wait = lists.retry_after(failures)
                    for at, tries in ((failed_at + wait - 1, 0), (failed_at + wait + 1, 1)):
                        set_frozen(at)
                        for j in jobs:
                            await j.resume()
                            await j.idle()
                        assert (await b.get_list(pid, row.id)).failures == failures + tries  # type: ignore[union-attr]
                    failed_at = at
                    waits.append(wait // 60_000)
                assert waits == [1, 2, 4, 8, 16, 32, 60, 60]  # minutes
                # a recount (or a new rule) clears the failures, and tries again at once
                again = await lists.restart(a, pid, row.id, None, "me", now_ms())
                assert again is not None and (again.failures, again.error) == (0, None)
            # a backfill that succeeds after a failure clears it too
            good = msgspec.json.encode(PRO).decode()
            row = await lists.create(a, pid, "good", "dynamic", good, "me", now_ms())
            await a.fail_list(row, "me", "boom", now_ms(), now_ms())
            assert (await b.get_list(pid, row.id)).error == "boom"  # type: ignore[union-attr]
            assert await compute(a, row, "me")
            done = await b.get_list(pid, row.id)
            assert done is not None and (done.state, done.failures, done.error) == (
                "draft",
                0,
                None,
            )

    asyncio.run(main())


def test_after_the_backfill_of_a_fading_rule_only_its_members_are_due(url: str) -> None:
    """Time can only take users out of a list whose counts are all "at least n" (fading):
    after its backfill only the members need the sweeper's look (their next instant); the
    non-members stay out until new data comes. Before: every user of the project was due,
    20 lists over 10,000 users 200,000 evaluations of the writer's time."""

    async def main() -> None:
        async with stores(url, 1) as (store,):
            pid, ids = await project(store, ["x"] * 4, bought=True)
            now = now_ms()
            async with store.writing() as run:  # three users who bought nothing
                for i in range(4, 7):
                    await run.execute(store.q.insert_user, pid * 1000 + i, pid, f"u{i}", None,
                                      None, None, None, "{}", now, now)  # fmt: skip
            row = await new_list(store, pid, RECENT)
            assert await compute(store, row, "me")
            due = await store.reader.all("SELECT user_id FROM list_due WHERE list_id = $1", row.id)
            assert sorted(r[0] for r in due) == ids  # the members only
            assert await store.sweep_lists(now_ms(), 100) == 4
            got = await store.list_members(pid, row.id, 100, None)
            assert sorted(u.id for u in got) == ids

    asyncio.run(main())


def test_list_items_are_numbered_in_commit_order_on_postgres(pg_server: PostgresServer) -> None:
    """A transaction that adds list_entered items and no event (an identify's, the sweeper's)
    holds the feed's lock from taking their ids to its commit, as one that adds events does:
    else a destination following the feed by id could pass them, committed after a later id.
    (Found in review: the lists' items were inserted without it.)"""
    from pier.domain.segments import dependencies, parse_rule
    from pier.store.postgres import FEED_LOCK

    url = pg_server.create_database()

    async def main() -> None:
        async with stores(url, 2) as (a, b):
            pid, ids = await project(a, ["pro"] * 3)
            row = await new_list(a, pid, PRO)
            now = now_ms()
            rule = parse_rule(PRO, now)
            async with a.transaction() as tx:  # type: ignore[attr-defined]
                docs = await tx.documents(pid, ids, set())
                await tx.settle(row.id, pid, "l", rule, dependencies(rule), now, ids, docs, True)
                async with b.writing() as run:  # another process about to take event ids
                    free = await run.one("SELECT pg_try_advisory_xact_lock($1)", FEED_LOCK)
                assert free == (False,)
            entered = await b.reader.all(
                "SELECT user_id FROM events WHERE name = 'list_entered' AND project_id = $1", pid
            )
            assert sorted(r[0] for r in entered) == ids

    asyncio.run(main())
