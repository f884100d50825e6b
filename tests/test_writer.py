"""Group commit: many concurrent requests share a transaction; each fails alone."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import msgspec
import pytest

from conftest import sqlite_writer
from pier.clock import now_ms
from pier.domain.commands import (
    Alias,
    Command,
    EventIn,
    Identify,
    RegisterDevice,
    TrackEvents,
    Traits,
)
from pier.domain.errors import DomainError
from pier.store import make_store
from pier.store.base import StoreUnavailable
from pier.writer import Writer


async def open_writer(tmp_path: Path) -> tuple[Writer, int]:
    _, pid, writer = await sqlite_writer(tmp_path / "pier.db")
    writer.start()
    return writer, pid


def event(
    pid: int, ext: str | None, data: dict | None = None, anon: str | None = None
) -> TrackEvents:
    return TrackEvents(
        project_id=pid,
        events=[EventIn(anonymous_id=anon, external_id=ext, name="x", data=data or {})],
    )


def test_concurrent_requests_share_transactions(tmp_path: Path) -> None:
    async def main() -> None:
        writer, pid = await open_writer(tmp_path)
        await asyncio.gather(*(writer.submit(event(pid, f"u{i % 7}")) for i in range(200)))
        assert writer.committed == 200
        assert writer.batches < 20
        stats = await writer.store.stats(pid)
        assert stats["users"] == 7 and stats["events"] == 214  # + user_created, user_updated
        await writer.stop()
        await writer.store.close()

    asyncio.run(main())


def test_one_failing_command_does_not_fail_its_batch(tmp_path: Path) -> None:
    async def main() -> None:
        writer, pid = await open_writer(tmp_path)
        ok = [writer.submit(event(pid, f"u{i}")) for i in range(10)]
        bad = writer.submit(event(pid, "bad", {"x": object()}))  # cannot be encoded: a bug
        refused = writer.submit(Alias(project_id=pid, anonymous_id="a", external_id="e2"))
        first = writer.submit(Alias(project_id=pid, anonymous_id="a", external_id="e1"))
        results = await asyncio.gather(first, *ok, bad, refused, return_exceptions=True)
        assert results[:11] == [None] * 11
        assert isinstance(results[11], TypeError)  # as raised: a 500, not a 503 to retry
        assert isinstance(results[12], DomainError)
        stats = await writer.store.stats(pid)
        assert stats["users"] == 11  # u0..u9 and e1
        await writer.stop()
        await writer.store.close()

    asyncio.run(main())


def test_stop_commits_what_is_queued(tmp_path: Path) -> None:
    async def main() -> None:
        writer, pid = await open_writer(tmp_path)
        tasks = [
            asyncio.create_task(
                writer.submit(
                    Identify(
                        project_id=pid, anonymous_id=None, external_id=f"u{i}", traits=Traits()
                    )
                )
            )
            for i in range(50)
        ]
        await asyncio.sleep(0)
        await writer.stop()
        await asyncio.gather(*tasks)
        assert (await writer.store.stats(pid))["users"] == 50
        with pytest.raises(StoreUnavailable):
            await writer.submit(event(pid, "late"))
        await writer.store.close()

    asyncio.run(main())


# -- loading: what a batch needs is planned, and loaded once --------------------------------
@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/pier.db"
    return str(request.getfixturevalue("pg_server").create_database())


class LoadCounter:
    """Counts the loads of each transaction of `store`'s writer (`WriteTx.load` calls) and the
    queries that complete users (every anonymous id of a user)."""

    def __init__(self, store: Any) -> None:
        self.loads = 0
        self.completions = 0
        transaction = store.transaction

        @asynccontextmanager
        async def counted() -> AsyncIterator[Any]:
            async with transaction() as tx:
                load, anonymous_ids_of = tx.load, tx.anonymous_ids_of

                async def counting_load(*args: Any) -> Any:
                    self.loads += 1
                    return await load(*args)

                async def counting_anonymous_ids_of(*args: Any) -> Any:
                    self.completions += 1
                    return await anonymous_ids_of(*args)

                tx.load, tx.anonymous_ids_of = counting_load, counting_anonymous_ids_of
                yield tx

        store.transaction = counted

    def reset(self) -> None:
        self.loads = self.completions = 0


def identify(pid: int, anon: str | None, ext: str | None) -> Identify:
    return Identify(project_id=pid, anonymous_id=anon, external_id=ext, traits=Traits())


def device(pid: int, anon: str | None, ext: str | None, device_id: str) -> RegisterDevice:
    return RegisterDevice(
        project_id=pid, anonymous_id=anon, external_id=ext, device_id=device_id, fields={}
    )


def test_a_merge_is_loaded_once(store_url: str) -> None:
    """Merges of stored users, reached directly or through what the batch did before: each
    batch is one load, completing its users in one query, never a replay."""

    async def main() -> None:
        store = make_store(store_url)
        await store.open()
        await store.migrate()
        pid = (await store.create_project("p", now_ms())).id
        writer = Writer(store)
        await writer.run_batch(
            [
                identify(pid, "a1", None),
                device(pid, "a1", None, "d-a1"),
                identify(pid, None, "e1"),
                device(pid, None, "e1", "d-e1"),
                identify(pid, "a2", None),
            ]
        )
        counter = LoadCounter(store)
        batches: list[list[Command]] = [
            [Alias(project_id=pid, anonymous_id="a1", external_id="e1")],  # two stored users
            # a new visitor merged into a stored user, and a stored one into it
            [
                event(pid, None, anon="a3"),
                Alias(project_id=pid, anonymous_id="a3", external_id="e1"),
            ],
            [identify(pid, "a4", "e4"), Alias(project_id=pid, anonymous_id="a2", external_id="e4")],
            # a device of the user an anonymous id was just linked to
            [
                Alias(project_id=pid, anonymous_id="a5", external_id="e1"),
                device(pid, "a5", None, "d5"),
            ],
        ]
        for batch in batches:
            counter.reset()
            assert await writer.run_batch(batch) == [None] * len(batch)
            assert (counter.loads, counter.completions) == (1, 1), batch
        e1 = await store.get_user(pid, "e1", "external_id")
        assert e1 is not None
        assert len(e1.anonymous_ids or ()) == 4  # a1, a3, a5 and its own
        assert {"a1", "a3", "a5"} <= set(e1.anonymous_ids or ())
        assert {d.device_id for d in e1.devices or ()} == {"d-a1", "d-e1", "d5"}
        e4 = await store.get_user(pid, "a2", "anonymous_id")
        assert e4 is not None and e4.external_id == "e4"
        await store.close()

    asyncio.run(main())


# -- writing: a batch's events in multi-row statements (queries.ROWS_PER_INSERT) -------------
def test_a_batch_of_events_is_stored_whole_and_in_order(store_url: str) -> None:
    """A batch of 511 events (every size of statement, 128 rows of 7 parameters the largest)
    is stored whole, each event once, in the batch's order. On SQLite the writer's connection
    is held to 999 parameters a statement (SQLITE_MAX_VARIABLE_NUMBER of builds before 3.32):
    one statement for the whole batch would be refused."""

    async def main() -> None:
        store = make_store(store_url)
        await store.open()
        await store.migrate()
        if store_url.startswith("sqlite"):
            store.db.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 999)  # type: ignore[attr-defined]
        try:
            pid = (await store.create_project("p", now_ms())).id
            writer = Writer(store)
            n = 3 * 128 + 127
            commands: list[Command] = [
                TrackEvents(
                    project_id=pid,
                    events=[
                        EventIn(anonymous_id=None, external_id=f"u{i % 3}", name="x", data={"i": i})
                        for i in range(start, min(start + 100, n))
                    ],
                )
                for start in range(0, n, 100)
            ]
            assert await writer.run_batch(commands) == [None] * len(commands)
            assert writer.batches == 1
            feed = [e for e in await store.event_feed(pid, None, 2 * n) if e.name == "x"]
            assert [msgspec.json.decode(e.data) for e in feed] == [{"i": i} for i in range(n)]
            assert [e.external_id for e in feed] == [f"u{i % 3}" for i in range(n)]
        finally:
            await store.close()

    asyncio.run(main())


def test_a_batch_is_answered_before_the_writer_does_anything_else(tmp_path: Path) -> None:
    """The answers of a committed batch go out before the store's upkeep and the next batch:
    the requests' tasks have resumed by the time the writer calls maintain(). (With the
    store's waits on the loop, as in the writer process, nothing else lets the loop turn.)"""

    async def main() -> None:
        store, pid, writer = await sqlite_writer(tmp_path / "pier.db", on_loop=True)
        answered: list[int] = []
        seen: list[int] = []  # requests answered, each time the writer began its upkeep
        upkeep = store.maintain

        async def maintain() -> None:
            seen.append(len(answered))
            await upkeep()

        store.maintain = maintain  # type: ignore[method-assign]

        async def request(i: int) -> None:
            await writer.submit(event(pid, f"u{i}"))
            answered.append(i)

        tasks = [asyncio.ensure_future(request(i)) for i in range(50)]
        await asyncio.sleep(0)  # all 50 queued: one batch
        writer.start()
        await asyncio.gather(*tasks)
        assert writer.batches == 1 and seen[0] == 50
        await writer.stop()
        await store.close()

    asyncio.run(main())
