"""The user_events indexer (store/sqlite_index.py): whatever the interleaving of writes, merges,
deletions and indexer steps, a user's events read back exactly as the events table holds them,
and user_events never holds a row the events table contradicts; the message ids the writer
finds stored are exactly those of the events table, and no two events share one."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from conftest import sqlite_writer
from pier.clock import NEVER, now_ms
from pier.domain.commands import EventIn, Identify, TrackEvents, Traits
from pier.store import sqlite, sqlite_index
from pier.store.loading import IdentityCache
from pier.store.sqlite import SqliteStore, SqliteTx
from pier.writer import Writer


@pytest.fixture(autouse=True, scope="module")
def a_step_each_time() -> Iterator[None]:
    """These tests drive the indexer step by step: every `maintain()` takes one (the server
    takes one at most every STEP_EVERY while no pass is under way: test_steps_are_spaced)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sqlite, "STEP_EVERY", 0.0)
        yield


ANONS = ["a0", "a1", "a2"]
EXTS = ["e0", "e1", "e2"]
NAMES = frozenset([f"ev{i}" for i in range(200)] + ["user_created", "user_updated", "user_merged"])

WRITERS = st.sampled_from([0, 0, 1])  # 1: another connection (as another worker would be)
MIDS = [f"m{i}" for i in range(8)]  # few: retries, and message ids freed by a deletion, resent
operation = st.one_of(
    # the last: the first event's message id (then the next ones, in turn), or -1: none
    st.tuples(
        st.just("track"),
        WRITERS,
        st.sampled_from(ANONS + EXTS),
        st.integers(1, 6),
        st.integers(-1, len(MIDS) - 1),
    ),
    st.tuples(st.just("merge"), WRITERS, st.sampled_from(ANONS), st.sampled_from(EXTS)),
    st.tuples(st.just("delete"), WRITERS, st.sampled_from(ANONS + EXTS)),
    st.tuples(st.just("step"), st.integers(1, 3)),
)


async def read_all(store: SqliteStore, user_id: int) -> list[int]:
    """A user's event ids through the read path, in pages of 3 (the cursor crosses parts)."""
    ids: list[int] = []
    cursor = None
    while True:
        rows = await store.user_events(user_id, 3, cursor)
        ids += [r.id for r in rows]
        if len(rows) < 3:
            return ids
        cursor = (rows[-1].created_at, rows[-1].id)


def check(db: sqlite3.Connection) -> None:
    stale = db.execute(
        "SELECT count(*) FROM user_events x LEFT JOIN events e ON e.id = x.event_id"
        " WHERE e.id IS NULL OR e.user_id != x.user_id OR e.created_at != x.created_at"
    ).fetchone()[0]
    assert stale == 0, "user_events holds rows the events table contradicts"
    upto = sqlite_index.indexed_upto(db)
    missing = db.execute(
        "SELECT count(*) FROM events e WHERE e.id <= ? AND NOT EXISTS (SELECT 1 FROM"
        " user_events x WHERE x.user_id = e.user_id AND x.event_id = e.id)",
        (upto,),
    ).fetchone()[0]
    assert missing == 0, "an event at or below the watermark is not indexed"
    stale = db.execute(
        "SELECT count(*) FROM message_ids m LEFT JOIN events e ON e.id = m.event_id"
        " WHERE e.id IS NULL OR e.message_id IS NOT m.message_id"
        " OR e.project_id != m.project_id"
    ).fetchone()[0]
    assert stale == 0, "message_ids holds rows the events table contradicts"
    upto = sqlite_index.indexed_upto(db, sqlite_index.MIDS)
    missing = db.execute(
        "SELECT count(*) FROM events e WHERE e.id <= ? AND e.message_id IS NOT NULL"
        " AND NOT EXISTS (SELECT 1 FROM message_ids m WHERE m.project_id = e.project_id"
        " AND m.message_id = e.message_id)",
        (upto,),
    ).fetchone()[0]
    assert missing == 0, "a message id at or below the watermark is not indexed"
    twice = db.execute(
        "SELECT count(*) FROM (SELECT 1 FROM events WHERE message_id IS NOT NULL"
        " GROUP BY project_id, message_id HAVING count(*) > 1)"
    ).fetchone()[0]
    assert twice == 0, "two events with the same message id"


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=st.lists(operation, min_size=1, max_size=25))
# a merge (by this connection, then by another) while the source user has rows pending
@example(
    ops=[("track", 0, "a0", 2, 0), ("track", 0, "e0", 1, -1), ("step", 1), ("merge", 0, "a0", "e0")]
)
@example(
    ops=[("track", 0, "a0", 2, 0), ("track", 0, "e0", 1, 2), ("step", 1), ("merge", 1, "a0", "e0")]
)
@example(ops=[("track", 0, "a0", 3, 0), ("step", 1), ("delete", 1, "a0"), ("track", 0, "a0", 1, 0)])
# another connection deletes an event whose message id is pending here and stores it again:
# the pending row must follow the new event, and a retry here must find it stored
@example(
    ops=[
        ("track", 0, "e1", 1, -1),  # two users (their first items and events: one pass)
        ("track", 0, "a0", 1, -1),
        ("step", 1),
        ("track", 0, "a0", 1, 0),  # one row pending, under a pass
        ("step", 1),
        ("delete", 1, "a0"),
        ("track", 1, "e1", 1, 0),
        ("step", 3),
        ("track", 0, "e1", 1, 0),
        ("step", 3),
    ]
)
def test_reads_match_the_events_table_through_any_interleaving(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch, ops: list[tuple]
) -> None:
    # tiny passes and chunks, so that a few events cross every state of the indexer (and
    # passes of message ids of another size, so that the two watermarks part)
    monkeypatch.setattr(sqlite_index, "PASS_ROWS", 3)
    monkeypatch.setattr(sqlite_index, "MIDS_PASS_ROWS", 4)
    monkeypatch.setattr(sqlite_index, "CHUNK_ROWS", 2)
    monkeypatch.setattr(sqlite_index, "PASS_EVERY", 3600.0)
    monkeypatch.setattr(sqlite_index, "MIDS_PASS_EVERY", 3600.0)
    path: Path = tmp_path_factory.mktemp("index") / "p.db"

    async def main() -> None:
        stores = [SqliteStore("sqlite://", str(path)) for _ in range(2)]
        for one in stores:
            await one.open()
            await one.migrate()
        store = stores[0]  # the one whose indexer runs
        pid = (await store.create_project("p", now_ms())).id
        writers = [Writer(one) for one in stores]
        indexer = sqlite_index.UserEventsIndexer(store.db)
        n = 0
        for op in ops:
            if op[0] == "step":
                for _ in range(op[1]):
                    indexer.step()
            elif op[0] == "track":
                ref, count, first = op[2], op[3], op[4]
                anon, ext = (ref, None) if ref in ANONS else (None, ref)
                events = [
                    EventIn(
                        anon,
                        ext,
                        f"ev{n + i}",
                        {},
                        message_id=None if first < 0 else MIDS[(first + i) % len(MIDS)],
                    )
                    for i in range(count)
                ]
                n += count
                await writers[op[1]].run_batch([TrackEvents(project_id=pid, events=events)])
            elif op[0] == "merge":
                ident = Identify(
                    project_id=pid, anonymous_id=op[2], external_id=op[3], traits=Traits()
                )
                await writers[op[1]].run_batch([ident])
            else:
                by = "anonymous_id" if op[2] in ANONS else "external_id"
                await stores[op[1]].delete_user(pid, op[2], by)
            check(store.db)
            for (uid,) in store.db.execute("SELECT id FROM users").fetchall():
                truth = [
                    r[0]
                    for r in store.db.execute(
                        "SELECT id FROM events WHERE user_id = ? ORDER BY created_at DESC, id DESC",
                        (uid,),
                    )
                ]
                assert await read_all(store, uid) == truth
                # and the lists' read of a user's events (pending in place of the scan)
                tx = SqliteTx(store.db, IdentityCache(), indexer)
                stored = store.db.execute("SELECT message_id FROM events WHERE message_id NOT NULL")
                assert sorted(await tx.seen_message_ids(pid, MIDS)) == sorted(r[0] for r in stored)
                mine = await tx.events_of([uid], NAMES)
                assert sorted(r[:2] for r in mine) == sorted(
                    store.db.execute("SELECT user_id, name FROM events WHERE user_id = ?", (uid,))
                )
        monkeypatch.setattr(sqlite_index, "PASS_EVERY", 0.0)  # idle: what is left goes too
        monkeypatch.setattr(sqlite_index, "MIDS_PASS_EVERY", 0.0)
        last = store.db.execute("SELECT coalesce(max(id), 0) FROM events").fetchone()[0]
        for _ in range(100):
            indexer.step()
            check(store.db)
            idle = not (indexer.pending or indexer.mids or indexer.passing)
            if indexer.filled >= last and idle:
                break
        assert indexer.pending == 0 and indexer.mids == 0
        for name in (sqlite_index.USERS, sqlite_index.MIDS):  # both watermarks caught up
            assert sqlite_index.indexed_upto(store.db, name) >= last
        for one in stores:
            await one.close()

    asyncio.run(main())


async def _two_stores(path: Path) -> tuple[list[SqliteStore], int]:
    stores = [SqliteStore("sqlite://", str(path)) for _ in range(2)]
    for one in stores:
        await one.open()
        await one.migrate()
    return stores, (await stores[0].create_project("p", now_ms())).id


async def _track(writer: Writer, pid: int, n: int, start: int) -> None:
    events = [EventIn(None, f"u{(start + i) % 50}", f"ev{start + i}", {}) for i in range(n)]
    await writer.run_batch([TrackEvents(project_id=pid, events=events)])


def test_pending_is_trusted_again_after_a_pass_no_other_connection_committed_during(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under steady ingestion pending is never empty at the end of a pass; after another
    connection's commit, the first pass it did not cross makes pending stand in for the
    index again (before: the lists' reads stayed on the scan of every event past the
    watermark until pending happened to be empty)."""
    monkeypatch.setattr(sqlite_index, "PASS_ROWS", 20)
    monkeypatch.setattr(sqlite_index, "CHUNK_ROWS", 5)
    monkeypatch.setattr(sqlite_index, "PASS_EVERY", 3600.0)

    async def main() -> None:
        stores, pid = await _two_stores(tmp_path / "p.db")
        mine, other = Writer(stores[0]), Writer(stores[1])
        indexer = sqlite_index.UserEventsIndexer(stores[0].db)
        await _track(other, pid, 3, 0)  # another connection commits
        n, passes, trusted = 3, 0, False
        for _ in range(200):  # this connection goes on writing, and stepping between batches
            await _track(mine, pid, 7, n)
            n += 7
            busy = indexer.pass_upto is not None
            indexer.step()
            if busy and indexer.pass_upto is None:
                passes += 1
                assert indexer.pending > 0  # filled during the pass: never empty at its end
                if indexer.owners() is not None:
                    trusted = True
                    break
        assert trusted and passes <= 2  # the pass that saw the commit, then a clean one
        for one in stores:
            await one.close()

    asyncio.run(main())


def test_the_watermark_keeps_up_when_each_step_fills_more_than_a_chunk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pass moves at least twice what each step filled: rows filled during a pass land all
    over the key order, and a pass that moved fewer would not reach its end (the watermark
    then stands still while batches grow). Before: chunks of pending // 32 let the watermark
    fall thousands of rows behind here."""
    monkeypatch.setattr(sqlite_index, "PASS_ROWS", 40)
    monkeypatch.setattr(sqlite_index, "CHUNK_ROWS", 2)
    monkeypatch.setattr(sqlite_index, "PASS_EVERY", 3600.0)

    async def main() -> None:
        stores, pid = await _two_stores(tmp_path / "p.db")
        writer = Writer(stores[0])
        indexer = sqlite_index.UserEventsIndexer(stores[0].db)
        for n in range(0, 60 * 60, 60):  # each batch more than a chunk of CHUNK_ROWS
            await _track(writer, pid, 60, n)
            indexer.step()
        last = stores[0].db.execute("SELECT max(id) FROM events").fetchone()[0]
        behind = last - sqlite_index.indexed_upto(stores[0].db)
        assert behind <= 4 * 60  # a few batches: a pass or two in flight
        for one in stores:
            await one.close()

    asyncio.run(main())


def track(pid: int, ext: str, names: list[str]) -> TrackEvents:
    return TrackEvents(project_id=pid, events=[EventIn(None, ext, n, {}) for n in names])


def pending_rows(db: sqlite3.Connection) -> list[tuple[int, int, int]]:
    return db.execute(
        "SELECT user_id, created_at, event_id FROM temp.pending ORDER BY 3"
    ).fetchall()


def test_a_restart_indexes_what_a_crash_left_pending(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process commits events and stops before its indexer moved them all, as a crash would
    (pending lives in its memory): the next process's indexer fills the events past the
    watermark again, and its passes index every one."""
    monkeypatch.setattr(sqlite_index, "PASS_ROWS", 3)
    monkeypatch.setattr(sqlite_index, "CHUNK_ROWS", 2)
    monkeypatch.setattr(sqlite_index, "PASS_EVERY", 3600.0)
    path = str(tmp_path / "p.db")

    async def main() -> None:
        store = SqliteStore("sqlite://", path)
        await store.open()
        await store.migrate()
        pid = (await store.create_project("p", now_ms())).id
        writer = Writer(store)
        for i in range(8):
            if i == 4:  # no pass from here: what the next batches write stays pending
                monkeypatch.setattr(sqlite_index, "PASS_ROWS", 1000)
            await writer.run_batch([track(pid, f"e{i % 3}", ["a", "b"])])
            await store.maintain()  # passes of a few rows: some indexed, some pending
        assert pending_rows(store.db)
        await writer.run_batch([track(pid, "e0", ["c"])])  # committed, never filled
        await store.close()  # pending is gone with the process

        store = SqliteStore("sqlite://", path)
        await store.open()
        writer = Writer(store)
        await writer.run_batch([track(pid, "e1", ["d"])])
        monkeypatch.setattr(sqlite_index, "PASS_EVERY", 0.0)  # idle: what is left goes too
        last = store.db.execute("SELECT max(id) FROM events").fetchone()[0]
        for _ in range(100):
            await store.maintain()
            check(store.db)
            if sqlite_index.indexed_upto(store.db) >= last:
                break
        assert sqlite_index.indexed_upto(store.db) >= last
        indexed = store.db.execute("SELECT count(*) FROM user_events").fetchone()[0]
        assert indexed == store.db.execute("SELECT count(*) FROM events").fetchone()[0]
        await store.close()

    asyncio.run(main())


def test_retries_are_found_while_message_ids_lag_behind_user_events_and_after_a_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """message_ids' passes are rarer than user_events': its watermark stays behind while
    user_events' moves on. A retry of any event is still dropped, from this process's pending
    rows and, after a restart (pending gone, as after a crash), from the events past message_ids'
    watermark, which the next process fills again; then a pass of message ids indexes them."""
    monkeypatch.setattr(sqlite_index, "PASS_ROWS", 3)
    monkeypatch.setattr(sqlite_index, "CHUNK_ROWS", 2)
    monkeypatch.setattr(sqlite_index, "PASS_EVERY", 3600.0)
    monkeypatch.setattr(sqlite_index, "MIDS_PASS_EVERY", 3600.0)
    path = str(tmp_path / "p.db")

    def batch(pid: int, i: int) -> TrackEvents:
        mids = (f"m{i}", f"m{i + 100}")
        return TrackEvents(
            project_id=pid, events=[EventIn(None, f"e{i % 3}", "ev", {}, None, m) for m in mids]
        )

    def stored(store: SqliteStore) -> int:
        return int(store.db.execute("SELECT count(*) FROM events WHERE name = 'ev'").fetchone()[0])

    async def main() -> None:
        store = SqliteStore("sqlite://", path)
        await store.open()
        await store.migrate()
        pid = (await store.create_project("p", now_ms())).id
        writer = Writer(store)
        for i in range(8):
            await writer.run_batch([batch(pid, i)])
            await store.maintain()
        users = sqlite_index.indexed_upto(store.db)
        assert sqlite_index.indexed_upto(store.db, sqlite_index.MIDS) < users  # lagging behind
        for i in range(8):  # every retry dropped (through pending_mids)
            await writer.run_batch([batch(pid, i)])
        assert stored(store) == 16
        await store.close()

        store = SqliteStore("sqlite://", path)
        await store.open()
        writer = Writer(store)
        for i in range(8):  # the same after a restart: before any step, then after some
            await writer.run_batch([batch(pid, i)])
            await store.maintain()
        assert stored(store) == 16
        monkeypatch.setattr(sqlite_index, "MIDS_PASS_EVERY", 0.0)
        last = store.db.execute("SELECT max(id) FROM events").fetchone()[0]
        for _ in range(50):
            await store.maintain()
            check(store.db)
            if sqlite_index.indexed_upto(store.db, sqlite_index.MIDS) >= last:
                break
        assert sqlite_index.indexed_upto(store.db, sqlite_index.MIDS) >= last
        indexed = store.db.execute("SELECT count(*) FROM message_ids").fetchone()[0]
        assert indexed == 16
        await writer.run_batch([batch(pid, 3)])
        assert stored(store) == 16
        await store.close()

    asyncio.run(main())


def test_the_stores_indexer_trusts_pending_across_commits_that_move_no_owners(
    tmp_path: Path,
) -> None:
    """As the store runs it: another connection's key (as a delivery process's cursor: a
    commit outside the writer's transactions) leaves pending trusted, so the lists go on
    reading users' events through it; another connection's batch (which may merge or delete
    users) does not."""

    async def main() -> None:
        stores, pid = await _two_stores(tmp_path / "p.db")
        mine, other = Writer(stores[0]), Writer(stores[1])
        await _track(mine, pid, 5, 0)
        await stores[0].maintain()  # the store's indexer starts
        indexer = stores[0]._indexer  # noqa: SLF001 - the store's own is the subject here
        assert indexer is not None and indexer.owners() is not None
        await stores[1].create_key(pid, "secret", None, "hash", "pk_", None, now_ms())
        await _track(mine, pid, 5, 5)
        assert indexer.owners() is not None
        await _track(other, pid, 5, 10)
        assert indexer.owners() is None
        for one in stores:
            await one.close()

    asyncio.run(main())


def test_steps_are_spaced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Between passes the writer's upkeep takes a step (fill pending) at most every
    STEP_EVERY, whatever the number of batches meanwhile; during a pass, after every batch."""
    monkeypatch.setattr(sqlite, "STEP_EVERY", 3600.0)
    monkeypatch.setattr(sqlite_index, "PASS_EVERY", 3600.0)

    async def main() -> None:
        store, pid, writer = await sqlite_writer(tmp_path / "p.db")
        await writer.run_batch([track(pid, "e0", ["a"])])
        await store.maintain()  # the first: the indexer is made, and fills
        assert store._indexer is not None
        filled = store._indexer.filled
        for name in ("b", "c"):
            await writer.run_batch([track(pid, "e1", [name])])
            await store.maintain()
        assert store._indexer.filled == filled  # no step: too soon
        indexer = store._indexer
        indexer.pass_upto, indexer.cursor = indexer.filled, (-1, -1, -1)  # a pass under way
        await store.maintain()
        assert indexer.filled > filled  # a step, though too soon
        filled = indexer.filled
        store._last_step = NEVER  # (no pass now) the time has come
        await writer.run_batch([track(pid, "e2", ["d"])])
        await store.maintain()
        assert indexer.filled > filled
        await store.close()

    asyncio.run(main())
