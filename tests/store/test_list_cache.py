"""The lists' cache (store/list_cache.py) on a real SQLite file and a real PostgreSQL database: a
user whose only change is new events is settled from it without reading its events, and it is
never trusted past what it can follow: another process's commit, a list's new rule, its size
bound. Its last tests: the identity cache, kept by the same rule."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import pytest

from pier import lists
from pier.clock import now_ms
from pier.domain.commands import Alias, EventIn, TrackEvents
from pier.domain.segments import Evaluator, parse_rule
from pier.store.common import SqlStore, SqlTx
from pier.store.list_cache import Known, ListCache
from pier.store.postgres import PostgresStore
from pier.store.sqlite import SqliteStore
from pier.writer import Writer
from support.postgres import PostgresServer

ROOT = {"uuid": "r", "path": "$", "type": "wrapper", "group": "parent", "operator": "and"}


def bought(count: int, *children: dict[str, Any], name: str = "bought", op: str = ">=") -> str:
    """'bought at least `count` times (with these conditions) in the last 30 days' (or fewer
    than, with `op` "<", ...)."""
    wrapper = {"uuid": "e", "type": "wrapper", "group": "event", "path": "$.name",
               "operator": "and", "value": name, "children": list(children),
               "frequency": {"period": {"type": "rolling", "unit": "day", "value": 30},
                             "operator": op, "count": count}}  # fmt: skip
    return msgspec.json.encode(ROOT | {"children": [wrapper]}).decode()


OVER_10 = {"uuid": "p", "type": "number", "group": "event", "path": "$.price", "operator": ">",
           "value": "10"}  # fmt: skip


@pytest.fixture(params=["sqlite", "postgres"])
def place(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where a test's stores keep their data: a SQLite file, or a PostgreSQL database (each
    store opened on it is a process of its own)."""
    if request.param == "sqlite":
        return str(tmp_path / "pier.db")
    return str(request.getfixturevalue("pg_server").create_database())


async def opened(place: str) -> SqlStore:
    store: SqlStore
    if place.startswith("postgresql://"):
        store = PostgresStore(place)
    else:
        store = SqliteStore("sqlite://", place)
    await store.open()
    await store.migrate()
    return store


async def buy(store: SqlStore, pid: int, who: str, price: int = 1, name: str = "bought") -> None:
    event = EventIn(None, who, name, {"price": price})
    assert await Writer(store).run_batch([TrackEvents(project_id=pid, events=[event])]) == [None]


async def members(store: SqlStore, list_id: int) -> list[int]:
    return sorted(r[0] for r in await store.reader.all(store.q.list_member_ids, list_id))


def reads(monkeypatch: pytest.MonkeyPatch) -> list[list[int]]:
    """The users whose events the lists read from the database, batch by batch, from now."""
    read: list[list[int]] = []
    add_events = SqlTx.add_events

    async def events(self: SqlTx, docs: Any, user_ids: list[int], names: set[str]) -> None:
        read.append(user_ids)
        await add_events(self, docs, user_ids, names)

    monkeypatch.setattr(SqlTx, "add_events", events)
    return read


async def buys_into_it(store: SqlStore, pid: int, list_id: int, read: list[Any]) -> None:
    """ann, two purchases short of the list's count, buys twice: in the list after the
    second, and neither purchase read anything (`read`: from `reads`, say)."""
    await buy(store, pid, "ann")
    assert read == [] and await members(store, list_id) == []
    await buy(store, pid, "ann")
    assert read == [] and len(await members(store, list_id)) == 1


async def dynamic(store: SqlStore, pid: int, rule: str) -> int:
    row = await lists.create(store, pid, "l", "dynamic", rule, "test", now_ms())
    assert await lists.compute(store, row, "test")
    return row.id


def test_new_events_of_a_known_user_are_counted_without_reading_its_events(
    place: str, monkeypatch: pytest.MonkeyPatch
) -> None:

    async def main() -> None:
        store = await opened(place)
        pid = (await store.create_project("p", now_ms())).id
        list_id = await dynamic(store, pid, bought(3))
        await buy(store, pid, "ann")  # made in this batch: its events are the batch's
        read = reads(monkeypatch)
        await buys_into_it(store, pid, list_id, read)
        await store.close()

    asyncio.run(main())


def test_a_backfill_starts_the_cache_with_the_users_it_does_not_count(
    place: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ann had only events the rule does not count when the list was made: the backfill
    gives her an entry all the same (no member, an empty tally), so her first purchases are
    counted without reading her events."""

    async def main() -> None:
        store = await opened(place)
        pid = (await store.create_project("p", now_ms())).id
        await buy(store, pid, "ann", name="viewed")
        list_id = await dynamic(store, pid, bought(2))
        await buys_into_it(store, pid, list_id, reads(monkeypatch))
        await store.close()

    asyncio.run(main())


def test_a_batch_takes_the_evaluators_an_earlier_batch_compiled(
    place: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rules are compiled once, not once per batch: the next batch's transaction takes the
    evaluators the last one made (SqlTx.evaluator, Evaluator.at) and counts right with them."""

    async def main() -> None:
        store = await opened(place)
        pid = (await store.create_project("p", now_ms())).id
        list_id = await dynamic(store, pid, bought(2))
        await buy(store, pid, "ann")
        made: list[Evaluator] = []
        init = Evaluator.__init__

        def counted(self: Evaluator, *args: Any) -> None:
            made.append(self)
            init(self, *args)

        monkeypatch.setattr(Evaluator, "__init__", counted)
        await buy(store, pid, "ann")
        assert made == [] and len(await members(store, list_id)) == 1
        await store.close()

    asyncio.run(main())


def test_a_users_events_read_for_one_list_give_its_other_lists_their_tallies(
    place: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a start, ann's cheap view (not counted by "viewed over 10 three times") leaves
    that list knowing her as a non-member with no tally; her purchase then reads her events
    for "bought three times", and the same read gives the other list her tally: her next
    view over 10 is settled without a read (before, one read per list)."""

    async def main() -> None:
        store = await opened(place)
        pid = (await store.create_project("p", now_ms())).id
        await dynamic(store, pid, bought(3))
        viewed = await dynamic(store, pid, bought(3, OVER_10, name="viewed"))
        for price in (20, 20):
            await buy(store, pid, "ann", price, name="viewed")
        await store.close()
        store = await opened(place)  # a start: nothing cached
        await buy(store, pid, "ann", 5, name="viewed")
        await buy(store, pid, "ann")
        read = reads(monkeypatch)
        await buy(store, pid, "ann", 20, name="viewed")
        assert read == [] and len(await members(store, viewed)) == 1
        await store.close()

    asyncio.run(main())


def test_a_backfill_starts_the_cache_with_its_users_tallies(
    place: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ann bought once before the list was made: its backfill gives the cache her tally, so
    her next purchases are counted without reading her events."""

    async def main() -> None:
        store = await opened(place)
        pid = (await store.create_project("p", now_ms())).id
        await buy(store, pid, "ann")
        list_id = await dynamic(store, pid, bought(3))
        read = reads(monkeypatch)
        await buys_into_it(store, pid, list_id, read)
        await store.close()

    asyncio.run(main())


def test_a_process_that_starts_warms_it_with_the_computed_lists(
    place: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a start (a new store: nothing cached), the lists' jobs warm the cache with the
    computed lists' tallies, memberships and due instants: ann's next purchases are counted
    without reading her events."""

    async def main() -> None:
        store = await opened(place)
        pid = (await store.create_project("p", now_ms())).id
        list_id = await dynamic(store, pid, bought(3))
        await buy(store, pid, "ann")
        await store.close()
        store = await opened(place)
        jobs = lists.ListJobs(store, 3600.0)
        await jobs.start()
        assert jobs.warmer is not None
        await jobs.warmer
        read = reads(monkeypatch)
        await buys_into_it(store, pid, list_id, read)
        await jobs.stop()
        await store.close()

    asyncio.run(main())


def test_another_connections_commit_empties_it(place: str) -> None:
    """Two stores on one file, as two processes: what the other wrote is read, not missed."""

    async def main() -> None:
        one, two = await opened(place), await opened(place)
        pid = (await one.create_project("p", now_ms())).id
        list_id = await dynamic(one, pid, bought(3))
        await buy(one, pid, "ann")  # one's cache: ann bought once
        await buy(two, pid, "ann")
        assert await members(one, list_id) == []
        await buy(one, pid, "ann")  # the third
        assert len(await members(one, list_id)) == 1
        await one.close()
        await two.close()

    asyncio.run(main())


def test_another_connections_commits_outside_the_writers_kind_keep_it(
    place: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A delivery process's cursors, a key made by the CLI: commits of another connection that
    change nothing the cache keeps (no write transaction of the writer's kind) leave it."""

    async def main() -> None:
        one, two = await opened(place), await opened(place)
        pid = (await one.create_project("p", now_ms())).id
        list_id = await dynamic(one, pid, bought(3))
        await buy(one, pid, "ann")
        await two.create_key(pid, "secret", None, "hash", "pk_", None, now_ms())
        read = reads(monkeypatch)
        await buy(one, pid, "ann")
        await buy(one, pid, "ann")
        assert read == [] and len(await members(one, list_id)) == 1
        await one.close()
        await two.close()

    asyncio.run(main())


def test_a_lists_new_rule_drops_its_entries(place: str) -> None:
    """ann bought once for 5 under "bought twice"; the rule becomes "bought twice for over 10":
    one purchase of 20 is one, not two (the old rule's tally counted the purchase of 5)."""

    async def main() -> None:
        store = await opened(place)
        pid = (await store.create_project("p", now_ms())).id
        list_id = await dynamic(store, pid, bought(2))
        await buy(store, pid, "ann", 5)
        row = await lists.restart(store, pid, list_id, bought(2, OVER_10), "test", now_ms())
        assert row is not None and await lists.compute(store, row, "test")
        await buy(store, pid, "ann", 20)
        assert await members(store, list_id) == []
        await buy(store, pid, "ann", 20)
        assert len(await members(store, list_id)) == 1
        await store.close()

    asyncio.run(main())


def test_it_starts_again_empty_past_its_bound(place: str, monkeypatch: pytest.MonkeyPatch) -> None:

    async def main() -> None:
        monkeypatch.setattr(ListCache, "MAX_ENTRIES", 3)
        store = await opened(place)
        pid = (await store.create_project("p", now_ms())).id
        list_id = await dynamic(store, pid, bought(2))
        held = store._lists  # noqa: SLF001 - what the store keeps is the subject here
        sizes = []
        for who in ("a", "b", "c", "d", "a", "b"):
            await buy(store, pid, who)
            sizes.append(sum(len(entries) for _, entries in held.lists.values()))
        assert sizes == [1, 2, 3, 0, 1, 2]
        assert len(await members(store, list_id)) == 2  # a and b, bought twice each
        await store.close()

    asyncio.run(main())


def test_members_of_a_rule_that_only_grows_keep_no_tally(place: str) -> None:
    """Under "bought at least twice", new purchases cannot take a member out (only time
    can, and then it is evaluated from its events): ann, a member from the backfill, and bob,
    once he enters, are kept without a tally; bob kept his until then."""

    async def main() -> None:
        store = await opened(place)
        pid = (await store.create_project("p", now_ms())).id
        for _ in range(2):
            await buy(store, pid, "ann")
        list_id = await dynamic(store, pid, bought(2))
        await buy(store, pid, "bob")
        held = store._lists  # noqa: SLF001 - what the store keeps is the subject here
        ids = dict(await store.reader.all("SELECT external_id, id FROM users"))

        def tally(who: str) -> Any:
            (entries,) = [entries for _, entries in held.lists.values()]
            return entries[ids[who]].tally

        assert tally("ann") is None and tally("bob") is not None
        await buy(store, pid, "bob")
        assert tally("bob") is None
        assert len(await members(store, list_id)) == 2
        await store.close()

    asyncio.run(main())


def test_a_users_document_is_not_read_for_its_counted_events(
    place: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under "external id is set, and bought three times", the backfill notes what the
    rule's user condition says of ann (Evaluator.facts, from its snapshot): her purchases
    are settled with that, reading neither her events nor her document."""

    async def main() -> None:
        store = await opened(place)
        pid = (await store.create_project("p", now_ms())).id
        await buy(store, pid, "ann")
        is_set = {"uuid": "u", "type": "string", "group": "user", "path": "$.external_id",
                  "operator": "is set"}  # fmt: skip
        rule = msgspec.json.decode(bought(3))
        rule["children"].append(is_set)
        list_id = await dynamic(store, pid, msgspec.json.encode(rule).decode())
        read: list[list[int]] = []
        user_documents = SqlTx.user_documents

        async def documents(self: SqlTx, project_id: int, user_ids: list[int]) -> Any:
            read.append(user_ids)
            return await user_documents(self, project_id, user_ids)

        monkeypatch.setattr(SqlTx, "user_documents", documents)
        await buys_into_it(store, pid, list_id, read)
        await store.close()

    asyncio.run(main())


def test_the_steady_users_follow_the_entries() -> None:
    """ListCache.steady: the users whom events that can only add members leave as they are
    until its horizon (members, users their document decides, not due before it), kept up as
    entries are taken in, forgotten or dropped with their list's rule, made again past it."""
    cache, stamp, hour = ListCache(keep_rows=True), ("rule", 1), ListCache.HORIZON_MS
    now = 1_000_000_000
    entries = {
        1: Known(True, None, None, None),  # a member
        2: Known(False, None, None, ()),  # no member, its events count
        3: Known(False, None, False, None),  # its document decides
        4: Known(True, now + hour // 2, None, None),  # a member due before the horizon
        5: Known(True, now + 2 * hour, None, None),  # ... and after it
    }
    cache.committed({7: (stamp, entries)}, set())
    assert cache.steady(7, stamp, now) == {1, 3, 5}
    cache.committed({7: (stamp, {1: Known(False, None, None, ()), 2: entries[1]})}, {3})
    assert cache.steady(7, stamp, now) == {2, 5}
    assert cache.steady(7, stamp, now + hour + 1) == {2}  # past the horizon: 5 is due then
    assert cache.steady(7, ("rule", 2), now) == set()  # a new rule: nothing holds
    cache.committed({7: (("rule", 2), {9: entries[1]})}, set())
    assert cache.steady(7, ("rule", 2), now) == {9}


def test_a_list_made_by_another_process_is_kept_current_at_once(place: str) -> None:
    """The serving process keeps the dynamic lists' rows between batches (ListCache.rows); a
    list made by `pier lists create` (another connection, a write outside the batch path) is
    seen by its next batch all the same: ann's purchase puts her in it."""

    async def main() -> None:
        store = await opened(place)
        pid = (await store.create_project("p", now_ms())).id
        await buy(store, pid, "bob")  # a batch: the project's lists (none) are kept
        cli = await opened(place)
        row = await lists.create(cli, pid, "l", "dynamic", bought(1), "cli", now_ms())
        await cli.close()
        await buy(store, pid, "ann")
        assert len(await members(store, row.id)) == 1
        await store.close()

    asyncio.run(main())


def test_a_deleted_lists_entries_go(place: str) -> None:
    """A deleted list's entries are not kept: no row of it comes again to replace them, and
    `make bench`'s (l) left its 20 lists' entries in the server after removing them."""

    async def main() -> None:
        store = await opened(place)
        pid = (await store.create_project("p", now_ms())).id
        await buy(store, pid, "ann")
        kept, gone = await dynamic(store, pid, bought(2)), await dynamic(store, pid, bought(3))
        await buy(store, pid, "ann")
        assert store._lists.lists.keys() == {kept, gone}
        assert await store.delete_list(pid, gone)
        assert store._lists.lists.keys() == {kept}
        await buy(store, pid, "ann")  # the list left is kept current
        assert len(await members(store, kept)) == 1
        await store.close()

    asyncio.run(main())


# -- PostgreSQL: a process keeps the cache while no other process writes (store/postgres.py,
# `lists_for`): it counts each of its own write transactions where the others look, and takes
# the cache up again once the others have stopped.


async def two_stores(url: str) -> tuple[PostgresStore, PostgresStore]:
    one, two = await opened(url), await opened(url)
    assert isinstance(one, PostgresStore) and isinstance(two, PostgresStore)
    return one, two


def test_it_comes_back_once_the_other_process_stops(
    pg_server: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """one keeps ann's tally; two writes (its transactions are counted where one looks), so
    one's next batch finds the cache gone and reads ann's events. two writes no more: at one's
    next look the cache is on again, empty; it learns ann from one read, then needs none."""
    url = pg_server.create_database()

    async def main() -> None:
        one, two = await two_stores(url)
        pid = (await one.create_project("p", now_ms())).id
        list_id = await dynamic(one, pid, bought(5))
        await buy(one, pid, "ann")
        read = reads(monkeypatch)
        await buy(one, pid, "ann")
        assert read == []  # on: ann's tally is kept
        await buy(two, pid, "ann")
        assert len(read) == 1  # two has none: one counted in just now, and runs
        await buy(one, pid, "ann")
        # off: two wrote; ann's 4 purchases were read, twice: the batch had used the identity
        # cache, and is replayed without it once it finds two's count changed (check_identity)
        assert len(read) == 3
        one.LOOK_EVERY = 0.0  # (the next look is at once, not a second later)
        await buy(one, pid, "ann")  # the look finds two's row as it was: on, empty
        assert len(read) == 4 and await members(one, list_id) != []
        await buy(one, pid, "ann")
        assert len(read) == 4  # on, and ann known again
        await one.close()
        await two.close()

    asyncio.run(main())


def test_the_cache_costs_a_batch_no_round_trip(
    pg_server: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The count and, for a process that writes alone, the feed's lock go with the BEGIN, the
    look at the other writers' rows with the read of the batch's lists: a batch of events of a
    known user makes the same four round trips (BEGIN, count and lock; the events; the lists;
    COMMIT) with the cache as a project without lists, and the pool's reset adds none (the
    seventh, before; the lock was the sixth). The user comes from the identity cache (the
    fifth, before), checked on the rows read with the lists. A user who joins the list adds
    one: her member row and her feed item (three before)."""
    url = pg_server.create_database()
    trips: list[str] = []

    def counted(name: str) -> None:
        method = getattr(asyncpg.Connection, name)

        async def call(self: Any, *args: Any, **kwargs: Any) -> Any:
            trips.append(str(args[0]) if args else name)
            return await method(self, *args, **kwargs)

        monkeypatch.setattr(asyncpg.Connection, name, call)

    for name in (
        "execute",
        "fetch",
        "fetchrow",
        "fetchval",
        "executemany",
        "copy_records_to_table",
    ):
        counted(name)

    async def main() -> None:
        store = await opened(url)
        bare = (await store.create_project("bare", now_ms())).id
        with_lists = (await store.create_project("lists", now_ms())).id
        await dynamic(store, with_lists, bought(3))
        await buy(store, bare, "ann")
        await buy(store, with_lists, "ann")
        assert isinstance(store, PostgresStore) and not store.lists_off
        trips.clear()
        await buy(store, bare, "ann")
        assert len(trips) == 4, trips
        trips.clear()
        await buy(store, with_lists, "ann")  # settled from the cache: her second purchase
        assert len(trips) == 4, trips
        assert await members(store, (await store.lists(with_lists))[0].id) == []
        trips.clear()
        await buy(store, with_lists, "ann")  # her third: she joins, with a feed item
        assert len(trips) == 5, trips  # what she wrote for the list, in one statement
        assert len(await members(store, (await store.lists(with_lists))[0].id)) == 1
        await store.close()

    asyncio.run(main())


def test_a_closed_process_leaves_the_next_one_its_cache_at_once(pg_server: PostgresServer) -> None:
    """A process that starts looks at the others' rows: one that counted in just now and is
    still running keeps its cache off until a look finds it idle; one that closed its store
    (a restart) does not."""
    url = pg_server.create_database()

    async def main() -> None:
        one, two = await two_stores(url)
        pid = (await one.create_project("p", now_ms())).id
        await buy(one, pid, "ann")
        await buy(two, pid, "ann")
        three = await opened(url)
        assert isinstance(three, PostgresStore)
        await buy(three, pid, "bob")
        assert three._others is None  # noqa: SLF001 - two counted in just now, and runs
        await one.close()
        await two.close()
        four = await opened(url)
        assert isinstance(four, PostgresStore)
        await three.close()
        await buy(four, pid, "bob")
        assert four._others is not None  # noqa: SLF001 - on: every other one has closed
        await four.close()

    asyncio.run(main())


def test_two_processes_writing_the_same_users_keep_the_lists_right(
    pg_server: PostgresServer,
) -> None:
    """Two processes take turns and race at writing purchases of the same users, their caches
    going off and on again (each looks at the other's row before every transaction): after
    every round each list's members are those a from-scratch evaluation finds."""
    url = pg_server.create_database()
    rng = random.Random(13)
    rules = [bought(3), bought(6, op="<"), bought(2, OVER_10), bought(1, name="viewed")]

    async def main() -> None:
        one, two = await two_stores(url)
        pid = (await one.create_project("p", now_ms())).id
        ids = [await dynamic(one, pid, rule) for rule in rules]
        writers = [Writer(one), Writer(two)]

        def batch() -> list[TrackEvents]:
            who = rng.sample(["ann", "bob", "cid", "dee"], 2)
            name = rng.choice(["bought", "bought", "viewed"])
            return [
                TrackEvents(
                    project_id=pid, events=[EventIn(None, w, name, {"price": rng.choice([5, 20])})]
                )
                for w in who
            ]

        one.LOOK_EVERY = two.LOOK_EVERY = 0.0  # (at every transaction, not every second)
        for round_no in range(24):
            if round_no % 3 == 0:  # one alone for a while: its cache comes back on
                results = [await writers[0].run_batch(batch()) for _ in range(3)]
            else:
                results = list(await asyncio.gather(*(w.run_batch(batch()) for w in writers)))
            assert all(e is None for errors in results for e in errors)
            now = now_ms()
            for list_id, rule in zip(ids, rules, strict=True):
                expected = await one.segment_members(
                    pid, parse_rule(msgspec.json.decode(rule), now), now
                )
                assert await members(one, list_id) == sorted(expected), (round_no, rule)
        await one.close()
        await two.close()

    asyncio.run(main())


def test_equal_entries_without_a_tally_are_one_object() -> None:
    """Most entries are members or users their document decides, and few of them differ: the
    cache keeps one object for each kind (their memory, not only their values, is shared)."""
    cache, stamp = ListCache(keep_rows=True), ("rule", 1)
    cache.committed({7: (stamp, {1: Known(True, None, None, None, 5)})}, set())
    later = {2: Known(True, None, None, None, 5), 3: Known(False, None, None, ((1,),), 5)}
    cache.committed({7: (stamp, later), 8: (stamp, {4: Known(True, None, None, None, 5)})}, set())
    first, second = cache.of(7, stamp)[1], cache.of(7, stamp)[2]
    assert first == second and first is second and cache.of(8, stamp)[4] is first
    assert cache.of(7, stamp)[3] is later[3]  # with a tally: kept as it came
    cache.clear()
    cache.committed({7: (stamp, {5: Known(True, None, None, None, 5)})}, set())
    assert cache.of(7, stamp)[5] is not first  # cleared with the rest


# -- The identity cache (loading.IdentityCache: who owns an external or anonymous id) is kept by
# the same rule on PostgreSQL (PostgresTx.check_identity) and by SQLite's epoch: a user another
# process deleted or merged away is never taken from it.


async def owner(store: SqlStore, pid: int, by: str, value: str) -> int | None:
    row = await store.reader.one(store.q.user_id_of[by], pid, value)
    return None if row is None else int(row[0])


async def purchases(store: SqlStore, uid: int) -> int:
    return sum(e.name == "bought" for e in await store.user_events(uid, 100, None))


def test_a_user_another_process_deleted_is_not_taken_from_the_identity_cache(place: str) -> None:
    """one knows ann; two deletes her; one's next purchase of ann's makes a new ann, and owns
    the purchase (with the stale id it would be left to the deleted one)."""

    async def main() -> None:
        one = await opened(place)
        pid = (await one.create_project("p", now_ms())).id
        await buy(one, pid, "ann")
        await buy(one, pid, "ann")  # (her id from the cache)
        gone = await owner(one, pid, "external_id", "ann")
        two = await opened(place)
        assert await two.delete_user(pid, "ann", "external_id")
        await two.close()
        await buy(one, pid, "ann")
        new = await owner(one, pid, "external_id", "ann")
        assert gone is not None and new is not None and new != gone
        assert (await purchases(one, gone), await purchases(one, new)) == (0, 1)
        await one.close()

    asyncio.run(main())


def test_an_anonymous_id_another_process_merged_is_not_taken_from_the_identity_cache(
    place: str,
) -> None:
    """one knows the visitor v1 and ann apart; two links v1 to ann (v1's user merged into
    hers); one's next purchase by v1 is ann's."""

    async def main() -> None:
        one = await opened(place)
        pid = (await one.create_project("p", now_ms())).id
        for who in ("ann", "ann"):
            await buy(one, pid, who)
        visit = TrackEvents(project_id=pid, events=[EventIn("v1", None, "bought", {})])
        for _ in range(2):  # (the second from the cache)
            assert await Writer(one).run_batch([visit]) == [None]
        ann = await owner(one, pid, "external_id", "ann")
        two = await opened(place)
        link = Alias(project_id=pid, anonymous_id="v1", external_id="ann")
        assert await Writer(two).run_batch([link]) == [None]
        await two.close()
        assert await owner(one, pid, "anonymous_id", "v1") == ann
        assert ann is not None and await purchases(one, ann) == 4
        assert await Writer(one).run_batch([visit]) == [None]
        assert await purchases(one, ann) == 5
        await one.close()

    asyncio.run(main())
