"""The lists' cache (store/list_cache.py) on a real SQLite file: a user whose only change is new
events is settled from it without reading its events, and it is never trusted past what it can
follow: another connection's commit (another process), a list's new rule, its size bound."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import msgspec
import pytest

from pier import lists
from pier.clock import now_ms
from pier.domain.commands import EventIn, TrackEvents
from pier.domain.segments import Evaluator
from pier.store.common import SqlTx
from pier.store.list_cache import Known, ListCache
from pier.store.sqlite import SqliteStore
from pier.writer import Writer

ROOT = {"uuid": "r", "path": "$", "type": "wrapper", "group": "parent", "operator": "and"}


def bought(count: int, *children: dict[str, Any], name: str = "bought") -> str:
    """'bought at least `count` times (with these conditions) in the last 30 days'."""
    wrapper = {"uuid": "e", "type": "wrapper", "group": "event", "path": "$.name",
               "operator": "and", "value": name, "children": list(children),
               "frequency": {"period": {"type": "rolling", "unit": "day", "value": 30},
                             "operator": ">=", "count": count}}  # fmt: skip
    return msgspec.json.encode(ROOT | {"children": [wrapper]}).decode()


OVER_10 = {"uuid": "p", "type": "number", "group": "event", "path": "$.price", "operator": ">",
           "value": "10"}  # fmt: skip


async def opened(path: Path) -> SqliteStore:
    store = SqliteStore("sqlite://", str(path))
    await store.open()
    await store.migrate()
    return store


async def buy(store: SqliteStore, pid: int, who: str, price: int = 1, name: str = "bought") -> None:
    event = EventIn(None, who, name, {"price": price})
    assert await Writer(store).run_batch([TrackEvents(project_id=pid, events=[event])]) == [None]


async def members(store: SqliteStore, list_id: int) -> list[int]:
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


async def buys_into_it(store: SqliteStore, pid: int, list_id: int, read: list[Any]) -> None:
    """ann, two purchases short of the list's count, buys twice: in the list after the
    second, and neither purchase read anything (`read`: from `reads`, say)."""
    await buy(store, pid, "ann")
    assert read == [] and await members(store, list_id) == []
    await buy(store, pid, "ann")
    assert read == [] and len(await members(store, list_id)) == 1


async def dynamic(store: SqliteStore, pid: int, rule: str) -> int:
    row = await lists.create(store, pid, "l", "dynamic", rule, "test", now_ms())
    assert await lists.compute(store, row, "test")
    return row.id


def test_new_events_of_a_known_user_are_counted_without_reading_its_events(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:

    async def main() -> None:
        store = await opened(tmp_path / "pier.db")
        pid = (await store.create_project("p", now_ms())).id
        list_id = await dynamic(store, pid, bought(3))
        await buy(store, pid, "ann")  # made in this batch: its events are the batch's
        read = reads(monkeypatch)
        await buys_into_it(store, pid, list_id, read)
        await store.close()

    asyncio.run(main())


def test_a_backfill_starts_the_cache_with_the_users_it_does_not_count(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ann had only events the rule does not count when the list was made: the backfill
    gives her an entry all the same (no member, an empty tally), so her first purchases are
    counted without reading her events."""

    async def main() -> None:
        store = await opened(tmp_path / "pier.db")
        pid = (await store.create_project("p", now_ms())).id
        await buy(store, pid, "ann", name="viewed")
        list_id = await dynamic(store, pid, bought(2))
        await buys_into_it(store, pid, list_id, reads(monkeypatch))
        await store.close()

    asyncio.run(main())


def test_a_batch_takes_the_evaluators_an_earlier_batch_compiled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rules are compiled once, not once per batch: the next batch's transaction takes the
    evaluators the last one made (SqlTx.evaluator, Evaluator.at) and counts right with them."""

    async def main() -> None:
        store = await opened(tmp_path / "pier.db")
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
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a start, ann's cheap view (not counted by "viewed over 10 three times") leaves
    that list knowing her as a non-member with no tally; her purchase then reads her events
    for "bought three times", and the same read gives the other list her tally: her next
    view over 10 is settled without a read (before, one read per list)."""

    async def main() -> None:
        store = await opened(tmp_path / "pier.db")
        pid = (await store.create_project("p", now_ms())).id
        await dynamic(store, pid, bought(3))
        viewed = await dynamic(store, pid, bought(3, OVER_10, name="viewed"))
        for price in (20, 20):
            await buy(store, pid, "ann", price, name="viewed")
        await store.close()
        store = await opened(tmp_path / "pier.db")  # a start: nothing cached
        await buy(store, pid, "ann", 5, name="viewed")
        await buy(store, pid, "ann")
        read = reads(monkeypatch)
        await buy(store, pid, "ann", 20, name="viewed")
        assert read == [] and len(await members(store, viewed)) == 1
        await store.close()

    asyncio.run(main())


def test_a_backfill_starts_the_cache_with_its_users_tallies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ann bought once before the list was made: its backfill gives the cache her tally, so
    her next purchases are counted without reading her events."""

    async def main() -> None:
        store = await opened(tmp_path / "pier.db")
        pid = (await store.create_project("p", now_ms())).id
        await buy(store, pid, "ann")
        list_id = await dynamic(store, pid, bought(3))
        read = reads(monkeypatch)
        await buys_into_it(store, pid, list_id, read)
        await store.close()

    asyncio.run(main())


def test_a_process_that_starts_warms_it_with_the_computed_lists(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a start (a new store: nothing cached), the lists' jobs warm the cache with the
    computed lists' tallies, memberships and due instants: ann's next purchases are counted
    without reading her events."""

    async def main() -> None:
        store = await opened(tmp_path / "pier.db")
        pid = (await store.create_project("p", now_ms())).id
        list_id = await dynamic(store, pid, bought(3))
        await buy(store, pid, "ann")
        await store.close()
        store = await opened(tmp_path / "pier.db")
        jobs = lists.ListJobs(store, 3600.0)
        await jobs.start()
        assert jobs.warmer is not None
        await jobs.warmer
        read = reads(monkeypatch)
        await buys_into_it(store, pid, list_id, read)
        await jobs.stop()
        await store.close()

    asyncio.run(main())


def test_another_connections_commit_empties_it(tmp_path: Path) -> None:
    """Two stores on one file, as two processes: what the other wrote is read, not missed."""

    async def main() -> None:
        one, two = await opened(tmp_path / "pier.db"), await opened(tmp_path / "pier.db")
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
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A delivery process's cursors, a key made by the CLI: commits of another connection that
    change nothing the cache keeps (no write transaction of the writer's kind) leave it."""

    async def main() -> None:
        one, two = await opened(tmp_path / "pier.db"), await opened(tmp_path / "pier.db")
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


def test_a_lists_new_rule_drops_its_entries(tmp_path: Path) -> None:
    """ann bought once for 5 under "bought twice"; the rule becomes "bought twice for over 10":
    one purchase of 20 is one, not two (the old rule's tally counted the purchase of 5)."""

    async def main() -> None:
        store = await opened(tmp_path / "pier.db")
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


def test_it_starts_again_empty_past_its_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:

    async def main() -> None:
        monkeypatch.setattr(ListCache, "MAX_ENTRIES", 3)
        store = await opened(tmp_path / "pier.db")
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


def test_members_of_a_rule_that_only_grows_keep_no_tally(tmp_path: Path) -> None:
    """Under "bought at least twice", new purchases cannot take a member out (only time
    can, and then it is evaluated from its events): ann, a member from the backfill, and bob,
    once he enters, are kept without a tally; bob kept his until then."""

    async def main() -> None:
        store = await opened(tmp_path / "pier.db")
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
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under "external id is set, and bought three times", the backfill notes what the
    rule's user condition says of ann (Evaluator.facts, from its snapshot): her purchases
    are settled with that, reading neither her events nor her document."""

    async def main() -> None:
        store = await opened(tmp_path / "pier.db")
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
    cache, stamp, hour = ListCache(), ("rule", 1), ListCache.HORIZON_MS
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


def test_a_list_made_by_another_process_is_kept_current_at_once(tmp_path: Path) -> None:
    """The serving process keeps the dynamic lists' rows between batches (ListCache.rows); a
    list made by `pier lists create` (another connection, a write outside the batch path) is
    seen by its next batch all the same: ann's purchase puts her in it."""

    async def main() -> None:
        store = await opened(tmp_path / "pier.db")
        pid = (await store.create_project("p", now_ms())).id
        await buy(store, pid, "bob")  # a batch: the project's lists (none) are kept
        cli = await opened(tmp_path / "pier.db")
        row = await lists.create(cli, pid, "l", "dynamic", bought(1), "cli", now_ms())
        await cli.close()
        await buy(store, pid, "ann")
        assert len(await members(store, row.id)) == 1
        await store.close()

    asyncio.run(main())


def test_a_deleted_lists_entries_go(tmp_path: Path) -> None:
    """A deleted list's entries are not kept: no row of it comes again to replace them, and
    `make bench`'s (l) left its 20 lists' entries in the server after removing them."""

    async def main() -> None:
        store = await opened(tmp_path / "pier.db")
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
